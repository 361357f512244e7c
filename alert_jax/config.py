"""Typed, frozen experiment configuration.

One dataclass per section so every key has a type and a default; YAML files and `--set a.b=c`
overrides are validated against these classes, and an unknown key or a wrong type is an error
that names the dotted key — a typo in a launch script must fail before any device is touched.
"""
from __future__ import annotations

from alert_jax.errors import AlertJaxError
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Optional, Union

import yaml


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
    validation_fraction: float = 0.05
    truncate_long: bool = True  # False drops examples longer than a row


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
    max_examples_per_task: int = 0  # 0 = all
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0  # sampling seed (temperature > 0)
    stop_strings: tuple[str, ...] = DEFAULT_STOP_STRINGS
    dtype: str = "float32"  # compute dtype of the evaluated model
    tokenizer: str = ""  # "" = MODEL/tokenizer, else the model directory's own (HF)
    data_root: str = ""  # root that the suite's file paths are relative to
    tfds_dir: str = ""  # a `alert-jax data build eval` output holding the suite, read instead of raw files
    skip_missing: bool = False  # skip suite tasks whose data file is absent
    label: str = ""  # model name in the outputs; "" = the model path's last component
    variant: str = "pretrained"  # pretrained, ft, cot, ...
    size: str = ""  # size label such as "1.3b", for scaling tables
    mesh: MeshConfig = MeshConfig()  # devices the evaluated model is sharded over (default: all, fsdp)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    model: ModelConfig = ModelConfig()
    mesh: MeshConfig = MeshConfig()
    optim: OptimConfig = OptimConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()


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
    unknown = sorted(set(values) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown config key {where}{unknown[0]!s} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], key)
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
    value = yaml.safe_load(raw) if raw.strip() else ""
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
