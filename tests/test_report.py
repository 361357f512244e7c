"""`write_report` and `alert-jax report` on small hand-built runs with hand-computed tables."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from alert_jax.analysis.report import ReportInputError, load_scores, write_report
from alert_jax.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(variant: str, task: str, skill: str, split: str, template: str, rouge: float, exact: float = 0.0) -> dict:
    return {"model": "opt-1.3b", "variant": variant, "size": "1.3b", "task": task, "skill": skill, "split": split,
            "template": template, "rouge_l": rouge, "exact_match": exact, "relaxed_match": 0.0, "n": 4}


# ROUGE-L per template (max / mean):
#   task697 logical in_domain  pretrained 20, 40 (40/30)   cot 50, 70 (70/60)   ft 45, 35 (45/40)
#   task151 spatial held_out   pretrained 10    (10/10)    cot 30, 10 (30/20)   ft 20     (20/20)
#   task190 logical held_out   pretrained 60    (60/60)    cot 80, 90 (90/85)   ft —
RUN_A = [
    _row("pretrained", "task697", "logical", "in_domain", "T1", 20.0),
    _row("pretrained", "task697", "logical", "in_domain", "T2", 40.0),
    _row("pretrained", "task151", "spatial", "held_out", "T1", 10.0),
    _row("pretrained", "task190", "logical", "held_out", "T1", 60.0),
    _row("cot", "task697", "logical", "in_domain", "T1", 50.0),
    _row("cot", "task697", "logical", "in_domain", "T2", 70.0, exact=100.0),
    _row("cot", "task151", "spatial", "held_out", "T1", 30.0),
    _row("cot", "task151", "spatial", "held_out", "T2", 10.0),
    _row("cot", "task190", "logical", "held_out", "T1", 80.0),
    _row("cot", "task190", "logical", "held_out", "T2", 90.0),
]
RUN_B = [
    _row("ft", "task697", "logical", "in_domain", "T1", 45.0),
    _row("ft", "task697", "logical", "in_domain", "T2", 35.0),
    _row("ft", "task151", "spatial", "held_out", "T1", 20.0),
]
COLUMNS = ["opt-1.3b/pretrained", "opt-1.3b/ft", "opt-1.3b/cot"]


def _write_run(directory: Path, rows: list[dict], overlap: dict | None = None) -> Path:
    directory.mkdir(parents=True)
    (directory / "scores.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    if overlap is not None:
        (directory / "overlap.json").write_text(json.dumps(overlap))
    return directory


def _table(markdown: str, heading: str) -> dict[str, dict[str, str]]:
    """The markdown table right under `heading`, as {first cell: {column: cell}}."""
    lines = markdown.split(heading + "\n", 1)[1].strip().splitlines()
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if line.startswith("|")]
    rows = rows[: next((i for i, line in enumerate(lines) if not line.startswith("|")), len(lines))]
    header, body = rows[0], rows[2:]
    return {cells[0]: dict(zip(header, cells)) for cells in body}


def _cells(table: dict[str, dict[str, str]], row: str, columns: list[str]) -> list[str]:
    return [table[row][column] for column in columns]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("runs")
    run_a = _write_run(root / "a", RUN_A)
    run_b = _write_run(root / "b", RUN_B, overlap={"task697": 0.9, "task151": 0.4})
    path = write_report([run_a, run_b], root / "out")
    return path, path.read_text()


def test_report_path(report):
    path, _ = report
    assert path.name == "report.md" and path.is_file()


def test_per_skill_tables(report):
    _, markdown = report
    best = _table(markdown, "### Per skill (ROUGE-L) — max over templates")
    assert _cells(best, "logical", COLUMNS) == ["50.00", "45.00", "80.00"]   # (40+60)/2, 45, (70+90)/2
    assert _cells(best, "spatial", COLUMNS) == ["10.00", "20.00", "30.00"]
    mean = _table(markdown, "### Per skill (ROUGE-L) — mean over templates")
    assert _cells(mean, "logical", COLUMNS) == ["45.00", "40.00", "72.50"]   # (30+60)/2, 40, (60+85)/2
    assert _cells(mean, "spatial", COLUMNS) == ["10.00", "20.00", "20.00"]


def test_per_task_tables_mark_missing_systems(report):
    _, markdown = report
    best = _table(markdown, "### Per task (ROUGE-L) — max over templates")
    assert list(best) == ["task697", "task190", "task151"]   # by skill, then in-domain before held-out
    assert best["task190"]["skill"] == "logical" and best["task190"]["split"] == "held_out"
    assert _cells(best, "task190", COLUMNS) == ["60.00", "–", "90.00"]
    mean = _table(markdown, "### Per task (ROUGE-L) — mean over templates")
    assert _cells(mean, "task697", COLUMNS) == ["30.00", "40.00", "60.00"]


def test_split_tables(report):
    _, markdown = report
    best = _table(markdown, "### Per split (ROUGE-L) — max over templates")
    assert list(best) == ["in_domain", "held_out"]
    assert _cells(best, "in_domain", COLUMNS) == ["40.00", "45.00", "70.00"]
    assert _cells(best, "held_out", COLUMNS) == ["35.00", "20.00", "60.00"]   # (10+60)/2, 20, (30+90)/2


def test_summary_table(report):
    _, markdown = report
    summary = _table(markdown, "## Summary (mean over all tasks)\n")
    # max over tasks: pretrained (40+10+60)/3, ft (45+20)/2, cot (70+30+90)/3
    assert _cells(summary, "ROUGE-L max", COLUMNS) == ["36.67", "32.50", "63.33"]
    # exact match 100 only for cot task697 T2: cot max (100+0+0)/3, mean (50+0+0)/3
    assert _cells(summary, "Exact match max", COLUMNS) == ["0.00", "0.00", "33.33"]
    assert _cells(summary, "Exact match mean", COLUMNS) == ["0.00", "0.00", "16.67"]


def test_delta_and_scaling_tables(report):
    _, markdown = report
    deltas = _table(markdown, "## Deltas between variants (ROUGE-L, max over templates)\n")
    pairs = ["opt-1.3b ft−pretrained", "opt-1.3b cot−pretrained", "opt-1.3b cot−ft"]
    assert _cells(deltas, "logical", pairs) == ["-5.00", "30.00", "35.00"]
    assert _cells(deltas, "spatial", pairs) == ["10.00", "20.00", "10.00"]
    # all tasks: 32.5 − 36.667, 63.333 − 36.667, 63.333 − 32.5
    assert _cells(deltas, "all", pairs) == ["-4.17", "26.67", "30.83"]
    scaling = _table(markdown, "## Scaling across sizes (ROUGE-L, mean over tasks of max over templates)\n")
    assert _cells(scaling, "opt-1.3b", ["pretrained", "ft", "cot", "cot−pretrained"]) == [
        "36.67", "32.50", "63.33", "26.67"]


def test_template_sensitivity_tables(report):
    _, markdown = report
    std = _table(markdown, "### Template sensitivity — std over templates (mean over the skill's tasks)")
    # logical: pretrained (pstdev(20,40)=10 + 0)/2; ft pstdev(45,35) = 5; cot (10 + 5)/2
    assert _cells(std, "logical", COLUMNS) == ["5.00", "5.00", "7.50"]
    spread = _table(markdown, "### Template sensitivity — max − min over templates (mean over the skill's tasks)")
    assert _cells(spread, "logical", COLUMNS) == ["10.00", "10.00", "15.00"]   # (20+0)/2, 10, (20+10)/2


def test_csvs(report):
    path, _ = report
    with (path.parent / "per_task.csv").open() as handle:
        tasks = list(csv.DictReader(handle))
    assert len(tasks) == 3 * 8   # three metrics × eight system-task pairs
    cot = next(r for r in tasks if (r["system"], r["task"], r["metric"]) == ("opt-1.3b/cot", "task697", "rouge_l"))
    assert {k: cot[k] for k in ("variant", "skill", "split", "best", "mean", "template_std", "template_spread",
                                "T1", "T2")} == {
        "variant": "cot", "skill": "logical", "split": "in_domain", "best": "70.0000", "mean": "60.0000",
        "template_std": "10.0000", "template_spread": "20.0000", "T1": "50.0000", "T2": "70.0000"}
    pre = next(r for r in tasks if (r["system"], r["task"], r["metric"]) == ("opt-1.3b/pretrained", "task151",
                                                                              "rouge_l"))
    assert (pre["T1"], pre["T2"]) == ("10.0000", "")   # a template the system was not run with
    with (path.parent / "per_skill.csv").open() as handle:
        skills = list(csv.DictReader(handle))
    logical = next(r for r in skills if (r["system"], r["skill"], r["metric"]) == ("opt-1.3b/pretrained", "logical",
                                                                                   "rouge_l"))
    assert {k: logical[k] for k in ("best", "mean", "template_std", "template_spread", "n_tasks")} == {
        "best": "50.0000", "mean": "45.0000", "template_std": "5.0000", "template_spread": "10.0000", "n_tasks": "2"}


def test_pngs_are_written_and_linked(report):
    path, markdown = report
    for name in ("skill_bars.png", "template_spread.png", "overlap_vs_gain.png"):
        assert (path.parent / name).read_bytes()[:8] == PNG_MAGIC
        assert f"({name})" in markdown


def test_without_overlap_there_is_no_scatter(tmp_path: Path):
    run = _write_run(tmp_path / "run", RUN_A[:4] + RUN_A[4:6])
    path = write_report([run], tmp_path / "out")
    assert not (path.parent / "overlap_vs_gain.png").exists()
    assert "no overlap-vs-gain figure" in path.read_text()
    # An explicit overlap mapping is enough.
    path = write_report([run], tmp_path / "out2", overlap={"task697": 0.5})
    assert (path.parent / "overlap_vs_gain.png").read_bytes()[:8] == PNG_MAGIC


def test_registering_the_subcommand_loads_neither_matplotlib_nor_rouge_score():
    # The CLI imports this module for every command; `alert-jax --help` should stay instant.
    code = ("import alert_jax.cli.report, sys; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'rouge_score', 'nltk', 'jax'}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_cli_subcommand(tmp_path: Path, capsys):
    run = _write_run(tmp_path / "run", RUN_A[:2])
    assert main(["report", str(run), "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out" / "report.md")
    with pytest.raises(SystemExit):   # --out is required
        main(["report", str(run)])


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "a score row must be a JSON object"),
        (json.dumps({k: v for k, v in RUN_A[0].items() if k != "n"}), "missing key 'n'"),
        (json.dumps({**RUN_A[0], "rouge_l": "high"}), "key 'rouge_l' must be a number"),
    ],
)
def test_a_bad_line_is_named_by_file_and_line(tmp_path: Path, bad_line: str, message: str):
    scores = tmp_path / "scores.jsonl"
    scores.write_text(json.dumps(RUN_A[0]) + "\n\n" + bad_line + "\n")   # line 2 is blank and skipped
    with pytest.raises(ReportInputError, match="^" + re.escape(f"{scores}:3: {message}")):
        write_report([tmp_path], tmp_path / "out")
    with pytest.raises(ReportInputError, match="^" + re.escape(f"{scores}:3: ")):
        load_scores(scores)


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path):
    (tmp_path / "scores.jsonl").write_bytes(b"\xff\xfe{}\n")
    with pytest.raises(ReportInputError, match="^" + re.escape(f"{tmp_path / 'scores.jsonl'}: not UTF-8 text")):
        write_report([tmp_path], tmp_path / "out")


def test_line_separators_inside_json_strings_do_not_split_lines(tmp_path: Path):
    scores = tmp_path / "scores.jsonl"
    scores.write_text(json.dumps({**RUN_A[0], "task": "a\u2028b"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert [row.task for row in load_scores(scores)] == ["a\u2028b"]


def test_a_run_dir_without_scores_is_an_error(tmp_path: Path):
    with pytest.raises(ReportInputError, match="^" + re.escape(f"{tmp_path}: no scores.jsonl")):
        write_report([tmp_path], tmp_path / "out")


def test_the_same_row_in_two_runs_is_an_error(tmp_path: Path):
    first, second = _write_run(tmp_path / "a", RUN_A[:1]), _write_run(tmp_path / "b", RUN_A[:1])
    with pytest.raises(ReportInputError, match="duplicate row for opt-1.3b/pretrained × task697 × T1"):
        write_report([first, second], tmp_path / "out")


def test_a_bad_overlap_value_names_file_and_key(tmp_path: Path):
    run = _write_run(tmp_path / "run", RUN_A[:1], overlap={"task697": 1.5})
    with pytest.raises(ReportInputError, match=r"overlap.json: key 'task697': overlap must be a number in \[0, 1\]"):
        write_report([run], tmp_path / "out")


def test_contains_match_gets_its_table_and_older_rows_without_it_still_load(tmp_path):
    """Rows with the lenient metric get a 'Contains match' table; rows written before it existed load without."""
    with_contains = [{**row, "contains_match": 100.0 if row["template"] == "T1" else 50.0} for row in RUN_B]
    report = write_report([_write_run(tmp_path / "a", RUN_A), _write_run(tmp_path / "b", with_contains)],
                          tmp_path / "out").read_text()
    table = _table(report, "### Per skill (Contains match) — max over templates")
    assert table["logical"]["opt-1.3b/ft"] == "100.00" and table["spatial"]["opt-1.3b/ft"] == "100.00"
    assert table["logical"]["opt-1.3b/cot"] == "–"  # RUN_A's rows carry no contains_match
    old_only = write_report([_write_run(tmp_path / "c", RUN_A)], tmp_path / "out2").read_text()
    assert "Contains match" not in old_only
