"""The run's metrics: `metrics.jsonl` (one object per logged step) and tensorboard events.

On resume the log is cut back to the restored step, so the re-run steps are written once and the
file reads as if the run had never stopped.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

from alert_jax.atomic import write_text
from alert_jax.workdir import RunDir



def truncate_after(path: Path, step: int) -> None:
    """Drop records with `step` > the restored step (they belonged to the interrupted run)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the kill
        if record.get("step", 0) <= step:
            kept.append(line)
    write_text(path, "".join(f"{line}\n" for line in kept))


def strict_record(record: dict) -> dict:
    """NaN and ±inf become null, so a metrics record stays strict JSON that any reader parses."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}


class MetricsLog:
    def __init__(self, workdir: Path, enabled: bool = True):
        self.path = RunDir(workdir).metrics
        self.enabled = enabled
        self._tb: Optional[Any] = None
        if enabled:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(RunDir(workdir).tensorboard))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        record = strict_record(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")
            f.flush()
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self._tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
