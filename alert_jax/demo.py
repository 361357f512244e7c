"""`alert-jax demo`: the whole ALERT study in miniature, on CPU, in minutes.

The demo is the demo experiment (`configs/experiments/demo.yaml`) plus its stages
(`configs/studies/demo.yaml`); every number comes from those two files. Stages (each resumable — re-running
the command skips finished work):
  1. a sentencepiece tokenizer trained on the synthetic world's text;
  2. "pretraining" the tiny OPT on narrative text of that world (so the pretrained baseline knows the
     words, not the tasks);
  3. finetuning two variants from it on the synthetic finetuning tasks: FT (answers) and CoT
     (rationale + "The answer is …"), each checkpoint chosen by development-set perplexity;
  4. evaluating pretrained, FT and CoT on the synthetic suite under the experiment's templates;
  5. vocabulary overlap between the finetuning corpus and each evaluation task, and the report.

`--recipe aft` is alignment fine-tuning (Wang et al. 2023) in miniature instead: stages 1–2, then CoT finetuning,
`alert-jax sample` on the CoT model's training questions, AFT from the CoT model on those samples (the study's
`align` stage), evaluation of CoT and AFT, their pairwise ranking accuracy on the samples
(alert_jax/analysis/assessment.py), and the report with both side by side.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Sequence

import yaml

from alert_jax.config import ConfigError, ExperimentConfig, load_config, parse_override
from alert_jax.data import synthetic
from alert_jax.data.templates import render_prompt, task_pairs
from alert_jax.shipped import CONFIGS_DIR
from alert_jax.workdir import RunDir

DEMO_STUDY = CONFIGS_DIR / "studies" / "demo.yaml"
STAGES = ("pretrain", "finetune", "align")
VARIANTS = ("ft", "cot")
RECIPES = ("alert", "aft")


@dataclasses.dataclass(frozen=True)
class DemoPlan:
    """The demo's stage configs, fully resolved: `pretrain` trains the base model, `finetune` is run once per
    variant from it (its model name is the base model's label in the report, its `eval` section the evaluation),
    `align` samples from the CoT model and aligns it (`--recipe aft`)."""

    pretrain: ExperimentConfig
    finetune: ExperimentConfig
    align: ExperimentConfig


def demo_plan(quick: bool = False, overrides: Sequence[str] = (), study: str | Path = DEMO_STUDY) -> DemoPlan:
    """The study's experiment with each stage's overrides, `quick`'s overrides for the stage when asked for, then
    `overrides` (`KEY=VALUE` for every stage, `STAGE.KEY=VALUE` for one stage) — the `--set` of `alert-jax demo`."""
    study = Path(study)
    raw = _read_study(study)
    shared, per_stage = _split_overrides(overrides)
    configs = {}
    for stage in STAGES:
        stage_overrides = [*raw["stages"][stage], *(raw["quick"][stage] if quick else []), *shared, *per_stage[stage]]
        configs[stage] = load_config(study.parent / raw["experiment"], stage_overrides)
    return DemoPlan(**configs)


def _read_study(path: Path) -> dict[str, Any]:
    """The study file, checked: `experiment` (a path relative to the file), and `stages` and `quick`, each a list
    of `KEY=VALUE` overrides per stage."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(raw, dict) or set(raw) != {"experiment", "stages", "quick"}:
        raise ConfigError(f"{path}: expected exactly the keys experiment, stages, quick")
    if not isinstance(raw["experiment"], str):
        raise ConfigError(f"{path}: experiment: expected a path, got {raw['experiment']!r}")
    for section in ("stages", "quick"):
        lists = raw[section]
        if not isinstance(lists, dict) or set(lists) != set(STAGES):
            raise ConfigError(f"{path}: {section}: expected one override list per stage ({', '.join(STAGES)})")
        for stage, items in lists.items():
            if not isinstance(items, list) or not all(isinstance(item, str) and "=" in item for item in items):
                raise ConfigError(f"{path}: {section}.{stage}: expected a list of KEY=VALUE overrides")
    return raw


def _split_overrides(overrides: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """(overrides for every stage, overrides per stage with the `STAGE.` prefix removed)."""
    shared: list[str] = []
    per_stage: dict[str, list[str]] = {stage: [] for stage in STAGES}
    for text in overrides:
        key, _ = parse_override(text)
        stage, _, rest = key.partition(".")
        if stage in per_stage:
            per_stage[stage].append(text.split(".", 1)[1])
        else:
            shared.append(text)
    return shared, per_stage


def _stage(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _train(cfg: ExperimentConfig, workdir: Path) -> None:
    from alert_jax.train.checkpoints import best_model_dir
    from alert_jax.train.loop import finetune

    metrics = RunDir(workdir).metrics
    if best_model_dir(workdir) is not None and metrics.exists():
        done = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
        if done and done[-1] >= cfg.train.steps:
            _stage(f"{workdir.name}: already trained")
            return
    last = finetune(cfg, workdir)
    _stage(f"{workdir.name}: loss {last.get('loss', float('nan')):.3f}, dev perplexity {last.get('val_ppl', float('nan')):.2f}")


def _with(cfg: ExperimentConfig, *, model: str | None = None, **data: Any) -> ExperimentConfig:
    """`cfg` trained from `model` (a preset or a workdir) with the given `data` fields replaced."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=model or cfg.model.name),
                               data=dataclasses.replace(cfg.data, **data))


def world_corpus(examples: int) -> list[str]:
    """What the demo's one tokenizer learns from: the synthetic world's narrative text, both target formats and the
    evaluation templates, so pretraining, FT, CoT and T1–T5 prompts all tokenize well."""
    texts = synthetic.synthetic_pretraining_text(max(examples, 200), seed=1)
    for task in synthetic.synthetic_finetune(50, seed=1) + synthetic.synthetic_eval_tasks(10, seed=1):
        for variant in ("ft", "cot"):
            texts += [f"{p} {t}" for p, t in task_pairs([task], variant)]
        texts += [render_prompt(t, task, task.examples[0]) for t in ("T1", "T2", "T3", "T4")]
    return texts


def _overlap(workdir: Path, cfg: ExperimentConfig) -> None:
    from alert_jax.analysis.overlap import eval_task_texts, finetune_texts, vocabulary_overlap, write_overlap_json

    texts = finetune_texts(dataclasses.replace(cfg.data, variant="cot"))
    write_overlap_json(vocabulary_overlap(texts, eval_task_texts(cfg.eval.suite)), workdir / "overlap.json")


def _prepare_tokenizer(workdir: Path, plan: DemoPlan) -> Path:
    tokenizer = workdir / "tokenizer"
    if not tokenizer.exists():
        from alert_jax.data.tokenizer import SentencePieceTokenizer

        _stage("training the sentencepiece tokenizer on the synthetic corpus")
        corpus = world_corpus(plan.finetune.data.examples_per_task)
        SentencePieceTokenizer.train(corpus, vocab_size=plan.finetune.data.vocab_size, seed=0).save(tokenizer)
    return tokenizer


def _pretrain_and_finetune(workdir: Path, plan: DemoPlan, tokenizer: Path, variants: Sequence[str]) -> ExperimentConfig:
    """Stages 2–3 for `variants`; returns the finetuning config (whose evaluation labels every variant)."""
    pretrain = _with(plan.pretrain, tokenizer=str(tokenizer))
    _stage(f"pretraining {pretrain.model.name} on narrative text ({pretrain.train.steps} steps)")
    _train(pretrain, workdir / "pretrained")
    finetune = _with(plan.finetune, tokenizer=str(tokenizer))
    for variant in variants:
        _stage(f"finetuning the {variant.upper()} variant ({finetune.train.steps} steps)")
        _train(_with(finetune, model=str(workdir / "pretrained"), variant=variant), workdir / variant)
    return finetune


def _evaluate(workdir: Path, finetune: ExperimentConfig, variants: Sequence[str]) -> Path:
    from alert_jax.config import eval_config_for
    from alert_jax.evaluate import evaluate

    evaluation = workdir / "eval"
    for variant in variants:
        cfg = eval_config_for(finetune, variant)  # labelled by the base model: opt-tiny/pretrained, /ft, /cot
        _stage(f"evaluating {variant} on the {cfg.suite} suite with {','.join(cfg.templates)}")
        evaluate(str(workdir / variant), cfg, evaluation)
    return evaluation


def run_demo(workdir: str | Path, plan: DemoPlan | None = None, recipe: str = "alert") -> Path:
    """Run every stage of `plan` (default: the shipped study as it is) for `recipe` into `workdir`; returns the
    report path."""
    from alert_jax.analysis.report import write_report

    if recipe not in RECIPES:
        raise ConfigError(f"demo recipe {recipe!r}: expected one of {', '.join(RECIPES)}")
    plan = plan or demo_plan()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tokenizer = _prepare_tokenizer(workdir, plan)
    if recipe == "aft":
        finetune = _pretrain_and_finetune(workdir, plan, tokenizer, ("cot",))
        _align(workdir, plan, tokenizer)
        evaluation = _evaluate(workdir, finetune, ("cot", "aft"))
        _assess(workdir, plan, evaluation, tokenizer, ("cot", "aft"))
    else:
        finetune = _pretrain_and_finetune(workdir, plan, tokenizer, VARIANTS)
        evaluation = _evaluate(workdir, finetune, ("pretrained", *VARIANTS))
    _overlap(evaluation, finetune)
    report = write_report([evaluation], workdir / "report")
    _stage(f"report written to {report}")
    return report


def _align(workdir: Path, plan: DemoPlan, tokenizer: Path) -> None:
    """Sample k CoTs per training question from the CoT model, then align it on them (`train.objective`)."""
    from alert_jax.sampling import sample

    align = _with(plan.align, model=str(workdir / "cot"), tokenizer=str(tokenizer))
    align = dataclasses.replace(align, alignment=dataclasses.replace(align.alignment, samples=str(workdir / "samples")))
    _stage(f"sampling {align.alignment.k} CoTs per training question at temperature {align.alignment.temperature}")
    sample(str(workdir / "cot"), align, workdir / "samples")
    _stage(f"aligning the CoT model ({align.train.objective}, constraint {align.alignment.constraint}, "
           f"{align.train.steps} steps)")
    _train(align, workdir / "aft")


def _assess(workdir: Path, plan: DemoPlan, evaluation: Path, tokenizer: Path, variants: Sequence[str]) -> None:
    """Pairwise ranking accuracy of each variant on the CoT model's samples, into `evaluation/assessment.json`."""
    from alert_jax.sampling import assess

    cfg = _with(plan.align, tokenizer=str(tokenizer))
    for variant in variants:
        measure = assess(str(workdir / variant), f"{plan.finetune.model.name}/{variant}", workdir / "samples",
                         evaluation, cfg)
        _stage(f"{variant}: pairwise ranking accuracy {measure['pair_accuracy']:.3f} over {measure['pairs']} pairs")
