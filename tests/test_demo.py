"""The embedded default end to end: pretrain → FT/CoT → evaluate → report, and the ALERT finding in miniature."""
from __future__ import annotations

import csv
import dataclasses

import pytest

from alert_jax.config import ConfigError
from alert_jax.demo import demo_plan, run_demo

SMALL = ["model.name=opt-micro", "train.steps=4", "train.eval_every=2", "optim.warmup_steps=1", "data.examples_per_task=100",
         "data.vocab_size=512", "eval.max_examples_per_task=1", "eval.templates=[T5]", "eval.max_new_tokens=8"]


@pytest.mark.slow
def test_demo_runs_end_to_end_and_finetuning_beats_pretrained_in_domain(tmp_path):
    report = run_demo(tmp_path / "demo", demo_plan(quick=True))  # what `alert-jax demo --quick` runs
    text = report.read_text()
    assert "opt-tiny/pretrained" in text and "opt-tiny/ft" in text and "opt-tiny/cot" in text
    for plot in ("skill_bars.png", "template_spread.png", "overlap_vs_gain.png"):
        assert (report.parent / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best: dict[str, list[float]] = {}
    with open(report.parent / "per_task.csv") as f:
        for row in csv.DictReader(f):
            if row["split"] == "in_domain" and row["metric"] == "relaxed_match":
                best.setdefault(row["variant"], []).append(float(row["best"]))
    mean = {variant: sum(v) / len(v) for variant, v in best.items()}
    assert mean["ft"] > mean["pretrained"], mean
    assert mean["cot"] > mean["pretrained"], mean


@pytest.mark.slow
def test_demo_rerun_resumes_without_retraining(tmp_path, capsys):
    small = demo_plan(overrides=SMALL)
    run_demo(tmp_path / "demo", small)
    generations = (tmp_path / "demo" / "eval" / "generations.jsonl").read_text()
    capsys.readouterr()
    run_demo(tmp_path / "demo", small)
    out = capsys.readouterr().out
    assert out.count("already trained") == 3
    assert (tmp_path / "demo" / "eval" / "generations.jsonl").read_text() == generations


def test_the_demo_is_the_demo_experiment_plus_its_stages():
    """One file is the truth: the FT/CoT stage is configs/experiments/demo.yaml as it stands (what
    `alert-jax finetune --config configs/experiments/demo.yaml` trains), pretraining changes only its stage keys."""
    from alert_jax.config import load_config
    from alert_jax.demo import DEMO_STUDY

    plan = demo_plan()
    assert plan.finetune == load_config(DEMO_STUDY.parent.parent / "experiments" / "demo.yaml")
    assert (plan.finetune.train.steps, plan.finetune.optim.learning_rate, plan.finetune.data.examples_per_task,
            plan.finetune.train.seq_len, plan.finetune.eval.max_new_tokens) == (250, 2e-3, 300, 256, 40)
    assert (plan.pretrain.data.suite, plan.pretrain.train.steps) == ("synthetic-pretrain", 200)
    assert plan.pretrain.optim == dataclasses.replace(plan.finetune.optim, warmup_steps=20)


def test_quick_and_set_override_the_study_in_order():
    quick = demo_plan(quick=True, overrides=["eval.max_new_tokens=8", "pretrain.train.steps=7"])
    assert (quick.pretrain.train.steps, quick.finetune.train.steps) == (7, 120)
    assert quick.finetune.eval.templates == ("T1", "T5") and quick.finetune.eval.max_new_tokens == 8
    assert demo_plan(overrides=["train.steps=9"]).pretrain.train.steps == 9  # a bare key reaches every stage
    with pytest.raises(ConfigError, match="trian"):
        demo_plan(overrides=["finetune.trian.steps=1"])


def test_a_malformed_study_names_the_file_and_key(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text("experiment: demo.yaml\nstages: {pretrain: [], finetune: [steps], align: []}\n"
                     "quick: {pretrain: [], finetune: [], align: []}\n")
    with pytest.raises(ConfigError, match=r"study.yaml: stages.finetune: expected a list of KEY=VALUE"):
        demo_plan(study=study)


@pytest.mark.slow
def test_aft_recipe_runs_end_to_end_with_cot_and_aft_side_by_side(tmp_path, capsys):
    """`alert-jax demo --recipe aft` in small: CoT → sample → AFT → evaluate both → assessment → report."""
    small = demo_plan(overrides=[*SMALL, "align.alignment.max_questions_per_task=2", "align.alignment.max_new_tokens=8",
                                 "align.train.batch_size=2"])
    report = run_demo(tmp_path / "demo", small, recipe="aft")
    text = report.read_text()
    assert "opt-micro/cot" in text and "opt-micro/aft" in text and "opt-micro/ft" not in text
    assessment = text.split("## Assessment", 1)[1]
    assert "| opt-micro/cot |" in assessment and "| opt-micro/aft |" in assessment
    samples = (tmp_path / "demo" / "samples" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 4 * 2 * small.align.alignment.k  # four synthetic finetuning tasks
    assert "aligning the CoT model (aft, constraint dc" in capsys.readouterr().out
