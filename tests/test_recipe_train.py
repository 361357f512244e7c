"""ALERT's recipe knobs on the training side: dev targets in the run's format, the mixture, select_by."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

import alert_jax
from alert_jax.config import DataConfig, load_config
from alert_jax.errors import AlertJaxError
from alert_jax.train.corpus import text_pairs

TINY = ["model.name=opt-micro", "train.batch_size=8", "train.seq_len=128", "train.log_every=1",
        "train.checkpoint_every=100", "data.examples_per_task=16", "data.vocab_size=512", "optim.warmup_steps=1",
        "optim.learning_rate=1e-3", "train.async_checkpointing=false", "mesh.fsdp=2", "train.eval_batches=1",
        "eval.templates=[T1,T5]", "eval.max_examples_per_task=3", "eval.max_new_tokens=4", "eval.batch_size=4"]


def _niv2_dev_suite(tmp_path: Path) -> Path:
    """A suite whose one dev task is NIV2-shaped: instances without rationales, one explained positive example."""
    task = {"Definition": ["Say whether the hypothesis follows."],
            "Positive Examples": [{"input": "P: It rains. H: It is wet.", "output": "entailment",
                                   "explanation": "Rain makes things wet, so the hypothesis follows."},
                                  {"input": "P: A cat. H: A dog.", "output": "neutral"}],
            "Instances": [{"id": f"i{i}", "input": f"P: fact {i}. H: claim {i}.", "output": ["neutral"]}
                          for i in range(3)]}
    (tmp_path / "niv2").mkdir()
    (tmp_path / "niv2" / "task1385.json").write_text(json.dumps(task))
    suite = {"name": "dev_only", "tasks": [{"task": "task1385", "skill": "entailment", "split": "dev",
                                            "source": "niv2", "path": "niv2/task1385.json", "provenance": "test"}]}
    path = tmp_path / "dev_only.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def test_cot_dev_targets_carry_the_rationales_the_dev_task_has(tmp_path):
    suite = _niv2_dev_suite(tmp_path)
    data = DataConfig(suite="synthetic", validation_suite=str(suite), data_root=str(tmp_path), variant="cot")
    _, cot = text_pairs(data)
    _, ft = text_pairs(dataclasses.replace(data, variant="ft"))
    cot_targets = [target for _, target in cot]
    assert "Rain makes things wet, so the hypothesis follows. The answer is entailment." in cot_targets
    assert cot_targets.count("The answer is neutral.") == 3  # instances: no rationale to give
    assert sorted(target for _, target in ft) == ["entailment", "neutral", "neutral", "neutral"]
    assert [prompt for prompt, _ in cot] == [prompt for prompt, _ in ft]  # same dev text, the variant's targets
    _, synthetic_cot = text_pairs(DataConfig(suite="synthetic", validation_suite="synthetic", variant="cot"))
    assert all(" The answer is " in target and not target.startswith("The answer is")
               for _, target in synthetic_cot)  # synthetic dev instances all carry rationales


def test_the_mixture_caps_what_the_trainer_reads():
    base = DataConfig(suite="synthetic", validation_suite="synthetic", examples_per_task=20)
    capped, _ = text_pairs(dataclasses.replace(base, mixture={"synthetic_arithmetic": 5, "synthetic_rule_chain": 0}))
    whole, _ = text_pairs(base)
    sources = len([entry for entry in alert_jax.data.suites.load_suite("synthetic").finetune_tasks])
    assert len(whole) == 20 * sources
    assert len(capped) == 20 * (sources - 2) + 5 + 200  # rule_chain: 0 = all of its 200
    with pytest.raises(AlertJaxError, match=r"data.mixture.gsm8k: not a finetuning task of suite 'synthetic'"):
        text_pairs(dataclasses.replace(base, mixture={"gsm8k": 5}))


def test_select_by_dev_rouge_l_keeps_the_evaluation_with_the_best_dev_rouge_l(tmp_path, monkeypatch):
    """Dev generations are scripted per evaluation (wrong, right, half right): the second evaluation is best by
    dev ROUGE-L, whatever its perplexity, and best.json says so."""
    from alert_jax import generation
    from alert_jax.train.loop import Trainer

    trainer = Trainer(load_config(None, TINY + ["train.steps=6", "train.eval_every=2",
                                               "train.select_by=dev_rouge_l"]), tmp_path)
    answer = {item.prompt: item.example.references[0] for item in trainer.dev_generation.items}
    calls = []

    def scripted(model, tokenizer, prompts, **kwargs):
        calls.append(len(prompts))
        right = {1: lambda i: False, 2: lambda i: True, 3: lambda i: i % 2 == 0}[len(calls)]
        return [f"The answer is {answer[p]}." if right(i) else "The answer is zzz." for i, p in enumerate(prompts)]

    monkeypatch.setattr(generation, "generate_text", scripted)
    trainer.run()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    scored = {r["step"]: r["dev_rouge_l"] for r in records if "dev_rouge_l" in r}
    assert list(scored) == [2, 4, 6] and scored[4] == pytest.approx(100.0) and scored[2] == 0.0
    assert 0 < scored[6] < 100
    best = json.loads((tmp_path / "best" / "best.json").read_text())
    assert (best["step"], best["select_by"], best["dev_rouge_l"]) == (4, "dev_rouge_l", pytest.approx(100.0))
    assert calls == [len(trainer.dev_generation.items)] * 3


@pytest.mark.slow
def test_dev_rouge_l_is_real_greedy_generation_on_the_training_mesh(tmp_path):
    """Unpatched: the score recorded during training (params sharded fsdp=2) equals the score of the saved best
    model generating on its own, and an unknown select_by is an error naming the key."""
    from alert_jax.train.loop import Trainer

    trainer = Trainer(load_config(None, TINY + ["train.steps=2", "train.eval_every=2",
                                               "train.select_by=dev_rouge_l"]), tmp_path / "run")
    trainer.run()
    best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    again = trainer.dev_generation.rouge_l(alert_jax.load_model(tmp_path / "run"), trainer.tokenizer)
    assert best["step"] == 2 and best["dev_rouge_l"] == pytest.approx(again)
    with pytest.raises(AlertJaxError, match="train.select_by='dev_bleu'"):
        Trainer(load_config(None, TINY + ["train.select_by=dev_bleu"]), tmp_path / "bad")


def test_masked_thought_masks_the_rate_of_rationale_inputs_and_never_a_target(tmp_path):
    from alert_jax.data.masked_thought import rationale_tokens
    from alert_jax.data.packing import pack
    from alert_jax.data.tokenizer import SentencePieceTokenizer
    from alert_jax.train.corpus import tokenize_pairs

    train, _ = text_pairs(DataConfig(suite="synthetic", validation_suite="synthetic", variant="cot",
                                     examples_per_task=10))
    tokenizer = SentencePieceTokenizer.train([f"{p} {t}" for p, t in train], vocab_size=400, seed=0)
    plain = pack(tokenize_pairs(tokenizer, train), 256).arrays
    masked_pairs = tokenize_pairs(tokenizer, train, masked_thought_rate=0.3, seed=5)
    masked = pack(masked_pairs, 256).arrays
    for field in ("targets", "segment_ids", "positions", "loss_weights"):
        assert (masked[field] == plain[field]).all()  # only inputs change: targets are the real next tokens
    changed = masked["inputs"] != plain["inputs"]
    assert (masked["inputs"][changed] == tokenizer.unk_id).all()
    assert (masked["loss_weights"][:, :-1][changed[:, 1:]] == 1).all()  # every masked input is a target token
    rationale = wanted = 0
    for (prompt, target), (_, full, shown) in zip(train, masked_pairs):
        answer = target.rsplit(" The answer is ", 1)[1]
        kept_tail = tokenizer.encode(" The answer is " + answer)[-2:] + [tokenizer.eos_id]
        assert shown[-3:] == full[-3:] == kept_tail[-3:]  # the answer statement and EOS are never masked
        n = sum(a != b for a, b in zip(full, shown))
        r = rationale_tokens(tokenizer, target, full[:-1])
        assert r > 0 and n == round(0.3 * r)
        rationale, wanted = rationale + r, wanted + n
    assert wanted / rationale == pytest.approx(0.3, abs=0.01)  # the rate is honoured
    assert tokenize_pairs(tokenizer, train, masked_thought_rate=0.3, seed=5) == masked_pairs  # seeded
    assert tokenize_pairs(tokenizer, train, masked_thought_rate=0.3, seed=6) != masked_pairs


def test_masked_thought_needs_cot_targets(tmp_path):
    from alert_jax.config import TrainConfig
    from alert_jax.train.corpus import packed_splits

    with pytest.raises(AlertJaxError, match="data.masked_thought_rate=0.2.*data.variant=cot"):
        packed_splits(DataConfig(variant="ft", masked_thought_rate=0.2), TrainConfig(), None, tmp_path, lambda: ([], []))
