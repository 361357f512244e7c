"""The paper's analyses from `alert-jax report`: overlap vs gain with Pearson/Spearman r, template memorisation."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from alert_jax.analysis.correlation import pearson, ranks, spearman
from alert_jax.analysis.memorisation import template_gaps
from alert_jax.analysis.overlap import experiment_overlap
from alert_jax.cli import main
from alert_jax.config import load_config
from alert_jax.metrics.aggregate import per_task

TASKS = [("synthetic_arithmetic", "mathematics", "in_domain"), ("synthetic_rule_chain", "deductive", "in_domain"),
         ("synthetic_room_tracking", "spatial", "in_domain"), ("synthetic_cause_effect", "causal", "in_domain"),
         ("synthetic_analogy", "analogical", "held_out"), ("synthetic_boolean_logic", "logical", "held_out")]


def test_pearson_and_spearman_hand_computed():
    # x = 1,2,3,4  y = 2,4,5,9: means 2.5 and 5; cov = 1.5*3 + .5*1 + .5*0 + 1.5*4 = 11; var_x = 5; var_y = 26.
    assert pearson([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(11 / math.sqrt(5 * 26))
    assert spearman([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(1.0)  # monotone: ranks agree exactly
    assert spearman([1, 2, 3], [3, 1, 2]) == pytest.approx(-0.5)  # ranks (1,2,3) vs (3,1,2): r = -1.5/3
    assert ranks([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]  # ties share the mean rank
    # y ranks with a tie (1, 2.5, 2.5, 4) against x ranks (1, 2, 3, 4): cov 4.5, var 5 and 4.5 → r = 4.5/sqrt(22.5)
    assert spearman([1, 2, 3, 4], [0, 7, 7, 9]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3])) and math.isnan(spearman([1], [2]))


def _rows(variant: str, scores: dict[str, tuple[float, float]]) -> list[dict]:
    """Score rows of one system: per task (T1 score, T5 score)."""
    return [{"model": "opt-tiny", "variant": variant, "size": "tiny", "task": task, "skill": skill, "split": split,
             "template": template, "rouge_l": value, "exact_match": 0.0, "relaxed_match": 0.0, "n": 5}
            for task, skill, split in TASKS for template, value in zip(("T1", "T5"), scores[task])]


def test_template_memorisation_hand_computed():
    rows = _rows("ft", {t: (10.0, 40.0) for t, _, _ in TASKS}) + _rows("pretrained", {t: (20.0, 20.0) for t, _, _ in TASKS})
    gaps = {g.system.variant: g for g in template_gaps(per_task(rows))}
    assert (gaps["ft"].seen, gaps["ft"].unseen, gaps["ft"].gap, gaps["ft"].n_tasks) == (40.0, 10.0, 30.0, 6)
    assert gaps["pretrained"].gap == 0.0


def _training_run(root: Path, variant: str, rows: list[dict]) -> Path:
    """A training workdir as the trainer leaves it (config.yaml) with its evaluation in eval/."""
    (root / "eval").mkdir(parents=True)
    cfg = {"data": {"suite": "synthetic", "variant": variant, "examples_per_task": 30}, "eval": {"suite": "synthetic"}}
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    (root / "eval" / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "eval"


def test_report_on_two_evaluated_runs_writes_overlap_vs_gain_and_correlations(tmp_path, capsys):
    pretrained = {t: (10.0, 10.0) for t, _, _ in TASKS}
    ft_scores = {t: (10.0 + 3 * i, 20.0 + 5 * i) for i, (t, _, _) in enumerate(TASKS)}
    cot_scores = {t: (30.0 - 2 * i, 15.0) for i, (t, _, _) in enumerate(TASKS)}
    ft = _training_run(tmp_path / "ft", "ft", _rows("pretrained", pretrained) + _rows("ft", ft_scores))
    cot = _training_run(tmp_path / "cot", "cot", _rows("cot", cot_scores))
    assert main(["report", str(ft), str(cot), "--out", str(tmp_path / "report")]) == 0
    out = tmp_path / "report"
    assert (out / "overlap_vs_gain.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()

    for variant, scores in (("ft", ft_scores), ("cot", cot_scores)):
        overlap = experiment_overlap(load_config(tmp_path / variant / "config.yaml"))
        gains = [max(scores[t]) - 10.0 for t, _, _ in TASKS]
        xs = [overlap[t] for t, _, _ in TASKS]
        line = next(l for l in report.splitlines() if l.startswith(f"| opt-tiny {variant}−pretrained |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1:] == ["6", f"{pearson(xs, gains):.2f}", f"{spearman(xs, gains):.2f}"]
    with open(out / "overlap_gain.csv") as handle:
        points = list(csv.DictReader(handle))
    assert len(points) == 12 and {p["gain"] for p in points} == {"opt-tiny ft−pretrained",
                                                           "opt-tiny cot−pretrained"}
    cot_overlap = experiment_overlap(load_config(tmp_path / "cot" / "config.yaml"))
    ft_overlap = experiment_overlap(load_config(tmp_path / "ft" / "config.yaml"))
    assert any(cot_overlap[t] > ft_overlap[t] for t, _, _ in TASKS)  # rationales add words: overlap is per variant
    assert "| opt-tiny/ft | 32.50 | 17.50 | 15.00 | 6 |" in report  # T5: mean of 20+5i = 32.5; T1: 10+3i = 17.5


def test_an_explicit_finetune_config_that_cannot_be_read_is_an_error_naming_it(tmp_path, capsys):
    run = _training_run(tmp_path / "ft", "ft", _rows("ft", {t: (1.0, 2.0) for t, _, _ in TASKS}))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"data": {"suite": "no_such_suite"}}))
    assert main(["report", str(run), "--out", str(tmp_path / "r"), "--finetune-config", str(bad)]) == 2
    assert f"--finetune-config {bad}" in capsys.readouterr().err
