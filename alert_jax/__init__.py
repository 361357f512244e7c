"""alert_jax: how finetuning changes the reasoning skills of OPT models (ALERT), in JAX/Flax.

The public API is exposed lazily so that `import alert_jax.metrics` (pure Python) never pulls in jax.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Model": "alert_jax.model.model",
    "load_model": "alert_jax.model.io",
    "logits": "alert_jax.model.model",
    "save_hf": "alert_jax.model.io",
    "save_model": "alert_jax.model.io",
    "generate": "alert_jax.generation",
    "generate_text": "alert_jax.generation",
    "OPTConfig": "alert_jax.model.presets",
    "load_config": "alert_jax.config",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'alert_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
