"""`alert-jax data stats|build`, driven through the real command line (`alert_jax.cli.main`)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import tensorflow_datasets as tfds
import yaml

from alert_jax.cli import main
from alert_jax.data.readers import read
from alert_jax.data.suites import load_suite
from alert_jax.data.synthetic import synthetic_task
from alert_jax.data.tokenizer import SentencePieceTokenizer

SUITES_DIR = Path(__file__).resolve().parents[1] / "configs" / "suites"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["data", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def parse_stats(out: str) -> tuple[int, int, dict[str, tuple[int, int]]]:
    examples = int(re.search(r"^examples: (\d+)$", out, re.M).group(1))
    tokens = int(re.search(r"^tokens: (\d+) ", out, re.M).group(1))
    per_source = {
        m.group(1): (int(m.group(2)), int(m.group(3)))
        for m in re.finditer(r"^  (.+): (\d+) examples, (\d+) tokens$", out, re.M)
    }
    return examples, tokens, per_source


def words(text: str) -> int:
    return len(text.split())


def niv2_ft_words(task_file: Path) -> int:
    """Whitespace tokens of 'Question: <input>\\nAnswer:' + first reference, straight from the file."""
    instances = json.loads(task_file.read_text())["Instances"]
    return sum(words(i["input"]) + 2 + words(i["output"][0]) for i in instances)


def write_suite(path: Path, entries: list[tuple[str, str, str]]) -> Path:
    tasks = [{"task": t, "skill": "logical", "split": "held_out", "source": s, "path": p, "provenance": "test"}
             for t, s, p in entries]
    path.write_text(yaml.safe_dump({"name": path.stem, "tasks": tasks}))
    return path


def test_stats_of_the_synthetic_suite(capsys):
    code, out, err = run_cli(capsys, "stats")
    assert (code, err) == (0, "")
    suite = load_suite("synthetic")
    examples, tokens, per_source = parse_stats(out)
    size = {"finetune": suite.synthetic_finetune_examples}
    expected = {f"{t.task} [{t.split}]": size.get(t.split, suite.synthetic_examples) for t in suite.tasks}
    assert {label: n for label, (n, _) in per_source.items()} == expected
    assert list(per_source) == list(expected)
    assert examples == sum(expected.values())
    arithmetic = synthetic_task("synthetic_arithmetic", suite.synthetic_examples, suite.synthetic_seed)
    assert per_source["synthetic_arithmetic [in_domain]"][1] == sum(
        words(e.input) + 2 + words(e.answer) for e in arithmetic.examples
    )
    assert tokens == sum(t for _, t in per_source.values())
    assert "(whitespace)" in out


def test_stats_of_a_data_root_match_the_files(shared_data, capsys):
    code, out, _ = run_cli(capsys, "stats", "--data-root", str(shared_data))
    assert code == 0
    examples, tokens, per_source = parse_stats(out)
    gsm8k_lines = [json.loads(line) for line in (shared_data / "gsm8k" / "train_first300.jsonl").open() if line.strip()]
    aqua_lines = [line for line in (shared_data / "aqua" / "dev.json").open() if line.strip()]
    cose_lines = [line for line in next((shared_data / "cose").glob("*.jsonl")).open() if line.strip()]
    assert per_source["gsm8k"] == (
        len(gsm8k_lines),
        sum(words(r["question"]) + 2 + words(r["answer"].split("####")[-1]) for r in gsm8k_lines),
    )
    assert per_source["aqua"][0] == len(aqua_lines)
    assert per_source["cose"][0] == len(cose_lines)
    niv2_files = sorted((shared_data / "niv2").glob("*.json"))
    for task_file in niv2_files:
        instances = json.loads(task_file.read_text())["Instances"]
        assert per_source[task_file.stem] == (len(instances), niv2_ft_words(task_file))
    assert len(per_source) == 3 + len(niv2_files)
    assert examples == sum(n for n, _ in per_source.values())
    assert tokens == sum(t for _, t in per_source.values())


def test_stats_with_a_tokenizer_counts_bos_prompt_and_target_ids(shared_data, tmp_path, capsys):
    task_file = shared_data / "niv2" / "task1385_anli_r1_entailment.json"
    instances = json.loads(task_file.read_text())["Instances"]
    corpus = [i["input"] for i in instances]
    tokenizer = SentencePieceTokenizer.train(corpus, vocab_size=400, seed=0)
    tokenizer.save(tmp_path / "tok")
    suite = write_suite(tmp_path / "one.yaml", [(task_file.stem, "niv2", f"niv2/{task_file.name}")])
    code, out, _ = run_cli(capsys, "stats", "--suite", str(suite), "--data-root", str(shared_data),
                           "--tokenizer", str(tmp_path / "tok"))
    assert code == 0
    expected = sum(
        1 + len(tokenizer.encode(f"Question: {i['input']}\nAnswer:")) + len(tokenizer.encode(" " + i["output"][0]))
        for i in instances
    )
    assert parse_stats(out)[:2] == (len(instances), expected)


@pytest.fixture()
def corrupt_root(tmp_path) -> tuple[Path, Path]:
    root = tmp_path / "data"
    (root / "gsm8k").mkdir(parents=True)
    bad = root / "gsm8k" / "train.jsonl"
    good = json.dumps({"question": "1+1?", "answer": "1 + 1 = 2\n#### 2"})
    bad.write_text(f"{good}\n{good}\n\n{{\"question\": \"broken\"\n")
    return root, bad


def test_corrupt_input_is_one_line_with_exit_2(corrupt_root, capsys):
    root, bad = corrupt_root
    code, out, err = run_cli(capsys, "stats", "--data-root", str(root))
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith(f"alert-jax data: error: {bad}:4: invalid JSON")


def test_failed_build_leaves_no_output_directory(corrupt_root, tmp_path, capsys):
    root, bad = corrupt_root
    suite = write_suite(tmp_path / "bad.yaml", [("gsm8k", "gsm8k", "gsm8k/train.jsonl")])
    suite.write_text(suite.read_text().replace("held_out", "finetune"))
    code, out, err = run_cli(capsys, "build", "finetune", "--suite", str(suite), "--data-root", str(root),
                             "--out", str(tmp_path / "out"))
    assert code == 2 and err.startswith(f"alert-jax data: error: {bad}:4: invalid JSON") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "data"]


def test_unknown_suite_is_a_clear_error(capsys):
    code, _, err = run_cli(capsys, "stats", "--suite", "no_such_suite")
    assert code == 2 and "unknown suite 'no_such_suite'" in err


def test_built_datasets_read_back_through_data_source_equal_the_readers(shared_data, tmp_path, capsys):
    out = tmp_path / "tfds"
    code, printed, _ = run_cli(capsys, "build", "eval", "--suite", "niv2_samples", "--data-root",
                               str(shared_data), "--skip-missing", "--out", str(out))
    assert code == 0
    assert Path(printed.strip().splitlines()[-1]) == out / "alert_eval_suite" / "niv2_samples" / "1.0.0"
    rows = tfds.data_source("alert_eval_suite/niv2_samples", data_dir=str(out), split="test", download=False)
    suite = yaml.safe_load((SUITES_DIR / "niv2_samples.yaml").read_text())
    expected = []
    for entry in suite["tasks"]:
        if (shared_data / entry["path"]).exists():
            task = read("niv2", shared_data / entry["path"])
            expected += [(entry["task"], entry["skill"], entry["split"], e.input, list(e.references), e.id)
                         for e in task.examples]
    got = [(r["task"].decode(), r["skill"].decode(), r["split"].decode(), r["input"].decode(),
            [x.decode() for x in r["references"]], r["id"].decode()) for r in rows]
    assert got == expected and expected

    code, printed, _ = run_cli(capsys, "build", "finetune", "--suite", "finetune_samples", "--variant", "ft",
                               "--data-root", str(shared_data), "--out", str(out))
    assert code == 0
    config = "finetune_samples-ft"
    records = [r for split in ("train", "validation")
               for r in tfds.data_source(f"alert_finetune_mix/{config}", data_dir=str(out), split=split,
                                         download=False)]
    by_id = {(r["source"].decode(), r["id"].decode()): r for r in records}
    sources = {"gsm8k": "gsm8k/train_first300.jsonl", "aqua": "aqua/dev.json",
               "cose": "cose/cose_v1.0_train_joined_first300.jsonl"}
    total = 0
    for kind, rel in sources.items():
        for example in read(kind, shared_data / rel).examples:
            record = by_id[(kind, example.id)]
            assert record["prompt"].decode() == f"Question: {example.input}\nAnswer:"
            assert record["target"].decode() == example.answer
            total += 1
    assert len(records) == total


def test_stats_show_the_mixture_caps_of_an_experiment(capsys, tmp_path):
    """`data.mixture` cuts a finetuning source to its cap, `data.examples_per_task` the others; dev/eval tasks are
    untouched, and the tokens follow the examples kept."""
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({"data": {"suite": "synthetic", "variant": "cot", "examples_per_task": 50,
                                               "mixture": {"synthetic_arithmetic": 7, "synthetic_rule_chain": 0}}}))
    code, out, _ = run_cli(capsys, "stats", "--config", str(config))
    assert code == 0
    _, _, capped = parse_stats(out)
    _, _, whole = parse_stats(run_cli(capsys, "stats", "--variant", "cot")[1])
    assert capped["synthetic_arithmetic [finetune]"][0] == 7
    assert capped["synthetic_rule_chain [finetune]"] == whole["synthetic_rule_chain [finetune]"]  # 0 = all (200)
    assert capped["synthetic_room_tracking [finetune]"][0] == 50
    assert capped["synthetic_arithmetic [in_domain]"] == whole["synthetic_arithmetic [in_domain]"]
    assert capped["synthetic_arithmetic [finetune]"][1] < whole["synthetic_arithmetic [finetune]"][1]
    _, _, overridden = parse_stats(run_cli(capsys, "stats", "--config", str(config),
                                           "--set", "data.mixture.synthetic_arithmetic=3")[1])
    assert overridden["synthetic_arithmetic [finetune]"][0] == 3


def test_a_mixture_naming_an_unknown_source_is_an_error_naming_the_key(capsys):
    code, _, err = run_cli(capsys, "stats", "--set", "data.mixture.esnli_typo=10")
    assert code == 2 and "data.mixture.esnli_typo: not a finetuning task of suite 'synthetic'" in err


def test_the_paper_configs_cap_esnli_so_it_cannot_swamp_gsm8k():
    from alert_jax.config import load_config
    from alert_jax.data.mixture import cap_for

    for name in ("opt-1.3b-ft", "opt-1.3b-cot", "opt-13b-ft", "opt-13b-cot"):
        data = load_config(SUITES_DIR.parent / "experiments" / f"{name}.yaml").data
        assert 0 < cap_for("esnli", data.examples_per_task, data.mixture) <= 10000
        assert cap_for("gsm8k", data.examples_per_task, data.mixture) == 0  # GSM8K whole (~7.5k)
