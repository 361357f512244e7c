"""The trainer: packed loss golden rule, mesh-independent loss curves, real param sharding, exact resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import alert_jax
from alert_jax.config import load_config
from alert_jax.data.packing import pack
from alert_jax.train.loop import Trainer
from alert_jax.train.step import loss_sums

TINY_RUN = ["model.name=opt-micro", "train.steps=12", "train.batch_size=8", "train.seq_len=128", "train.log_every=1", "train.eval_every=6",
            "train.checkpoint_every=4", "data.examples_per_task=40", "data.vocab_size=512", "optim.warmup_steps=3",
            "optim.learning_rate=1e-3", "train.async_checkpointing=false"]


def _losses(workdir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_packed_loss_equals_each_example_alone_in_torch(tmp_path):
    from tests.hf_reference import save_tiny, torch

    hf_model, directory = save_tiny(tmp_path, True)
    model = alert_jax.load_model(directory)
    rng = np.random.RandomState(0)
    examples = [([2, *rng.randint(3, 101, p)], list(rng.randint(3, 101, t))) for p, t in ((5, 3), (2, 6), (7, 1))]
    rows = pack(examples, seq_len=40).arrays
    assert rows["inputs"].shape[0] == 1, "all three fit in one row"
    ours = jax.jit(lambda p, b: loss_sums(model.module, p, b))(model.params, rows)
    total, count = 0.0, 0
    for prompt, target in examples:
        ids = torch.tensor([prompt + target])
        with torch.no_grad():
            logp = torch.log_softmax(hf_model(input_ids=ids).logits[0].double(), -1)
        for t in range(len(prompt) - 1, len(prompt) + len(target) - 1):  # predictions of target tokens
            total -= float(logp[t, ids[0, t + 1]])
            count += 1
    assert float(ours.weight) == count
    assert abs(float(ours.loss) - total) <= 1e-4 * total


@pytest.mark.slow  # end to end: tens of seconds on 2 CPU cores
def test_loss_curve_is_the_same_on_every_mesh_and_params_are_really_sharded(tmp_path):
    curves = {}
    for shape in ((1, 1, 1), (8, 1, 1), (2, 4, 1), (1, 4, 2)):
        overrides = TINY_RUN + [f"mesh.data={shape[0]}", f"mesh.fsdp={shape[1]}", f"mesh.tensor={shape[2]}",
                                "train.steps=20", "train.eval_every=100", "train.checkpoint_every=100"]
        trainer = Trainer(load_config(None, overrides), tmp_path / "x".join(map(str, shape)))
        if shape == (1, 4, 2):
            kernel = trainer.state.params["decoder"]["layers_0"]["self_attn"]["q_proj"]["kernel"]
            assert tuple(kernel.sharding.spec) == ("fsdp", "tensor")
            assert {s.data.shape for s in kernel.addressable_shards} == {(64 // 4, 64 // 2)}
            assert len(kernel.addressable_shards) == 8
            moments = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(trainer.state.opt_state)[0]
                       if "layers_0" in jax.tree_util.keystr(path) and "q_proj" in jax.tree_util.keystr(path)
                       and leaf.shape == kernel.shape]
            assert len(moments) == 2, "AdamW's mu and nu"
            assert all(tuple(m.sharding.spec) == ("fsdp", "tensor") for m in moments)
        trainer.run()
        curves[shape] = np.array(_losses(tmp_path / "x".join(map(str, shape))))
    reference = curves[(1, 1, 1)]
    assert len(reference) == 20 and reference[-1] < reference[0]
    for shape, curve in curves.items():
        assert np.max(np.abs(curve - reference) / np.abs(reference)) <= 1e-4, shape


_RUN_SCRIPT = """
import sys
from alert_jax.config import load_config
from alert_jax.train.loop import finetune
finetune(load_config(None, sys.argv[2:]), sys.argv[1])
"""


@pytest.mark.slow  # end to end: tens of seconds on 2 CPU cores
def test_sigkill_and_restart_reproduces_the_uninterrupted_losses(tmp_path):
    reference = tmp_path / "reference"
    Trainer(load_config(None, TINY_RUN + ["mesh.fsdp=1"]), reference).run()
    workdir = tmp_path / "killed"
    command = [sys.executable, "-c", _RUN_SCRIPT, str(workdir), *TINY_RUN, "mesh.fsdp=1"]
    victim = subprocess.Popen(command, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and victim.poll() is None:
        metrics = workdir / "metrics.jsonl"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 6:
            break
        time.sleep(0.05)
    assert victim.poll() is None, "the run finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert len(_losses(workdir)) < 12
    subprocess.run(command, check=True, env=os.environ.copy(), capture_output=True)
    assert _losses(workdir) == _losses(reference)
    steps = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))


def test_best_checkpoint_is_selected_by_validation_perplexity_and_loads(tmp_path):
    trainer = Trainer(load_config(None, TINY_RUN + ["mesh.fsdp=1", "train.eval_batches=0", "train.batch_size=12"]), tmp_path)
    trainer.run()
    rows = trainer.splits["validation"].arrays
    assert len(rows["inputs"]) % 12, "the validation rows do not fill whole batches: padding is exercised"
    sums = jax.jit(lambda p, b: loss_sums(trainer.module, p, b))(trainer.state.params, rows)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in records if "val_ppl" in r]
    assert [r["step"] for r in evaluated] == [6, 12]
    assert evaluated[-1]["val_loss"] == pytest.approx(float(sums.loss) / float(sums.weight), rel=1e-5)
    best = min(evaluated, key=lambda r: r["val_ppl"])
    record = json.loads((tmp_path / "best" / "best.json").read_text())
    assert record["step"] == best["step"] and record["val_ppl"] == pytest.approx(best["val_ppl"])
    model = alert_jax.load_model(tmp_path)
    assert model.config.vocab_size == 512  # sized to the run's tokenizer


def test_unknown_key_and_bad_batch_are_clear_errors(tmp_path):
    from alert_jax.config import ConfigError

    with pytest.raises(ConfigError, match="train.batchsize"):
        load_config(None, ["train.batchsize=3"])
    with pytest.raises(ValueError, match="mesh.data\\*mesh.fsdp=8"):
        Trainer(load_config(None, TINY_RUN + ["train.batch_size=12", "mesh.fsdp=8"]), tmp_path)


def test_corpus_trained_tokenizer_learns_the_runs_own_text(tmp_path, shared_data, monkeypatch):
    from alert_jax.config import DataConfig
    from alert_jax.data.tokenizer import SentencePieceTokenizer
    from alert_jax.train import corpus
    from alert_jax.train.corpus import resolve_tokenizer, text_pairs

    trainings = []
    real_train = SentencePieceTokenizer.train
    monkeypatch.setattr(corpus.SentencePieceTokenizer, "train",
                        lambda *args, **kwargs: trainings.append(1) or real_train(*args, **kwargs))
    cfg = DataConfig(suite="finetune_samples", data_root=str(shared_data), validation_suite="", vocab_size=2000)
    tokenizer = resolve_tokenizer(cfg, tmp_path, lambda: text_pairs(cfg))
    assert trainings == [1]
    assert len(tokenizer.encode(" dollars")) == 1, "a word frequent in GSM8K, absent from the synthetic world"
    again = resolve_tokenizer(cfg, tmp_path, lambda: text_pairs(cfg))
    assert trainings == [1], "trained once per workdir while its text is unchanged"
    assert again.encode(" dollars") == tokenizer.encode(" dollars")
    changed = DataConfig(suite="finetune_samples", data_root=str(shared_data), validation_suite="", vocab_size=1500)
    resolve_tokenizer(changed, tmp_path, lambda: text_pairs(changed))
    assert trainings == [1, 1], "a changed vocab_size retrains the cached tokenizer"
