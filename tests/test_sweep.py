"""Sweep files expand into validated, named runs; the `sweep` subcommand plans and resumes (nothing is trained)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from alert_jax.cli import main
from alert_jax.cli.evaluate import eval_config_from_args, register as register_evaluate
from alert_jax.config import eval_config_for, parse_override
from alert_jax.model.presets import size_label
from alert_jax.sweep import SweepError, _override_text, expand_sweep, format_plan, select

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "launch" / "sweeps" / "demo_scaling.yaml"
ALERT = ROOT / "launch" / "sweeps" / "alert_scaling.yaml"


def _sweep(tmp_path: Path, text: str) -> Path:
    (tmp_path / "base.yaml").write_text("model: {name: opt-micro}\n")
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_demo_sweep_expands_the_grid_in_axis_order(tmp_path: Path) -> None:
    runs = expand_sweep(DEMO, tmp_path)
    assert [r.name for r in runs] == ["micro-ft", "micro-cot", "tiny-ft", "tiny-cot"]
    first = runs[0]
    assert first.config_path == ROOT / "configs" / "experiments" / "demo.yaml"
    assert first.overrides == ("train.steps=200", "model.name=opt-micro", "data.variant=ft", "eval.max_new_tokens=16")
    assert first.workdir == tmp_path / "micro-ft" and first.finetune
    cfg = runs[3].config()
    assert (cfg.model.name, cfg.data.variant, cfg.train.steps, cfg.eval.max_new_tokens) == ("opt-tiny", "cot", 200, 40)


def test_alert_sweep_covers_sizes_variants_and_seeds(tmp_path: Path) -> None:
    runs = expand_sweep(ALERT, tmp_path)
    assert len(runs) == 2 * 3 * 3
    by_name = {r.name: r for r in runs}
    big = by_name["13b-cot-s2"].config()
    paper_batch = big.train.batch_size * big.optim.grad_accum_steps  # micro-batch x accumulation, as `plan` fits it
    assert (big.model.name, paper_batch, big.data.variant, big.train.seed) == ("opt-13b", 256, "cot", 2)
    small = by_name["1.3b-ft-s0"].config()
    assert small.train.batch_size * small.optim.grad_accum_steps == 128
    assert not by_name["1.3b-pretrained-s1"].finetune and by_name["1.3b-cot-s1"].finetune


def test_extra_overrides_apply_to_every_run(tmp_path: Path) -> None:
    runs = expand_sweep(DEMO, tmp_path, ["data.data_root=/data/alert"])
    assert all(r.config().data.data_root == "/data/alert" for r in runs)


@pytest.mark.parametrize("value", ["opt-1.3b", "1e-4", "true", "a: b", 3, 1e-4, True, ["T1", "T2"], ""])
def test_override_text_reads_back_to_the_same_value(value) -> None:
    assert parse_override(_override_text("a.b", value)) == ("a.b", value)


@pytest.mark.parametrize("text, message", [
    ("base: base.yaml\ngrid: {v: {a: {}}}\nseeds: 3\n", "unknown key 'seeds'"),
    ("grid: {v: {a: {}}}\n", "base: expected the path"),
    ("base: base.yaml\ngrid: {}\n", "grid: needs at least one axis"),
    ("base: base.yaml\ngrid: {v: {a: {train.stepz: 3}}}\n", r"run a: .*base\.yaml: unknown config key train\.stepz"),
    ("base: base.yaml\ngrid: {v: {a: {train.steps: many}}}\n", r"run a: .*base\.yaml: train\.steps: expected int"),
    ("base: base.yaml\ngrid: {v: {a-b: {}}}\n", "grid.v.a-b: a label may use only"),
    ("base: base.yaml\ngrid: {v: {a: {finetune: no_thanks}}}\n", "grid.v.a.finetune: expected true or false"),
    ("base: base.yaml\ngrid: {x: {a: {train.seed: 1}}, y: {b: {train.seed: 2}}}\n",
     "grid.y.b sets train.seed, already set by grid.x.a"),
    ("base: missing.yaml\ngrid: {v: {a: {}}}\n", "missing.yaml"),
    ("base: base.yaml\ngrid: [1, 2]\n", "grid: expected a mapping"),
])
def test_bad_sweeps_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = _sweep(tmp_path, text)
    with pytest.raises(SweepError, match=str(path)) as err:
        expand_sweep(path, tmp_path / "out")
    assert re.search(message, str(err.value))


def test_config_key_is_relative_to_the_sweep_file(tmp_path: Path) -> None:
    (tmp_path / "other.yaml").write_text("model: {name: opt-tiny}\n")
    path = _sweep(tmp_path, "base: base.yaml\ngrid: {size: {micro: {}, tiny: {config: other.yaml}}}\n")
    runs = expand_sweep(path, tmp_path / "out")
    assert [r.config().model.name for r in runs] == ["opt-micro", "opt-tiny"]


def test_select_by_name(tmp_path: Path) -> None:
    runs = expand_sweep(DEMO, tmp_path)
    assert [r.name for r in select(runs, ["tiny-cot", "micro-ft"])] == ["micro-ft", "tiny-cot"]
    with pytest.raises(SweepError, match="--only tiny-xx: no such run"):
        select(runs, ["tiny-xx"])


def test_plan_text_marks_finished_runs(tmp_path: Path) -> None:
    runs = expand_sweep(DEMO, tmp_path)[:2]
    (runs[0].eval_dir).mkdir(parents=True)
    (runs[0].eval_dir / "scores.jsonl").write_text("")
    config = ROOT / "configs" / "experiments" / "demo.yaml"
    assert format_plan(runs) == "\n".join([
        "2 run(s), 1 to do",
        f"[done] micro-ft  (finetune+evaluate)  workdir={tmp_path}/micro-ft",
        f"    config={config}",
        "    --set train.steps=200", "    --set model.name=opt-micro", "    --set data.variant=ft",
        "    --set eval.max_new_tokens=16",
        f"[todo] micro-cot  (finetune+evaluate)  workdir={tmp_path}/micro-cot",
        f"    config={config}",
        "    --set train.steps=200", "    --set model.name=opt-micro", "    --set data.variant=cot",
    ])


def _cli(argv: list[str]) -> int:
    return main(argv)


def test_dry_run_prints_the_plan_and_logs_it(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sweep"
    (out / "tiny-ft" / "eval").mkdir(parents=True)
    (out / "tiny-ft" / "eval" / "scores.jsonl").write_text("")
    assert _cli(["sweep", str(DEMO), "--out", str(out), "--dry-run", "--only", "tiny-ft", "--only", "tiny-cot"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("2 run(s), 1 to do\n[done] tiny-ft ")
    manifest = [json.loads(line) for line in (out / "sweep.jsonl").read_text().splitlines()]
    assert [(m["name"], m["status"]) for m in manifest] == [("tiny-ft", "skipped"), ("tiny-cot", "planned")]
    assert manifest[1]["workdir"] == str(out / "tiny-cot") and "data.variant=cot" in manifest[1]["overrides"]
    assert not (out / "tiny-cot").exists()


def test_a_runs_evaluation_takes_the_configs_eval_settings(tmp_path: Path) -> None:
    cfg = expand_sweep(ALERT, tmp_path)[-1].config()  # 13b-cot-s2
    ev = eval_config_for(cfg, "cot")
    assert (ev.suite, ev.templates, ev.max_new_tokens, ev.batch_size, ev.dtype) == (
        "alert", ("T1", "T2", "T3", "T4", "T5"), 256, 16, "bfloat16")
    assert (ev.label, ev.variant, ev.size, ev.tokenizer, ev.data_root) == ("opt-13b", "cot", "13b", "", "")


def test_evaluate_command_with_a_config_evaluates_like_the_sweep(tmp_path: Path) -> None:
    """`alert-jax evaluate --config C` (what the launch scripts run) gives the sweep's EvalConfig; flags win."""
    import argparse

    run = expand_sweep(ALERT, tmp_path)[-1]
    config = tmp_path / "experiment.yaml"
    config.write_text(run.config_path.read_text())
    parser = argparse.ArgumentParser()
    register_evaluate(parser.add_subparsers())
    args = parser.parse_args(["evaluate", "--model", "runs/x", "--workdir", str(tmp_path / "eval"), "--config",
                              str(run.config_path), *[a for o in run.overrides for a in ("--set", o)]])
    assert eval_config_from_args(args) == eval_config_for(run.config(), "cot")
    args = parser.parse_args(["evaluate", "--model", "runs/x", "--workdir", "w", "--config", str(run.config_path),
                              "--variant", "pretrained", "--templates", "T1,T5", "--max-new-tokens", "8"])
    ev = eval_config_from_args(args)
    assert (ev.variant, ev.templates, ev.max_new_tokens) == ("pretrained", ("T1", "T5"), 8)


@pytest.mark.parametrize("name, size", [("opt-1.3b", "1.3b"), ("/models/opt-13b", "13b"), ("/models/mine", "")])
def test_size_label(name: str, size: str) -> None:
    assert size_label(name) == size
