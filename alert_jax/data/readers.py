"""One small reader per source format, each returning a `Task`.

Every source — NIV2 task files and the rationale datasets used for finetuning — is viewed as a
`Task` so templates T1–T5 apply uniformly. Non-NIV2 sources get a short generic definition
(`DEFINITIONS`) and no demonstrations; each record becomes an `Example` whose `rationale` and
`answer` feed CoT targets and whose `references` feed the metrics.

Entry point: `read(kind, path)`. Kinds and the published formats they read:

- `niv2`: one task JSON (`Definition` str or list of str, `Positive Examples` with explanations,
  `Instances` with an `output` list; `id` optional — `<task>-<index>` is used when absent).
- `gsm8k`: JSONL {question, answer}; rationale = text before `####` without `<<…>>` calculator
  annotations, answer = text after `####`.
- `aqua`: JSONL (despite the `.json` name) {question, options ["A)…"], rationale, correct};
  answer = the correct option's text; references = (option text, letter) so a model answering
  with the letter alone still matches.
- `cose`: JSONL of CommonsenseQA questions joined with CoS-E explanations
  {id, question, choices [{label, text}], answerKey, explanation {open-ended, selected}};
  rationale = the open-ended explanation.
- `ecqa`: ECQA CSV (or JSONL with the same keys) {q_no, q_text, q_op1…q_op5, q_ans, taskB};
  rationale = the free-flow explanation `taskB`.
- `esnli`: e-SNLI CSV {pairID, gold_label, Sentence1, Sentence2, Explanation_1}.
- `strategyqa`: JSON array (or JSONL) {qid, question, answer: bool, facts, decomposition};
  rationale = facts (decomposition when there are none), answer yes/no.
- `proofwriter`: JSONL {id, theory, triples, rules, questions {Qn: {question, answer, proofs}}};
  one example per question; rationale = the texts of the facts and rules the first proof uses.
- `coqa`: JSON {data: [{id, story, questions [{input_text, turn_id}], answers [{input_text,
  span_text, turn_id}]}]}; one example per turn, earlier turns kept in the input as dialogue.
- `math`: Hendrycks MATH {problem, solution}: a directory of per-problem JSON files, a JSONL
  file, or one JSON file (object or array); answer = the last `\\boxed{…}` (nested braces kept).

Errors are `DataFormatError` with a one-line message starting `path:line:`. The line is the
record's line for JSONL and CSV, and the decoder's line for JSON syntax errors; structural errors
inside whole-file JSON report line 1 and name the key path (`Instances[3].output`) instead.
JSONL is streamed line by line.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from alert_jax.data.example import Demonstration, Example, Task
from alert_jax.errors import AlertJaxError
from alert_jax.untrusted_json import decode_utf8, not_utf8, os_errors_as, parse_json


class DataFormatError(AlertJaxError):
    """A source file does not have the structure its reader expects."""


DEFINITIONS: dict[str, str] = {
    "gsm8k": "Solve the math word problem. Give the final number.",
    "aqua": "Solve the math problem and choose the correct option.",
    "cose": "Answer the commonsense question by choosing one of the options.",
    "ecqa": "Answer the commonsense question by choosing one of the options.",
    "esnli": "Does the premise entail the hypothesis? Answer entailment, neutral or contradiction.",
    "strategyqa": "Answer the question with yes or no.",
    "proofwriter": "Decide whether the statement follows from the facts and rules. "
    "Answer True, False or Unknown.",
    "coqa": "Answer the last question about the story.",
    "math": "Solve the math problem. Give the final answer.",
}


# ---------------------------------------------------------------------------------------------
# Locations and record access


class _Where:
    """Where a record came from, so every error names the file and line (or key path)."""

    def __init__(self, path: Path, line: int, key: str = ""):
        self.path, self.line, self.key = path, line, key

    def at(self, key: str) -> "_Where":
        joined = f"{self.key}.{key}" if self.key and not key.startswith("[") else self.key + key
        return _Where(self.path, self.line, joined)

    def error(self, message: str) -> DataFormatError:
        prefix = f"{self.path}:{self.line}:"
        if self.key:
            prefix += f" {self.key}:"
        return DataFormatError(f"{prefix} {message}".replace("\n", " "))


def _get(record: Any, key: str, kind: type | tuple[type, ...], where: _Where) -> Any:
    """`record[key]`, checked to be an instance of `kind`."""
    if not isinstance(record, dict):
        raise where.error(f"expected a JSON object, got {type(record).__name__}")
    if key not in record:
        raise where.error(f"missing field {key!r}")
    value = record[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise where.at(key).error(f"expected {names}, got {type(value).__name__}")
    return value


def _ident(record: dict, key: str, where: _Where, default: str) -> str:
    """An optional identifier field: a string or an integer (stringified), `default` when absent or empty."""
    value = record.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise where.at(key).error(f"expected str or int, got {type(value).__name__}")
    return str(value)


def _str_list(record: dict, key: str, where: _Where, default: Optional[list] = None) -> list[str]:
    """A list of strings under `key` (a bare string counts as a one-element list)."""
    if default is not None and key not in record:
        return default
    value = _get(record, key, (list, str), where)
    items = [value] if isinstance(value, str) else value
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise where.at(f"{key}[{i}]").error(f"expected str, got {type(item).__name__}")
    return items


# ---------------------------------------------------------------------------------------------
# File formats


def _jsonl(path: Path) -> Iterator[tuple[_Where, dict]]:
    """Objects of a JSON-lines file, one per non-blank line, streamed."""
    seen = False
    with path.open("rb") as handle:  # decoded line by line, so a bad byte is reported on its own line
        for number, raw in enumerate(handle, start=1):
            line = decode_utf8(raw, path, DataFormatError, line=number)
            if not line.strip():
                continue
            record = parse_json(line.rstrip("\r\n"), path, DataFormatError, line=number, expect=dict)
            seen = True
            yield _Where(path, number), record
    if not seen:
        raise _Where(path, 1).error("empty file: no records")


def _json(path: Path) -> Any:
    """A whole-file JSON document."""
    text = decode_utf8(path.read_bytes(), path, DataFormatError, line=1)
    if not text.strip():
        raise _Where(path, 1).error("empty file")
    return parse_json(text, path, DataFormatError, line=1)


def _csv(path: Path) -> Iterator[tuple[_Where, dict]]:
    """Rows of a CSV file with a header line, as dicts (a malformed or oversized field names its line)."""
    seen = False
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except UnicodeDecodeError as err:  # the text layer decodes ahead: the line is where reading stopped
                raise _Where(path, reader.line_num + 1).error(not_utf8(err)) from None
            except csv.Error as err:  # raised before the failing line is counted
                raise _Where(path, reader.line_num + 1).error(f"malformed CSV ({err})") from None
            where = _Where(path, reader.line_num)
            if None in row:
                raise where.error(f"row has more fields than the header ({len(reader.fieldnames or [])})")
            seen = True
            yield where, row
    if not seen:
        raise _Where(path, 1).error("empty file: no records")


def _records(path: Path) -> Iterator[tuple[_Where, dict]]:
    """Records of a CSV, JSONL, or JSON-array file (chosen by suffix and first character)."""
    if path.suffix.lower() in (".csv", ".tsv"):
        yield from _csv(path)
        return
    with path.open("rb") as handle:
        first = handle.read(4096).lstrip()[:1]
    if first != b"[":
        yield from _jsonl(path)
        return
    items = _json(path)
    if not items:
        raise _Where(path, 1).error("empty file: no records")
    for index, item in enumerate(items):
        where = _Where(path, 1, f"[{index}]")
        if not isinstance(item, dict):
            raise where.error(f"expected a JSON object, got {type(item).__name__}")
        yield where, item


def _generic_task(kind: str, examples: list[Example]) -> Task:
    return Task(name=kind, definition=DEFINITIONS[kind], demonstrations=(), examples=tuple(examples))


def _lettered(choices: list[str]) -> str:
    return " ".join(f"({chr(ord('A') + i)}) {text}" for i, text in enumerate(choices))


# ---------------------------------------------------------------------------------------------
# Readers


def read_niv2(path: Path) -> Task:
    document = _json(path)
    root = _Where(path, 1)
    if not isinstance(document, dict):
        raise root.error(f"expected a JSON object, got {type(document).__name__}")
    name = document.get("task_id") if isinstance(document.get("task_id"), str) else path.stem
    demonstrations = []
    for i, demo in enumerate(_get(document, "Positive Examples", list, root)):
        where = root.at(f"Positive Examples[{i}]")
        demonstrations.append(
            Demonstration(
                input=_get(demo, "input", str, where),
                output=_get(demo, "output", str, where),
                explanation=_get(demo, "explanation", str, where) if "explanation" in demo else "",
            )
        )
    examples = []
    for i, instance in enumerate(_get(document, "Instances", list, root)):
        where = root.at(f"Instances[{i}]")
        references = _str_list(instance, "output", where)
        if not references:
            raise where.at("output").error("no reference outputs")
        examples.append(
            Example(
                input=_get(instance, "input", str, where),
                references=tuple(references),
                source=name,
                id=_get(instance, "id", str, where) if "id" in instance else f"{name}-{i}",
            )
        )
    return Task(
        name=name,
        definition="\n".join(_str_list(document, "Definition", root)),
        demonstrations=tuple(demonstrations),
        examples=tuple(examples),
        categories=tuple(_str_list(document, "Categories", root, default=[])),
        reasoning=tuple(_str_list(document, "Reasoning", root, default=[])),
    )


_CALCULATOR = re.compile(r"<<[^<>]*>>")


def read_gsm8k(path: Path) -> Task:
    examples = []
    for i, (where, record) in enumerate(_jsonl(path)):
        solution = _get(record, "answer", str, where)
        if "####" not in solution:
            raise where.at("answer").error("no '####' final answer line")
        worked, _, final = solution.rpartition("####")
        answer = final.strip()
        examples.append(
            Example(
                input=_get(record, "question", str, where),
                references=(answer,),
                rationale=_CALCULATOR.sub("", worked).strip(),
                answer=answer,
                source="gsm8k",
                id=f"gsm8k-{i}",
            )
        )
    return _generic_task("gsm8k", examples)


_OPTION = re.compile(r"^\s*([A-Z])\s*\)(.*)$", re.DOTALL)


def read_aqua(path: Path) -> Task:
    examples = []
    for i, (where, record) in enumerate(_jsonl(path)):
        options = {}
        for j, option in enumerate(_str_list(record, "options", where)):
            match = _OPTION.match(option)
            if not match:
                raise where.at(f"options[{j}]").error(f"option {option!r} is not 'X)text'")
            options[match.group(1)] = match.group(2).strip()
        letter = _get(record, "correct", str, where).strip()
        if letter not in options:
            raise where.at("correct").error(f"{letter!r} is not one of the options {sorted(options)}")
        question = _get(record, "question", str, where)
        examples.append(
            Example(
                input=f"{question}\nOptions: " + " ".join(f"{k}) {v}" for k, v in options.items()),
                references=(options[letter], letter),
                rationale=_get(record, "rationale", str, where).strip(),
                answer=options[letter],
                choices=tuple(options.values()),
                source="aqua",
                id=f"aqua-{i}",
            )
        )
    return _generic_task("aqua", examples)


def _multiple_choice(kind: str, ident: str, question: str, choices: list[str],
                     answer: str, rationale: str) -> Example:
    """An Example for a question answered by the text of one of `choices`."""
    return Example(
        input=f"{question}\nOptions: {_lettered(choices)}",
        references=(answer,),
        rationale=rationale.strip(),
        answer=answer,
        choices=tuple(choices),
        source=kind,
        id=ident,
    )


def read_cose(path: Path) -> Task:
    examples = []
    for i, (where, record) in enumerate(_jsonl(path)):
        labelled = {}
        for j, choice in enumerate(_get(record, "choices", list, where)):
            slot = where.at(f"choices[{j}]")
            labelled[_get(choice, "label", str, slot)] = _get(choice, "text", str, slot)
        key = _get(record, "answerKey", str, where)
        if key not in labelled:
            raise where.at("answerKey").error(f"{key!r} is not a choice label {sorted(labelled)}")
        explanation = _get(record, "explanation", dict, where)
        examples.append(
            _multiple_choice(
                "cose", _ident(record, "id", where, f"cose-{i}"), _get(record, "question", str, where),
                list(labelled.values()), labelled[key],
                _get(explanation, "open-ended", str, where.at("explanation")),
            )
        )
    return _generic_task("cose", examples)


def read_ecqa(path: Path) -> Task:
    examples = []
    for i, (where, record) in enumerate(_records(path)):
        choices = [_get(record, f"q_op{k}", str, where) for k in range(1, 6)]
        answer = _get(record, "q_ans", str, where)
        if answer not in choices:
            raise where.at("q_ans").error(f"{answer!r} is not one of the options")
        examples.append(
            _multiple_choice(
                "ecqa", _ident(record, "q_no", where, f"ecqa-{i}"), _get(record, "q_text", str, where),
                choices, answer, _get(record, "taskB", str, where),
            )
        )
    return _generic_task("ecqa", examples)


_NLI_LABELS = ("entailment", "neutral", "contradiction")


def read_esnli(path: Path) -> Task:
    examples = []
    for i, (where, record) in enumerate(_records(path)):
        label = _get(record, "gold_label", str, where).strip()
        if label not in _NLI_LABELS:
            raise where.at("gold_label").error(f"{label!r} is not one of {_NLI_LABELS}")
        premise, hypothesis = _get(record, "Sentence1", str, where), _get(record, "Sentence2", str, where)
        examples.append(
            Example(
                input=f"Premise: {premise}\nHypothesis: {hypothesis}",
                references=(label,),
                rationale=_get(record, "Explanation_1", str, where).strip(),
                answer=label,
                choices=_NLI_LABELS,
                source="esnli",
                id=_ident(record, "pairID", where, f"esnli-{i}"),
            )
        )
    return _generic_task("esnli", examples)


def read_strategyqa(path: Path) -> Task:
    examples = []
    for i, (where, record) in enumerate(_records(path)):
        answer = "yes" if _get(record, "answer", bool, where) else "no"
        steps = _str_list(record, "facts", where, default=[]) or _str_list(
            record, "decomposition", where, default=[]
        )
        examples.append(
            Example(
                input=_get(record, "question", str, where),
                references=(answer,),
                rationale=" ".join(s.strip() for s in steps) or None,
                answer=answer,
                choices=("yes", "no"),
                source="strategyqa",
                id=_ident(record, "qid", where, f"strategyqa-{i}"),
            )
        )
    return _generic_task("strategyqa", examples)


_PROOF_ITEM = re.compile(r"\b(triple\d+|rule\d+)\b")


def _proof_rationale(record: dict, proofs: str) -> Optional[str]:
    """Texts of the facts and rules the first proof cites, in order of first use (None if none)."""
    first = proofs.split("OR")[0]
    texts: list[str] = []
    for name in dict.fromkeys(_PROOF_ITEM.findall(first)):
        table = record.get("triples" if name.startswith("triple") else "rules")
        entry = table.get(name) if isinstance(table, dict) else None
        if isinstance(entry, dict) and isinstance(entry.get("text"), str):
            texts.append(entry["text"].strip())
    return " ".join(texts) or None


def _proofwriter_answer(value: Any, where: _Where) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "unknown"):
        return value.strip().capitalize()
    raise where.error(f"answer {value!r} is not True, False or Unknown")


def read_proofwriter(path: Path) -> Task:
    examples = []
    for where, record in _jsonl(path):
        theory = _get(record, "theory", str, where)
        ident = _ident(record, "id", where, f"line{where.line}")
        questions = _get(record, "questions", (dict, list), where)
        keyed = questions.items() if isinstance(questions, dict) else enumerate(questions, start=1)
        for qid, question in keyed:
            slot = where.at(f"questions.{qid}")
            answer = _proofwriter_answer(_get(question, "answer", (bool, str), slot), slot.at("answer"))
            proofs = question.get("proofs", "")
            examples.append(
                Example(
                    input=f"{theory}\nStatement: {_get(question, 'question', str, slot)}",
                    references=(answer,),
                    rationale=_proof_rationale(record, proofs) if isinstance(proofs, str) else None,
                    answer=answer,
                    choices=("True", "False", "Unknown"),
                    source="proofwriter",
                    id=f"{ident}-{qid}",
                )
            )
    return _generic_task("proofwriter", examples)


def read_coqa(path: Path) -> Task:
    document = _json(path)
    root = _Where(path, 1)
    examples = []
    for i, story in enumerate(_get(document, "data", list, root)):
        where = root.at(f"data[{i}]")
        text = _get(story, "story", str, where)
        questions = _get(story, "questions", list, where)
        answers = _get(story, "answers", list, where)
        if len(questions) != len(answers):
            raise where.error(f"{len(questions)} questions but {len(answers)} answers")
        dialogue: list[str] = []
        for turn, (question, answer) in enumerate(zip(questions, answers)):
            q = _get(question, "input_text", str, where.at(f"questions[{turn}]"))
            a_where = where.at(f"answers[{turn}]")
            a = _get(answer, "input_text", str, a_where).strip()
            examples.append(
                Example(
                    input="\n".join([text, *dialogue, f"Q: {q}"]),
                    references=(a,),
                    rationale=_get(answer, "span_text", str, a_where).strip() or None,
                    answer=a,
                    source="coqa",
                    id=f"{_ident(story, 'id', where, str(i))}-{turn + 1}",
                )
            )
            dialogue += [f"Q: {q}", f"A: {a}"]
    return _generic_task("coqa", examples)


_BOXED = re.compile(r"\\(?:boxed|fbox)\s*(\{)?")


def boxed_answer(solution: str) -> Optional[str]:
    """Content of the last `\\boxed{…}` / `\\fbox{…}` (nested braces balanced) or `\\boxed x`."""
    matches = list(_BOXED.finditer(solution))
    if not matches:
        return None
    last = matches[-1]
    if last.group(1) is None:
        bare = re.match(r"[^\s$]+", solution[last.end():])
        return bare.group(0) if bare else None
    depth = 1
    for end in range(last.end(), len(solution)):
        depth += {"{": 1, "}": -1}.get(solution[end], 0)
        if depth == 0:
            return solution[last.end():end].strip()
    return None


def _math_records(path: Path) -> Iterator[tuple[_Where, dict]]:
    if path.is_dir():
        files = sorted(path.rglob("*.json"))
        if not files:
            raise _Where(path, 1).error("no .json problem files")
        for file in files:
            yield _Where(file, 1), _json(file)
    elif path.suffix.lower() == ".jsonl":
        yield from _jsonl(path)
    else:
        document = _json(path)
        items = document if isinstance(document, list) else [document]
        for index, item in enumerate(items):
            yield _Where(path, 1, f"[{index}]" if isinstance(document, list) else ""), item


def read_math(path: Path) -> Task:
    examples = []
    for i, (where, record) in enumerate(_math_records(path)):
        solution = _get(record, "solution", str, where)
        answer = boxed_answer(solution)
        if answer is None:
            raise where.at("solution").error("no \\boxed{...} answer")
        examples.append(
            Example(
                input=_get(record, "problem", str, where),
                references=(answer,),
                rationale=solution.strip(),
                answer=answer,
                source="math",
                id=f"math-{i}",
            )
        )
    return _generic_task("math", examples)


READERS: dict[str, Callable[[Path], Task]] = {
    "niv2": read_niv2,
    "gsm8k": read_gsm8k,
    "aqua": read_aqua,
    "cose": read_cose,
    "ecqa": read_ecqa,
    "esnli": read_esnli,
    "strategyqa": read_strategyqa,
    "proofwriter": read_proofwriter,
    "coqa": read_coqa,
    "math": read_math,
}


def read(kind: str, path: str | Path) -> Task:
    """Read `path` with the reader for source `kind` (a key of `READERS`)."""
    if kind not in READERS:
        raise DataFormatError(f"unknown source kind {kind!r}; known: {', '.join(sorted(READERS))}")
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"{path}: no such file or directory (source kind {kind!r})")
    with os_errors_as(DataFormatError, path):  # a directory where a file belongs, an unreadable file
        return READERS[kind](path)
