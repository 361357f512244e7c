"""Orbax checkpoints of the train state, and the best model by `train.select_by` (ALERT: dev perplexity).

Layout of a workdir:
    checkpoints/<step>/   orbax CheckpointManager steps (state = step, params, opt_state)
    best/                 the best model so far in alert_jax's native format (+ best.json: step, metrics)
    metrics.jsonl         one JSON object per logged step
`best_model_dir` is what `alert_jax.load_model(workdir)` resolves to.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from alert_jax.workdir import RunDir



def checkpoint_manager(workdir: Path, keep: int, async_save: bool) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
    return ocp.CheckpointManager(RunDir(workdir).checkpoints.absolute(), options=options)


def save_state(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
    manager.save(step, args=ocp.args.StandardSave(state))


def restore_state(manager: ocp.CheckpointManager, target: Any) -> Optional[Any]:
    """The latest complete checkpoint restored into `target`'s shardings, or None.

    Only the target's shapes, dtypes and shardings are used, so a state saved on one mesh and process count
    resumes on any other (orbax reads each device's slices of the saved arrays).
    """
    step = manager.latest_step()
    if step is None:
        return None
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target)
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def best_record(workdir: Path) -> Optional[dict]:
    path = RunDir(workdir).best_record
    return json.loads(path.read_text()) if path.exists() else None


def save_best(workdir: Path, model: Any, step: int, metrics: dict[str, Any]) -> None:
    """Replace `workdir/best` with this model, atomically (a crash leaves the previous best intact); `best.json`
    holds the step and the evaluation's metrics (val_loss, val_ppl, dev_rouge_l, select_by)."""
    from alert_jax.model.io import save_model

    workdir = Path(workdir)
    staging = workdir / f".best.step{step}"  # the same path on every host: orbax saves collectively
    save_model(model, staging)
    if jax.process_index() == 0:
        best, trash = RunDir(workdir).best, workdir / ".best.old"
        (staging / RunDir(workdir).best_record.name).write_text(
            json.dumps({"step": step, **metrics}))
        shutil.rmtree(trash, ignore_errors=True)
        if best.exists():
            os.replace(best, trash)
        os.replace(staging, best)
        shutil.rmtree(trash, ignore_errors=True)


def best_model_dir(workdir: Path) -> Optional[Path]:
    """The workdir's best model directory, if training has selected one."""
    return RunDir(workdir).best_model()
