"""Pairwise ranking accuracy of sampled CoTs (the paper's assessment-misalignment measure) and its report."""
import json
import math

import pytest

from alert_jax.analysis.assessment import (ASSESSMENT_FILE, AssessmentError, assessment_section, load_assessment,
                                           pairwise_accuracy, record_assessment)

RECORDS = [  # q1: correct at -1.0, wrong at -0.5 and -2.0; q2: correct -1.0, wrong -1.0 (a tie); q3: all correct
    {"question": "q1", "correct": True, "score": -1.0},
    {"question": "q1", "correct": False, "score": -0.5},
    {"question": "q1", "correct": False, "score": -2.0},
    {"question": "q2", "correct": True, "score": -1.0},
    {"question": "q2", "correct": False, "score": -1.0},
    {"question": "q3", "correct": True, "score": -3.0},
]


def test_pairwise_accuracy_by_hand():
    measure = pairwise_accuracy(RECORDS)
    assert measure["pairs"] == 3  # (q1: 2 pairs, q2: 1 pair, q3: none)
    assert measure["pair_accuracy"] == pytest.approx((0 + 1 + 0.5) / 3)
    assert (measure["questions"], measure["samples"]) == (3, 6)
    assert measure["correct_fraction"] == pytest.approx(3 / 6)


def test_other_scores_replace_the_stored_ones():
    rescored = [-1.0, -3.0, -2.0, 0.0, -1.0, -3.0]
    assert pairwise_accuracy(RECORDS, rescored)["pair_accuracy"] == pytest.approx(1.0)


def test_no_pairs_is_nan_not_a_crash():
    assert math.isnan(pairwise_accuracy(RECORDS[-1:])["pair_accuracy"])


def test_recorded_measures_accumulate_per_label_and_render(tmp_path):
    path = tmp_path / ASSESSMENT_FILE
    record_assessment(path, "opt-tiny/cot", pairwise_accuracy(RECORDS))
    record_assessment(path, "opt-tiny/aft", pairwise_accuracy(RECORDS, [-1.0, -3.0, -2.0, 0.0, -1.0, -3.0]))
    entries = load_assessment(path)
    assert set(entries) == {"opt-tiny/cot", "opt-tiny/aft"}
    table = assessment_section(entries)
    assert "| opt-tiny/aft | 1.000 | 3 |" in table and "| opt-tiny/cot | 0.500 | 3 |" in table


def test_a_malformed_file_names_the_file_and_key(tmp_path):
    path = tmp_path / ASSESSMENT_FILE
    path.write_text(json.dumps({"m": {"pairs": 1}}))
    with pytest.raises(AssessmentError, match=r"assessment.json: key 'm': missing 'pair_accuracy'"):
        load_assessment(path)
