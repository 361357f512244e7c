"""Orbax checkpoints of the train state, and the best model by `train.select_by` (ALERT: dev perplexity).

Layout of a workdir:
    checkpoints/<step>/   orbax CheckpointManager steps (state = step, params, opt_state)
    best/                 the best model so far in alert_jax's native format (+ best.json: step, metrics)
    metrics.jsonl         one JSON object per logged step
`best_model_dir` is what `alert_jax.load_model(workdir)` resolves to.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from alert_jax.atomic import replace_dir
from alert_jax.errors import AlertJaxError
from alert_jax.parallel.mesh import run_on_main
from alert_jax.train.metrics_log import strict_record
from alert_jax.untrusted_json import read_json
from alert_jax.workdir import RunDir



def checkpoint_manager(workdir: Path, keep: int, async_save: bool) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
    return ocp.CheckpointManager(RunDir(workdir).checkpoints.absolute(), options=options)


def save_state(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
    manager.save(step, args=ocp.args.StandardSave(state))


class CorruptCheckpointError(AlertJaxError):
    """No checkpoint step of the workdir can be read back, or a best-model record is unreadable."""


def restore_state(manager: ocp.CheckpointManager, target: Any) -> Optional[Any]:
    """The newest readable checkpoint restored into `target`'s shardings, or None when there is none.

    Only the target's shapes, dtypes and shardings are used (an abstract target), so a state saved on one mesh and
    process count resumes on any other (orbax reads each device's slices of the saved arrays). A step that cannot
    be read (truncated or corrupted by a crash or a full disk) is named on stderr and the previous step tried; once
    an older one restores, the broken ones move to `checkpoints-broken/` so the resumed run can save those steps
    again. If no step restores, nothing is moved (the cause may be this run's config, not the files) and the
    error names the newest step's failure.
    """
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target)
    directory = Path(manager.directory)
    broken: list[tuple[int, str]] = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as exc:  # noqa: BLE001 — any failure to read files a crash may have broken
            broken.append((step, f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"))
            print(f"alert-jax: warning: {directory / str(step)}: checkpoint step {step} is unreadable "
                  f"({broken[-1][1]}); falling back to the previous step", file=sys.stderr)
            continue
        for bad, _ in broken:
            run_on_main(f"set aside checkpoint {bad}", lambda bad=bad: _set_aside(directory, bad))
        if broken:
            manager.reload()
        return state
    if broken:
        step, reason = broken[0]
        raise CorruptCheckpointError(f"{directory / str(step)}: no checkpoint step could be restored (newest: "
                                     f"{reason})")
    return None


def _set_aside(directory: Path, step: int) -> None:
    broken = directory.with_name(f"{directory.name}-broken")
    broken.mkdir(exist_ok=True)
    replace_dir(directory / str(step), broken / str(step))


def best_record(workdir: Path) -> Optional[dict]:
    """The best model's record (step, metrics, select_by), None before any; a corrupt one names the file.

    A metric stored as null (it was not finite) is left out, so any finite value beats it.
    """
    path = RunDir(workdir).best_record
    if not path.exists():
        return None
    record = read_json(path, _corrupt_record, context="unreadable best-model record", expect=dict)
    problem = _record_problem(record)
    if problem:
        raise _corrupt_record(f"{path}: unreadable best-model record: {problem}")
    return {k: v for k, v in record.items() if v is not None}


def _corrupt_record(message: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"{message}; delete best/ to select a new best")


def _record_problem(record: dict) -> Optional[str]:
    if not isinstance(record.get("step"), int) or isinstance(record.get("step"), bool):
        return "no integer step"
    for key, value in record.items():
        if key not in ("step", "select_by") and value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"{key} is not a number"
    return None


def save_best(workdir: Path, model: Any, step: int, metrics: dict[str, Any]) -> None:
    """Replace `workdir/best` with this model and `best.json` (the step and the evaluation's metrics: val_loss,
    val_ppl, dev_rouge_l, select_by), swapped in together (`alert_jax.atomic`): a crash leaves the previous best
    intact."""
    from alert_jax.model.io import save_model

    run_dir = RunDir(workdir)
    record = json.dumps(strict_record({"step": step, **metrics}), allow_nan=False)
    save_model(model, run_dir.best, overwrite=True, extra_files={run_dir.best_record.name: record})


def best_model_dir(workdir: Path) -> Optional[Path]:
    """The workdir's best model directory, if training has selected one."""
    return RunDir(workdir).best_model()
