"""`alert-jax sample`: labels from evaluation's own answer rules, scores that are the model's length-normalised
log-likelihood, resumption after a kill with no sample lost or duplicated, and rows that keep a question's
samples together for the alignment trainer."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import alert_jax
import alert_jax.evaluate
import alert_jax.generation
from alert_jax.config import load_config
from alert_jax.data.suites import load_suite
from alert_jax.data.tokenizer import SentencePieceTokenizer, load_tokenizer
from alert_jax.metrics import score
from alert_jax.data.templates import extract_answer
from alert_jax.sampling import SAMPLES_FILE, label_sample, sample, training_questions
from alert_jax.train.sample_rows import alignment_rows
from tests.tiny_model import save_random_tiny_model

K, QUESTIONS = 3, 2
CFG = load_config(None, ["data.suite=synthetic", f"alignment.k={K}", f"alignment.max_questions_per_task={QUESTIONS}",
                         "alignment.max_new_tokens=8", "alignment.batch_size=4", "alignment.temperature=1.0",
                         "train.seq_len=256"])


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A random opt-tiny with a tokenizer learnt from the synthetic finetuning questions, kept beside it."""
    directory = tmp_path_factory.mktemp("model") / "tiny"
    corpus = [f"{ex.input} {ex.rationale} The answer is {ex.references[0]}."
              for entry, task in load_suite("synthetic").load_tasks() for ex in task.examples]
    tokenizer = SentencePieceTokenizer.train(corpus, vocab_size=500, vocab_size_is_limit=True)
    return save_random_tiny_model(directory, tokenizer, vocab_size=-(-tokenizer.vocab_size // 8) * 8)


@pytest.fixture(scope="module")
def finished(model_dir, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("samples")
    sample(str(model_dir), CFG, workdir)
    return workdir


def test_k_samples_per_training_question(finished):
    records = _lines(finished / SAMPLES_FILE)
    questions = training_questions(CFG.data, CFG.alignment)
    assert len(questions) == 4 * QUESTIONS  # four synthetic finetuning tasks
    assert sorted((r["question"], r["sample"]) for r in records) == sorted(
        (q.key, i) for q in questions for i in range(K))


def test_labels_follow_evaluation_answer_rules(finished):
    for record in _lines(finished / SAMPLES_FILE):
        assert record["prediction"] == extract_answer(record["generation"])
        assert record["correct"] == (score(record["prediction"], record["references"])["relaxed_match"] > 0)
    question = training_questions(CFG.data, CFG.alignment)[0]
    answer = question.example.references[0]
    assert label_sample(question, 0, f" Some steps. The answer is {answer}.")["correct"]
    assert not label_sample(question, 0, f" Some steps. The answer is {answer}0.")["correct"]


def test_labels_use_the_very_code_evaluation_uses(monkeypatch):
    """Change evaluation's answer extraction and sampling's labels change with it: one code path."""
    question = training_questions(CFG.data, CFG.alignment)[0]
    monkeypatch.setattr(alert_jax.evaluate, "extract_answer", lambda text: question.example.references[0])
    assert label_sample(question, 0, "nonsense")["correct"]


def test_scores_are_the_models_length_normalised_log_likelihood(finished, model_dir):
    """Recomputed here one sample at a time, unpacked, from the model's logits."""
    model = alert_jax.load_model(str(model_dir))
    tokenizer = load_tokenizer(model_dir / "tokenizer")
    for record in _lines(finished / SAMPLES_FILE)[:4]:
        prompt = tokenizer.encode_with_bos(record["prompt"])
        target = tokenizer.encode(" " + record["generation"]) + [tokenizer.eos_id]
        ids = np.array([prompt + target])
        log_probs = alert_jax.logits(model, ids)[0]
        log_probs = log_probs - np.logaddexp.reduce(log_probs, axis=-1, keepdims=True)
        expected = sum(log_probs[len(prompt) - 1 + i, t] for i, t in enumerate(target))
        assert record["tokens"] == len(target)
        assert record["logp"] == pytest.approx(float(expected), abs=1e-3)
        assert record["score"] == pytest.approx(float(expected) / len(target), abs=1e-4)


def test_resumes_after_a_kill_without_lost_or_duplicated_samples(finished, model_dir, tmp_path, monkeypatch):
    workdir = tmp_path / "samples"
    shutil.copytree(finished, workdir)
    full = (workdir / SAMPLES_FILE).read_text(encoding="utf-8").split("\n")[:-1]
    k = 7
    (workdir / SAMPLES_FILE).write_text("\n".join(full[:k]) + "\n" + full[k][: len(full[k]) // 2], encoding="utf-8")
    seen: list[str] = []
    real = alert_jax.generation.generate_text
    monkeypatch.setattr(alert_jax.generation, "generate_text",
                        lambda model, tok, prompts, **kw: seen.extend(prompts) or real(model, tok, prompts, **kw))

    sample(str(model_dir), CFG, workdir)

    resumed = (workdir / SAMPLES_FILE).read_text(encoding="utf-8").split("\n")[:-1]
    assert resumed[:k] == full[:k]
    assert len(seen) == len(full) - k
    keys = [(r["question"], r["sample"]) for r in map(json.loads, resumed)]
    assert len(keys) == len(set(keys)) == len(full)


def test_alignment_rows_keep_each_questions_samples_in_one_row(finished, model_dir):
    records = _lines(finished / SAMPLES_FILE)
    rows = alignment_rows(finished, load_tokenizer(model_dir / "tokenizer"), seq_len=256)
    arrays = rows.arrays
    slots = arrays["sample_group"] > 0
    assert slots.sum() == len(records)
    for row in range(len(arrays["inputs"])):
        used = int(arrays["segment_ids"][row].max())
        assert slots[row].sum() == used  # one slot per segment
        groups = arrays["sample_group"][row][:used]
        assert all(np.bincount(groups)[1:] == K)  # every question in the row brings all its k samples
    # rows hold the samples in file order (question-major), one slot per segment
    assert list(arrays["sample_label"][slots]) == [float(r["correct"]) for r in records]
    assert np.allclose(arrays["ref_logp"][slots], [r["logp"] for r in records], atol=1e-4)


@pytest.mark.slow
def test_aft_finetune_resumes_after_a_kill_with_the_uninterrupted_losses(finished, model_dir, tmp_path):
    from alert_jax.train.loop import Trainer

    samples = tmp_path / "samples"
    samples.mkdir()
    records = _lines(finished / SAMPLES_FILE)
    (samples / SAMPLES_FILE).write_text("".join(json.dumps({**r, "correct": r["sample"] == 0}) + "\n"
                                                for r in records))  # pairs in every question
    cfg = load_config(None, [f"model.name={model_dir}", "train.objective=aft", f"alignment.samples={samples}",
                             "train.steps=6", "train.batch_size=2", "train.seq_len=256", "train.log_every=1",
                             "train.eval_every=6", "train.checkpoint_every=3", "optim.warmup_steps=1",
                             "train.async_checkpointing=false", "data.examples_per_task=20", "mesh.fsdp=1"])
    Trainer(cfg, tmp_path / "reference").run()
    killed = tmp_path / "killed"
    Trainer(cfg, killed).run()
    shutil.rmtree(killed / "checkpoints" / "6")  # as if killed after the step-3 checkpoint
    Trainer(cfg, killed).run()
    reference = _lines(tmp_path / "reference" / "metrics.jsonl")
    resumed = _lines(killed / "metrics.jsonl")
    assert [r["step"] for r in resumed] == list(range(1, 7))
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in reference], abs=1e-6)
    assert all(r["rank_loss"] > 0 for r in resumed)


def test_questions_follow_the_trainers_mixture_caps():
    """`sample` draws from what CoT finetuning trained on: `data.mixture` caps a source there too."""
    everything = training_questions(CFG.data, dataclasses.replace(CFG.alignment, max_questions_per_task=0))
    source = everything[0].entry.task
    capped_data = dataclasses.replace(CFG.data, mixture={source: 2})
    capped = training_questions(capped_data, dataclasses.replace(CFG.alignment, max_questions_per_task=0))
    ours = [q.example.id for q in capped if q.entry.task == source]
    assert ours == [q.example.id for q in everything if q.entry.task == source][:2]
    assert [q.key for q in capped if q.entry.task != source] == [q.key for q in everything if q.entry.task != source]


@pytest.mark.slow
def test_an_aft_run_packs_only_its_data_sections_validation_rows(finished, model_dir, tmp_path, monkeypatch):
    """The SFT train split is neither tokenized nor cached; the rows are those of before — the sampled CoTs, and
    the validation text packed as an SFT run packs it — so the losses are too."""
    from alert_jax.train import corpus, sample_rows
    from alert_jax.train.loop import Trainer

    tokenized: list[list[tuple[str, str]]] = []
    for module in (corpus, sample_rows):
        monkeypatch.setattr(module, "tokenize_pairs", lambda tokenizer, pairs, *args, real=module.tokenize_pairs:
                            tokenized.append(list(pairs)) or real(tokenizer, pairs, *args))
    cfg = load_config(None, [f"model.name={model_dir}", "train.objective=aft", f"alignment.samples={finished}",
                             "train.steps=2", "train.batch_size=2", "train.seq_len=256", "train.eval_every=2",
                             "train.checkpoint_every=2", "train.async_checkpointing=false", "optim.warmup_steps=1",
                             "data.examples_per_task=20", "mesh.fsdp=1"])
    trainer = Trainer(cfg, tmp_path / "aft")
    trainer.run()
    train, validation = corpus.text_pairs(cfg.data)
    samples = [(r["prompt"], r["generation"]) for r in _lines(finished / SAMPLES_FILE)]
    assert sorted(tokenized) == sorted([samples, validation]) and train not in tokenized
    assert not (tmp_path / "aft" / "data").exists(), "no packed-row cache: nothing of the SFT split is kept"

    monkeypatch.undo()
    sft = corpus.packed_splits(cfg.data, cfg.train, trainer.tokenizer, tmp_path / "sft", lambda: (train, validation))
    before = {"train": alignment_rows(finished, trainer.tokenizer, cfg.train.seq_len), "validation": sft["validation"]}
    for split, packed in before.items():
        assert packed.arrays.keys() == trainer.splits[split].arrays.keys()
        for field, rows in packed.arrays.items():
            np.testing.assert_array_equal(trainer.splits[split].arrays[field], rows, err_msg=f"{split}/{field}")
