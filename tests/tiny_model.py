"""A random opt-tiny saved the way a training workdir keeps its model, for tests that generate from a model dir."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import alert_jax
from alert_jax.data.tokenizer import Tokenizer
from alert_jax.model.model import Model, init_params
from alert_jax.model.opt import RuntimeOptions
from alert_jax.model.presets import get_preset


def save_random_tiny_model(directory: Path, tokenizer: Tokenizer, vocab_size: Optional[int] = None) -> Path:
    """Save a random opt-tiny whose vocabulary is `vocab_size` (default: the tokenizer's) into `directory`, with the
    tokenizer beside it. The tokenizer goes in after the model: `save_model` writes its directory as one unit."""
    config = dataclasses.replace(get_preset("opt-tiny"), vocab_size=vocab_size or tokenizer.vocab_size)
    alert_jax.save_model(Model(config, init_params(config, RuntimeOptions())), directory)
    tokenizer.save(directory / "tokenizer")
    return directory
