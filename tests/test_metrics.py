"""Metrics follow NIV2's conventions; aggregation reproduces hand-computed ALERT tables."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from alert_jax.metrics import (
    MetricInputError,
    ScoreRow,
    ScoreRowError,
    System,
    exact_match,
    per_skill,
    per_split,
    per_task,
    relaxed_match,
    rouge_l,
    score,
    size_value,
    tokenize,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_importing_metrics_and_report_leaves_jax_out():
    code = ("import alert_jax.metrics, alert_jax.analysis.report, sys; assert 'jax' not in sys.modules, 'on import'; "
            "alert_jax.metrics.score('a b', ['a']); assert 'jax' not in sys.modules, 'when scoring'")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- tokenizer

def test_tokenize_lowercases_splits_on_non_alnum_and_stems_only_on_request():
    assert tokenize("Running, DOGS! it's 42") == ["running", "dogs", "it", "s", "42"]
    # Porter stems words longer than 3 characters only: "runs"→"run", "dogs"→"dog", "its" kept.
    assert tokenize("Running dogs runs its", stem=True) == ["run", "dog", "run", "its"]


def test_tokenize_treats_non_ascii_letters_as_separators():
    assert tokenize("café 日本語 naïve") == ["caf", "na", "ve"]


# ---------------------------------------------------------------- ROUGE-L

def test_rouge_l_lcs_by_hand():
    # pred [the cat sat on the mat], ref [the cat is on the mat]
    # LCS = the cat on the mat = 5; P = 5/6, R = 5/6, F = 5/6.
    assert rouge_l("the cat sat on the mat", ["the cat is on the mat"]) == pytest.approx(100 * 5 / 6)


def test_rouge_l_uses_porter_stemming():
    # "cats"→"cat", "running"→"run", "runs"→"run": both sides become [cat run]; LCS 2 of 2.
    assert rouge_l("cats running", ["cat runs"]) == pytest.approx(100.0)
    # Order matters for LCS: [run cat] vs [cat run] share only one word in order; P = R = 1/2.
    assert rouge_l("running cats", ["cat runs"]) == pytest.approx(50.0)


def test_rouge_l_ignores_case_and_punctuation():
    # Both sides tokenise to [yes it s true].
    assert rouge_l("Yes!!! It's TRUE.", ["yes, it s true"]) == pytest.approx(100.0)


def test_rouge_l_is_asymmetric_in_length_but_f_measure_balances_it():
    # pred [blue sky], ref [the blue sky]: LCS 2, P = 2/2, R = 2/3, F = 2·1·(2/3)/(1 + 2/3) = 0.8.
    assert rouge_l("blue sky", ["the blue sky"]) == pytest.approx(80.0)


def test_rouge_l_takes_max_over_references():
    # "red car": LCS 0 → 0; "the blue sky": F = 0.8 (above); "sky": P = 1/2, R = 1, F = 2/3.
    assert rouge_l("blue sky", ["red car", "the blue sky", "sky"]) == pytest.approx(80.0)
    assert rouge_l("blue sky", ["sky", "red car"]) == pytest.approx(100 * 2 / 3)


def test_rouge_l_empty_prediction_scores_zero():
    assert rouge_l("", ["anything at all"]) == 0.0
    assert rouge_l("   ...  ", ["anything"]) == 0.0


def test_rouge_l_non_ascii_text():
    # "café au lait" → [caf au lait]; "cafe au lait" → [cafe au lait]: LCS = au lait = 2; P = R = 2/3.
    assert rouge_l("café au lait", ["cafe au lait"]) == pytest.approx(100 * 2 / 3)
    # Text with no ASCII alphanumerics has no tokens at all, so ROUGE-L is 0 even for identical strings
    # (rouge_score's behaviour); exact match still recognises them.
    assert rouge_l("日本語", ["日本語"]) == 0.0
    assert exact_match("日本語", ["日本語"]) == 100.0


# ---------------------------------------------------------------- exact and relaxed match

@pytest.mark.parametrize(
    "prediction, references, exact, relaxed",
    [
        (" Yes \n", ["no", "Yes"], 100.0, 100.0),   # surrounding whitespace is stripped
        ("Yes.", ["Yes"], 0.0, 100.0),               # punctuation only matters to exact match
        ("yes", ["Yes"], 0.0, 100.0),                # so does case
        ("a  b", ["a b"], 0.0, 100.0),               # inner whitespace is collapsed by relaxed only
        ("The Answer: (B)", ["the answer b"], 0.0, 100.0),
        ("don't", ["dont"], 0.0, 100.0),             # punctuation is deleted, not turned into a space
        ("don't", ["don t"], 0.0, 0.0),
        ("don’t", ["dont"], 0.0, 0.0),               # a curly quote is not in string.punctuation
        ("«oui»", ["oui"], 0.0, 0.0),
        ("Ünïcödé", ["ünïcödé"], 0.0, 100.0),        # lower-casing is Unicode-aware
        ("", [""], 100.0, 100.0),
        ("cat", ["cats"], 0.0, 0.0),                 # no stemming outside ROUGE-L
    ],
)
def test_exact_and_relaxed_match(prediction, references, exact, relaxed):
    assert exact_match(prediction, references) == exact
    assert relaxed_match(prediction, references) == relaxed


def test_score_reports_all_three_metrics():
    # [yes] vs [yes]: ROUGE-L 100; "Yes." ≠ "yes" exactly; equal when relaxed.
    assert score("Yes.", ["yes"]) == {"rouge_l": 100.0, "exact_match": 0.0, "relaxed_match": 100.0,
                                     "contains_match": 100.0}


@pytest.mark.parametrize("metric", [rouge_l, exact_match, relaxed_match, score])
def test_empty_references_are_an_error(metric):
    with pytest.raises(MetricInputError, match="references is empty"):
        metric("anything", [])


@pytest.mark.parametrize("metric", [rouge_l, exact_match, relaxed_match])
def test_a_bare_string_is_not_a_reference_list(metric):
    with pytest.raises(MetricInputError, match="sequence of strings"):
        metric("a", "abc")


# ---------------------------------------------------------------- properties

_references = st.lists(st.text(max_size=60), min_size=1, max_size=3)


@settings(max_examples=150, deadline=None)
@given(prediction=st.text(max_size=80), references=_references)
def test_metrics_never_raise_and_stay_in_range(prediction, references):
    for value in score(prediction, references).values():
        assert 0.0 <= value <= 100.0


# Arbitrary Unicode rarely contains ASCII words, so mix in English-like text for the ROUGE-L part.
_texts = st.one_of(st.text(max_size=80), st.from_regex(r"[A-Za-z0-9 ,.'!?-]{1,60}", fullmatch=True))


@settings(max_examples=150, deadline=None)
@given(text=_texts)
def test_a_text_matches_itself(text):
    assert exact_match(text, [text]) == 100.0
    assert relaxed_match(text, [text]) == 100.0
    assume(tokenize(text, stem=True))
    assert rouge_l(text, [text]) == 100.0


@settings(max_examples=100, deadline=None)
@given(prediction=st.text(max_size=40), references=_references)
def test_max_over_references_is_the_max_of_single_scores(prediction, references):
    assert rouge_l(prediction, references) == max(rouge_l(prediction, [r]) for r in references)


# ---------------------------------------------------------------- aggregation

def _row(variant: str, task: str, skill: str, split: str, template: str, rouge: float,
         model: str = "opt-1.3b", size: str = "1.3b", exact: float = 0.0) -> dict:
    return {"model": model, "variant": variant, "size": size, "task": task, "skill": skill, "split": split,
            "template": template, "rouge_l": rouge, "exact_match": exact, "relaxed_match": 0.0, "n": 10}


# pretrained: t1 T1=10 T2=30 | t2 T1=50 T2=50 T3=20 | t3 T1=40 ; cot: t1 T1=60 T2=40 | t3 T1=70
ROWS = [
    _row("cot", "t3", "math", "held_out", "T1", 70.0),
    _row("pretrained", "t1", "logic", "in_domain", "T2", 30.0, exact=100.0),
    _row("pretrained", "t1", "logic", "in_domain", "T1", 10.0),
    _row("pretrained", "t2", "logic", "held_out", "T1", 50.0),
    _row("pretrained", "t2", "logic", "held_out", "T2", 50.0),
    _row("pretrained", "t2", "logic", "held_out", "T3", 20.0),
    _row("pretrained", "t3", "math", "held_out", "T1", 40.0),
    _row("cot", "t1", "logic", "in_domain", "T1", 60.0),
    _row("cot", "t1", "logic", "in_domain", "T2", 40.0),
]
PRE = System("opt-1.3b", "1.3b", "pretrained")
COT = System("opt-1.3b", "1.3b", "cot")


def test_per_task_best_mean_std_by_hand():
    tasks = per_task(ROWS)
    got = [(t.system, t.task, t.best, t.mean, t.std) for t in tasks]
    assert got == [
        (PRE, "t1", 30.0, 20.0, pytest.approx(10.0)),                 # pstdev(10, 30) = 10
        (PRE, "t2", 50.0, 40.0, pytest.approx(math.sqrt(200.0))),     # deviations 10, 10, −20 → 600/3
        (PRE, "t3", 40.0, 40.0, 0.0),
        (COT, "t1", 60.0, 50.0, pytest.approx(10.0)),
        (COT, "t3", 70.0, 70.0, 0.0),
    ]
    assert tasks[0].by_template == (("T1", 10.0), ("T2", 30.0))
    assert (tasks[0].skill, tasks[0].split) == ("logic", "in_domain")


def test_per_task_of_another_metric():
    # Only pretrained t1 T2 has exact match 100: best 100, mean 50.
    exact = {(t.system.variant, t.task): (t.best, t.mean) for t in per_task(ROWS, "exact_match")}
    assert exact[("pretrained", "t1")] == (100.0, 50.0)
    assert exact[("cot", "t1")] == (0.0, 0.0)


def test_per_skill_is_mean_of_task_best_and_task_mean():
    got = [(g.system, g.group, g.best, g.mean, g.n_tasks) for g in per_skill(per_task(ROWS))]
    assert got == [
        (PRE, "logic", 40.0, 30.0, 2),   # best (30 + 50)/2, mean (20 + 40)/2
        (PRE, "math", 40.0, 40.0, 1),
        (COT, "logic", 60.0, 50.0, 1),
        (COT, "math", 70.0, 70.0, 1),
    ]


def test_per_split_orders_in_domain_before_held_out():
    got = [(g.system.variant, g.group, g.best, g.mean) for g in per_split(per_task(ROWS))]
    assert got == [
        ("pretrained", "in_domain", 30.0, 20.0),
        ("pretrained", "held_out", 45.0, 40.0),   # best (50 + 40)/2, mean (40 + 40)/2
        ("cot", "in_domain", 60.0, 50.0),
        ("cot", "held_out", 70.0, 70.0),
    ]


def test_systems_are_ordered_by_model_size_value_then_variant():
    rows = [_row(v, "t", "s", "held_out", "T1", 1.0, model="opt", size=size)
            for size in ("13b", "125m", "1.3b") for v in ("cot", "custom", "ft", "pretrained")]
    order = [(t.system.size, t.system.variant) for t in per_task(rows)]
    assert order == [(size, v) for size in ("125m", "1.3b", "13b") for v in ("pretrained", "ft", "cot", "custom")]


def test_size_value():
    assert size_value("125m") == 125e6
    assert size_value("1.3B") == 1.3e9
    assert size_value("175b") == 175e9
    assert size_value("huge") == math.inf


def test_system_labels_do_not_repeat_the_size():
    assert System("opt-1.3b", "1.3b", "cot").label == "opt-1.3b/cot"
    assert System("opt", "13b", "ft").label == "opt/13b/ft"


def test_duplicate_template_rows_are_an_error():
    with pytest.raises(ScoreRowError, match=r"duplicate row for opt-1.3b/cot × t3 × T1"):
        per_task([*ROWS, ROWS[0]])


def test_a_task_with_two_skills_is_an_error():
    with pytest.raises(ScoreRowError, match="task 't3' has skill/split"):
        per_task([*ROWS, _row("ft", "t3", "logic", "held_out", "T1", 1.0)])


def test_unknown_metric_is_an_error():
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        per_task(ROWS, "bleu")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"rouge_l": None}, "key 'rouge_l' must be a number"),
        ({"rouge_l": 150.0}, "key 'rouge_l' must be a number in \\[0, 100\\]"),
        ({"exact_match": True}, "key 'exact_match' must be a number"),
        ({"task": 3}, "key 'task' must be a string"),
        ({"n": 0}, "key 'n' must be a positive integer"),
        ({"n": 2.0}, "key 'n' must be a positive integer"),
    ],
)
def test_bad_row_values_name_the_key(change, message):
    with pytest.raises(ScoreRowError, match=message):
        ScoreRow.from_dict({**ROWS[0], **change})


def test_missing_key_is_named():
    row = dict(ROWS[0])
    del row["skill"]
    with pytest.raises(ScoreRowError, match="missing key 'skill'"):
        ScoreRow.from_dict(row)


@pytest.mark.parametrize("prediction, references, expected", [
    ("The answer is yes, because it rains.", ["Yes"], 100.0),   # "yes" occurs as a word after normalisation
    ("It is not raining", ["no"], 0.0),                          # whole words: "no" is not inside "not"
    ("New York City", ["new york", "boston"], 100.0),            # best over references
    ("york new", ["New York"], 0.0),                             # word order matters
    ("Paris.", ["paris"], 100.0),                                # contains ⊇ relaxed match
    ("", ["?"], 100.0),                                          # empty reference matches only an empty prediction
    ("maybe", ["?"], 0.0),
])
def test_contains_match_hand_computed(prediction, references, expected):
    from alert_jax.metrics import contains_match

    assert contains_match(prediction, references) == expected


def test_contains_match_is_scored_and_never_below_relaxed_match():
    from alert_jax.metrics import contains_match

    result = score("Yes, it is.", ["yes"])
    assert result["relaxed_match"] == 0.0 and result["contains_match"] == 100.0
    for prediction, reference in [("a b", "a b"), ("x", "y"), ("The answer is 4", "4")]:
        assert contains_match(prediction, [reference]) >= relaxed_match(prediction, [reference])
