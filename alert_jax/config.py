"""Typed, frozen experiment configuration.

One dataclass per section so every key has a type and a default; YAML files and `--set a.b=c`
overrides are validated against these classes, and an unknown key or a wrong type is an error
that names the dotted key — a typo in a launch script must fail before any device is touched.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from alert_jax.errors import AlertJaxError


class ConfigError(AlertJaxError):
    """A config file or override that does not fit the schema; the message names the key."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which OPT to build: a preset name, an HF/alert_jax checkpoint directory, or a workdir."""

    name: str = "opt-tiny"
    dtype: str = "float32"  # compute dtype; master params stay float32
    param_dtype: str = "float32"
    remat: str = "none"  # per-layer rematerialisation: none | full | dots_saveable | dots_with_no_batch_dims_saveable
    attention: str = "xla"  # xla | cudnn (GPU) | splash (TPU) | splash_interpret (tests); alert_jax/model/attention.py
    scan_layers: bool = False  # decoder layers under nn.scan: one compiled layer body, params stacked per layer
    dropout: float = 0.0  # dropout rates named as in HF OPTConfig; active only in training steps
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh shape; -1 means "all remaining devices" (at most one axis may say so)."""

    data: int = 1
    fsdp: int = -1
    tensor: int = 1


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup then linear decay to `end_lr_ratio * learning_rate`."""

    learning_rate: float = 1e-4
    warmup_steps: int = 10
    end_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    clip_norm: float = 1.0
    grad_accum_steps: int = 1


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where finetuning text comes from and how it is formatted."""

    suite: str = "synthetic"  # finetuning mix: a suite name or YAML path
    validation_suite: str = "synthetic"  # its `dev` tasks give the checkpoint-selection perplexity;
    # "" = hold out `validation_fraction` of the finetuning examples instead (alert_jax/data/splits.py)
    data_root: str = ""  # directory holding the raw files a suite refers to
    tfds_dir: str = ""  # a `alert-jax data build finetune` output to read instead of raw files (its split is used)
    variant: str = "cot"  # "ft" (answer only) or "cot" (rationale + answer)
    tokenizer: str = ""  # tokenizer directory; empty = train sentencepiece on the corpus
    vocab_size: int = 1024  # for a sentencepiece tokenizer trained on the corpus
    examples_per_task: int = 200  # training examples per finetuning task (0 = all)
    mixture: dict[str, int] = dataclasses.field(default_factory=dict)  # source → its own cap (0 = all),
    # overriding examples_per_task for that source (alert_jax/data/mixture.py)
    validation_fraction: float = 0.05
    truncate_long: bool = True  # False drops examples longer than a row
    masked_thought_rate: float = 0.0  # CoT only: fraction of rationale tokens replaced by <unk> in the training
    # inputs, targets untouched (Masked Thought; alert_jax/data/masked_thought.py); 0 = off, as in ALERT


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 100
    batch_size: int = 8
    seq_len: int = 2048
    seed: int = 0
    log_every: int = 10
    eval_every: int = 50
    eval_batches: int = 4
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    async_checkpointing: bool = True
    on_nonfinite: str = "stop"  # a NaN/inf loss or grad norm: "stop" the run, or "skip" that batch's update
    select_by: str = "dev_perplexity"  # best/ by dev_perplexity (ALERT) or dev_rouge_l (greedy generation on the
    # dev tasks under eval.templates, best template per task; alert_jax/train/selection.py)
    objective: str = "sft"  # sft (token loss on data.suite) | aft | rrhf | dpo (over `alignment.samples`)


DEFAULT_STOP_STRINGS: tuple[str, ...] = ("\n\n", "\nInput:", "\nQuestion:")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """One evaluation: which suite and templates, how to generate, and how the model is named in the outputs.

    The same dataclass is the `eval` section of an experiment, the `alert-jax evaluate` command (its flags
    are shorthands for `--set eval.KEY=VALUE`) and what a sweep hands to each run's evaluation.
    """

    suite: str = "synthetic"
    templates: tuple[str, ...] = ("T1", "T2", "T3", "T4", "T5")
    max_new_tokens: int = 64
    batch_size: int = 16
    max_examples_per_task: Optional[int] = None  # None = the suite's `eval_instances_per_task` (alert: 100,
    # NIV2's test cap); 0 = every instance; chosen by `instance_seed`, the same in every run and template
    instance_seed: int = 0
    prompting: str = "zero_shot"  # OPT-R's modes: zero_shot | few_shot | few_shot_explained (see data/templates.py)
    shots: int = 2  # demonstrations per prompt in the few-shot modes, drawn from the task's unevaluated instances
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0  # sampling seed (temperature > 0)
    stop_strings: tuple[str, ...] = DEFAULT_STOP_STRINGS
    dtype: str = "float32"  # compute dtype of the evaluated model
    quantize: str = "none"  # "int8" weight-only | "w8a8" int8 activations too; scales at load (model/quantize.py)
    tokenizer: str = ""  # "" = MODEL/tokenizer, else the model directory's own (HF)
    data_root: str = ""  # root that the suite's file paths are relative to
    tfds_dir: str = ""  # a `alert-jax data build eval` output holding the suite, read instead of raw files
    skip_missing: bool = False  # skip suite tasks whose data file is absent
    label: str = ""  # model name in the outputs; "" = the model path's last component
    variant: str = "pretrained"  # pretrained, ft, cot, ...
    size: str = ""  # size label such as "1.3b", for scaling tables
    mesh: MeshConfig = MeshConfig()  # devices the evaluated model is sharded over (default: all, fsdp)


@dataclasses.dataclass(frozen=True)
class AlignmentConfig:
    """Sampling k chains of thought per training question (`alert-jax sample`) and training on them
    (`train.objective: aft | rrhf | dpo`); alert_jax/train/objectives.py defines the losses.

    The paper (Wang et al. 2023, arXiv 2309.02144) does not publish k, the sampling temperature or the
    constraint's boundary value: these defaults are ours (README, "Alignment fine-tuning").
    """

    samples: str = ""  # an `alert-jax sample` workdir (its samples.jsonl) that aft/rrhf/dpo train on
    k: int = 4  # sampled CoTs per question
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 64
    batch_size: int = 16  # prompts per generation batch
    seed: int = 0
    max_questions_per_task: int = 0  # 0 = every finetuning question (after data.examples_per_task)
    constraint: str = "dc"  # AFT's constraint: dc (detached) | bc (boundary) | none (plain alignment term)
    boundary: float = 1.0  # BC: negatives are held above (lowest positive score - boundary)
    boundary_weight: float = 1.0  # BC: weight of the boundary hinge
    alignment_weight: float = 1.0  # weight of the ranking term (aft, rrhf); the token loss on positives has 1
    beta: float = 0.1  # DPO's inverse temperature


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    model: ModelConfig = ModelConfig()
    mesh: MeshConfig = MeshConfig()
    optim: OptimConfig = OptimConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    alignment: AlignmentConfig = AlignmentConfig()


# ---------------------------------------------------------------- value rules

@dataclasses.dataclass(frozen=True)
class Rule:
    """What values one config field accepts: a numeric range (each bound open or closed; NaN and ±inf are refused
    whenever a bound is set), extra allowed values outside it, or a set of choices. `Rule()` is free text."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] = ()
    also: tuple[Any, ...] = ()  # values accepted besides the range (e.g. -1 = "the rest" for a mesh axis)

    def violation(self, value: Any) -> Optional[str]:
        """Why `value` is refused, or None."""
        if value in self.also:
            return None
        if self.choices:
            return None if value in self.choices else f"must be one of {', '.join(map(str, self.choices))}"
        if self.low is None and self.high is None:
            return None
        if not math.isfinite(value):
            return "must be a finite number"
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return self._describe()
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return self._describe()
        return None

    def _describe(self) -> str:
        low = "" if self.low is None else f"{'(' if self.low_open else '['}{self.low:g}"
        high = "∞)" if self.high is None else f"{self.high:g}{')' if self.high_open else ']'}"
        extra = f" or {', '.join(map(str, self.also))}" if self.also else ""
        return f"must be in {low or '(-∞'}, {high}{extra}"


def at_least(low: float, **kw: Any) -> Rule:
    return Rule(low=low, **kw)


def one_of(*choices: Any) -> Rule:
    return Rule(choices=choices)


FREE = Rule()  # free text: a name, a path, a label
DTYPES = ("float32", "bfloat16", "float16")
TEMPLATE_NAMES = ("T1", "T2", "T3", "T4", "T5")  # alert_jax/data/templates.py TEMPLATES; config stays import-light
_MESH_RULES = {axis: at_least(1, also=(-1,)) for axis in ("data", "fsdp", "tensor")}

FIELD_RULES: dict[str, Rule] = {
    "model.name": FREE, "model.dtype": one_of(*DTYPES), "model.param_dtype": one_of(*DTYPES),
    "model.attention": one_of("xla", "cudnn", "splash", "splash_interpret"),  # model/attention.py IMPLEMENTATIONS
    "model.remat": one_of("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable"),  # opt.REMAT_POLICIES
    **{f"model.{rate}": Rule(low=0, high=1, high_open=True)
       for rate in ("dropout", "attention_dropout", "activation_dropout")},
    "model.seed": at_least(0),
    **{f"mesh.{axis}": rule for axis, rule in _MESH_RULES.items()},
    "optim.learning_rate": at_least(0), "optim.warmup_steps": at_least(0),
    "optim.end_lr_ratio": Rule(low=0, high=1), "optim.weight_decay": at_least(0),
    "optim.beta1": Rule(low=0, high=1, high_open=True), "optim.beta2": Rule(low=0, high=1, high_open=True),
    "optim.eps": at_least(0, low_open=True), "optim.clip_norm": at_least(0, low_open=True),
    "optim.grad_accum_steps": at_least(1),
    "data.suite": FREE, "data.validation_suite": FREE, "data.data_root": FREE, "data.tfds_dir": FREE,
    "data.variant": one_of("ft", "cot"), "data.tokenizer": FREE, "data.vocab_size": at_least(8),
    "data.examples_per_task": at_least(0), "data.validation_fraction": Rule(low=0, high=1, high_open=True),
    "data.mixture": at_least(0),  # each source's cap
    "data.masked_thought_rate": Rule(low=0, high=1, high_open=True),
    "train.steps": at_least(1), "train.batch_size": at_least(1), "train.seq_len": at_least(2),
    "train.seed": at_least(0), "train.log_every": at_least(1), "train.eval_every": at_least(1),
    "train.eval_batches": at_least(0),  # 0 = every validation row
    "train.checkpoint_every": at_least(1), "train.keep_checkpoints": at_least(1),
    "train.on_nonfinite": one_of("stop", "skip"),
    "train.select_by": one_of("dev_perplexity", "dev_rouge_l"),  # alert_jax/train/selection.py SELECT_BY
    "train.objective": one_of("sft", "aft", "rrhf", "dpo"),  # alert_jax/train/objectives.py OBJECTIVES
    "alignment.samples": FREE, "alignment.k": Rule(low=1, high=16),  # objectives.SEGMENT_SLOTS samples per row
    "alignment.temperature": at_least(0), "alignment.top_p": Rule(low=0, high=1, low_open=True),
    "alignment.max_new_tokens": at_least(1), "alignment.batch_size": at_least(1), "alignment.seed": at_least(0),
    "alignment.max_questions_per_task": at_least(0),
    "alignment.constraint": one_of("dc", "bc", "none"),  # objectives.CONSTRAINTS
    "alignment.boundary": at_least(0), "alignment.boundary_weight": at_least(0),
    "alignment.alignment_weight": at_least(0), "alignment.beta": at_least(0, low_open=True),
    "eval.suite": FREE, "eval.templates": one_of(*TEMPLATE_NAMES), "eval.max_new_tokens": at_least(1),
    "eval.batch_size": at_least(1), "eval.max_examples_per_task": at_least(0), "eval.temperature": at_least(0),
    "eval.top_p": Rule(low=0, high=1, low_open=True), "eval.seed": at_least(0), "eval.stop_strings": FREE,
    "eval.dtype": one_of(*DTYPES), "eval.tokenizer": FREE, "eval.data_root": FREE, "eval.tfds_dir": FREE,
    "eval.label": FREE, "eval.variant": FREE, "eval.size": FREE, "eval.instance_seed": at_least(0),
    "eval.prompting": one_of("zero_shot", "few_shot", "few_shot_explained"),  # evaluate.py PROMPTING_MODES
    "eval.shots": at_least(1),
    "eval.quantize": one_of("none", "int8", "w8a8"),  # model/quantize.py QUANTIZE_MODES
    **{f"eval.mesh.{axis}": rule for axis, rule in _MESH_RULES.items()},
}


def check_value(key: str, value: Any) -> None:
    """Apply `FIELD_RULES[key]` to a field's value (each item of a tuple field, each value of a mapping field),
    naming the key when it fails."""
    rule = FIELD_RULES.get(key)
    if rule is None or value is None or isinstance(value, bool):  # None: an Optional field's "not set"
        return
    items = value.values() if isinstance(value, dict) else value if isinstance(value, tuple) else (value,)
    for item in items:
        problem = rule.violation(item)
        if problem:
            raise ConfigError(f"{key}={item!r}: {problem}")


def validate(config: Any, prefix: str = "") -> Any:
    """Check every field of a config dataclass (recursively) against `FIELD_RULES`; returns `config`.

    `prefix` is the section the dataclass sits at (`"eval"` for a standalone EvalConfig).
    """
    for f in dataclasses.fields(config):
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            validate(value, key)
        else:
            check_value(key, value)
    return config


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check (and gently convert, e.g. int → float, list → tuple) a value against a field type."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _build(annotation, value, key)
    if origin in (Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        key_type, value_type = typing.get_args(annotation)
        return {_coerce(k, key_type, f"{key}.{k}"): _coerce(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_type, _ellipsis) = typing.get_args(annotation)
        return tuple(_coerce(v, item_type, key) for v in value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{key}: expected float, got {value!r}") from None
    if annotation in (int, float, str, bool) and (
        not isinstance(value, annotation) or (annotation is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{key}: expected {annotation.__name__}, got {value!r}")
    return value


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(map(str, set(values) - names))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown config key {where}{unknown[0]!s} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], key)
        check_value(key, kwargs[name])
    base = cls()
    return dataclasses.replace(base, **kwargs)


def _merge(into: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = into
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {part} is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=c` → ("a.b", value), with the value parsed as YAML so `3`, `1e-4`, `true`, `[T1,T2]` get types."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key.strip()}: value {raw!r} is not valid YAML ({exc.__class__.__name__})") from None
    return key.strip(), value


def load_config(path: str | Path | None = None, overrides: Optional[list[str]] = None) -> ExperimentConfig:
    """Read an experiment YAML (optional) and apply `a.b=c` overrides, validating every key."""
    values: dict = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        values = loaded or {}
    for text in overrides or []:
        key, value = parse_override(text)
        _merge(values, key, value)
    try:
        return _build(ExperimentConfig, values)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path is not None else str(exc)) from None


def to_dict(config: Any) -> dict:
    """Plain nested dict (tuples as lists) for YAML/JSON dumps stored next to checkpoints."""
    out = {}
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        if dataclasses.is_dataclass(v):
            out[f.name] = to_dict(v)
        elif isinstance(v, tuple):
            out[f.name] = list(v)
        elif isinstance(v, dict):
            out[f.name] = dict(v)
        else:
            out[f.name] = v
    return out


def eval_config_for(cfg: ExperimentConfig, variant: str) -> EvalConfig:
    """The evaluation of an experiment's model: its `eval` section, completed from the rest of the experiment.

    Tokenizer, data root and dtype default to the training run's; the label and size come from `model.name`
    (`opt-1.3b` → label "opt-1.3b", size "1.3b"), so FT, CoT and pretrained runs of one size line up in the report.
    """
    from alert_jax.model.presets import size_label

    ev = cfg.eval
    return dataclasses.replace(
        ev, tokenizer=ev.tokenizer or cfg.data.tokenizer, data_root=ev.data_root or cfg.data.data_root,
        dtype=cfg.model.dtype if ev.dtype == EvalConfig.dtype else ev.dtype,
        label=ev.label or Path(cfg.model.name).name, size=ev.size or size_label(cfg.model.name), variant=variant)
