"""The run directory: one object owns its layout, so no module spells a path of it by hand.

    WORKDIR/
      config.yaml      the experiment config this run was started with
      tokenizer/       the run's tokenizer (given, or trained on its corpus)
      data/            packed-row caches
      checkpoints/     orbax train-state steps
      best/            the best model so far (native format) + best.json
      metrics.jsonl    one JSON object per logged step
      tensorboard/     the same metrics as tensorboard events
      eval/            generations.jsonl + scores.jsonl of the run's evaluation
      checkpoint_contract.json   what the checkpoints need of a config to resume (architecture, seq_len)
      .lock            the exclusive lock of the one run using the directory (`alert_jax.runlock`)

Caches (tokenizer/, data/) hold a `fingerprint.json` of the config and inputs they were built from; a cache whose
fingerprint differs from the current run's is rebuilt, never silently reused. In a multi-host job only process 0
takes the lock and builds caches while the others wait (`parallel.mesh.run_on_main`).

Pure Python (no jax): the evaluation and analysis paths resolve workdirs too.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from alert_jax.atomic import recover, write_text
from alert_jax.errors import AlertJaxError
from alert_jax.untrusted_json import read_json

BEST_RECORD = "best.json"
FINGERPRINT_FILE = "fingerprint.json"


class IncompatibleRunError(AlertJaxError):
    """The workdir's checkpoints were trained under a config they cannot resume under (other shape, seq_len)."""


def fingerprint(inputs: Mapping[str, Any]) -> str:
    """A stable digest of JSON-able `inputs` (key order does not matter)."""
    text = json.dumps(inputs, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_is_current(directory: Path, inputs: Mapping[str, Any]) -> bool:
    """Whether `directory` was built, completely, from exactly `inputs` (see `stamp_cache`)."""
    try:
        stamp = read_json(Path(directory) / FINGERPRINT_FILE, AlertJaxError, expect=dict)
    except AlertJaxError:  # missing (never stamped, or half built) or damaged: rebuild
        return False
    return stamp.get("fingerprint") == fingerprint(inputs)


def stamp_cache(directory: Path, inputs: Mapping[str, Any]) -> None:
    """Mark a completely built cache with its inputs; written last, so a half-built cache never looks current."""
    write_json_atomically(Path(directory) / FINGERPRINT_FILE, {"fingerprint": fingerprint(inputs), "inputs": inputs})


def write_json_atomically(path: Path, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=True, default=str))


def check_contract(path: Path, contract: Mapping[str, Any]) -> None:
    """Refuse to resume checkpoints trained under another contract, naming every key that differs.

    Call it only when checkpoints exist; `path` missing (a run from before contracts) is accepted.
    """
    if not Path(path).exists():
        return
    recorded = read_json(path, IncompatibleRunError, context="unreadable", expect=dict)
    differing = [key for key in sorted(set(recorded) | set(contract)) if recorded.get(key) != contract.get(key)]
    if differing:
        details = "; ".join(f"{key}: checkpoints have {recorded.get(key)!r}, this config {contract.get(key)!r}"
                            for key in differing)
        raise IncompatibleRunError(f"{path}: the workdir's checkpoints were trained under another config ({details});"
                                   f" use a new workdir, or restore the config")


@dataclasses.dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        return self.root / "best"

    @property
    def best_record(self) -> Path:
        return self.best / BEST_RECORD

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def checkpoint_contract(self) -> Path:
        return self.root / "checkpoint_contract.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    def claim(self) -> None:
        """This job's exclusive hold on the directory (created if missing) for the rest of the process's life.

        Process 0 takes the lock (`alert_jax.runlock`); the other processes of a multi-host job trust the job,
        and stop with it if process 0 finds the directory busy.
        """
        from alert_jax.parallel.mesh import run_on_main
        from alert_jax.runlock import lock_directory

        run_on_main(f"lock {self.lock}", lambda: lock_directory(self.root, self.lock))

    def best_model(self) -> Path | None:
        """The best model directory, if training has selected one (what `load_model(workdir)` resolves to)."""
        recover(self.best)  # a swap killed between its renames leaves the previous best aside
        return self.best if self.best_record.exists() else None
