"""Every reader of JSON that alert_jax did not write (or that may have been damaged since) against the same hostile
files: each must raise its own documented `AlertJaxError` naming the file, never a raw `RecursionError`,
`ValueError`, `UnicodeDecodeError`, `OSError`, `KeyError` or `TypeError`.

A new reader of untrusted JSON joins `READERS`; the cases run against every one of them.
"""
from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path
from typing import Any, Callable

import pytest

from alert_jax.analysis.assessment import AssessmentError, load_assessment
from alert_jax.analysis.report import ReportInputError, load_overlap, load_scores
from alert_jax.data.readers import DataFormatError, read
from alert_jax.data.tokenizer import BPETokenizer, TokenizerError
from alert_jax.errors import AlertJaxError
from alert_jax.evaluate import EvaluateError, read_generations
from alert_jax.model import convert
from alert_jax.model.io import MODEL_MANIFEST, ModelSourceError, read_manifest
from alert_jax.model.tensor_files import CheckpointFormatError, read_safetensors
from alert_jax.train.checkpoints import CorruptCheckpointError, best_record
from alert_jax.untrusted_json import os_errors_as, parse_json, read_json
from alert_jax.workdir import FINGERPRINT_FILE, IncompatibleRunError, cache_is_current, check_contract

# The JSON document each case puts in the file (the file itself is absent, or a directory, for the first two).
DOCUMENTS: dict[str, bytes] = {
    "invalid_utf8": b'{"a": "\xff"}',
    "utf16": '{"a": 1}'.encode("utf-16"),  # json.loads(bytes) would accept it; the files are UTF-8
    "truncated": b'{"a": [1, 2',
    "deeply_nested": b"[" * 100000 + b"]" * 100000,
    "long_integer": b'{"a": ' + b"9" * 5000 + b"}",
    "top_level_list": b"[1, 2]",
    "top_level_number": b"7",
}
CASES = ["missing", "directory", *DOCUMENTS]


@dataclasses.dataclass(frozen=True)
class Reader:
    name: str
    error: type[AlertJaxError]
    file: str  # where the JSON lives, relative to the test's directory
    call: Callable[[Path], Any]  # reads it, given the test's directory
    framing: str = "json"  # "jsonl": the document is one line; "safetensors": it is the header
    may_be_missing: bool = False  # documented: a missing file means "none yet", not an error

    def content(self, document: bytes) -> bytes:
        if self.framing == "jsonl":
            return document + b"\n"
        if self.framing == "safetensors":
            return struct.pack("<Q", len(document)) + document
        return document


def _vocab(root: Path) -> Any:
    (root / "merges.txt").write_text("#version: 0.2\n")
    return BPETokenizer.from_vocab_merges(root / "vocab.json", root / "merges.txt")


READERS = [
    Reader("config_from_hf", CheckpointFormatError, "config.json",
           lambda root: convert.config_from_hf(root / "config.json")),
    Reader("shard_index", CheckpointFormatError, "model.safetensors.index.json",
           lambda root: convert._index_shards(root / "model.safetensors.index.json")),
    Reader("safetensors_header", CheckpointFormatError, "model.safetensors",
           lambda root: read_safetensors(root / "model.safetensors"), framing="safetensors"),
    Reader("read_manifest", ModelSourceError, MODEL_MANIFEST, read_manifest),
    Reader("best_record", CorruptCheckpointError, "best/best.json", best_record, may_be_missing=True),
    Reader("check_contract", IncompatibleRunError, "contract.json",
           lambda root: check_contract(root / "contract.json", {"seq_len": 8}), may_be_missing=True),
    Reader("load_overlap", ReportInputError, "overlap.json", lambda root: load_overlap(root / "overlap.json")),
    Reader("load_assessment", AssessmentError, "assessment.json",
           lambda root: load_assessment(root / "assessment.json")),
    Reader("bpe_vocab", TokenizerError, "vocab.json", _vocab),
    Reader("load_scores", ReportInputError, "scores.jsonl", lambda root: load_scores(root / "scores.jsonl"),
           framing="jsonl"),
    Reader("read_generations", EvaluateError, "generations.jsonl",
           lambda root: read_generations(root / "generations.jsonl", repair=False), framing="jsonl",
           may_be_missing=True),
    Reader("data_niv2", DataFormatError, "task.json", lambda root: read("niv2", root / "task.json")),
    Reader("data_gsm8k", DataFormatError, "train.jsonl", lambda root: read("gsm8k", root / "train.jsonl"),
           framing="jsonl"),
]


def _place(root: Path, reader: Reader, case: str) -> Path:
    path = root / reader.file
    path.parent.mkdir(parents=True, exist_ok=True)
    if case == "directory":
        path.mkdir()
    elif case != "missing":
        path.write_bytes(reader.content(DOCUMENTS[case]))
    return path


@pytest.mark.parametrize(("reader", "case"), [
    pytest.param(reader, case, id=f"{reader.name}-{case}") for reader in READERS for case in CASES
    if not (case == "missing" and reader.may_be_missing)])
def test_a_hostile_file_is_the_readers_own_error_naming_it(tmp_path, reader, case):
    path = _place(tmp_path, reader, case)
    with pytest.raises(reader.error) as caught:
        reader.call(tmp_path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message


@pytest.mark.parametrize("reader", [r for r in READERS if r.may_be_missing], ids=lambda reader: reader.name)
def test_a_missing_file_means_none_yet_where_documented(tmp_path, reader):
    assert not reader.call(tmp_path)


@pytest.mark.parametrize("case", CASES)
def test_a_hostile_cache_stamp_means_rebuild(tmp_path, case):
    _place(tmp_path, Reader("stamp", AlertJaxError, FINGERPRINT_FILE, cache_is_current), case)
    assert cache_is_current(tmp_path, {"seed": 0}) is False


class _Bad(AlertJaxError):
    pass


def test_whole_documents_report_the_line_inside_the_problem(tmp_path):
    path = tmp_path / "doc.json"
    path.write_text('{"a": 1,\n  }')
    with pytest.raises(_Bad, match=rf"^{path}: reading doc: invalid JSON \(.* at line 2 column 3\)$"):
        read_json(path, _Bad, context="reading doc")
    path.write_bytes(b'{"a":\n\n"\xff"}')
    with pytest.raises(_Bad, match=rf"^{path}: not UTF-8 text \(byte 0xff\) on line 3$"):
        read_json(path, _Bad)


def test_records_report_their_line_in_the_file():
    with pytest.raises(_Bad, match=r"^f.jsonl:7: invalid JSON \(.* at column 3\)$"):
        parse_json('{"a": 1,\n  }', "f.jsonl", _Bad, line=6)
    with pytest.raises(_Bad, match=r"^f.jsonl:6: invalid JSON \(nested too deeply\)$"):
        parse_json(b"[" * 100000, "f.jsonl", _Bad, line=6)
    with pytest.raises(_Bad, match=r"^f.jsonl:6: expected a JSON array, got dict$"):
        parse_json(b"{}", "f.jsonl", _Bad, line=6, expect=list)
    assert parse_json(json.dumps({"a": [1]}).encode(), "f.jsonl", _Bad, line=6, expect=dict) == {"a": [1]}


def test_the_error_may_be_a_function_adding_a_hint(tmp_path):
    with pytest.raises(_Bad, match=rf"^{tmp_path / 'absent.json'}: No such file or directory; run again$"):
        read_json(tmp_path / "absent.json", lambda message: _Bad(f"{message}; run again"))


def test_os_errors_name_the_file_that_failed(tmp_path):
    with pytest.raises(_Bad, match=rf"^{tmp_path / 'inner'}: No such file or directory$"):
        with os_errors_as(_Bad, tmp_path):
            (tmp_path / "inner").read_bytes()
