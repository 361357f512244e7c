"""Scale-out: models load straight into any mesh and restore across topologies, caches know what they hold,
one run per workdir, and two `jax.distributed` processes finetune and evaluate exactly as one process does."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import alert_jax
from alert_jax.config import EvalConfig, MeshConfig, load_config
from alert_jax.evaluate import evaluate
from alert_jax.model import io
from alert_jax.parallel.mesh import make_mesh
from alert_jax.train import corpus
from alert_jax.train.loop import Trainer
from alert_jax.workdir import IncompatibleRunError
from tests.conftest import REPO_ROOT
from tests.test_evaluate import RUN, model_dir  # noqa: F401  (a fixture: a random opt-tiny with its tokenizer)
from tests.test_training import TINY_RUN, _losses


def _mesh(data: int, fsdp: int, tensor: int = 1):
    return make_mesh(MeshConfig(data=data, fsdp=fsdp, tensor=tensor), jax.devices()[: data * fsdp * tensor])


def _leaves(model) -> list[np.ndarray]:
    return [np.asarray(jax.device_get(x)) for x in jax.tree.leaves(model.params)]


def _q_kernel(model):
    return model.params["decoder"]["layers_0"]["self_attn"]["q_proj"]["kernel"]


# ---------------------------------------------------------------- model I/O over meshes

def test_native_model_restores_across_topologies(tmp_path):
    """Saved on 8 devices → loaded on 1; saved on 1 → loaded on 2×4; saved on fsdp=4 → loaded on data=2 × fsdp=2."""
    on8 = alert_jax.load_model("opt-micro", seed=3, mesh=_mesh(1, 8))
    assert tuple(_q_kernel(on8).sharding.spec)[0] == "fsdp" and len(_q_kernel(on8).addressable_shards) == 8
    reference = _leaves(on8)
    alert_jax.save_model(on8, tmp_path / "from8")

    on1 = alert_jax.load_model(tmp_path / "from8")
    assert len(_q_kernel(on1).sharding.device_set) == 1
    alert_jax.save_model(on1, tmp_path / "from1")
    on2x4 = alert_jax.load_model(tmp_path / "from1", mesh=_mesh(2, 4))
    assert {s.data.shape for s in _q_kernel(on2x4).addressable_shards} == {(_q_kernel(on8).shape[0] // 4,
                                                                            _q_kernel(on8).shape[1])}
    alert_jax.save_model(alert_jax.load_model(tmp_path / "from1", mesh=_mesh(1, 4)), tmp_path / "from4")
    on2x2 = alert_jax.load_model(tmp_path / "from4", mesh=_mesh(2, 2))
    assert _q_kernel(on2x2).sharding.mesh.shape == {"data": 2, "fsdp": 2, "tensor": 1}
    for restored in (on1, on2x4, on2x2):
        for got, want in zip(_leaves(restored), reference):
            np.testing.assert_array_equal(got, want)


def _buffers(arrays) -> dict:
    """(device, buffer address) → bytes: each device buffer once (a shard's `.data` is itself a live array)."""
    return {(shard.device, shard.data.unsafe_buffer_pointer()): shard.data.nbytes
            for array in arrays for shard in array.addressable_shards}


def _device_bytes(arrays, exclude: frozenset = frozenset()) -> dict:
    totals: dict = {}
    for (device, pointer), nbytes in _buffers(arrays).items():
        if (device, pointer) not in exclude:
            totals[device] = totals.get(device, 0) + nbytes
    return totals


def test_hf_import_places_each_tensor_into_its_shards_as_it_is_read(tmp_path, monkeypatch):
    """fsdp=8: while loading, no device ever holds more than its 1/8 share of the model plus one tensor."""
    from tests.hf_reference import hf_logits, left_padded_batch, save_tiny

    hf_model, directory = save_tiny(tmp_path, True)
    before = frozenset(_buffers(jax.live_arrays()))
    peaks: list[int] = []
    real_placer = io._placer

    def spying_placer(shardings):
        place = real_placer(shardings)

        def spy(path, array):
            placed = place(path, array)
            peaks.append(max(_device_bytes(jax.live_arrays(), before).values()))
            return placed

        return spy

    monkeypatch.setattr(io, "_placer", spying_placer)
    model = alert_jax.load_model(directory, mesh=_mesh(1, 8))
    sizes = [x.nbytes for x in jax.tree.leaves(model.params)]
    assert len(peaks) == len(sizes), "every tensor went through the placement hook"
    final = _device_bytes(jax.tree.leaves(model.params))
    assert len(final) == 8
    assert max(peaks) <= sum(sizes) / 8 + max(sizes), (max(peaks), sum(sizes))
    assert max(final.values()) < sum(sizes) / 4, "about 1/8 of the model per device, not the whole of it"
    ids, mask = left_padded_batch()
    real = mask.astype(bool)  # padding positions' logits are not defined
    np.testing.assert_allclose(alert_jax.logits(model, ids, mask)[real], hf_logits(hf_model, ids, mask)[real],
                               atol=1e-4)


# ---------------------------------------------------------------- caches and the workdir

def test_caches_are_rebuilt_when_their_inputs_change_and_reused_when_not(tmp_path, monkeypatch):
    cfg = load_config(None, TINY_RUN + ["train.seq_len=64"])
    pairs = lambda: corpus.text_pairs(cfg.data)  # noqa: E731
    tokenizer = corpus.resolve_tokenizer(cfg.data, tmp_path, pairs)
    rows = corpus.packed_splits(cfg.data, cfg.train, tokenizer, tmp_path, pairs)
    assert rows["train"].arrays["inputs"].shape[1] == 64

    packs = []
    real_pack = corpus.pack
    monkeypatch.setattr(corpus, "pack", lambda *a, **k: packs.append(a[1]) or real_pack(*a, **k))
    again = corpus.packed_splits(cfg.data, cfg.train, corpus.resolve_tokenizer(cfg.data, tmp_path, pairs), tmp_path,
                                 pairs)
    assert packs == [], "same inputs: the cache is reused"
    np.testing.assert_array_equal(again["train"].arrays["inputs"], rows["train"].arrays["inputs"])

    longer = load_config(None, TINY_RUN + ["train.seq_len=128"])
    rebuilt = corpus.packed_splits(longer.data, longer.train, tokenizer, tmp_path, pairs)
    assert packs == [128, 128] and rebuilt["train"].arrays["inputs"].shape[1] == 128
    assert json.loads((tmp_path / "data" / "fingerprint.json").read_text())["inputs"]["seq_len"] == 128

    smaller_vocab = load_config(None, TINY_RUN + ["data.vocab_size=400"])
    assert corpus.resolve_tokenizer(smaller_vocab.data, tmp_path, pairs).vocab_size == 400
    fewer = load_config(None, TINY_RUN + ["data.vocab_size=400", "data.examples_per_task=20"])
    corpus.packed_splits(fewer.data, longer.train, corpus.resolve_tokenizer(fewer.data, tmp_path, lambda: corpus.text_pairs(fewer.data)),
                         tmp_path, lambda: corpus.text_pairs(fewer.data))
    assert len(packs) == 4, "other training text (and a retrained tokenizer): rows rebuilt"


_HOLD = """
import sys
from alert_jax.workdir import RunDir
RunDir(sys.argv[1]).claim()
print("held", flush=True)
sys.stdin.readline()
(RunDir(sys.argv[1]).root / "first.txt").write_text("finished")
"""


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "alert_jax.cli", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_second_run_on_a_workdir_exits_2_at_once_naming_the_holder(tmp_path):
    workdir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    first = subprocess.Popen([sys.executable, "-c", _HOLD, str(workdir)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)
    try:
        assert first.stdout.readline().strip() == "held"
        for command in (["finetune", "--workdir", str(workdir), "--set", "model.name=opt-micro"],
                        ["evaluate", "--model", "opt-micro", "--workdir", str(workdir)]):
            start = time.monotonic()
            second = _cli(*command)
            assert second.returncode == 2, second.stderr
            message = second.stderr.strip().splitlines()[-1]
            assert f"pid {first.pid} on {socket.gethostname()}" in message
            assert "-c" in message and "since 20" in message, message  # the holder's command and start time
            assert time.monotonic() - start < 60
        assert first.poll() is None, "the first run is unharmed"
        first.communicate("\n", timeout=60)
        assert first.returncode == 0 and (workdir / "first.txt").read_text() == "finished"
    finally:
        first.kill()


# ---------------------------------------------------------------- train state across meshes

@pytest.mark.slow
def test_train_state_resumes_on_another_mesh_and_refuses_another_shape(tmp_path):
    """Trained on fsdp=8; its step-8 checkpoint resumed on 1 device and on data=2 × fsdp=2 gives the same losses."""
    run = TINY_RUN + ["train.eval_every=100"]
    workdir = tmp_path / "run"
    Trainer(load_config(None, run + ["mesh.fsdp=8"]), workdir).run()
    reference = _losses(workdir)
    assert len(reference) == 12
    for mesh in (["mesh.fsdp=1"], ["mesh.data=2", "mesh.fsdp=2"]):
        shutil.rmtree(workdir / "checkpoints" / "12")
        trainer = Trainer(load_config(None, run + mesh), workdir)
        assert int(trainer.state.step) == 8
        trainer.run()
        np.testing.assert_allclose(_losses(workdir), reference, rtol=1e-4)
    with pytest.raises(IncompatibleRunError, match="train.seq_len: checkpoints have 128, this config 64"):
        Trainer(load_config(None, run + ["train.seq_len=64"]), workdir)


# ---------------------------------------------------------------- two processes of one jax.distributed job

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _job(tmp_path: Path, *args: str, processes: int = 2, devices: int = 2) -> None:
    """`alert-jax ARGS` as one jax.distributed job of `processes` local processes × `devices` CPU devices."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{_free_port()}", "JAX_NUM_PROCESSES": str(processes)}
    logs = [tmp_path / f"process{i}.log" for i in range(processes)]
    running = [subprocess.Popen([sys.executable, "-m", "alert_jax.cli", *args], cwd=REPO_ROOT,
                                env={**env, "JAX_PROCESS_ID": str(i)}, stdout=open(log, "w"), stderr=subprocess.STDOUT)
               for i, log in enumerate(logs)]
    try:
        codes = [p.wait(timeout=900) for p in running]
    finally:
        for p in running:
            p.kill()
    assert codes == [0] * processes, "\n".join(log.read_text()[-3000:] for log in logs)


@pytest.mark.slow
def test_two_processes_finetune_like_one_and_their_model_evaluates_on_one_device(tmp_path):
    single = tmp_path / "single"
    Trainer(load_config(None, TINY_RUN + ["mesh.fsdp=4"]), single).run()
    multi = tmp_path / "multi"
    _job(tmp_path, "finetune", "--workdir", str(multi), *[a for o in TINY_RUN for a in ("--set", o)])
    np.testing.assert_allclose(_losses(multi), _losses(single), rtol=1e-4)
    assert len(_losses(multi)) == 12
    scores = evaluate(str(multi), EvalConfig(mesh=MeshConfig(data=1, fsdp=1, tensor=1), max_examples_per_task=1,
                                             templates=("T1",), max_new_tokens=4), tmp_path / "eval")
    assert scores.exists()


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@pytest.mark.slow
def test_two_processes_evaluate_like_one_writing_every_record_once_and_resume(model_dir, tmp_path):  # noqa: F811
    settings = dict(RUN, suite="synthetic", variant="cot", mesh=MeshConfig(data=1, fsdp=4, tensor=1))
    reference_dir = tmp_path / "single"
    evaluate(str(model_dir), EvalConfig(**settings), reference_dir)
    reference = _records(reference_dir / "generations.jsonl")
    flags = ["--model", str(model_dir), "--suite", "synthetic", "--variant", "cot", "--templates", "T1,T5",
             "--max-new-tokens", "8", "--batch-size", "4", "--max-examples", "3", "--mesh", "data=1,fsdp=4"]

    fresh = tmp_path / "fresh"
    _job(tmp_path, "evaluate", "--workdir", str(fresh), *flags)
    assert _records(fresh / "generations.jsonl") == reference
    assert (fresh / "scores.jsonl").read_text() == (reference_dir / "scores.jsonl").read_text()

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    lines = (reference_dir / "generations.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (resumed / "generations.jsonl").write_text("".join(lines[:5]) + lines[5][:20], encoding="utf-8")  # killed mid-line
    _job(tmp_path, "evaluate", "--workdir", str(resumed), *flags)
    assert _records(resumed / "generations.jsonl") == reference
