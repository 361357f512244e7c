"""Shipped configs load, validate and run, and say what ALERT says; the launch scripts parse and check their
arguments; requirements*.txt say what pyproject says; a wheel carries the shipped YAML."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from alert_jax.cli import build_parser
from alert_jax.cli.evaluate import eval_config_from_args
from alert_jax.config import ExperimentConfig, load_config
from alert_jax.data.suites import load_suite
from alert_jax.data.templates import TEMPLATES
from alert_jax.model.presets import get_preset
from alert_jax.train import objectives
from alert_jax.data.trained import PRETRAIN_SUITE

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((ROOT / "configs" / "experiments").glob("*.yaml"))
SCRIPTS = sorted((ROOT / "launch").glob("*.sh"))
ALERT = {"opt-1.3b-ft": ("opt-1.3b", "ft", 128), "opt-1.3b-cot": ("opt-1.3b", "cot", 128),
         "opt-13b-ft": ("opt-13b", "ft", 256), "opt-13b-cot": ("opt-13b", "cot", 256)}


def _check_runnable(cfg: ExperimentConfig) -> None:
    """What a run would find out only after start-up: the model, suites and templates exist and the shapes fit
    (an alignment run starts from a finetuning workdir, whose shapes are that run's)."""
    objectives.check(cfg.train.objective, cfg.alignment)
    if cfg.train.objective == "sft":
        arch = get_preset(cfg.model.name)
        assert cfg.train.seq_len <= arch.max_position_embeddings
        assert cfg.data.vocab_size <= arch.vocab_size
    for suite in {cfg.data.suite, cfg.data.validation_suite, cfg.eval.suite} - {PRETRAIN_SUITE, ""}:
        load_suite(suite)
    assert load_suite(cfg.data.suite).finetune_tasks and load_suite(cfg.eval.suite).eval_tasks
    assert cfg.data.variant in ("ft", "cot") and set(cfg.eval.templates) <= set(TEMPLATES)
    fixed_shards = [n for n in (cfg.mesh.data, cfg.mesh.fsdp) if n > 0]
    assert cfg.train.batch_size % max(1, *fixed_shards) == 0


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_experiment_validates(path: Path) -> None:
    _check_runnable(load_config(path))


@pytest.mark.slow  # ~30 s on 2 busy cores, mostly compiling opt-tiny's steps
def test_the_demo_experiment_finetunes_as_shipped(tmp_path: Path) -> None:
    """configs/experiments/demo.yaml, its corpus-trained tokenizer included, for a few real steps."""
    from alert_jax.train.loop import finetune

    cfg = load_config(ROOT / "configs" / "experiments" / "demo.yaml",
                      ["train.steps=2", "train.eval_every=2", "optim.warmup_steps=1", "data.examples_per_task=60"])
    last = finetune(cfg, tmp_path / "run")
    assert last["step"] == 2 and last["loss"] > 0 and last["val_ppl"] > 1
    assert (tmp_path / "run" / "tokenizer").is_dir()


def test_a_small_corpus_caps_the_tokenizer_vocabulary_with_a_warning(tmp_path: Path, caplog) -> None:
    from alert_jax.config import DataConfig
    from alert_jax.train.corpus import resolve_tokenizer

    pairs = [("Question: what is two plus two?", "The answer is four."), ("Say hi.", "hi")]
    tokenizer = resolve_tokenizer(DataConfig(vocab_size=1024), tmp_path, lambda: (pairs, []))
    assert 259 < tokenizer.vocab_size < 1024  # byte fallback pieces + specials, and a few merges
    assert f"supports only {tokenizer.vocab_size}" in caplog.text and "data.vocab_size=1024" in caplog.text


@pytest.mark.parametrize("stem", sorted(ALERT))
def test_alert_experiments_follow_the_paper(stem: str) -> None:
    cfg = load_config(ROOT / "configs" / "experiments" / f"{stem}.yaml")
    model, variant, batch = ALERT[stem]
    effective = cfg.train.batch_size * cfg.optim.grad_accum_steps  # micro-batch × accumulation sized by `plan`
    assert (cfg.model.name, cfg.data.variant, effective, cfg.train.seq_len) == (model, variant, batch, 2048)
    assert cfg.model.dtype == "bfloat16" and cfg.model.param_dtype == "float32"
    assert (cfg.data.suite, cfg.data.validation_suite, cfg.eval.suite) == ("finetune_mix", "alert", "alert")
    assert cfg.mesh.fsdp == -1
    assert cfg.optim.warmup_steps > 0 and cfg.optim.end_lr_ratio < 1  # linear warmup then decay
    assert cfg.eval.templates == ("T1", "T2", "T3", "T4", "T5")


def test_thirteen_b_uses_remat_and_tensor_parallelism() -> None:
    for variant in ("ft", "cot"):
        cfg = load_config(ROOT / "configs" / "experiments" / f"opt-13b-{variant}.yaml")
        assert cfg.model.remat == "full" and cfg.model.scan_layers and cfg.mesh.tensor > 1


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
    assert (ev.suite, ev.variant, ev.label) == ("synthetic", "ft", "opt-tiny")
    assert ev.max_examples_per_task == load_config(ROOT / "configs/experiments/demo.yaml").eval.max_examples_per_task


def test_multi_host_checks_the_process_id(tmp_path: Path) -> None:
    result = _bash(str(ROOT / "launch" / "multi_host_gpu.sh"), "--config", "configs/experiments/demo.yaml",
                   "--workdir", str(tmp_path), "--coordinator", "h:1234", "--num-processes", "2", "--process-id", "2")
    assert result.returncode == 2 and "--process-id must be in 0..1" in result.stderr


def _requirements(name: str) -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_requirements_files_are_pyprojects_runtime_and_test_dependencies() -> None:
    """requirements.txt = [project] dependencies, requirements-test.txt = the `test` extra (other extras are
    pyproject's alone)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert _requirements("requirements.txt") == project["dependencies"]
    assert _requirements("requirements-test.txt") == project["optional-dependencies"]["test"]


@pytest.mark.slow
def test_a_regular_install_finds_the_shipped_configs(tmp_path: Path) -> None:
    """A non-editable wheel carries configs/ (through the alert_jax/configs link), so the demo and suites load."""
    source = tmp_path / "source"  # a copy: setuptools builds in the source tree and would leave build/ behind
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("alert_jax", "configs"):
        shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
        names = archive.namelist()
    assert "alert_jax/configs/experiments/demo.yaml" in names and "alert_jax/configs/suites/alert.yaml" in names
    assert not (tmp_path / "site" / "alert_jax" / "configs").is_symlink()
    probe = ("import alert_jax.demo as d, alert_jax.data.suites as s; "
             "print(d.demo_plan().finetune.train.steps, len(s.load_suite('alert').tasks), d.DEMO_STUDY)")
    ran = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert ran.returncode == 0, ran.stderr
    steps, tasks, study = ran.stdout.split()
    assert (steps, int(tasks) > 0) == ("250", True) and study.startswith(str(tmp_path / "site"))
