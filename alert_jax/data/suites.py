"""Suites: named lists of tasks, each tagged with an ALERT skill, a split and a data source.

A suite is a YAML file under `configs/suites/` (or any path):

    name: alert
    description: one line
    synthetic_examples: 40      # optional: instances per generated eval/dev task
    synthetic_finetune_examples: 200   # optional: instances per generated finetune task
    synthetic_seed: 0           # optional
    eval_instances_per_task: 100   # optional: instances scored per task when eval.max_examples_per_task
                                   # is unset (0 or absent = all)
    tasks:
      - task: task151_tomqa_find_location_easy_clean
        skill: spatial          # one of SKILLS
        split: held_out         # one of SPLITS
        source: niv2            # a reader kind (readers.READERS) or "synthetic"
        path: niv2/task151_tomqa_find_location_easy_clean.json   # relative to a data root
        provenance: why this skill and split

Keeping the skill/split assignment in data, each entry with its provenance, makes the claims
we copy from the paper and the ones we made ourselves easy to tell apart and to change.
Unknown keys, bad skills and bad splits are errors naming the file and the key. A task may be
listed once per split (the synthetic suite lists its in-domain tasks under `in_domain` for
scoring and under `finetune` for the finetuning corpus; the generator keeps the two disjoint).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import yaml

from alert_jax.data import readers, synthetic
from alert_jax.data.example import Task
from alert_jax.errors import AlertJaxError
from alert_jax.shipped import CONFIGS_DIR

SKILLS: tuple[str, ...] = (
    "logical", "causal", "commonsense", "entailment", "mathematics",
    "abductive", "spatial", "analogical", "argument", "deductive",
)
SPLITS: tuple[str, ...] = ("in_domain", "held_out", "dev", "finetune")
SCORED_SPLITS: tuple[str, ...] = ("in_domain", "held_out")
SYNTHETIC_SOURCE = "synthetic"
SUITES_DIR = CONFIGS_DIR / "suites"

_SETTING_KEYS = {"synthetic_examples", "synthetic_finetune_examples", "synthetic_seed", "eval_instances_per_task"}
_SUITE_KEYS = {"name", "description", "tasks", *_SETTING_KEYS}
_TASK_KEYS = {"task", "skill", "split", "source", "path", "provenance"}


class SuiteError(AlertJaxError):
    """A suite file is malformed or names data that cannot be found."""


@dataclasses.dataclass(frozen=True)
class SuiteTask:
    """One suite entry: which task, which skill it measures, and where its data lives."""

    task: str
    skill: str
    split: str
    source: str
    provenance: str
    path: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    description: str
    tasks: tuple[SuiteTask, ...]
    synthetic_examples: int = 40
    synthetic_finetune_examples: int = 200
    synthetic_seed: int = 0
    eval_instances_per_task: int = 0  # 0 = all; alert.yaml says 100 (NIV2's test split cap)
    origin: str = ""

    def _with_split(self, *splits: str) -> tuple[SuiteTask, ...]:
        return tuple(t for t in self.tasks if t.split in splits)

    @property
    def eval_tasks(self) -> tuple[SuiteTask, ...]:
        """Tasks that are scored: in-domain and held-out."""
        return self._with_split(*SCORED_SPLITS)

    @property
    def dev_tasks(self) -> tuple[SuiteTask, ...]:
        """Tasks for checkpoint selection by perplexity."""
        return self._with_split("dev")

    @property
    def finetune_tasks(self) -> tuple[SuiteTask, ...]:
        return self._with_split("finetune")

    @property
    def skills(self) -> tuple[str, ...]:
        """Skills the suite covers, in `SKILLS` order."""
        present = {t.skill for t in self.tasks}
        return tuple(s for s in SKILLS if s in present)

    def load_tasks(
        self, data_root: str | Path | None = None, *, skip_missing: bool = False
    ) -> list[tuple[SuiteTask, Task]]:
        """Read every task's data; file paths are relative to `data_root`.

        `skip_missing=True` drops entries whose file is absent (for suites over data samples);
        otherwise a missing file is an error naming its path.
        """
        loaded = []
        for entry in self.tasks:
            if entry.source == SYNTHETIC_SOURCE:
                if entry.split == "finetune":
                    task = synthetic.synthetic_task(
                        entry.task, self.synthetic_finetune_examples, self.synthetic_seed, "finetune"
                    )
                else:
                    task = synthetic.synthetic_task(entry.task, self.synthetic_examples, self.synthetic_seed)
                loaded.append((entry, task))
                continue
            if data_root is None:
                raise SuiteError(f"{self.origin}: task {entry.task!r} reads a file but no data root was given")
            path = Path(data_root) / str(entry.path)
            if not path.exists():
                if skip_missing:
                    continue
                raise SuiteError(f"{self.origin}: task {entry.task!r}: {path} not found")
            loaded.append((entry, readers.read(entry.source, path)))
        return loaded


def _suite_path(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise SuiteError(f"{candidate}: suite file not found")
        return candidate
    path = SUITES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.yaml")))
        raise SuiteError(f"unknown suite {name_or_path!r}; known: {known}")
    return path


def _key(where: str, key: str) -> str:
    """`path: tasks[3].skill` inside a list entry, `path: name` at the top level."""
    return f"{where}.{key}" if where.endswith("]") else f"{where}: {key}"


def _check_keys(mapping: Any, allowed: set[str], required: set[str], where: str) -> None:
    if not isinstance(mapping, dict):
        raise SuiteError(f"{where}: expected a mapping, got {type(mapping).__name__}")
    unknown = sorted(map(str, set(mapping) - allowed))
    if unknown:
        raise SuiteError(f"{_key(where, unknown[0])}: unknown key (allowed: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(mapping))
    if missing:
        raise SuiteError(f"{where}: missing key {missing[0]!r}")
    for key, value in mapping.items():
        expected = int if key in _SETTING_KEYS else (list if key == "tasks" else str)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise SuiteError(f"{_key(where, key)}: expected {expected.__name__}, got {type(value).__name__}")


def _one_of(value: str, allowed: tuple[str, ...] | list[str], where: str) -> None:
    if value not in allowed:
        raise SuiteError(f"{where}: {value!r} is not one of {', '.join(allowed)}")


def _suite_task(raw: Any, where: str) -> SuiteTask:
    _check_keys(raw, _TASK_KEYS, _TASK_KEYS - {"path"}, where)
    _one_of(raw["skill"], SKILLS, _key(where, "skill"))
    _one_of(raw["split"], SPLITS, _key(where, "split"))
    _one_of(raw["source"], [*readers.READERS, SYNTHETIC_SOURCE], _key(where, "source"))
    if raw["source"] == SYNTHETIC_SOURCE:
        _one_of(raw["task"], list(synthetic.TASKS), _key(where, "task"))
        if raw["split"] == "finetune" and synthetic.TASKS[raw["task"]].split != "in_domain":
            raise SuiteError(f"{_key(where, 'split')}: {raw['task']!r} is not an in-domain task; cannot finetune on it")
    elif "path" not in raw:
        raise SuiteError(f"{where}: missing key 'path' (needed for source {raw['source']!r})")
    return SuiteTask(**raw)


def load_suite(name_or_path: str | Path) -> Suite:
    """The suite named `name_or_path` (a file in `configs/suites/`) or stored at that path."""
    path = _suite_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise SuiteError(f"{path}: invalid YAML: {str(err).splitlines()[0]}") from None
    except UnicodeDecodeError as err:
        raise SuiteError(f"{path}: not UTF-8 text (byte {err.start})") from None
    _check_keys(raw, _SUITE_KEYS, {"name", "tasks"}, str(path))
    tasks = tuple(_suite_task(t, f"{path}: tasks[{i}]") for i, t in enumerate(raw["tasks"]))
    seen: set[tuple[str, str]] = set()
    for i, entry in enumerate(tasks):
        if (entry.task, entry.split) in seen:
            raise SuiteError(f"{_key(f'{path}: tasks[{i}]', 'task')}: {entry.task!r} is listed twice in {entry.split}")
        seen.add((entry.task, entry.split))
    settings = {k: raw[k] for k in _SETTING_KEYS if k in raw}
    return Suite(
        name=raw["name"], description=raw.get("description", ""), tasks=tasks, origin=str(path), **settings
    )
