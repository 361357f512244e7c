"""The run directory: one object owns its layout, so no module spells a path of it by hand.

    WORKDIR/
      config.yaml      the experiment config this run was started with
      tokenizer/       the run's tokenizer (given, or trained on its corpus)
      data/            packed-row caches
      checkpoints/     orbax train-state steps
      best/            the best model so far (native format) + best.json
      metrics.jsonl    one JSON object per logged step
      eval/            generations.jsonl + scores.jsonl of the run's evaluation

Pure Python (no jax): the evaluation and analysis paths resolve workdirs too.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

BEST_RECORD = "best.json"


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
    def eval(self) -> Path:
        return self.root / "eval"

    def best_model(self) -> Path | None:
        """The best model directory, if training has selected one (what `load_model(workdir)` resolves to)."""
        return self.best if self.best_record.exists() else None
