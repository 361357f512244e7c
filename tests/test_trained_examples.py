"""Every view of what a run trains on is one list: the trainer's packed text, `trained_examples`, `alert-jax data
stats --config`, the vocabulary-overlap analysis and `alert-jax sample`'s questions. The list, as a spec: each
`finetune` task's examples in file order, the validation hold-out left out first, then each source capped."""
from __future__ import annotations

from collections import Counter

import pytest

from alert_jax.analysis.overlap import finetune_texts
from alert_jax.config import DataConfig, ExperimentConfig, load_config
from alert_jax.data.mixture import cap_for
from alert_jax.data.splits import is_validation
from alert_jax.data.suites import load_suite
from alert_jax.data.templates import task_pairs
from alert_jax.data.trained import trained_examples
from alert_jax.sampling import training_questions
from tests.test_data_cli import parse_stats, run_cli

CONFIGS = {
    "dev tasks, capped": ["data.examples_per_task=30"],
    "hold-out, capped": ["data.validation_suite=", "data.examples_per_task=30"],
    "hold-out, mixture": ["data.validation_suite=", "data.examples_per_task=20", "data.mixture.synthetic_arithmetic=5",
                          "data.mixture.synthetic_rule_chain=0"],
    "dev tasks, mixture, ft": ["data.variant=ft", "data.examples_per_task=10",
                               "data.mixture.synthetic_room_tracking=3"],
    "hold-out, uncapped": ["data.validation_suite=", "data.examples_per_task=0", "data.validation_fraction=0.2"],
}


def _config(name: str, *extra: str) -> ExperimentConfig:
    return load_config(None, [*CONFIGS[name], *extra])


def _spec(data: DataConfig) -> list[tuple[str, str, str]]:
    """(suite task, prompt, target) of every training example, straight from the definition."""
    hold_out = not data.validation_suite
    kept = []
    for entry, task in load_suite(data.suite).load_tasks():
        if entry.split != "finetune":
            continue
        trained = [(entry.task, *pair) for example, pair in zip(task.examples, task_pairs([task], data.variant))
                   if not (hold_out and is_validation(entry.task, example.input, data.validation_fraction))]
        cap = cap_for(entry.task, data.examples_per_task, data.mixture)
        kept += trained[:cap] if cap else trained
    return kept


@pytest.mark.parametrize("name", CONFIGS)
def test_trained_examples_are_the_hold_out_then_the_caps(name):
    data = _config(name).data
    trained = trained_examples(data)
    assert [(e.task, e.prompt, e.target) for e in trained.train] == _spec(data)
    assert trained.validation
    assert not {(e.prompt, e.target) for e in trained.validation} & {(e.prompt, e.target) for e in trained.train}


@pytest.mark.parametrize("name", CONFIGS)
def test_overlap_counts_the_trained_text(name):
    data = _config(name).data
    assert finetune_texts(data) == [f"{prompt} {target}" for _, prompt, target in _spec(data)]


@pytest.mark.parametrize("name", CONFIGS)
def test_data_stats_count_the_trained_examples_and_their_words(name, capsys):
    data = _config(name).data
    code, out, err = run_cli(capsys, "stats", *(arg for key in CONFIGS[name] for arg in ("--set", key)))
    assert code == 0, err
    _, _, per_source = parse_stats(out)
    counted = {label.removesuffix(" [finetune]"): counts for label, counts in per_source.items()
               if label.endswith(" [finetune]")}
    expected: Counter[str] = Counter()
    words: Counter[str] = Counter()
    for task, prompt, target in _spec(data):
        expected[task] += 1
        words[task] += len(prompt.split()) + len(target.split())
    assert counted == {task: (expected[task], words[task]) for task in expected}


@pytest.mark.parametrize("name", CONFIGS)
def test_sample_draws_its_questions_from_the_trained_examples(name):
    cfg = _config(name, "alignment.max_questions_per_task=0")
    questions = training_questions(cfg.data, cfg.alignment)
    assert [(q.entry.task, q.prompt) for q in questions] == [(task, prompt) for task, prompt, _ in _spec(cfg.data)]
    assert [q.key for q in questions] == [f"{e.task}/{e.id}" for e in trained_examples(cfg.data).train]


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_the_trainer_packs_the_trained_examples(name, tmp_path, monkeypatch):
    """What `Trainer` hands the tokenizer for its train and validation rows is `trained_examples`, in order."""
    from alert_jax.train import corpus
    from alert_jax.train.loop import Trainer

    tokenized = []
    real = corpus.tokenize_pairs
    monkeypatch.setattr(corpus, "tokenize_pairs", lambda tokenizer, pairs, *args: tokenized.append(list(pairs))
                        or real(tokenizer, pairs, *args))
    cfg = _config(name, "model.name=opt-micro", "mesh.fsdp=1", "train.batch_size=2", "train.seq_len=128",
                  "data.vocab_size=512", "train.async_checkpointing=false")
    Trainer(cfg, tmp_path)
    train, validation = trained_examples(cfg.data).pairs()
    assert tokenized == [train, validation]
    assert train == [(prompt, target) for _, prompt, target in _spec(cfg.data)]
