"""Fault injection through the command line: every bad input ends in exit status 2 with ONE line naming the file,
line or key (never a traceback, never exit 0 with wrong output), and nothing already written is lost.

The README's "Failure modes" table lists each case with the test that covers it. Cases run the CLI's `main`
in-process (subprocesses only where a kill is the point) and use tiny models so the module stays fast.
"""
from __future__ import annotations

import json
import math
import struct
import zipfile
from pathlib import Path

import jax.numpy as jnp
import pytest

from alert_jax.cli import main

TINY_TRAIN = ["model.name=opt-micro", "train.batch_size=8", "train.seq_len=64", "data.examples_per_task=20",
              "data.vocab_size=512", "optim.warmup_steps=1", "train.async_checkpointing=false", "train.log_every=1"]


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """(exit status, stderr) of one in-process CLI call."""
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    lines = [line.split("\r")[-1] for line in err.split("\n") if "error:" in line]  # past tqdm's progress bar
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def finetune(capsys, workdir: Path, *overrides: str) -> tuple[int, str]:
    sets = [x for o in (*TINY_TRAIN, *overrides) for x in ("--set", o)]
    return run_cli(capsys, "finetune", "--workdir", workdir, *sets)


# ---------------------------------------------------------------- training numerics

@pytest.fixture
def poisoned_batch(monkeypatch):
    """Make the batch of one micro-step produce a NaN loss (NaN loss weights)."""
    from alert_jax.train.loop import Trainer

    original = Trainer.train_batches
    bad = {"micro": None}

    def train_batches(self, start):
        for micro, batch in enumerate(original(self, start), start):
            if micro == bad["micro"]:
                batch = {**batch, "loss_weights": batch["loss_weights"] * jnp.nan}
            yield batch

    monkeypatch.setattr(Trainer, "train_batches", train_batches)
    return bad


def _strict_records(path: Path) -> list[dict]:
    def refuse(token: str):
        raise AssertionError(f"{path}: non-JSON token {token}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


@pytest.mark.slow  # a short training run: ~40 s on 2 CPU cores
def test_nonfinite_loss_stops_keeping_earlier_checkpoints_and_best(tmp_path, capsys, poisoned_batch):
    poisoned_batch["micro"] = 4  # step 5
    code, err = finetune(capsys, tmp_path, "train.steps=8", "train.eval_every=3", "train.checkpoint_every=2")
    assert_one_line_error(code, err, "train.on_nonfinite=stop", "step 5")
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [2, 4]
    assert json.loads((tmp_path / "best" / "best.json").read_text())["step"] == 3
    records = _strict_records(tmp_path / "metrics.jsonl")
    assert records[-1]["step"] == 5 and records[-1]["loss"] is None


@pytest.mark.slow  # a short training run: ~30 s on 2 CPU cores
def test_nonfinite_batches_are_skipped_and_counted(tmp_path, capsys, poisoned_batch):
    poisoned_batch["micro"] = 1
    code, err = finetune(capsys, tmp_path, "train.steps=4", "train.eval_every=4", "train.checkpoint_every=4",
                         "train.on_nonfinite=skip")
    assert code == 0, err
    records = _strict_records(tmp_path / "metrics.jsonl")
    assert [r["skipped_batches"] for r in records] == [0, 1, 1, 1]
    assert records[1]["loss"] is None
    assert all(math.isfinite(r["loss"]) for r in records if r["step"] != 2)
    assert math.isfinite(records[-1]["val_loss"])


def test_seq_len_beyond_the_models_positions_is_refused_at_start(tmp_path, capsys):
    code, err = finetune(capsys, tmp_path, "train.steps=1", "train.seq_len=4096")
    assert_one_line_error(code, err, "train.seq_len=4096", "max_position_embeddings=")
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


# ---------------------------------------------------------------- checkpoint files: helpers that forge them

class Raw(bytes):
    """Pickle opcodes already encoded (protocol 2), for forging checkpoint pickles without torch."""


def _p(obj) -> bytes:
    if isinstance(obj, Raw):
        return obj
    if isinstance(obj, bool):
        return b"\x88" if obj else b"\x89"
    if isinstance(obj, int):
        n = (obj.bit_length() + 8) // 8
        return b"\x8a" + bytes([n]) + obj.to_bytes(n, "little", signed=True)
    if isinstance(obj, str):
        data = obj.encode()
        return b"X" + struct.pack("<I", len(data)) + data
    if isinstance(obj, tuple):
        return b"(" + b"".join(map(_p, obj)) + b"t"
    if isinstance(obj, dict):
        return b"}" + (b"(" + b"".join(_p(k) + _p(v) for k, v in obj.items()) + b"u" if obj else b"")
    raise TypeError(obj)


def glob(module: str, name: str) -> Raw:
    return Raw(f"c{module}\n{name}\n".encode())


def call(fn: Raw, *args) -> Raw:
    return Raw(fn + _p(args) + b"R")


def tensor(offset=0, size=(4, 4), stride=(4, 1), numel=16, key="0") -> Raw:
    storage = Raw(_p(("storage", glob("torch", "FloatStorage"), key, "cpu", numel)) + b"Q")
    return call(glob("torch._utils", "_rebuild_tensor_v2"), storage, offset, size, stride, False, Raw(b"}"))


def write_torch_zip(path: Path, obj, storage_bytes: int = 64) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02" + _p(obj) + b".")
        archive.writestr("archive/data/0", b"\0" * storage_bytes)
    return path


def hf_dir(root: Path) -> Path:
    from alert_jax.model.convert import config_to_hf
    from alert_jax.model.presets import get_preset

    directory = root / "hf"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config_to_hf(get_preset("opt-micro"))))
    return directory


def convert(capsys, source: Path, out: Path, *flags: str) -> tuple[int, str]:
    return run_cli(capsys, "convert", source, "--out", out, *flags)


@pytest.mark.parametrize("case, obj, needle", [
    ("global at top", call(glob("posix", "system"), "touch PWNED"), "refusing global posix.system"),
    ("global nested deep", {"model": {"a": (1, (2,), {"b": call(glob("os", "system"), "touch PWNED")})}},
     "refusing global os.system"),
    ("formerly opaque class", {"cfg": call(glob("__main__", "Config"))}, "refusing global __main__.Config"),
    ("builtins eval", call(glob("builtins", "eval"), "open('PWNED','w')"), "refusing global builtins.eval"),
    ("shape beyond storage", {"w": tensor(size=(5, 4))}, "beyond the storage"),
    ("huge stride", {"w": tensor(stride=(2**62, 1))}, "beyond the storage"),
    ("huge offset", {"w": tensor(offset=2**70)}, "beyond the storage"),
    ("negative offset", {"w": tensor(offset=-4)}, "offset -4"),
    ("negative stride", {"w": tensor(stride=(-4, 1))}, "negative size"),
    ("overflowing product", {"w": tensor(size=(2**40, 2**40), stride=(0, 0))}, "beyond the storage"),
    ("rank mismatch", {"w": tensor(stride=(1,))}, "differ in rank"),
    ("size not ints", {"w": tensor(size=("a", 4))}, "not a tuple of ints"),
    ("storage key missing", {"w": tensor(key="7")}, "storage 7 is missing"),
    ("bad persistent id", {"w": Raw(_p(("storage", 1)) + b"Q")}, "unsupported persistent id"),
    ("garbage opcodes", Raw(b"\xff\xfe"), "cannot unpickle"),
], ids=lambda value: value if isinstance(value, str) and " " in value else "")
def test_forged_torch_checkpoints_are_refused_whole(tmp_path, capsys, monkeypatch, case, obj, needle):
    monkeypatch.chdir(tmp_path)
    directory = hf_dir(tmp_path)
    write_torch_zip(directory / "pytorch_model.bin", obj)
    code, err = convert(capsys, directory, tmp_path / "out")
    assert_one_line_error(code, err, "pytorch_model.bin", needle)
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "out").exists()


def test_a_storage_whose_bytes_are_corrupt_is_named_when_read(tmp_path, capsys):
    directory = hf_dir(tmp_path)
    path = write_torch_zip(directory / "pytorch_model.bin", {"w": tensor()})
    raw = bytearray(path.read_bytes())
    at = raw.index(b"\0" * 64)  # the storage's bytes (stored uncompressed): flip them, the CRC no longer matches
    raw[at:at + 64] = b"\1" * 64
    path.write_bytes(bytes(raw))
    from alert_jax.model.tensor_files import CheckpointFormatError, read_torch_zip

    with pytest.raises(CheckpointFormatError, match="storage 0 is unreadable"):
        read_torch_zip(path)["w"].load()


@pytest.mark.parametrize("field, value", [("num_attention_heads", 0), ("do_layer_norm_before", "false"),
                                          ("hidden_size", -64), ("vocab_size", 1.5), ("layer_norm_eps", -1)])
def test_hf_config_values_are_checked(tmp_path, capsys, field, value):
    directory = hf_dir(tmp_path)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, field: value}))
    code, err = convert(capsys, directory, tmp_path / "out")
    assert_one_line_error(code, err, "config.json", field)


def test_torch_views_inside_their_storage_still_load(tmp_path):
    from alert_jax.model.tensor_files import read_torch_zip

    path = write_torch_zip(tmp_path / "ok.bin", {"t": tensor(offset=2, size=(3, 2), stride=(1, 3), numel=16)})
    assert read_torch_zip(path)["t"].load().shape == (3, 2)


def _safetensors(path: Path, header, data: bytes = b"\0" * 16, size: int | None = None) -> None:
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob) if size is None else size) + blob + data)


def _entry(dtype="F32", shape=(2, 2), offsets=(0, 16)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


@pytest.mark.parametrize("case, header, size, needle", [
    ("header size beyond file", {"w": _entry()}, 2**60, "exceeds the file"),
    ("header not a dict", ["w"], None, "not a mapping"),
    ("header not JSON", b"{nope", None, "corrupt safetensors header"),
    ("header nested deeply", b"[" * 100000 + b"]" * 100000, None, "corrupt safetensors header"),
    ("entry not a dict", {"w": [1, 2]}, None, "header entry is a list"),
    ("dtype unknown", {"w": _entry(dtype="F8")}, None, "unsupported dtype"),
    ("offsets beyond data", {"w": _entry(offsets=(0, 2**40))}, None, "outside the 16 data bytes"),
    ("offsets reversed", {"w": _entry(offsets=(16, 0))}, None, "outside the 16 data bytes"),
    ("offsets negative", {"w": _entry(offsets=(-16, 0))}, None, "outside the 16 data bytes"),
    ("offsets not a pair", {"w": _entry(offsets=(0,))}, None, "is not [begin, end]"),
    ("shape vs bytes", {"w": _entry(shape=(3, 2))}, None, "needs 24"),
    ("shape negative", {"w": _entry(shape=(-2, -2))}, None, "non-negative ints"),
    ("shape overflowing", {"w": _entry(shape=(2**62, 2**62))}, None, "needs"),
    ("overlapping", {"a": _entry(shape=(2,), offsets=(0, 8)), "b": _entry(shape=(2,), offsets=(4, 12))}, None,
     "overlap"),
], ids=lambda value: value if isinstance(value, str) and " " in value else "")
def test_forged_safetensors_headers_are_refused_before_allocating(tmp_path, capsys, case, header, size, needle):
    directory = hf_dir(tmp_path)
    _safetensors(directory / "model.safetensors", header, size=size)
    code, err = convert(capsys, directory, tmp_path / "out")
    assert_one_line_error(code, err, "model.safetensors", needle)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "link.safetensors", "missing.safetensors"])
def test_shard_index_may_only_name_files_inside_the_checkpoint(tmp_path, capsys, shard):
    directory = hf_dir(tmp_path)
    _safetensors(tmp_path / "outside.safetensors", {"w": _entry()})
    (directory / "link.safetensors").symlink_to(tmp_path / "outside.safetensors")
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": shard}}))
    code, err = convert(capsys, directory, tmp_path / "out")
    assert_one_line_error(code, err, "model.safetensors.index.json", repr(shard))


def test_a_tensor_stored_in_two_shards_is_refused(tmp_path, capsys):
    directory = hf_dir(tmp_path)
    for name in ("a.safetensors", "b.safetensors"):
        _safetensors(directory / name, {"w": _entry()})
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"w": "a.safetensors", "v": "b.safetensors"}}))
    code, err = convert(capsys, directory, tmp_path / "out")
    assert_one_line_error(code, err, "b.safetensors", "tensor w is also stored in another shard")


def test_self_referencing_metaseq_cfg_terminates(tmp_path, capsys):
    selfref = Raw(b"}q\x00" + _p("self") + b"h\x00" + b"s")  # cfg = {"self": cfg}
    path = write_torch_zip(tmp_path / "ms.pt", {"model": {"decoder.version": 3}, "cfg": selfref})
    code, err = convert(capsys, path, tmp_path / "out", "--source-format", "metaseq")
    assert_one_line_error(code, err, "ms.pt", "decoder_attention_heads not found")


def test_metaseq_heads_of_the_wrong_type_are_named(tmp_path, capsys):
    path = write_torch_zip(tmp_path / "ms.pt", {"model": {}, "cfg": {"model": {"decoder_attention_heads": "four"}}})
    code, err = convert(capsys, path, tmp_path / "out", "--source-format", "metaseq")
    assert_one_line_error(code, err, "ms.pt", "decoder_attention_heads")


# ---------------------------------------------------------------- outputs: write beside, then swap

def test_convert_refuses_an_existing_output_without_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code, err = convert(capsys, "opt-micro", out, "--to", "alert_jax")
    assert_one_line_error(code, err, str(out), "--overwrite")
    assert (out / "keep.txt").read_text() == "precious"
    code, err = convert(capsys, "opt-micro", out, "--to", "alert_jax", "--overwrite")
    assert code == 0, err
    assert (out / "alert_jax_model.json").exists() and not (out / "keep.txt").exists()


def _crash_at(monkeypatch, module, name: str, call_number: int) -> None:
    """Make the `call_number`-th call of `module.name` die like a kill (KeyboardInterrupt is not caught)."""
    real, calls = getattr(module, name), {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call_number:
            raise KeyboardInterrupt(f"killed in {name}")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, dying)


@pytest.mark.parametrize("point", [("replace", 1), ("replace", 2), ("rmtree", 1), ("rmtree", 2), ("rmtree", 3)])
def test_a_kill_at_any_point_of_a_swap_leaves_the_old_or_the_new_tree(tmp_path, monkeypatch, point):
    from alert_jax import atomic

    target = tmp_path / "best"
    target.mkdir()
    (target / "v").write_text("old")
    with monkeypatch.context() as patch:
        _crash_at(patch, atomic.os if point[0] == "replace" else atomic.shutil, point[0], point[1])
        try:
            with atomic.staged_dir(target) as staging:
                (staging / "v").write_text("new")
        except KeyboardInterrupt:
            pass
    from alert_jax.workdir import RunDir

    RunDir(tmp_path).best_model()  # every reader of best/ recovers an interrupted swap first
    assert (target / "v").read_text() in ("old", "new")


# ---------------------------------------------------------------- config values through the command line

@pytest.mark.parametrize("flags, key", [
    (["--batch-size", "-1"], "eval.batch_size=-1"), (["--temperature", "nan"], "eval.temperature=nan"),
    (["--top-p", "0"], "eval.top_p=0.0"), (["--max-new-tokens", "0"], "eval.max_new_tokens=0"),
    (["--templates", "T1,T7"], "eval.templates='T7'"), (["--dtype", "float8"], "eval.dtype='float8'"),
    (["--mesh", "data=0"], "eval.mesh.data=0"), (["--set", "eval.top_p=.inf"], "eval.top_p=inf"),
])
def test_evaluate_flags_go_through_the_field_rules(tmp_path, capsys, flags, key):
    code, err = run_cli(capsys, "evaluate", "--model", "opt-micro", "--workdir", tmp_path / "ev", *flags)
    assert_one_line_error(code, err, key)
    assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize("override", ["train.batch_size=0", "train.checkpoint_every=0", "train.keep_checkpoints=0",
                                      "optim.learning_rate=-1", "optim.clip_norm=0", "optim.beta2=1",
                                      "model.attention=flash", "data.variant=both", "train.on_nonfinite=ignore"])
def test_finetune_overrides_go_through_the_field_rules(tmp_path, capsys, override):
    code, err = run_cli(capsys, "finetune", "--workdir", tmp_path / "run", "--set", override)
    assert_one_line_error(code, err, override.split("=")[0])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text, needle", [
    ("- train\n", "top level must be a mapping"), ("train: [1]\n", "train: expected a mapping"),
    ("eval:\n  mesh: [1]\n", "eval.mesh: expected a mapping"), ("train:\n  steps: {a: 1}\n", "train.steps"),
    ("train: {steps: 1\n", "not valid YAML"), (b"model:\n  name: \xff\n", "not UTF-8"),
    ("1: 2\n", "unknown config key 1"),
])
def test_config_files_of_the_wrong_shape_are_one_line(tmp_path, capsys, text, needle):
    path = tmp_path / "exp.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    code, err = run_cli(capsys, "finetune", "--workdir", tmp_path / "run", "--config", path)
    assert_one_line_error(code, err, "exp.yaml", needle)


# ---------------------------------------------------------------- data files

@pytest.mark.parametrize("source, name, data, needle", [
    ("gsm8k", "deep.jsonl", b"[" * 100000 + b"]" * 100000 + b"\n", ":1: invalid JSON (nested too deeply)"),
    ("gsm8k", "latin1.jsonl", b'{"question": "q", "answer": "#### 1"}\n{"question": "caf\xe9"}\n',
     ":2: not UTF-8"),
    ("gsm8k", "bigint.jsonl", b'{"question": ' + b"9" * 5000 + b"}\n", ":1: invalid JSON"),
    ("gsm8k", "types.jsonl", b'{"question": ["q"], "answer": "#### 1"}\n', ":1: question: expected str"),
    ("niv2", "task.json", b'{"Definition": {"a": 1}, "Positive Examples": [], "Instances": []}', "Definition"),
    ("niv2", "nested.json", b"{" + b'"a":{' * 50000 + b"}" * 50001, ":1: invalid JSON"),
    ("esnli", "big.csv", b"gold_label,Sentence1,Sentence2,Explanation_1\nentailment,\"" + b"x" * 200000 + b"\",b,c\n",
     ":2: malformed CSV"),
    ("esnli", "latin1.csv", b"gold_label,Sentence1,Sentence2,Explanation_1\nentailment,caf\xe9,b,c\n", "not UTF-8"),
    ("cose", "ids.jsonl", b'{"id": {"x": 1}, "question": "q", "choices": [{"label": "A", "text": "t"}], '
                          b'"answerKey": "A", "explanation": {"open-ended": "e"}}\n', ":1: id: expected str or int"),
    ("coqa", "coqa.json", b'{"data": {"story": "s"}}', ":1: data: expected list"),
])
def test_malformed_data_files_name_file_and_line(tmp_path, capsys, source, name, data, needle):
    (tmp_path / name).write_bytes(data)
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: s\ntasks:\n  - {{task: t, skill: mathematics, split: finetune, source: {source}, "
                     f"path: {name}, provenance: test}}\n")
    code, err = run_cli(capsys, "data", "stats", "--suite", suite, "--data-root", tmp_path)
    assert_one_line_error(code, err, name, needle)


@pytest.mark.parametrize("percent", ["-5", "101", "150"])
def test_data_build_validation_percent_out_of_range_is_refused(tmp_path, capsys, percent):
    code, err = run_cli(capsys, "data", "build", "finetune", "--suite", "synthetic", "--variant", "cot",
                        "--validation-percent", percent, "--out", tmp_path / "tfds")
    assert_one_line_error(code, err, f"--validation-percent {percent}")
    assert not (tmp_path / "tfds").exists()


def test_a_suite_file_that_is_not_utf8_is_named(tmp_path, capsys):
    suite = tmp_path / "suite.yaml"
    suite.write_bytes(b"name: caf\xe9\ntasks: []\n")
    code, err = run_cli(capsys, "data", "stats", "--suite", suite)
    assert_one_line_error(code, err, "suite.yaml", "not UTF-8")


# ---------------------------------------------------------------- damaged run directories

def _garble(directory: Path) -> None:
    """Truncate every file under `directory` to a few garbage bytes, as a crash or full disk may leave them."""
    for path in directory.rglob("*"):
        if path.is_file():
            path.write_bytes(b"\x00garbage")


@pytest.mark.slow  # two short training runs: ~60 s on 2 CPU cores
def test_a_corrupt_newest_checkpoint_falls_back_and_a_corrupt_cache_is_named(tmp_path, capsys):
    steps = ["train.eval_every=2", "train.checkpoint_every=2", "train.keep_checkpoints=3"]
    assert finetune(capsys, tmp_path, "train.steps=4", *steps)[0] == 0
    _garble(tmp_path / "checkpoints" / "4")
    code, err = finetune(capsys, tmp_path, "train.steps=6", *steps)
    assert code == 0, err
    assert "checkpoint step 4 is unreadable" in err and "falling back" in err
    assert (tmp_path / "checkpoints-broken" / "4").is_dir()
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [2, 4, 6]
    assert [r["step"] for r in _strict_records(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    (tmp_path / "data" / "train.npz").write_bytes(b"PK\x03\x04 truncated")
    code, err = finetune(capsys, tmp_path, "train.steps=8", *steps)
    assert_one_line_error(code, err, "train.npz", "corrupt packed-row cache")


@pytest.fixture
def workdir_with_best(tmp_path) -> Path:
    from alert_jax.model.io import load_model
    from alert_jax.train.checkpoints import save_best

    save_best(tmp_path / "run", load_model("opt-micro"), 3,
              {"val_loss": 1.0, "val_ppl": 2.7, "dev_rouge_l": math.nan, "select_by": "dev_perplexity"})
    return tmp_path / "run"


@pytest.mark.parametrize("damage, needle", [
    (lambda best: _garble(best / "params"), "params: unreadable model params"),
    (lambda best: (best / "alert_jax_model.json").write_text("{"), "alert_jax_model.json: unreadable"),
    (lambda best: (best / "alert_jax_model.json").write_text("[1]"), "alert_jax_model.json: unreadable"),
    (lambda best: (best / "alert_jax_model.json").write_text('{"num_attention_heads": 0}'), "num_attention_heads"),
])
def test_a_corrupt_best_model_is_named(tmp_path, capsys, workdir_with_best, damage, needle):
    damage(workdir_with_best / "best")
    code, err = convert(capsys, workdir_with_best, tmp_path / "out")
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", ["{", "[]", '{"val_ppl": 2.0}', '{"step": "3"}', '{"step": 3, "val_ppl": "high"}'])
def test_a_corrupt_best_record_is_named(workdir_with_best, text):
    from alert_jax.train.checkpoints import CorruptCheckpointError, best_record

    assert best_record(workdir_with_best) == {"step": 3, "val_loss": 1.0, "val_ppl": 2.7, "select_by": "dev_perplexity"}
    (workdir_with_best / "best" / "best.json").write_text(text)
    with pytest.raises(CorruptCheckpointError, match="best.json: unreadable best-model record"):
        best_record(workdir_with_best)


def _tiny_checkpoints(workdir: Path, steps: list[int]):
    from alert_jax.train import checkpoints

    manager = checkpoints.checkpoint_manager(workdir, keep=5, async_save=False)
    for step in steps:
        checkpoints.save_state(manager, step, {"w": jnp.full((4,), float(step))})
    manager.wait_until_finished()
    return manager


def test_restore_falls_back_past_broken_steps_and_sets_them_aside(tmp_path, capsys):
    from alert_jax.train.checkpoints import restore_state

    manager = _tiny_checkpoints(tmp_path, [1, 2, 3])
    _garble(tmp_path / "checkpoints" / "3")
    _garble(tmp_path / "checkpoints" / "2")
    restored = restore_state(manager, {"w": jnp.zeros((4,))})
    assert restored["w"].tolist() == [1.0] * 4
    err = capsys.readouterr().err
    assert "checkpoint step 3 is unreadable" in err and "checkpoint step 2 is unreadable" in err
    assert sorted(p.name for p in (tmp_path / "checkpoints-broken").iterdir()) == ["2", "3"]
    assert manager.all_steps() == [1]


def test_restore_moves_nothing_when_no_step_restores(tmp_path):
    from alert_jax.train.checkpoints import CorruptCheckpointError, restore_state

    manager = _tiny_checkpoints(tmp_path, [1, 2])
    with pytest.raises(CorruptCheckpointError, match=r"checkpoints/2: no checkpoint step could be restored"):
        restore_state(manager, {"w": jnp.zeros((5,))})  # another shape: the config, not the files, is wrong
    assert sorted(manager.all_steps()) == [1, 2] and not (tmp_path / "checkpoints-broken").exists()


@pytest.mark.parametrize("case, opcodes", [
    ("memo index 2**32-1", b"}r\xff\xff\xff\xff."),  # C unpickler: a 32 GiB memo table
    ("string longer than the pickle", b"X\xff\xff\xff\x7fabc."),
    ("bytes longer than the pickle", b"B\xff\xff\xff\x7fabc."),
])
def test_forged_pickle_lengths_do_not_allocate(tmp_path, capsys, case, opcodes):
    import resource

    directory = hf_dir(tmp_path)
    with zipfile.ZipFile(directory / "pytorch_model.bin", "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02" + opcodes)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, err = convert(capsys, directory, tmp_path / "out")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB: no giant buffer
    assert_one_line_error(code, err, str(directory))  # the pickle itself, or the empty state dict it decodes to
