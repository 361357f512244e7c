"""`alert-jax demo`: the whole ALERT study in miniature, on CPU, in minutes.

Stages (each resumable — re-running the command skips finished work):
  1. a sentencepiece tokenizer trained on the synthetic world's text;
  2. "pretraining" the tiny OPT on narrative text of that world (so the pretrained baseline knows the
     words, not the tasks);
  3. finetuning two variants from it on the synthetic finetuning tasks: FT (answers) and CoT
     (rationale + "The answer is …"), each checkpoint chosen by development-set perplexity;
  4. evaluating pretrained, FT and CoT on the synthetic suite under templates T1–T5;
  5. vocabulary overlap between the finetuning corpus and each evaluation task, and the report.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from alert_jax.data import synthetic
from alert_jax.data.templates import TEMPLATES, render_prompt
from alert_jax.train.corpus import task_pairs
from alert_jax.workdir import RunDir

VARIANTS = ("ft", "cot")


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    model: str = "opt-tiny"
    vocab_size: int = 1024
    seq_len: int = 256
    batch_size: int = 8
    pretrain_steps: int = 200
    finetune_steps: int = 250
    learning_rate: float = 2e-3
    finetune_examples_per_task: int = 300
    eval_examples_per_task: int = 16
    templates: tuple[str, ...] = TEMPLATES
    max_new_tokens: int = 40
    eval_batch_size: int = 64


QUICK = DemoConfig(pretrain_steps=60, finetune_steps=120, finetune_examples_per_task=200, eval_examples_per_task=6,
                   templates=("T1", "T5"))


def _stage(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _train(demo: DemoConfig, workdir: Path, tokenizer: Path, init: str, suite: str, variant: str, steps: int) -> None:
    from alert_jax.config import load_config
    from alert_jax.train.checkpoints import best_model_dir
    from alert_jax.train.loop import finetune

    metrics = RunDir(workdir).metrics
    if best_model_dir(workdir) is not None and metrics.exists():
        done = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
        if done and done[-1] >= steps:
            _stage(f"{workdir.name}: already trained")
            return
    overrides = [
        f"model.name={init}", f"data.suite={suite}", f"data.variant={variant}", f"data.tokenizer={tokenizer}",
        f"data.examples_per_task={demo.finetune_examples_per_task}", f"train.steps={steps}",
        f"train.batch_size={demo.batch_size}", f"train.seq_len={demo.seq_len}", f"train.log_every={max(steps // 20, 1)}",
        f"train.eval_every={max(steps // 5, 1)}", f"train.checkpoint_every={max(steps // 2, 1)}",
        "train.eval_batches=0", f"optim.learning_rate={demo.learning_rate}", f"optim.warmup_steps={max(steps // 10, 1)}",
        "mesh.data=1", "mesh.fsdp=1", "mesh.tensor=1",
    ]
    last = finetune(load_config(None, overrides), workdir)
    _stage(f"{workdir.name}: loss {last.get('loss', float('nan')):.3f}, dev perplexity {last.get('val_ppl', float('nan')):.2f}")


def world_corpus(examples: int) -> list[str]:
    """What the demo's one tokenizer learns from: the synthetic world's narrative text, both target formats and the
    evaluation templates, so pretraining, FT, CoT and T1–T5 prompts all tokenize well."""
    texts = synthetic.synthetic_pretraining_text(max(examples, 200), seed=1)
    for task in synthetic.synthetic_finetune(50, seed=1) + synthetic.synthetic_eval_tasks(10, seed=1):
        for variant in ("ft", "cot"):
            texts += [f"{p} {t}" for p, t in task_pairs([task], variant)]
        texts += [render_prompt(t, task, task.examples[0]) for t in ("T1", "T2", "T3", "T4")]
    return texts


def _overlap(workdir: Path, demo: DemoConfig) -> None:
    from alert_jax.analysis.overlap import vocabulary_overlap, write_overlap_json
    from alert_jax.config import DataConfig
    from alert_jax.data.suites import load_suite
    from alert_jax.train.corpus import text_pairs

    train, _ = text_pairs(DataConfig(suite="synthetic", variant="cot", examples_per_task=demo.finetune_examples_per_task))
    tasks = {entry.task: [ex.input for ex in task.examples] + [r for ex in task.examples for r in ex.references]
             for entry, task in load_suite("synthetic").load_tasks() if entry.split in ("in_domain", "held_out")}
    write_overlap_json(vocabulary_overlap([p + " " + t for p, t in train], tasks), workdir / "overlap.json")


def run_demo(workdir: str | Path, demo: DemoConfig = DemoConfig()) -> Path:
    """Run every stage into `workdir`; returns the report path."""
    from alert_jax.analysis.report import write_report
    from alert_jax.data.tokenizer import SentencePieceTokenizer
    from alert_jax.config import EvalConfig
    from alert_jax.evaluate import evaluate

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tokenizer = workdir / "tokenizer"
    if not tokenizer.exists():
        _stage("training the sentencepiece tokenizer on the synthetic corpus")
        corpus = world_corpus(demo.finetune_examples_per_task)
        SentencePieceTokenizer.train(corpus, vocab_size=demo.vocab_size, seed=0).save(tokenizer)
    _stage(f"pretraining {demo.model} on narrative text ({demo.pretrain_steps} steps)")
    _train(demo, workdir / "pretrained", tokenizer, demo.model, "synthetic-pretrain", "ft", demo.pretrain_steps)
    for variant in VARIANTS:
        _stage(f"finetuning the {variant.upper()} variant ({demo.finetune_steps} steps)")
        _train(demo, workdir / variant, tokenizer, str(workdir / "pretrained"), "synthetic", variant, demo.finetune_steps)
    evaluation = workdir / "eval"
    for variant in ("pretrained", *VARIANTS):
        _stage(f"evaluating {variant} on the synthetic suite with {','.join(demo.templates)}")
        cfg = EvalConfig(suite="synthetic", templates=demo.templates, tokenizer=str(tokenizer),
                         max_new_tokens=demo.max_new_tokens, batch_size=demo.eval_batch_size,
                         max_examples_per_task=demo.eval_examples_per_task, label=demo.model, variant=variant,
                         size="tiny")
        evaluate(str(workdir / variant), cfg, evaluation)
    _overlap(evaluation, demo)
    report = write_report([evaluation], workdir / "report")
    _stage(f"report written to {report}")
    return report
