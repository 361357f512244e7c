"""`alert-jax evaluate`: suite tasks × templates → generations → scores, written as it goes and resumable.

A workdir holds two files:

* `generations.jsonl` — one line per model × task × template × instance (prompt, generation, extracted
  prediction, references and the instance's metrics). Lines are appended and fsynced after every chunk
  of prompts, so a killed run loses at most one chunk. A line counts once its newline is on disk: on
  start a last line without one (cut short by the kill) is dropped, and instances already present are
  skipped, so re-running the same command finishes the job without redoing or duplicating work.
* `scores.jsonl` — one row per model × task × template: metric means over the instances in
  `generations.jsonl` (the row format `alert_jax.analysis.report` reads). It is rebuilt from the whole
  generations file after every run, so several models (keyed by label, variant and size) can share a
  workdir and the report sees them all.

The generation settings (max new tokens, stop strings, sampling, `eval.prompting`) are not part of an
instance's key: a workdir is meant for one setting. Which instances are scored is: `eval.max_examples_per_task`
(unset: the suite's `eval_instances_per_task`, 100 for `alert` as in NIV2's test split) picks them by a seeded
hash (`alert_jax.data.selection`), so every run and template scores the same ones and a larger cap only adds.

Scale-out: the model is laid over `eval.mesh` (default: every device, fsdp) and a multi-host job (the same
environment as `alert-jax finetune`, `parallel.mesh.maybe_initialize_distributed`) evaluates as one: every
process plans the same work, each batch is split over all hosts' devices, and process 0 alone writes the files.
The workdir is locked for the job (`RunDir.claim`): a second evaluation into it stops at once.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional, Sequence

from alert_jax.analysis.report import SCORES_FILE
from alert_jax.atomic import write_text
from alert_jax.config import EvalConfig
from alert_jax.data.example import Example, Task
from alert_jax.data.selection import demonstration_pool, evaluated_instances, shots_for
from alert_jax.data.suites import SCORED_SPLITS, SuiteTask, load_suite
from alert_jax.data.templates import TEMPLATES, extract_answer, render_prompt
from alert_jax.errors import AlertJaxError
from alert_jax.metrics.aggregate import System
from alert_jax.metrics.scores import METRICS, score
from alert_jax.parallel.mesh import is_main_process, maybe_initialize_distributed
from alert_jax.untrusted_json import decode_utf8, os_errors_as, parse_json
from alert_jax.workdir import RunDir

if TYPE_CHECKING:
    from alert_jax.data.tokenizer import Tokenizer
    from alert_jax.generation import GenerationStats

logger = logging.getLogger(__name__)

GENERATIONS_FILE = "generations.jsonl"
CHUNK_BATCHES = 4  # batches generated between two appends to generations.jsonl
_GROUP_FIELDS = ("model", "variant", "size", "task", "skill", "split", "template")
_KEY_FIELDS = (*_GROUP_FIELDS, "id")  # one instance of one system; a resumed run skips keys already written
_RECORD_FIELDS = (*_KEY_FIELDS, *METRICS)


class EvaluateError(AlertJaxError):
    """Evaluation cannot start or resume: bad arguments, no tokenizer, or an unreadable generations file."""


@dataclasses.dataclass(frozen=True)
class WorkItem:
    """One prompt to generate for: an instance of a suite task under a template."""

    entry: SuiteTask
    template: str
    example: Example
    prompt: str

    def identity(self, system: System) -> dict[str, str]:
        """The fields that name this instance in generations.jsonl (see `_KEY_FIELDS`)."""
        return {"model": system.model, "variant": system.variant, "size": system.size, "task": self.entry.task,
                "skill": self.entry.skill, "split": self.entry.split, "template": self.template,
                "id": self.example.id}


def _record_key(record: dict[str, Any]) -> tuple[str, ...]:
    return tuple(record[k] for k in _KEY_FIELDS)


PROMPTING_MODES: tuple[str, ...] = ("zero_shot", "few_shot", "few_shot_explained")


def instances_per_task(cfg: EvalConfig) -> int:
    """`eval.max_examples_per_task`, or when unset the suite's own default (alert: NIV2's cap of 100); 0 = all."""
    if cfg.max_examples_per_task is not None:
        return cfg.max_examples_per_task
    return load_suite(cfg.suite).eval_instances_per_task


def plan(tasks: Sequence[tuple[SuiteTask, Task]], cfg: EvalConfig) -> list[WorkItem]:
    """Every (task, template, instance) to evaluate, task-major: `instances_per_task(cfg)` instances per task,
    chosen by `eval.instance_seed`, prompted in `eval.prompting` mode.

    Instance ids are the resume keys, so a task with a repeated id is an error rather than a silent skip.
    """
    if cfg.prompting not in PROMPTING_MODES:
        raise EvaluateError(f"eval.prompting={cfg.prompting!r}: expected one of {', '.join(PROMPTING_MODES)}")
    shots = 0 if cfg.prompting == "zero_shot" else cfg.shots
    cap = instances_per_task(cfg)
    items = []
    for entry, task in tasks:
        examples = evaluated_instances(entry.task, task.examples, cap, cfg.instance_seed)
        seen: set[str] = set()
        for example in examples:
            if example.id in seen:
                raise EvaluateError(f"task {entry.task!r}: instance id {example.id!r} occurs twice")
            seen.add(example.id)
        pool = demonstration_pool(task.examples, examples, shots)
        prompt_shots = {ex.id: shots_for(entry.task, ex, pool, shots, cfg.instance_seed) for ex in examples}
        for template in templates_of(cfg):
            items += [WorkItem(entry, template, ex, render_prompt(template, task, ex, prompt_shots[ex.id],
                                                                  explained=cfg.prompting == "few_shot_explained"))
                      for ex in examples]
    return items


def templates_of(cfg: EvalConfig) -> tuple[str, ...]:
    """`eval.templates`, checked: a non-empty selection of T1–T5."""
    unknown = [t for t in cfg.templates if t not in TEMPLATES]
    if unknown or not cfg.templates:
        raise EvaluateError(f"eval.templates {list(cfg.templates)!r}: expected some of {', '.join(TEMPLATES)}")
    return cfg.templates


def _checked_record(line: str, path: Path, number: int, required: Sequence[str]) -> dict[str, Any]:
    record = parse_json(line, path, EvaluateError, line=number, expect=dict)
    missing = [k for k in required if k not in record]
    if missing:
        raise EvaluateError(f"{path}:{number}: missing key {missing[0]!r}")
    return record


def read_generations(path: Path, *, repair: bool = True, required: Sequence[str] = _RECORD_FIELDS
                     ) -> list[dict[str, Any]]:
    """The committed records of a generations file (or any JSON-lines file appended the same way, each record
    holding the `required` keys), dropping a cut-short last line (and, with `repair`, removing it from disk: only
    the process that writes the file repairs it)."""
    if not path.exists():
        return []
    with os_errors_as(EvaluateError, path):
        data = path.read_bytes()
    cut_short = bool(data) and not data.endswith(b"\n")
    text = decode_utf8(data[: data.rfind(b"\n") + 1], path, EvaluateError, line=1)  # rfind = -1: no whole line
    if cut_short and repair:
        logger.warning("%s: dropping a last line cut short by an interrupted run", path)
        write_text(path, text)
    # Split on "\n" only: JSON strings may hold U+2028 and friends, which str.splitlines breaks on.
    return [_checked_record(line, path, n, required) for n, line in enumerate(text.split("\n"), start=1)
            if line.strip()]


def append_records(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records as JSON lines and push them to disk before returning (so a kill cannot lose them)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


def instance_record(item: WorkItem, system: System, generation: str) -> dict[str, Any]:
    """The generations.jsonl line for one generated instance, scored on the answer it states."""
    prediction = extract_answer(generation)
    references = list(item.example.references)
    return {**item.identity(system), "prompt": item.prompt, "generation": generation, "prediction": prediction,
            "references": references, **score(prediction, references)}


def score_rows(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Metric means per model × task × template, in order of first appearance (the scores.jsonl rows)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[tuple(record[k] for k in _GROUP_FIELDS)].append(record)
    return [
        {**dict(zip(_GROUP_FIELDS, key)),
         **{m: sum(r[m] for r in members) / len(members) for m in METRICS}, "n": len(members)}
        for key, members in groups.items()
    ]


def resolve_tokenizer(model_path: str, tokenizer: Optional[str]) -> "Tokenizer":
    """The explicit tokenizer, else `<model>/tokenizer` (training workdirs), else the model dir's own (HF)."""
    from alert_jax.data.tokenizer import TokenizerError, load_tokenizer

    if tokenizer is not None:
        return load_tokenizer(tokenizer)
    model_dir = Path(model_path)
    if RunDir(model_dir).tokenizer.is_dir():
        return load_tokenizer(RunDir(model_dir).tokenizer)
    if model_dir.is_dir():
        try:
            return load_tokenizer(model_dir)
        except TokenizerError:
            pass
    raise EvaluateError(f"no tokenizer for model {model_path!r}: pass --tokenizer, or keep one in "
                        f"{RunDir(model_dir).tokenizer}")


def chunks(items: Sequence[WorkItem], size: int) -> Iterator[Sequence[WorkItem]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def evaluate(model: str | Path, cfg: EvalConfig, workdir: str | Path) -> Path:
    """Generate for every suite task × template × instance not yet in `workdir`, then rewrite the scores.

    `model` is anything `alert_jax.load_model` accepts; it is loaded only if work remains. Returns the path
    of `scores.jsonl`.
    """
    templates_of(cfg)
    workdir = Path(workdir)
    maybe_initialize_distributed()
    RunDir(workdir).claim()
    writer = is_main_process()
    generations_path = workdir / GENERATIONS_FILE
    system = System(model=cfg.label or Path(model).name, size=cfg.size, variant=cfg.variant)
    source = model_source(model)

    existing = read_generations(generations_path, repair=writer)
    _check_label_is_this_model(existing, system, source, generations_path)
    done = {_record_key(r) for r in existing}
    items = plan(_scored_tasks(cfg), cfg)
    todo = [item for item in items if _record_key(item.identity(system)) not in done]
    logger.info("evaluate %s on %s: %d of %d instances to generate (%d already in %s)", system.label, cfg.suite,
                len(todo), len(items), len(items) - len(todo), generations_path)
    if todo:
        _generate_into(generations_path, todo, system, source, model, cfg, writer)

    scores_path = workdir / SCORES_FILE
    if not writer:
        return scores_path
    rows = score_rows(read_generations(generations_path))
    write_text(scores_path, "".join(json.dumps(row) + "\n" for row in rows))
    logger.info("wrote %d score rows to %s", len(rows), scores_path)
    return scores_path


def _scored_tasks(cfg: EvalConfig) -> list[tuple[SuiteTask, Task]]:
    """The suite's in-domain and held-out tasks (dev and finetune tasks are not scored), from raw files or, with
    `eval.tfds_dir`, from an `alert-jax data build eval` output of the same suite."""
    if cfg.tfds_dir:
        from alert_jax.data.tfds_builders import eval_config_name, load_eval_tasks

        built = load_eval_tasks(cfg.tfds_dir, eval_config_name(cfg.suite))
        return [(SuiteTask(task=b.task.name, skill=b.skill, split=b.split, source="tfds", provenance=cfg.tfds_dir),
                 b.task) for b in built if b.split in SCORED_SPLITS]
    loaded = load_suite(cfg.suite)
    scored = dataclasses.replace(loaded, tasks=loaded.eval_tasks)
    return scored.load_tasks(cfg.data_root or None, skip_missing=cfg.skip_missing)


def model_source(model: str | Path) -> str:
    """What identifies the evaluated model across runs: its absolute path, or the bare preset name."""
    path = Path(model)
    return str(path.resolve()) if path.exists() else str(model)


def _check_label_is_this_model(records: Sequence[dict[str, Any]], system: System, source: str, where: Path) -> None:
    """Refuse to mix two models under one label: the second would be skipped as "already done" instance by
    instance (models in different directories often share a last component, e.g. `…/ft/best`, `…/cot/best`)."""
    for record in records:
        same_system = (record["model"], record["variant"], record["size"]) == (system.model, system.variant,
                                                                              system.size)
        if same_system and record.get("source", source) != source:
            raise EvaluateError(f"{where}: label {system.model!r} ({system.variant}) already holds generations of "
                                f"{record['source']}, not {source}; give this model its own label (eval.label)")


def _generate_into(path: Path, todo: Sequence[WorkItem], system: System, source: str, model_path: str | Path,
                   cfg: EvalConfig, writer: bool) -> None:
    """Generate `todo` chunk by chunk on `cfg.mesh`, appending each chunk's records to `path` once it is done.

    In a multi-host job every process runs this with the same chunks: the model is sharded over all hosts'
    devices and each batch's rows are split over the data × fsdp devices, so each host computes its share of
    every batch; the finished tokens are gathered and only the writer (process 0) appends them, so every
    record is written exactly once and the file equals a single-process run's.
    """
    # Imported here so that rescoring a finished workdir (and `import alert_jax.evaluate`) never loads jax.
    from tqdm.auto import tqdm

    from alert_jax.generation import GenerationStats, generate_text
    from alert_jax.model.io import load_model
    from alert_jax.parallel.mesh import devices_for, make_mesh

    # First: a wrong model path is the likelier mistake.
    model = load_model(model_path, cfg.dtype, mesh=make_mesh(cfg.mesh, devices_for(cfg.mesh)),
                       quantize=cfg.quantize)
    tokenizer = resolve_tokenizer(str(model_path), cfg.tokenizer or None)
    stats, start = GenerationStats(), time.perf_counter()
    with tqdm(total=len(todo), desc=f"evaluate {system.label}", unit="prompt", dynamic_ncols=True,
              disable=not writer) as bar:
        for chunk in chunks(todo, CHUNK_BATCHES * cfg.batch_size):
            texts = generate_text(model, tokenizer, [item.prompt for item in chunk], batch_size=cfg.batch_size,
                                  max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                  seed=cfg.seed, stop_strings=tuple(cfg.stop_strings), stats=stats)
            if writer:
                append_records(path, [{**instance_record(item, system, text), "source": source}
                                      for item, text in zip(chunk, texts)])
            bar.update(len(chunk))
            _log_throughput(stats, time.perf_counter() - start, cfg.max_new_tokens)


def _log_throughput(stats: GenerationStats, seconds: float, max_new_tokens: int) -> None:
    """Throughput so far (compiles included): prompts/s, generated tokens/s, and how early batches stopped."""
    logger.info("evaluate throughput: %d prompts in %.1f s = %.2f prompts/s, %.1f generated tokens/s; "
                "%d batches took %d decode steps of at most %d", stats.prompts, seconds, stats.prompts / seconds,
                stats.new_tokens / seconds, stats.batches, stats.decode_steps, stats.batches * max_new_tokens)
