"""Readers, checked against the raw files parsed independently with `json`/`csv` here."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from alert_jax.data.readers import DEFINITIONS, DataFormatError, boxed_answer, read


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _write_jsonl(path: Path, records: list) -> Path:
    return _write(path, "".join(json.dumps(r) + "\n" for r in records))


# --- real samples --------------------------------------------------------------------------


def test_every_niv2_sample_matches_its_json(shared_data: Path) -> None:
    files = sorted((shared_data / "niv2").glob("*.json"))
    assert len(files) >= 10
    for file in files:
        raw = json.loads(file.read_text(encoding="utf-8"))
        task = read("niv2", file)
        assert task.name == raw["task_id"] == file.stem
        definition = raw["Definition"]
        assert task.definition == (definition if isinstance(definition, str) else "\n".join(definition))
        assert task.categories == tuple(raw.get("Categories", ()))
        assert task.reasoning == tuple(raw.get("Reasoning", ()))
        assert [(d.input, d.output, d.explanation) for d in task.demonstrations] == [
            (p["input"], p["output"], p["explanation"]) for p in raw["Positive Examples"]
        ]
        assert len(task.examples) == len(raw["Instances"]) == raw["num_instances_copied"]
        for i, (example, instance) in enumerate(zip(task.examples, raw["Instances"])):
            assert example.input == instance["input"]
            assert list(example.references) == instance["output"]
            assert example.id == f"{file.stem}-{i}"
            assert example.answer is None and example.rationale is None


def test_task118_form_feed_quirk_survives(shared_data: Path) -> None:
    (file,) = (shared_data / "niv2").glob("task118_*.json")
    task = read("niv2", file)
    assert any("\x0crac{" in d.explanation for d in task.demonstrations)


def test_gsm8k_sample(shared_data: Path) -> None:
    path = shared_data / "gsm8k" / "train_first300.jsonl"
    raw = _jsonl(path)
    task = read("gsm8k", path)
    assert len(task.examples) == len(raw) == 300
    assert task.definition == DEFINITIONS["gsm8k"] and task.demonstrations == ()
    for example, record in zip(task.examples, raw):
        number = record["answer"].split("####")[-1].strip()
        assert example.answer == number and example.references == (number,)
        assert example.input == record["question"]
        assert "<<" not in example.rationale and ">>" not in example.rationale
        assert "####" not in example.rationale
    assert task.examples[0].rationale == (
        "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May."
    )


def test_aqua_sample(shared_data: Path) -> None:
    path = shared_data / "aqua" / "dev.json"
    raw = _jsonl(path)
    task = read("aqua", path)
    assert len(task.examples) == len(raw) == 254
    for example, record in zip(task.examples, raw):
        (option,) = [o for o in record["options"] if o.startswith(record["correct"] + ")")]
        text = option[2:].strip()
        assert example.answer == text
        assert example.references == (text, record["correct"])
        assert len(example.choices) == len(record["options"])
        assert example.rationale == record["rationale"].strip()
        assert example.input.startswith(record["question"])
    assert task.examples[0].answer == "32400"


def test_cose_sample(shared_data: Path) -> None:
    path = shared_data / "cose" / "cose_v1.0_train_joined_first300.jsonl"
    raw = _jsonl(path)
    task = read("cose", path)
    assert len(task.examples) == len(raw) == 300
    for example, record in zip(task.examples, raw):
        labels = {c["label"]: c["text"] for c in record["choices"]}
        assert example.answer == labels[record["answerKey"]]
        assert example.choices == tuple(labels.values())
        assert example.rationale == record["explanation"]["open-ended"].strip()
        assert example.id == record["id"]
    assert task.examples[0].answer == "house"


# --- formats without a shared sample: small files written here -------------------------------


def test_niv2_keeps_instance_ids_and_list_definitions(tmp_path: Path) -> None:
    path = _write(tmp_path / "task9_demo.json", json.dumps({
        "Definition": ["Add the numbers.", "Give digits."],
        "Positive Examples": [{"input": "1 1", "output": "2", "explanation": "1+1=2"}],
        "Instances": [{"id": "task9-abc", "input": "2 3", "output": ["5", "five"]}],
    }))
    task = read("niv2", path)
    assert task.name == "task9_demo"
    assert task.definition == "Add the numbers.\nGive digits."
    assert task.examples[0].id == "task9-abc"
    assert task.examples[0].references == ("5", "five")


def test_esnli_csv(tmp_path: Path) -> None:
    path = _write(tmp_path / "esnli.csv", (
        "pairID,gold_label,Sentence1,Sentence2,Explanation_1\n"
        'p1,entailment,"A man, smiling.",A man smiles.,Smiling is smiling.\n'
        "p2,contradiction,A dog runs.,A dog sleeps.,One cannot run and sleep.\n"
    ))
    first, second = read("esnli", path).examples
    assert first.input == "Premise: A man, smiling.\nHypothesis: A man smiles."
    assert (first.answer, first.rationale, first.id) == ("entailment", "Smiling is smiling.", "p1")
    assert second.references == ("contradiction",)


def test_ecqa_csv(tmp_path: Path) -> None:
    path = _write(tmp_path / "cqa_data_train.csv", (
        "q_no,q_concept,q_text,q_op1,q_op2,q_op3,q_op4,q_op5,q_ans,taskA_pos,taskA_neg,taskB\n"
        "q1,bird,Where do birds sleep?,nest,sea,oven,desk,car,nest,x,y,Birds sleep in nests.\n"
    ))
    (example,) = read("ecqa", path).examples
    assert example.answer == "nest" and example.rationale == "Birds sleep in nests."
    assert example.input == "Where do birds sleep?\nOptions: (A) nest (B) sea (C) oven (D) desk (E) car"


def test_strategyqa_json_array(tmp_path: Path) -> None:
    path = _write(tmp_path / "strategyqa_train.json", json.dumps([
        {"qid": "a", "question": "Can a cat fly?", "answer": False,
         "facts": ["Cats have no wings.", "Flying needs wings."], "decomposition": ["Do cats have wings?"]},
        {"qid": "b", "question": "Is ice cold?", "answer": True, "facts": [], "decomposition": ["Is ice frozen?"]},
    ], indent=1))
    no, yes = read("strategyqa", path).examples
    assert (no.answer, no.rationale) == ("no", "Cats have no wings. Flying needs wings.")
    assert (yes.answer, yes.rationale) == ("yes", "Is ice frozen?")


def test_proofwriter_jsonl(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "meta-train.jsonl", [{
        "id": "RelNeg-D2-1",
        "theory": "The cat is big. If something is big then it is red.",
        "triples": {"triple1": {"text": "The cat is big."}},
        "rules": {"rule1": {"text": "If something is big then it is red."}},
        "questions": {
            "Q1": {"question": "The cat is red.", "answer": True, "proofs": "[(((triple1) -> rule1))]"},
            "Q2": {"question": "The dog is red.", "answer": "Unknown", "proofs": "[CWA]"},
        },
    }])
    q1, q2 = read("proofwriter", path).examples
    assert q1.input == "The cat is big. If something is big then it is red.\nStatement: The cat is red."
    assert (q1.answer, q1.rationale, q1.id) == ("True", "The cat is big. If something is big then it is red.",
                                                "RelNeg-D2-1-Q1")
    assert (q2.answer, q2.rationale) == ("Unknown", None)


def test_coqa_keeps_dialogue_history(tmp_path: Path) -> None:
    path = _write(tmp_path / "coqa.json", json.dumps({"version": "1.0", "data": [{
        "id": "s1", "story": "Anna has a red ball.",
        "questions": [{"input_text": "Who has a ball?", "turn_id": 1}, {"input_text": "What color?", "turn_id": 2}],
        "answers": [{"input_text": "Anna", "span_text": "Anna has", "turn_id": 1},
                    {"input_text": "red", "span_text": "a red ball", "turn_id": 2}],
    }]}))
    first, second = read("coqa", path).examples
    assert first.input == "Anna has a red ball.\nQ: Who has a ball?"
    assert second.input == "Anna has a red ball.\nQ: Who has a ball?\nA: Anna\nQ: What color?"
    assert (second.answer, second.rationale, second.id) == ("red", "a red ball", "s1-2")


@pytest.mark.parametrize(
    ("solution", "answer"),
    [
        (r"So $x = \boxed{5}$.", "5"),
        (r"First \boxed{1}, finally $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"$\boxed{\{1, 2\}}$", r"\{1, 2\}"),
        (r"$\fbox{x^{2}}$", "x^{2}"),
        (r"The answer is $\boxed 7$.", "7"),
        ("no box here", None),
        (r"\boxed{unclosed", None),
    ],
)
def test_boxed_answer(solution: str, answer: str | None) -> None:
    assert boxed_answer(solution) == answer


def test_math_directory_and_jsonl(tmp_path: Path) -> None:
    problems = tmp_path / "train" / "algebra"
    problems.mkdir(parents=True)
    _write(problems / "1.json", json.dumps({"problem": "1+1?", "level": "Level 1", "type": "Algebra",
                                            "solution": r"It is $\boxed{2}$."}, indent=4))
    _write(problems / "2.json", json.dumps({"problem": "Half?", "solution": r"$\boxed{\dfrac{1}{2}}$"}))
    examples = read("math", tmp_path / "train").examples
    assert [(e.input, e.answer) for e in examples] == [("1+1?", "2"), ("Half?", r"\dfrac{1}{2}")]
    assert examples[0].rationale == r"It is $\boxed{2}$."
    lines = _write_jsonl(tmp_path / "math.jsonl", [{"problem": "p", "solution": r"\boxed{3}"}])
    assert read("math", lines).examples[0].answer == "3"


# --- errors ------------------------------------------------------------------------------------


def _error(kind: str, path: Path) -> str:
    with pytest.raises(DataFormatError) as info:
        read(kind, path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_malformed_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "g.jsonl", '{"question": "q", "answer": "a #### 1"}\n\n{"question": \n')
    assert re.match(rf"^{re.escape(str(path))}:3: invalid JSON", _error("gsm8k", path))


def test_non_object_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "g.jsonl", '{"question": "q", "answer": "a #### 1"}\n[1, 2]\n')
    assert _error("gsm8k", path).startswith(f"{path}:2: expected a JSON object")


def test_missing_field(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "a.json", [{"question": "q", "options": ["A)1"], "correct": "A"}])
    assert _error("aqua", path) == f"{path}:1: missing field 'rationale'"


def test_gsm8k_without_final_answer(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "g.jsonl", [{"question": "q", "answer": "no marker"}])
    assert _error("gsm8k", path).startswith(f"{path}:1: answer: no '####'")


def test_aqua_correct_letter_must_be_an_option(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "a.json", [{"question": "q", "options": ["A)1", "B)2"],
                                               "rationale": "r", "correct": "C"}])
    assert _error("aqua", path).startswith(f"{path}:1: correct: 'C' is not one of the options")


@pytest.mark.parametrize("kind", ["gsm8k", "aqua", "cose", "proofwriter", "niv2", "coqa"])
def test_empty_file(tmp_path: Path, kind: str) -> None:
    path = _write(tmp_path / "empty.json", "\n")
    assert _error(kind, path).startswith(f"{path}:1: empty file")


def test_truncated_niv2_json(tmp_path: Path) -> None:
    path = _write(tmp_path / "task1.json", '{\n  "Definition": ["d"],\n  "Instances": [\n')
    assert re.match(rf"^{re.escape(str(path))}:\d+: invalid JSON", _error("niv2", path))


def test_niv2_missing_instances(tmp_path: Path) -> None:
    path = _write(tmp_path / "task1.json", json.dumps({"Definition": ["d"], "Positive Examples": []}))
    assert _error("niv2", path) == f"{path}:1: missing field 'Instances'"


def test_niv2_bad_instance_names_its_key(tmp_path: Path) -> None:
    path = _write(tmp_path / "task1.json", json.dumps({
        "Definition": "d", "Positive Examples": [],
        "Instances": [{"input": "x", "output": ["y"]}, {"input": "x"}],
    }))
    assert _error("niv2", path) == f"{path}:1: Instances[1]: missing field 'output'"


def test_csv_missing_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "e.csv", "pairID,gold_label,Sentence1,Sentence2\np,neutral,a,b\n")
    assert _error("esnli", path) == f"{path}:2: missing field 'Explanation_1'"


def test_unknown_kind_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown source kind 'nope'"):
        read("nope", tmp_path)
    with pytest.raises(DataFormatError, match="absent.jsonl: no such file"):
        read("gsm8k", tmp_path / "absent.jsonl")
