"""`alert-jax evaluate`: one generations line per model × task × template × instance, scores that are the
means of the instance metrics, and resumption after a kill without redoing or duplicating work."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import alert_jax
import alert_jax.generation
from alert_jax.analysis.report import load_scores
from alert_jax.data.example import Example, Task
from alert_jax.data.selection import evaluated_instances
from alert_jax.data.suites import SuiteTask, load_suite
from alert_jax.data.templates import extract_answer, render_prompt
from alert_jax.data.tokenizer import SentencePieceTokenizer
from alert_jax.evaluate import (
    GENERATIONS_FILE, EvaluateError, evaluate, plan, read_generations,
)
from alert_jax.cli import main
from alert_jax.cli.evaluate import eval_config_from_args, register
from alert_jax.config import EvalConfig
from alert_jax.metrics import METRICS, score
from tests.tiny_model import save_random_tiny_model

TEMPLATES = ("T1", "T5")
N = 3  # instances per task
RUN = dict(templates=TEMPLATES, max_new_tokens=8, batch_size=4, max_examples_per_task=N)
FIELDS = {"model", "variant", "size", "task", "skill", "split", "template", "id", "prompt", "generation",
          "prediction", "references", "source", *METRICS}


def _evaluate(model: str, suite: str, workdir: Path, **settings) -> Path:
    return evaluate(model, EvalConfig(suite=suite, **settings), workdir)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def _synthetic_eval_tasks() -> list:
    suite = load_suite("synthetic")
    return [(entry, task) for entry, task in suite.load_tasks() if entry in suite.eval_tasks]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A random opt-tiny saved like a training workdir's model: its vocabulary is its tokenizer's, kept beside it."""
    directory = tmp_path_factory.mktemp("model") / "tiny"
    corpus = [f"{t.definition}\n{ex.input} {ex.references[0]}" for _, t in _synthetic_eval_tasks()
              for ex in t.examples]
    tokenizer = SentencePieceTokenizer.train(corpus, vocab_size=400)
    return save_random_tiny_model(directory, tokenizer)


@pytest.fixture(scope="module")
def finished(model_dir, tmp_path_factory) -> Path:
    """A workdir holding one complete evaluation of the synthetic suite."""
    workdir = tmp_path_factory.mktemp("eval")
    _evaluate(str(model_dir), "synthetic", workdir, variant="cot", size="tiny", **RUN)
    return workdir


@pytest.fixture
def prompts_seen(monkeypatch) -> list[str]:
    """Every prompt handed to `generate_text` during the test."""
    seen: list[str] = []
    real = alert_jax.generation.generate_text

    def spy(model, tokenizer, prompts, **kwargs):
        seen.extend(prompts)
        return real(model, tokenizer, prompts, **kwargs)

    monkeypatch.setattr(alert_jax.generation, "generate_text", spy)
    return seen


def test_one_line_per_task_template_instance_with_its_prompt_and_scores(finished):
    tasks = _synthetic_eval_tasks()
    lines = _lines(finished / GENERATIONS_FILE)
    assert len(tasks) == 6 and len(lines) == len(tasks) * len(TEMPLATES) * N
    by_key = {(r["task"], r["template"], r["id"]): r for r in lines}
    assert len(by_key) == len(lines)
    for entry, task in tasks:
        for template in TEMPLATES:
            for example in evaluated_instances(entry.task, task.examples, N):  # the seeded choice of N
                record = by_key[(entry.task, template, example.id)]
                assert set(record) == FIELDS
                assert (record["model"], record["variant"], record["size"]) == ("tiny", "cot", "tiny")
                assert (record["skill"], record["split"]) == (entry.skill, entry.split)
                assert record["prompt"] == render_prompt(template, task, example)
                assert record["references"] == list(example.references)
                assert record["prediction"] == extract_answer(record["generation"])
                expected = score(record["prediction"], record["references"])
                assert {m: record[m] for m in METRICS} == pytest.approx(expected)


def test_scores_are_instance_means_per_model_task_template(finished):
    lines = _lines(finished / GENERATIONS_FILE)
    rows = _lines(finished / "scores.jsonl")
    assert len(rows) == 6 * len(TEMPLATES)
    for row in rows:
        members = [r for r in lines if (r["task"], r["template"]) == (row["task"], row["template"])]
        assert row["n"] == len(members) == N
        for metric in METRICS:
            recomputed = [score(r["prediction"], r["references"])[metric] for r in members]
            assert row[metric] == pytest.approx(sum(recomputed) / N)
        assert {k: row[k] for k in ("model", "variant", "size", "skill", "split")} == {
            k: members[0][k] for k in ("model", "variant", "size", "skill", "split")}
    assert len(load_scores(finished / "scores.jsonl")) == len(rows)  # the report reads them as they are


def test_scores_count_the_answer_a_generation_states(model_dir, tmp_path, monkeypatch):
    """With the first instance of every task answered in CoT form and the others not, each row is 100/N."""
    first = {render_prompt(t, task, chosen[0]): chosen[0].references[0]
             for entry, task in _synthetic_eval_tasks() for t in TEMPLATES
             for chosen in [evaluated_instances(entry.task, task.examples, N)]}

    def answer_first(model, tokenizer, prompts, **kwargs):
        return [f" Some reasoning. The answer is {first[p]}." if p in first else " ???" for p in prompts]

    monkeypatch.setattr(alert_jax.generation, "generate_text", answer_first)
    rows = load_scores(_evaluate(str(model_dir), "synthetic", tmp_path, **RUN))
    assert len(rows) == 6 * len(TEMPLATES)
    for row in rows:
        assert (row.exact_match, row.relaxed_match, row.contains_match, row.rouge_l) == pytest.approx((100 / N,) * 4)


def test_resumes_after_a_kill_generating_only_what_is_missing(finished, model_dir, tmp_path, prompts_seen):
    workdir = tmp_path / "eval"
    shutil.copytree(finished, workdir)
    full = (workdir / GENERATIONS_FILE).read_text(encoding="utf-8").split("\n")[:-1]
    k = 10
    cut = "\n".join(full[:k]) + "\n" + full[k][: len(full[k]) // 2]  # killed while writing line k+1
    (workdir / GENERATIONS_FILE).write_text(cut, encoding="utf-8")
    (workdir / "scores.jsonl").unlink()

    _evaluate(str(model_dir), "synthetic", workdir, variant="cot", size="tiny", **RUN)

    assert sorted(prompts_seen) == sorted(json.loads(line)["prompt"] for line in full[k:])
    resumed = (workdir / GENERATIONS_FILE).read_text(encoding="utf-8").split("\n")[:-1]
    assert resumed[:k] == full[:k]
    keys = [(r["task"], r["template"], r["id"]) for r in map(json.loads, resumed)]
    assert len(keys) == len(set(keys)) == len(full)
    assert len(_lines(workdir / "scores.jsonl")) == 6 * len(TEMPLATES)


def test_a_finished_run_generates_nothing_more(finished, model_dir, tmp_path, prompts_seen):
    workdir = tmp_path / "eval"
    shutil.copytree(finished, workdir)
    before = (workdir / GENERATIONS_FILE).read_bytes()
    _evaluate(str(model_dir), "synthetic", workdir, variant="cot", size="tiny", **RUN)
    assert prompts_seen == []
    assert (workdir / GENERATIONS_FILE).read_bytes() == before


def test_models_sharing_a_workdir_get_their_own_rows(finished, model_dir, tmp_path, prompts_seen):
    workdir = tmp_path / "eval"
    shutil.copytree(finished, workdir)
    _evaluate(str(model_dir), "synthetic", workdir, templates=("T5",), max_new_tokens=4, batch_size=8,
             max_examples_per_task=1, label="other", variant="pretrained", size="tiny")
    assert len(prompts_seen) == 6
    rows = _lines(workdir / "scores.jsonl")
    assert sum(r["model"] == "tiny" for r in rows) == 6 * len(TEMPLATES)
    assert [r["n"] for r in rows if r["model"] == "other"] == [1] * 6


def test_a_corrupt_line_before_the_last_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / GENERATIONS_FILE
    path.write_text('{"model": "m"}\n{"not json\n{}\n', encoding="utf-8")
    with pytest.raises(EvaluateError, match=rf"{GENERATIONS_FILE}:1: missing key 'variant'"):
        read_generations(path)
    path.write_text('\n{"not json\n{}\n', encoding="utf-8")
    with pytest.raises(EvaluateError, match=rf"{GENERATIONS_FILE}:2: invalid JSON"):
        read_generations(path)


def test_a_lone_partial_line_is_dropped_from_disk(tmp_path):
    path = tmp_path / GENERATIONS_FILE
    path.write_text('{"model": "m", "vari', encoding="utf-8")
    assert read_generations(path) == []
    assert path.read_text() == ""


def test_repeated_instance_ids_are_an_error():
    entry = SuiteTask(task="t", skill="logical", split="held_out", source="niv2", provenance="")
    twice = Example(input="x", references=("y",), id="same")
    task = Task(name="t", definition="d", demonstrations=(), examples=(twice, twice))
    with pytest.raises(EvaluateError, match="'t': instance id 'same' occurs twice"):
        plan([(entry, task)], EvalConfig(suite="synthetic", templates=("T1",)))


def test_bad_templates_and_a_missing_tokenizer_are_errors(tmp_path):
    with pytest.raises(EvaluateError, match="T9"):
        _evaluate("opt-tiny", "synthetic", tmp_path, templates=("T1", "T9"))
    with pytest.raises(EvaluateError, match="no tokenizer for model 'opt-tiny'"):
        _evaluate("opt-tiny", "synthetic", tmp_path, templates=("T1",), max_examples_per_task=1)


def test_cli_flags_are_shorthands_for_eval_settings(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["evaluate", "--model", "m", "--workdir", "w", "--templates", "T2,T4",
                              "--max-examples", "5", "--skip-missing", "--variant", "ft", "--set", "eval.top_p=0.5"])
    cfg = eval_config_from_args(args)
    assert (cfg.templates, cfg.max_examples_per_task, cfg.skip_missing, cfg.variant, cfg.top_p) == (
        ("T2", "T4"), 5, True, "ft", 0.5)
    assert args.workdir == Path("w") and callable(args.func)
    assert main(["evaluate", "--model", "opt-tiny", "--workdir", str(tmp_path), "--templates", "T1,T6"]) == 2


def test_two_models_under_one_label_are_an_error_not_a_silent_skip(finished, model_dir, tmp_path, prompts_seen):
    """Two model directories with the same last component (…/a/tiny, …/b/tiny) must not share records."""
    workdir = tmp_path / "eval"
    shutil.copytree(finished, workdir)
    twin = tmp_path / "elsewhere" / model_dir.name
    shutil.copytree(model_dir, twin)
    with pytest.raises(EvaluateError, match="label 'tiny'.*already holds generations of"):
        _evaluate(str(twin), "synthetic", workdir, variant="cot", size="tiny", **RUN)
    assert prompts_seen == []
    _evaluate(str(twin), "synthetic", workdir, variant="cot", size="tiny", label="tiny-b", **RUN)
    assert prompts_seen  # the twin under its own label is generated, not skipped


def test_niv2_samples_are_evaluated(shared_data, model_dir, tmp_path):
    suite = load_suite("niv2_samples")
    present = [e for e in suite.eval_tasks if (shared_data / str(e.path)).exists()]
    scores = _evaluate(str(model_dir), "niv2_samples", tmp_path, templates=("T2",), data_root=str(shared_data),
                      max_new_tokens=8, batch_size=8, max_examples_per_task=2, skip_missing=True)
    rows = load_scores(scores)
    assert present and {r.task for r in rows} == {e.task for e in present}
    assert all(r.n == 2 and r.template == "T2" for r in rows)


@pytest.mark.slow
def test_quantisation_benchmark_compares_every_mode_with_fp32(model_dir):
    """benchmarks/bench_quantize.py runs each quantise mode through `evaluate` and counts identical generations."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_quantize.py"
    out = subprocess.run([sys.executable, str(script), "--model", str(model_dir), "--templates", "T1",
                          "--max-examples", "2", "--max-new-tokens", "4", "--no-write"],
                         check=True, capture_output=True, text=True).stdout
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in out.splitlines()
            if line.startswith("| ") and "of" in line}
    assert set(rows) == {"fp32", "int8", "w8a8"}
    prompts = len(_synthetic_eval_tasks()) * 2
    assert rows["fp32"] == f"{prompts} of {prompts}"
    assert all(int(rows[mode].split(" of ")[0]) <= prompts for mode in ("int8", "w8a8"))
