"""The public Python API, re-exported from where each piece lives (`alert_jax.model`, `alert_jax.generation`).

`import alert_jax` exposes these names lazily (see `alert_jax/__init__.py`); this module is the one place
that lists them, and it holds no logic of its own.
"""
from __future__ import annotations

from alert_jax.generation import generate, generate_text
from alert_jax.model.io import load_model, save_hf, save_model
from alert_jax.model.model import Model, logits
from alert_jax.model.presets import OPTConfig

__all__ = ["Model", "OPTConfig", "generate", "generate_text", "load_model", "logits", "save_hf", "save_model"]
