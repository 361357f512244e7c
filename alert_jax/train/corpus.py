"""From a finetuning suite to packed token rows: the trainer's only view of data.

Training text comes from the suite's `finetune` tasks, read from raw files (`data.data_root`) or from an
`alert-jax data build finetune` output (`data.tfds_dir`); both give the same rows (`synthetic-pretrain` instead
gives plain narrative text for the demo's "pretraining" stage).
Validation text — ALERT's checkpoint-selection set — comes from the `dev` tasks of `data.validation_suite`, or,
without one, from the finetuning examples that `alert_jax.data.splits.is_validation` holds out (a TFDS build
has already held them out the same way). `data.examples_per_task` caps each task's training examples.
Every target ends with EOS so finetuned models learn where to stop.
The packed arrays are cached in the workdir so a resumed run reads exactly the rows it started with.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from alert_jax.config import DataConfig, TrainConfig
from alert_jax.data import synthetic
from alert_jax.errors import AlertJaxError
from alert_jax.data.example import Task
from alert_jax.data.packing import FIELDS, Packed, PackingStats, pack, tokenize_example
from alert_jax.data.splits import is_validation
from alert_jax.data.suites import load_suite
from alert_jax.data.templates import FINETUNE_TEMPLATE, PROMPT_TARGET_SEPARATOR, format_target, render_prompt
from alert_jax.data.tokenizer import SentencePieceTokenizer, Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

PRETRAIN_SUITE = "synthetic-pretrain"
TextPair = tuple[str, str]
SplitPairs = tuple[list[TextPair], list[TextPair]]  # (train, validation)
SourcedPair = tuple[str, TextPair]  # (suite task it comes from, pair)


def task_pairs(tasks: Sequence[Task], variant: str) -> list[TextPair]:
    """(prompt, target) for every instance, prompts in the finetuning template."""
    return [(render_prompt(FINETUNE_TEMPLATE, task, ex), format_target(ex, variant))
            for task in tasks for ex in task.examples]


def _finetune_tasks(cfg: DataConfig) -> list[tuple[str, Task]]:
    """(suite task name, task with all its examples) for every `finetune` entry, in suite order."""
    suite = load_suite(cfg.suite)
    tasks = [(entry.task, task) for entry, task in suite.load_tasks(cfg.data_root or None) if entry.split == "finetune"]
    if not tasks:
        raise AlertJaxError(f"data.suite={cfg.suite}: the suite has no tasks with split 'finetune'")
    return tasks


def _raw_finetune_pairs(cfg: DataConfig, hold_out: bool) -> tuple[list[SourcedPair], list[TextPair]]:
    """(training pairs with their source, held-out pairs) from the raw files; nothing is held out unless asked."""
    train: list[SourcedPair] = []
    held_out: list[TextPair] = []
    for source, task in _finetune_tasks(cfg):
        for example, pair in zip(task.examples, task_pairs([task], cfg.variant)):
            if hold_out and is_validation(source, example.input, cfg.validation_fraction):
                held_out.append(pair)
            else:
                train.append((source, pair))
    return train, held_out


def _built_finetune_pairs(cfg: DataConfig) -> tuple[list[SourcedPair], list[TextPair]]:
    """(training pairs with their source, held-out pairs) from a TFDS build of the suite and variant."""
    from alert_jax.data.tfds_builders import load_finetune_split  # TFDS is slow to import: only when used

    train, held_out = (load_finetune_split(cfg.tfds_dir, cfg.suite, cfg.variant, split)
                       for split in ("train", "validation"))
    return [(r["source"], (r["prompt"], r["target"])) for r in train], [(r["prompt"], r["target"]) for r in held_out]


def _first_per_source(pairs: Sequence[SourcedPair], n: int) -> list[TextPair]:
    """The first `n` pairs of each source (all of them for n <= 0), order kept."""
    seen: collections.Counter[str] = collections.Counter()
    kept = []
    for source, pair in pairs:
        seen[source] += 1
        if n <= 0 or seen[source] <= n:
            kept.append(pair)
    return kept


def _validation_tasks(cfg: DataConfig) -> list[Task]:
    if not cfg.validation_suite:
        return []
    suite = load_suite(cfg.validation_suite)
    return [task for entry, task in suite.load_tasks(cfg.data_root or None, skip_missing=True)
            if entry.split == "dev"]


def text_pairs(cfg: DataConfig) -> SplitPairs:
    """(train, validation) text pairs for the configured suite and variant."""
    if cfg.suite == PRETRAIN_SUITE:
        texts = synthetic.synthetic_pretraining_text(cfg.examples_per_task, seed=0)
        cut = max(1, int(len(texts) * cfg.validation_fraction))
        return [("", t) for t in texts[cut:]], [("", t) for t in texts[:cut]]
    validation = task_pairs(_validation_tasks(cfg), cfg.variant)
    if cfg.tfds_dir:
        train, held_out = _built_finetune_pairs(cfg)
        if validation and held_out:
            raise AlertJaxError(
                f"data.tfds_dir={cfg.tfds_dir}: the build holds out {len(held_out)} finetuning examples that raw "
                f"files would train on, as data.validation_suite={cfg.validation_suite} supplies the validation "
                "text; rebuild with --validation-percent 0 or set data.validation_suite=''")
    else:
        train, held_out = _raw_finetune_pairs(cfg, hold_out=not validation)
    train_pairs = _first_per_source(train, cfg.examples_per_task)
    if validation:
        return train_pairs, validation
    if not held_out:
        raise AlertJaxError(f"data.validation_suite={cfg.validation_suite!r} gives no dev examples and no finetuning "
                            f"example is held out (data.validation_fraction={cfg.validation_fraction}, or the "
                            "build's --validation-percent): nothing to select a checkpoint by")
    return train_pairs, held_out


def resolve_tokenizer(cfg: DataConfig, workdir: Path, pairs: Callable[[], SplitPairs]) -> Tokenizer:
    """The configured tokenizer, or (empty `data.tokenizer`) sentencepiece trained once per workdir on the run's
    own training text (`pairs()` is called only then).

    `data.vocab_size` is an upper bound there: a small corpus (a short demo run) cannot support every piece of a
    model-sized vocabulary, and failing a shipped config over it helps nobody, so the tokenizer gets as many
    pieces as the corpus supports and a warning names the shortfall.
    """
    if cfg.tokenizer:
        return load_tokenizer(cfg.tokenizer)
    directory = workdir / "tokenizer"
    if not directory.exists():
        train, _ = pairs()
        corpus = [f"{prompt}{PROMPT_TARGET_SEPARATOR}{target}" for prompt, target in train]
        trained = SentencePieceTokenizer.train(corpus, vocab_size=cfg.vocab_size, seed=0, vocab_size_is_limit=True)
        if trained.vocab_size < cfg.vocab_size:
            log.warning("data.vocab_size=%d: the training text supports only %d sentencepiece pieces; using %d",
                        cfg.vocab_size, trained.vocab_size, trained.vocab_size)
        trained.save(directory)
    return load_tokenizer(directory)


def tokenize_pairs(tokenizer: Tokenizer, pairs: Sequence[TextPair]) -> list[tuple[list[int], list[int]]]:
    out = []
    for prompt, target in pairs:
        prompt_ids, target_ids = tokenize_example(tokenizer, prompt, target)
        out.append((prompt_ids, list(target_ids) + [tokenizer.eos_id]))
    return out


def packed_splits(cfg: DataConfig, train_cfg: TrainConfig, tokenizer: Tokenizer, workdir: Path,
                  pairs: Callable[[], SplitPairs]) -> dict[str, Packed]:
    """Packed train/validation rows, built once from `pairs()` and cached under `workdir/data`."""
    cache = workdir / "data"
    if (cache / "stats.json").exists():
        with np.load(cache / "train.npz") as train, np.load(cache / "validation.npz") as validation:
            return {"train": _as_packed(train, cache, "train"), "validation": _as_packed(validation, cache, "validation")}
    train_pairs, validation_pairs = pairs()
    overflow = "truncate" if cfg.truncate_long else "drop"
    splits = {name: pack(tokenize_pairs(tokenizer, pairs), train_cfg.seq_len, overflow=overflow)
              for name, pairs in (("train", train_pairs), ("validation", validation_pairs))}
    cache.mkdir(parents=True, exist_ok=True)
    for name, packed in splits.items():
        tmp = cache / f"{name}.tmp.npz"
        np.savez(tmp, **packed.arrays)
        tmp.replace(cache / f"{name}.npz")
        log.info("%s: %s", name, packed.stats)
    stats = {name: dataclasses.asdict(packed.stats) for name, packed in splits.items()}
    (cache / "stats.json").write_text(json.dumps(stats, indent=2, default=float))
    return splits


def _as_packed(arrays, cache: Path, name: str) -> Packed:
    stats = json.loads((cache / "stats.json").read_text())[name]
    return Packed({f: np.asarray(arrays[f]) for f in FIELDS}, PackingStats(**stats))
