"""Shipped configs load and say what ALERT says; the launch scripts parse and check their arguments."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from alert_jax.cli import build_parser
from alert_jax.cli.evaluate import eval_config_from_args
from alert_jax.config import load_config
from alert_jax.data.suites import load_suite
from alert_jax.model.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((ROOT / "configs" / "experiments").glob("*.yaml"))
MODELS = sorted((ROOT / "configs" / "models").glob("*.yaml"))
SCRIPTS = sorted((ROOT / "launch").glob("*.sh"))
ALERT = {"opt-1.3b-ft": ("opt-1.3b", "ft", 128), "opt-1.3b-cot": ("opt-1.3b", "cot", 128),
         "opt-13b-ft": ("opt-13b", "ft", 256), "opt-13b-cot": ("opt-13b", "cot", 256)}


@pytest.mark.parametrize("path", EXPERIMENTS + MODELS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_config_loads(path: Path) -> None:
    load_config(path)


def test_one_model_config_per_preset_holding_only_a_model_section() -> None:
    assert {p.stem for p in MODELS} == set(PRESETS)
    for path in MODELS:
        raw = yaml.safe_load(path.read_text())
        assert list(raw) == ["model"] and raw["model"]["name"] == path.stem
        assert load_config(path).model.name == path.stem


@pytest.mark.parametrize("stem", sorted(ALERT))
def test_alert_experiments_follow_the_paper(stem: str) -> None:
    cfg = load_config(ROOT / "configs" / "experiments" / f"{stem}.yaml")
    model, variant, batch = ALERT[stem]
    assert (cfg.model.name, cfg.data.variant, cfg.train.batch_size, cfg.train.seq_len) == (model, variant, batch, 2048)
    assert cfg.model.dtype == "bfloat16" and cfg.model.param_dtype == "float32"
    assert (cfg.data.suite, cfg.data.validation_suite, cfg.eval.suite) == ("finetune_mix", "alert", "alert")
    assert cfg.mesh.fsdp == -1 and cfg.optim.grad_accum_steps == 1
    assert cfg.optim.warmup_steps > 0 and cfg.optim.end_lr_ratio < 1  # linear warmup then decay
    assert cfg.eval.templates == ("T1", "T2", "T3", "T4", "T5")


def test_thirteen_b_uses_remat_and_tensor_parallelism() -> None:
    for variant in ("ft", "cot"):
        cfg = load_config(ROOT / "configs" / "experiments" / f"opt-13b-{variant}.yaml")
        assert cfg.model.remat and cfg.mesh.tensor > 1


def test_the_validation_suite_dev_tasks_are_alerts_three() -> None:
    cfg = load_config(ROOT / "configs" / "experiments" / "opt-1.3b-cot.yaml")
    dev = {t.task.split("_")[0] for t in load_suite(cfg.data.validation_suite).dev_tasks}
    assert dev == {"task247", "task118", "task1385"}


def test_demo_is_cpu_sized() -> None:
    cfg = load_config(ROOT / "configs" / "experiments" / "demo.yaml")
    assert (cfg.model.name, cfg.data.suite, cfg.train.seq_len, cfg.train.batch_size) == ("opt-tiny", "synthetic", 256, 8)
    assert cfg.train.steps <= 500 and cfg.model.dtype == "float32"


def _bash(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse(script: Path) -> None:
    result = _bash("-n", str(script))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["gpu_single_host.sh", "multi_host_gpu.sh", "tpu_pod.sh"])
def test_scripts_help_and_missing_arguments(name: str) -> None:
    script = str(ROOT / "launch" / name)
    helped = _bash(script, "--help")
    assert helped.returncode == 0 and helped.stdout.startswith(f"Usage: {name}")
    missing = _bash(script)
    assert missing.returncode == 2 and "is required" in missing.stderr
    unknown = _bash(script, "--bogus")
    assert unknown.returncode == 2 and "unknown argument --bogus" in unknown.stderr


def test_tpu_pod_runs_the_same_distributed_command_on_every_worker() -> None:
    result = _bash(str(ROOT / "launch" / "tpu_pod.sh"), "--tpu", "pod", "--zone", "z", "--dry-run",
                   "--config", "configs/experiments/opt-13b-cot.yaml", "--workdir", "/shared/run",
                   "--set", "data.data_root=/mnt/my data")
    assert result.returncode == 0, result.stderr
    command = result.stdout
    assert command.startswith("gcloud compute tpus tpu-vm ssh pod --zone z --worker=all --command ")
    assert "ALERT_JAX_DISTRIBUTED=1" in command and r"finetune-\$\(hostname\).log" in command
    assert r"data.data_root=/mnt/my\\\ data" in command  # quoted twice: for gcloud's argv and the workers' shell


def test_tpu_pod_rejects_a_relative_workdir() -> None:
    result = _bash(str(ROOT / "launch" / "tpu_pod.sh"), "--tpu", "p", "--zone", "z", "--config", "c.yaml",
                   "--workdir", "runs/x")
    assert result.returncode == 2 and "absolute path" in result.stderr


def test_single_host_runs_finetune_then_the_configs_evaluation(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "ALERT_JAX": "echo"}  # record the commands instead of training
    workdir = tmp_path / "run"
    result = _bash(str(ROOT / "launch" / "gpu_single_host.sh"), "--config", "configs/experiments/demo.yaml",
                   "--workdir", str(workdir), "--gpus", "2", "--set", "data.variant=ft", env=env)
    assert result.returncode == 0, result.stderr
    finetune, evaluate = result.stdout.splitlines()
    assert finetune == f"finetune --config configs/experiments/demo.yaml --workdir {workdir} --set data.variant=ft"
    assert evaluate == (f"evaluate --config configs/experiments/demo.yaml --model {workdir} --workdir {workdir}/eval "
                        "--set data.variant=ft")
    args = build_parser().parse_args(evaluate.split())
    ev = eval_config_from_args(args)
    assert (ev.suite, ev.variant, ev.max_examples_per_task, ev.label) == ("synthetic", "ft", 20, "opt-tiny")


def test_multi_host_checks_the_process_id(tmp_path: Path) -> None:
    result = _bash(str(ROOT / "launch" / "multi_host_gpu.sh"), "--config", "configs/experiments/demo.yaml",
                   "--workdir", str(tmp_path), "--coordinator", "h:1234", "--num-processes", "2", "--process-id", "2")
    assert result.returncode == 2 and "--process-id must be in 0..1" in result.stderr
