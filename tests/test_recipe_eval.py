"""ALERT's evaluation volume (100 seeded instances per task) and OPT-R's prompting modes, as `plan` sees them."""
from __future__ import annotations

import dataclasses

import pytest

from alert_jax.config import EvalConfig, load_config
from alert_jax.data.example import Example, Task
from alert_jax.data.suites import SuiteTask, load_suite
from alert_jax.errors import AlertJaxError
from alert_jax.evaluate import instances_per_task, plan

ENTRY = SuiteTask(task="task_x", skill="logical", split="held_out", source="niv2", provenance="test")


def _task(n: int, reverse: bool = False) -> Task:
    examples = [Example(input=f"question {i}?", references=(f"answer {i}",), rationale=f"because {i}", id=f"x-{i}")
                for i in range(n)]
    return Task(name="task_x", definition="Answer it.", demonstrations=(),
                examples=tuple(reversed(examples)) if reverse else tuple(examples))


def test_the_alert_suite_scores_100_instances_per_task_unless_told_otherwise():
    assert load_suite("alert").eval_instances_per_task == 100
    assert instances_per_task(EvalConfig(suite="alert")) == 100
    assert instances_per_task(EvalConfig(suite="alert", max_examples_per_task=0)) == 0  # 0 = all
    assert instances_per_task(EvalConfig(suite="synthetic")) == 0  # suites without the key: all
    for name in ("opt-1.3b-ft", "opt-1.3b-cot", "opt-13b-ft", "opt-13b-cot"):
        cfg = load_config(f"configs/experiments/{name}.yaml")
        assert (cfg.eval.suite, instances_per_task(cfg.eval)) == ("alert", 100)


def test_the_cap_picks_the_same_instances_every_run_template_and_file_order():
    cfg = EvalConfig(suite="alert", templates=("T1", "T5"))
    items = plan([(ENTRY, _task(250))], cfg)
    by_template = {t: [i.example.id for i in items if i.template == t] for t in cfg.templates}
    assert len(by_template["T1"]) == 100 and by_template["T1"] == by_template["T5"]
    assert by_template["T1"] != [f"x-{i}" for i in range(100)]  # a seeded choice, not the first 100
    again = plan([(ENTRY, _task(250, reverse=True))], cfg)
    assert {i.example.id for i in again} == set(by_template["T1"])
    other_seed = plan([(ENTRY, _task(250))], dataclasses.replace(cfg, instance_seed=1))
    assert {i.example.id for i in other_seed} != set(by_template["T1"])
    assert len(plan([(ENTRY, _task(60))], cfg)) == 2 * 60  # small tasks keep every instance


@pytest.mark.parametrize("mode", ["few_shot", "few_shot_explained"])
def test_few_shot_demonstrations_are_seeded_and_never_the_evaluated_instance(mode):
    cfg = EvalConfig(suite="alert", templates=("T1",), max_examples_per_task=5, prompting=mode, shots=3)
    task = _task(12)
    items = plan([(ENTRY, task)], cfg)
    evaluated = {i.example.id for i in items}
    for item in items:
        shown = [ex for ex in task.examples if f"Input: {ex.input}\nOutput: " in item.prompt]
        assert len(shown) == 3 and all(ex.id not in evaluated for ex in shown)  # drawn from the unevaluated ones
        assert item.prompt.endswith(f"Input: {item.example.input}\nOutput:")
        assert item.prompt.count(item.example.input) == 1
        explained = all(f"{ex.rationale} The answer is {ex.references[0]}." in item.prompt for ex in shown)
        assert explained == (mode == "few_shot_explained")
    assert [i.prompt for i in plan([(ENTRY, task)], cfg)] == [i.prompt for i in items]


def test_few_shot_on_a_task_with_few_instances_still_leaves_out_the_evaluated_one():
    cfg = EvalConfig(suite="alert", templates=("T5",), max_examples_per_task=0, prompting="few_shot", shots=2)
    for item in plan([(ENTRY, _task(3))], cfg):
        assert item.prompt.count("Question: ") == 3 and item.prompt.count(item.example.input) == 1


def test_zero_shot_prompts_are_the_plain_templates_and_unknown_modes_are_errors():
    task = _task(4)
    zero = plan([(ENTRY, task)], EvalConfig(suite="alert", templates=("T5",)))
    assert [i.prompt for i in zero] == [f"Question: {ex.input}\nAnswer:" for ex in task.examples]
    with pytest.raises(AlertJaxError, match="eval.prompting='one_shot'"):
        plan([(ENTRY, task)], EvalConfig(suite="alert", prompting="one_shot"))


def test_the_alert_scaling_sweep_runs_with_the_documented_defaults():
    from alert_jax.sweep import expand_sweep

    runs = expand_sweep("launch/sweeps/alert_scaling.yaml")
    assert len(runs) == 18
    for run in runs:
        cfg = run.config()
        assert instances_per_task(cfg.eval) == 100 and cfg.eval.prompting == "zero_shot"
        assert cfg.data.mixture == {"esnli": 10000, "proofwriter": 10000, "coqa": 10000, "aqua": 10000}
        assert (cfg.train.select_by, cfg.data.masked_thought_rate) == ("dev_perplexity", 0.0)
