"""Overlap, template sensitivity, variant comparisons and plots, checked against hand-computed values."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from alert_jax.analysis.compare import overall, scaling_deltas, variant_deltas
from alert_jax.analysis.overlap import OverlapError, task_overlap, vocabulary_overlap, write_overlap_json
from alert_jax.analysis.gains import gain_points
from alert_jax.analysis.plots import plot_overlap_vs_gain, plot_skill_bars, plot_template_spread
from alert_jax.analysis.sensitivity import skill_sensitivity, task_sensitivity
from alert_jax.analysis.tables import markdown_table
from alert_jax.metrics import System, per_skill, per_task

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(variant: str, task: str, skill: str, template: str, rouge: float, size: str = "1.3b") -> dict:
    return {"model": "opt", "variant": variant, "size": size, "task": task, "skill": skill, "split": "held_out",
            "template": template, "rouge_l": rouge, "exact_match": 0.0, "relaxed_match": 0.0, "n": 5}


def _templates(variant: str, task: str, skill: str, scores: list[float], size: str = "1.3b") -> list[dict]:
    return [_row(variant, task, skill, f"T{i}", s, size) for i, s in enumerate(scores, start=1)]


# ---------------------------------------------------------------- vocabulary overlap

def test_overlap_by_hand():
    finetune = (text for text in ["The cat sat.", "A dog ran!"])   # single-pass iterables are fine
    # V_ft = {the, cat, sat, a, dog, ran}
    # task x tokens: the cat the bird sings cat → counts the 2, cat 2, bird 1, sings 1
    overlaps = vocabulary_overlap(finetune, {"x": ["the cat", "the bird sings", "Cat!"], "y": ["cats ran"]})
    assert list(overlaps) == ["x", "y"]
    x = overlaps["x"]
    assert x.type_overlap == pytest.approx(2 / 4)        # {the, cat} of {the, cat, bird, sings}
    assert x.token_coverage == pytest.approx(4 / 6)      # the×2 + cat×2 of 6 running tokens
    assert (x.eval_types, x.eval_tokens) == (4, 6)
    # Unstemmed, like the vocabulary: "cats" is not "cat"; "ran" is seen.
    assert overlaps["y"].type_overlap == pytest.approx(1 / 2)


def test_overlap_uses_the_metric_tokenizer_on_non_ascii_text():
    # "Café" → [caf]; "naïve" → [na, ve]; the eval task "CAF na" → [caf, na]: both seen.
    assert task_overlap({"caf", "na", "ve"}, ["CAF na"]).type_overlap == 1.0
    assert vocabulary_overlap(["Café naïve"], {"t": ["CAF na"]})["t"].type_overlap == 1.0


def test_overlap_of_a_task_without_tokens_is_an_error():
    with pytest.raises(OverlapError, match="'empty'"):
        vocabulary_overlap(["some text"], {"empty": ["日本語", "..."]})


def test_write_overlap_json(tmp_path: Path):
    overlaps = vocabulary_overlap(["a b"], {"t2": ["a c"], "t1": ["a b"]})
    path = write_overlap_json(overlaps, tmp_path / "overlap.json")
    assert json.loads(path.read_text()) == {"t1": 1.0, "t2": 0.5}


# ---------------------------------------------------------------- template sensitivity

SENSITIVITY_ROWS = [
    *_templates("pretrained", "a", "logic", [10.0, 30.0, 20.0]),   # std sqrt(200/3), spread 20
    *_templates("pretrained", "b", "logic", [50.0, 50.0]),         # std 0, spread 0
    *_templates("cot", "a", "logic", [40.0, 44.0]),                # std 2, spread 4
]


def test_task_sensitivity_by_hand():
    got = [(s.system.variant, s.group, s.std, s.spread) for s in task_sensitivity(per_task(SENSITIVITY_ROWS))]
    assert got == [
        ("pretrained", "a", pytest.approx((200 / 3) ** 0.5), 20.0),   # deviations −10, 10, 0
        ("pretrained", "b", 0.0, 0.0),
        ("cot", "a", pytest.approx(2.0), 4.0),
    ]


def test_skill_sensitivity_averages_over_tasks():
    got = [(s.system.variant, s.group, s.std, s.spread, s.n_tasks)
           for s in skill_sensitivity(per_task(SENSITIVITY_ROWS))]
    assert got == [
        ("pretrained", "logic", pytest.approx((200 / 3) ** 0.5 / 2), 10.0, 2),
        ("cot", "logic", pytest.approx(2.0), 4.0, 1),
    ]


# ---------------------------------------------------------------- variant comparisons and scaling

# Best per task:  1.3b pretrained a=30 b=20 ; ft a=35 ; cot a=40 b=50
#                 13b  pretrained a=10      ; cot a=60 b=70
COMPARE_ROWS = [
    *_templates("pretrained", "a", "logic", [30.0, 0.0]),
    *_templates("pretrained", "b", "math", [20.0]),
    *_templates("ft", "a", "logic", [35.0]),
    *_templates("cot", "a", "logic", [40.0]),
    *_templates("cot", "b", "math", [50.0, 10.0]),
    *_templates("pretrained", "a", "logic", [10.0], size="13b"),
    *_templates("cot", "a", "logic", [60.0], size="13b"),
    *_templates("cot", "b", "math", [70.0], size="13b"),
]


def test_skill_deltas_by_hand():
    skills = per_skill(per_task(COMPARE_ROWS))
    deltas = variant_deltas({(s.system, s.group): s.best for s in skills})
    got = [(d.minuend.size, d.label, d.group, d.value) for d in deltas]
    assert got == [
        ("1.3b", "ft−pretrained", "logic", 5.0),
        ("1.3b", "cot−pretrained", "logic", 10.0),
        ("1.3b", "cot−pretrained", "math", 30.0),
        ("1.3b", "cot−ft", "logic", 5.0),
        ("13b", "cot−pretrained", "logic", 50.0),   # 13b has no pretrained math and no ft
    ]
    assert deltas[0].heading == "opt/1.3b ft−pretrained"


def test_scaling_deltas_compare_overall_means_per_size():
    # 1.3b: pretrained (30+20)/2 = 25, ft 35, cot (40+50)/2 = 45 ; 13b: pretrained 10, cot (60+70)/2 = 65
    tasks = per_task(COMPARE_ROWS)
    assert [(s.system.size, s.system.variant, s.best) for s in overall(tasks)] == [
        ("1.3b", "pretrained", 25.0), ("1.3b", "ft", 35.0), ("1.3b", "cot", 45.0),
        ("13b", "pretrained", 10.0), ("13b", "cot", 65.0),
    ]
    assert [(d.minuend.size, d.label, d.value) for d in scaling_deltas(tasks)] == [
        ("1.3b", "ft−pretrained", 10.0), ("1.3b", "cot−pretrained", 20.0), ("1.3b", "cot−ft", 10.0),
        ("13b", "cot−pretrained", 55.0),
    ]


def test_deltas_never_cross_sizes_or_models():
    values = {(System("opt", "1.3b", "cot"), "g"): 1.0, (System("opt", "13b", "pretrained"), "g"): 0.0,
              (System("gpt", "1.3b", "pretrained"), "g"): 0.0}
    assert variant_deltas(values) == []


# ---------------------------------------------------------------- tables

def test_markdown_table_escapes_pipes_and_aligns_numbers():
    assert markdown_table(["task", "a|b"], [["x|y", "1.00"]]) == (
        "| task | a\\|b |\n|:---|---:|\n| x\\|y | 1.00 |\n"
    )


# ---------------------------------------------------------------- plots

def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG_MAGIC


def test_plots_write_pngs(tmp_path: Path):
    tasks = per_task(COMPARE_ROWS)
    points = gain_points(tasks, {"a": 0.3, "b": 0.8}, {})
    paths = [
        plot_skill_bars(per_skill(tasks), tmp_path / "bars.png"),
        plot_template_spread(tasks, tmp_path / "nested" / "spread.png"),
        plot_overlap_vs_gain(points, tmp_path / "scatter.png"),
        plot_overlap_vs_gain([], tmp_path / "empty_scatter.png"),   # no overlap known: axes only
    ]
    assert paths == [tmp_path / "bars.png", tmp_path / "nested" / "spread.png", tmp_path / "scatter.png",
                     tmp_path / "empty_scatter.png"]
    assert all(_is_png(p) for p in paths)


def test_overlap_on_real_data(shared_data: Path):
    # GSM8K questions as a stand-in finetuning corpus against an NIV2 math task (whose explanations hold
    # form feeds) and a spatial task: fractions are proper, and a task fully covers itself.
    gsm8k = [json.loads(line)["question"] for line in (shared_data / "gsm8k" / "train_first300.jsonl").open()]
    tasks = {}
    for name in ("task118_semeval_2019_task10_open_vocabulary_mathematical_answer_generation",
                 "task151_tomqa_find_location_easy_clean"):
        task = json.loads((shared_data / "niv2" / f"{name}.json").read_text())
        tasks[name] = [i["input"] for i in task["Instances"]] + [e["explanation"] for e in task["Positive Examples"]]
    for name, overlap in vocabulary_overlap(gsm8k, tasks).items():
        assert 0.0 < overlap.type_overlap < 1.0 and 0.0 < overlap.token_coverage < 1.0, name
        assert vocabulary_overlap(tasks[name], {name: tasks[name]})[name].token_coverage == 1.0
