"""`alert-jax sweep`: a scaling study as one YAML grid, expanded into named, resumable runs.

A sweep file names a base experiment config and a grid of axes; every axis value is a label and
the dotted config overrides it stands for. The runs are the cartesian product of the axes, named
by joining their labels in axis order (`1.3b-cot-s0`):

    name: alert_scaling
    base: ../../configs/experiments/opt-1.3b-ft.yaml   # relative to this file
    overrides: {data.data_root: /data/alert}           # optional, applied to every run
    grid:
      size:
        1.3b: {}
        13b: {config: ../../configs/experiments/opt-13b-ft.yaml}
      variant:
        pretrained: {finetune: false}
        ft: {data.variant: ft}
        cot: {data.variant: cot, eval.max_new_tokens: 256}

Two keys of an axis value are not overrides: `config` replaces the base experiment file, and
`finetune: false` makes the run evaluate `model.name` as it is (ALERT's pretrained baseline, the
reference every FT/CoT gain is measured against). Two axes setting the same key is an error:
the winner would depend on axis order.

Every run's config is validated with `load_config` at expansion time, so a typo fails before any
device is touched. Each run trains in `OUT/<name>` (the trainer resumes from its checkpoints) and
evaluates into `OUT/<name>/eval`; a run whose `eval/scores.jsonl` exists is finished and skipped,
so re-running the command resumes the sweep. `OUT/sweep.jsonl` is an append-only log of what
happened to each run (planned, started, done, skipped, failed).

The sweep runs its runs one after another in this process, which suits one host; on a TPU pod or a
multi-host GPU job, run each experiment through the scripts in `launch/` instead.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from alert_jax.analysis.report import SCORES_FILE  # written last by `evaluate`: its presence means "finished"
from alert_jax.config import ConfigError, ExperimentConfig, eval_config_for, load_config, parse_override
from alert_jax.errors import AlertJaxError

MANIFEST_FILE = "sweep.jsonl"
EVAL_SUBDIR = "eval"
_TOP_KEYS = ("name", "base", "overrides", "grid")
_CONFIG_KEY = "config"
_FINETUNE_KEY = "finetune"
_LABEL = re.compile(r"^[A-Za-z0-9._]+$")  # no "-" (the name separator) and nothing a path could trip on


class SweepError(AlertJaxError):
    """A sweep file that cannot be expanded, or a run selection that names no run; says file and key."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One point of the grid: the experiment file, the overrides on top of it and where it lives."""

    name: str
    config_path: Path
    overrides: tuple[str, ...]
    workdir: Path
    finetune: bool = True  # False: evaluate model.name as it is (the pretrained baseline)

    def config(self) -> ExperimentConfig:
        return load_config(self.config_path, list(self.overrides))

    @property
    def eval_dir(self) -> Path:
        return self.workdir / EVAL_SUBDIR

    @property
    def finished(self) -> bool:
        return (self.eval_dir / SCORES_FILE).exists()


def _override_text(key: str, value: Any) -> str:
    """`key=value` that `parse_override` reads back to the same value (strings quoted only if needed)."""
    if isinstance(value, str) and yaml.safe_load(value) == value and "\n" not in value:
        return f"{key}={value}"
    return f"{key}={json.dumps(value)}"


def _beside(sweep_file: Path, relative: str) -> Path:
    """A path written in a sweep file, which is relative to that file's directory."""
    return Path(os.path.normpath(sweep_file.parent / relative))


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SweepError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


@dataclasses.dataclass(frozen=True)
class _Choice:
    """One labelled value of one axis."""

    axis: str
    label: str
    config: Optional[Path]
    finetune: Optional[bool]
    overrides: dict[str, Any]


def _choice(path: Path, axis: str, label: Any, raw: Any) -> _Choice:
    where = f"{path}: grid.{axis}.{label}"
    label = str(label)
    if not _LABEL.match(label):
        raise SweepError(f"{where}: a label may use only letters, digits, '.' and '_'")
    values = dict(_mapping(raw, where))
    config = values.pop(_CONFIG_KEY, None)
    finetune = values.pop(_FINETUNE_KEY, None)
    if config is not None and not isinstance(config, str):
        raise SweepError(f"{where}.{_CONFIG_KEY}: expected a path, got {config!r}")
    if finetune is not None and not isinstance(finetune, bool):
        raise SweepError(f"{where}.{_FINETUNE_KEY}: expected true or false, got {finetune!r}")
    return _Choice(axis, label, _beside(path, config) if config else None, finetune, values)


def _axes(path: Path, grid: Any) -> list[list[_Choice]]:
    grid = _mapping(grid, f"{path}: grid")
    if not grid:
        raise SweepError(f"{path}: grid: needs at least one axis")
    axes = []
    for axis, values in grid.items():
        values = _mapping(values, f"{path}: grid.{axis}")
        if not values:
            raise SweepError(f"{path}: grid.{axis}: needs at least one labelled value")
        axes.append([_choice(path, str(axis), label, raw) for label, raw in values.items()])
    return axes


def _combine(path: Path, base: Path, common: dict[str, Any], point: Sequence[_Choice], out_dir: Path) -> Run:
    """The run for one grid point; an override or reserved key set by two axes is an error."""
    name = "-".join(choice.label for choice in point)
    owner: dict[str, str] = {}
    merged = dict(common)
    config, finetune = base, True
    for choice in point:
        keys = list(choice.overrides)
        keys += [_CONFIG_KEY] if choice.config is not None else []
        keys += [_FINETUNE_KEY] if choice.finetune is not None else []
        for key in keys:
            here = f"grid.{choice.axis}.{choice.label}"
            if key in owner:
                raise SweepError(f"{path}: {here} sets {key}, already set by {owner[key]}")
            owner[key] = here
        merged.update(choice.overrides)
        config = choice.config or config
        finetune = finetune if choice.finetune is None else choice.finetune
    overrides = tuple(_override_text(k, v) for k, v in merged.items())
    run = Run(name, config, overrides, out_dir / name, finetune)
    try:
        run.config()
    except ConfigError as exc:
        raise SweepError(f"{path}: run {name}: {exc}") from None
    return run


def expand_sweep(path: str | Path, out_dir: str | Path = "runs", extra_overrides: Sequence[str] = ()) -> list[Run]:
    """Read a sweep file and return its runs in grid order, each validated with `load_config`.

    `extra_overrides` (`a.b=c` strings, e.g. from `--set`) apply to every run after the file's own.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SweepError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    except OSError as exc:
        raise SweepError(f"{path}: {exc.strerror}") from None
    raw = _mapping(raw, str(path))
    unknown = sorted(set(raw) - set(_TOP_KEYS))
    if unknown:
        raise SweepError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(_TOP_KEYS)})")
    if not isinstance(raw.get("base"), str):
        raise SweepError(f"{path}: base: expected the path of an experiment config")
    common = dict(_mapping(raw.get("overrides"), f"{path}: overrides"))
    for text in extra_overrides:
        try:
            key, value = parse_override(text)
        except ConfigError as exc:
            raise SweepError(f"--set: {exc}") from None
        common[key] = value
    axes = _axes(path, raw.get("grid"))
    base = _beside(path, raw["base"])
    return [_combine(path, base, common, point, Path(out_dir)) for point in itertools.product(*axes)]


def select(runs: Sequence[Run], only: Sequence[str]) -> list[Run]:
    """The runs named in `only` (all when empty); a name that matches no run is an error."""
    if not only:
        return list(runs)
    names = {run.name for run in runs}
    missing = [name for name in only if name not in names]
    if missing:
        raise SweepError(f"--only {missing[0]}: no such run (runs: {', '.join(run.name for run in runs)})")
    return [run for run in runs if run.name in only]


def format_plan(runs: Sequence[Run]) -> str:
    """Human-readable plan: one line per run with its status, then its config and overrides."""
    lines = [f"{len(runs)} run(s), {sum(not r.finished for r in runs)} to do"]
    for run in runs:
        status = "done" if run.finished else "todo"
        stages = "finetune+evaluate" if run.finetune else "evaluate only"
        lines.append(f"[{status}] {run.name}  ({stages})  workdir={run.workdir}")
        lines.append(f"    config={run.config_path}")
        lines.extend(f"    --set {override}" for override in run.overrides)
    return "\n".join(lines)


def _append(manifest: Path, run: Run, status: str, **extra: Any) -> None:
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "name": run.name, "status": status,
              "config": str(run.config_path), "overrides": list(run.overrides), "workdir": str(run.workdir),
              "finetune": run.finetune, **extra}
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with manifest.open("a") as f:
        f.write(json.dumps(record) + "\n")


def execute(run: Run) -> Path:
    """Finetune (unless a baseline) then evaluate one run with its config's settings; returns the scores path."""
    from alert_jax.evaluate import evaluate  # heavy imports only when something is actually run
    from alert_jax.train.loop import finetune

    cfg = run.config()
    if run.finetune:
        finetune(cfg, run.workdir)
        return evaluate(run.workdir, eval_config_for(cfg, cfg.data.variant), run.eval_dir)
    return evaluate(cfg.model.name, eval_config_for(cfg, "pretrained"), run.eval_dir)


def run_sweep(runs: Sequence[Run], out_dir: Path, *, dry_run: bool = False) -> None:
    """Run (or, dry, only log as planned) each unfinished run in turn, logging to OUT/sweep.jsonl.

    A failing run is logged as failed and its error propagates: later runs may depend on the same
    broken setting, and re-running the command resumes from the failed run.
    """
    manifest = Path(out_dir) / MANIFEST_FILE
    for run in runs:
        if run.finished:
            _append(manifest, run, "skipped")
            continue
        if dry_run:
            _append(manifest, run, "planned")
            continue
        _append(manifest, run, "started")
        start = time.monotonic()
        try:
            scores = execute(run)
        except BaseException as exc:
            _append(manifest, run, "failed", error=f"{type(exc).__name__}: {exc}")
            raise
        _append(manifest, run, "done", scores=str(scores), seconds=round(time.monotonic() - start, 1))
