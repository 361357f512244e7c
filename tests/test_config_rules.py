"""`FIELD_RULES`: every config field has a value rule, and a value outside it is refused naming the dotted key."""
from __future__ import annotations

import dataclasses
import math
import typing

import pytest

from alert_jax.config import (
    DTYPES, FIELD_RULES, TEMPLATE_NAMES, ConfigError, EvalConfig, ExperimentConfig, load_config, validate,
)


def _leaf_fields(cls: type, prefix: str = "") -> typing.Iterator[tuple[str, typing.Any]]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _leaf_fields(hints[f.name], key)
        else:
            yield key, hints[f.name]


def test_every_non_bool_field_of_every_config_has_a_rule() -> None:
    missing = [key for key, hint in _leaf_fields(ExperimentConfig) if hint is not bool and key not in FIELD_RULES]
    assert not missing, f"add a FIELD_RULES entry for {missing}"


def test_every_numeric_rule_is_bounded_and_no_rule_is_stale() -> None:
    fields = dict(_leaf_fields(ExperimentConfig))
    assert set(FIELD_RULES) <= set(fields), set(FIELD_RULES) - set(fields)
    for key, hint in fields.items():
        if hint in (int, float):
            rule = FIELD_RULES[key]
            assert rule.low is not None or rule.high is not None or rule.choices, key


def test_defaults_pass_their_own_rules() -> None:
    validate(ExperimentConfig())
    validate(EvalConfig(), "eval")


def test_enum_choices_match_the_code_that_uses_them() -> None:
    from alert_jax.data.templates import TEMPLATES
    from alert_jax.evaluate import PROMPTING_MODES
    from alert_jax.model.attention import IMPLEMENTATIONS
    from alert_jax.model.model import _DTYPES
    from alert_jax.model.opt import REMAT_POLICIES
    from alert_jax.model.quantize import QUANTIZE_MODES
    from alert_jax.train.objectives import CONSTRAINTS, OBJECTIVES, SEGMENT_SLOTS
    from alert_jax.train.selection import SELECT_BY

    assert TEMPLATE_NAMES == TEMPLATES
    assert set(DTYPES) == set(_DTYPES)
    assert FIELD_RULES["eval.prompting"].choices == PROMPTING_MODES
    assert set(FIELD_RULES["train.select_by"].choices) == set(SELECT_BY)
    assert FIELD_RULES["model.attention"].choices == IMPLEMENTATIONS
    assert set(FIELD_RULES["model.remat"].choices) == {"none", *REMAT_POLICIES}
    assert FIELD_RULES["eval.quantize"].choices == QUANTIZE_MODES
    assert FIELD_RULES["train.objective"].choices == OBJECTIVES
    assert FIELD_RULES["alignment.constraint"].choices == CONSTRAINTS
    assert FIELD_RULES["alignment.k"].high == SEGMENT_SLOTS


@pytest.mark.parametrize("override", [
    "train.batch_size=0", "train.batch_size=-1", "train.steps=0", "train.checkpoint_every=0", "train.log_every=0",
    "train.eval_every=0", "train.keep_checkpoints=0", "train.eval_batches=-1", "train.seq_len=1",
    "train.on_nonfinite=ignore", "optim.learning_rate=-1e-4", "optim.clip_norm=0", "optim.clip_norm=-1",
    "optim.beta1=1", "optim.beta2=1.5", "optim.eps=0", "optim.grad_accum_steps=0", "optim.end_lr_ratio=2",
    "optim.learning_rate=.inf", "optim.learning_rate=.nan", "eval.temperature=.nan", "eval.temperature=-0.5",
    "eval.top_p=0", "eval.top_p=1.01", "eval.batch_size=0", "eval.max_new_tokens=0", "eval.templates=[T1,T9]",
    "eval.dtype=float8", "model.attention=flash", "model.dtype=int8", "data.variant=rationale",
    "data.validation_fraction=1", "mesh.fsdp=0", "mesh.data=-2", "eval.mesh.tensor=0", "model.seed=-1",
    "data.mixture={gsm8k: -1}", "data.masked_thought_rate=1", "train.select_by=loss", "eval.prompting=many_shot",
    "eval.shots=0", "eval.instance_seed=-1",
])
def test_an_out_of_range_value_is_refused_naming_the_key(override: str) -> None:
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{key}="):
        load_config(None, [override])


@pytest.mark.parametrize("override", ["mesh.fsdp=-1", "train.eval_batches=0", "eval.top_p=1", "optim.beta1=0",
                                      "eval.temperature=0.7", "optim.learning_rate=0", "eval.templates=[T5]"])
def test_boundary_values_inside_the_rules_are_accepted(override: str) -> None:
    load_config(None, [override])


def test_a_config_file_value_is_refused_naming_file_and_key(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  batch_size: 0\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: train.batch_size=0"):
        load_config(path)


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "train: [1, 2]\n", "eval:\n  mesh: 3\n", "train: 5\n"])
def test_config_files_of_the_wrong_shape_are_refused(tmp_path, text: str) -> None:
    path = tmp_path / "shape.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="shape.yaml"):
        load_config(path)


def test_a_non_utf8_config_file_is_named(tmp_path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"model:\n  name: caf\xe9\n")
    with pytest.raises(ConfigError, match="latin1.yaml: not UTF-8"):
        load_config(path)


def test_nan_is_not_finite_for_any_bounded_rule() -> None:
    assert FIELD_RULES["eval.top_p"].violation(math.nan)


def test_evaluate_flag_choices_match_the_config_rules() -> None:
    """Each `alert-jax evaluate` flag with choices is a shorthand for an eval key: both accept the same values."""
    from alert_jax.cli import build_parser
    from alert_jax.cli.evaluate import SHORTHANDS

    evaluate = build_parser()._subparsers._group_actions[0].choices["evaluate"]
    with_choices = [a for a in evaluate._actions if a.choices and a.dest in SHORTHANDS]
    assert with_choices
    for action in with_choices:
        assert tuple(action.choices) == FIELD_RULES[f"eval.{SHORTHANDS[action.dest]}"].choices, action.dest
