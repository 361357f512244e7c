"""Fault injection through the command line: every bad input ends in exit status 2 with ONE line naming the file,
line or key (never a traceback, never exit 0 with wrong output), and nothing already written is lost.

The README's "Failure modes" table lists each case with the test that covers it. Cases run the CLI's `main`
in-process (subprocesses only where a kill is the point) and use tiny models so the module stays fast.
"""
from __future__ import annotations

import json
import math
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
