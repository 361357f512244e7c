"""What a run trains on: the one definition of the examples a `data` section selects, and its validation text.

The trainer packs exactly `trained_examples(data).train` (alert_jax/train/corpus.py), and every other view of
"what the run saw" reads the same list: `alert-jax data stats --config` counts it, the vocabulary-overlap
analysis (alert_jax/analysis/overlap.py) measures it, and `alert-jax sample` draws its questions from it. Before
this one definition the views disagreed — stats capped before the hold-out and overlap did not hold out at all,
so both counted text the model never trained on.

The selection, in order (the trainer's, and so the definition):
1. the suite's `finetune` tasks in suite order, each task's examples in file order — from the raw files
   (`data.data_root`), or from an `alert-jax data build finetune` output (`data.tfds_dir`), which gives the same
   examples in the same order;
2. the validation hold-out first: without `dev` tasks in `data.validation_suite`, the examples
   `alert_jax.data.splits.is_validation` picks by content (a TFDS build has already held them out the same way);
3. then the caps, on what is left: the first `data.examples_per_task` of each source, or its `data.mixture` cap
   (`alert_jax.data.mixture`). Holding out first means a cap counts training examples, and raising a cap only
   adds examples.
Validation text — ALERT's checkpoint-selection set — is the `dev` tasks' instances and explained demonstrations
(`with_explained_demonstrations`), or else the hold-out. `synthetic-pretrain` is plain narrative text for the
demo's "pretraining" stage: its first `data.validation_fraction` is the validation text.

Pure Python (no jax): the analysis path imports it.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

from alert_jax.config import DataConfig
from alert_jax.data import synthetic
from alert_jax.data.example import Example, Task
from alert_jax.data.mixture import capped, check_mixture
from alert_jax.data.splits import is_validation
from alert_jax.data.suites import load_suite
from alert_jax.data.templates import task_pairs
from alert_jax.errors import AlertJaxError

PRETRAIN_SUITE = "synthetic-pretrain"
TextPair = tuple[str, str]


@dataclasses.dataclass(frozen=True)
class TrainedExample:
    """One example as the trainer renders it: the suite task it comes from, its id there, and its text."""

    task: str
    id: str
    prompt: str
    target: str


@dataclasses.dataclass(frozen=True)
class TrainedData:
    """The training examples of a run, in the order it packs them, and its validation examples."""

    train: tuple[TrainedExample, ...]
    validation: tuple[TrainedExample, ...]

    def pairs(self) -> tuple[list[TextPair], list[TextPair]]:
        """(train, validation) (prompt, target) pairs: the text the packed rows hold."""
        return [(e.prompt, e.target) for e in self.train], [(e.prompt, e.target) for e in self.validation]


def trained_examples(data: DataConfig) -> TrainedData:
    """The examples a run with this `data` section trains on and selects its checkpoint by (module docstring).

    Errors name the keys: a mixture naming an unknown source, a TFDS build that holds out examples the raw files
    would train on while dev tasks supply the validation text, and no validation text at all.
    """
    if data.suite == PRETRAIN_SUITE:
        return _pretraining_text(data)
    validation = _dev_examples(data)
    if data.tfds_dir:
        train, held_out = _built_finetune_examples(data)
        if validation and held_out:
            raise AlertJaxError(
                f"data.tfds_dir={data.tfds_dir}: the build holds out {len(held_out)} finetuning examples that raw "
                f"files would train on, as data.validation_suite={data.validation_suite} supplies the validation "
                "text; rebuild with --validation-percent 0 or set data.validation_suite=''")
    else:
        train, held_out = _raw_finetune_examples(data, hold_out=not validation)
    check_mixture(data.mixture, [entry.task for entry in load_suite(data.suite).finetune_tasks], data.suite)
    kept = tuple(capped(((e.task, e) for e in train), data.examples_per_task, data.mixture))
    if not validation and not held_out:
        raise AlertJaxError(f"data.validation_suite={data.validation_suite!r} gives no dev examples and no finetuning "
                            f"example is held out (data.validation_fraction={data.validation_fraction}, or the "
                            "build's --validation-percent): nothing to select a checkpoint by")
    return TrainedData(kept, tuple(validation or held_out))


def _pretraining_text(data: DataConfig) -> TrainedData:
    texts = [TrainedExample(PRETRAIN_SUITE, f"{PRETRAIN_SUITE}-{i}", "", text)
             for i, text in enumerate(synthetic.synthetic_pretraining_text(data.examples_per_task, seed=0))]
    cut = max(1, int(len(texts) * data.validation_fraction))
    return TrainedData(tuple(texts[cut:]), tuple(texts[:cut]))


def _rendered(source: str, task: Task, variant: str) -> Iterator[tuple[Example, TrainedExample]]:
    """Each example of `task` with its finetuning text (`templates.task_pairs`)."""
    for example, (prompt, target) in zip(task.examples, task_pairs([task], variant)):
        yield example, TrainedExample(source, example.id, prompt, target)


def _raw_finetune_examples(data: DataConfig, hold_out: bool) -> tuple[list[TrainedExample], list[TrainedExample]]:
    """(training, held-out) examples of the suite's `finetune` tasks read from the raw files; nothing is held out
    unless asked."""
    suite = load_suite(data.suite)
    tasks = [(entry.task, task) for entry, task in suite.load_tasks(data.data_root or None)
             if entry.split == "finetune"]
    if not tasks:
        raise AlertJaxError(f"data.suite={data.suite}: the suite has no tasks with split 'finetune'")
    train: list[TrainedExample] = []
    held_out: list[TrainedExample] = []
    for source, task in tasks:
        for example, rendered in _rendered(source, task, data.variant):
            held = hold_out and is_validation(source, example.input, data.validation_fraction)
            (held_out if held else train).append(rendered)
    return train, held_out


def _built_finetune_examples(data: DataConfig) -> tuple[list[TrainedExample], list[TrainedExample]]:
    """(training, held-out) examples from a TFDS build of the suite and variant."""
    from alert_jax.data.tfds_builders import load_finetune_split  # TFDS is slow to import: only when used

    train, held_out = ([TrainedExample(r["source"], r["id"], r["prompt"], r["target"])
                        for r in load_finetune_split(data.tfds_dir, data.suite, data.variant, split)]
                       for split in ("train", "validation"))
    return train, held_out


def _dev_examples(data: DataConfig) -> list[TrainedExample]:
    """The validation examples of `data.validation_suite`'s `dev` tasks (none without one)."""
    if not data.validation_suite:
        return []
    loaded = load_suite(data.validation_suite).load_tasks(data.data_root or None, skip_missing=True)
    return [rendered for entry, task in loaded if entry.split == "dev"
            for _, rendered in _rendered(entry.task, with_explained_demonstrations(task), data.variant)]


def with_explained_demonstrations(task: Task) -> Task:
    """A dev task as validation text: its instances, then its demonstrations that carry an explanation.

    NIV2 instances have no rationale, so a CoT run's dev targets would all be the bare `The answer is <answer>.`
    and dev perplexity would ignore how well the model writes rationales — biasing selection against CoT. The
    task's explained positive examples are the rationales it does have; as examples they give CoT targets
    `<explanation> The answer is <output>.` (FT runs see the same instances, answer only).
    """
    explained = tuple(Example(input=d.input, references=(d.output,), rationale=d.explanation.strip(),
                              source=task.name, id=f"{task.name}-demonstration-{i}")
                      for i, d in enumerate(task.demonstrations) if d.explanation.strip())
    return dataclasses.replace(task, examples=task.examples + explained)
