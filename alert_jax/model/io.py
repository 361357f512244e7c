"""Load an OPT from anywhere and save it back: presets, HF directories, alert_jax model directories and
training workdirs all resolve through `load_model`, so every command downstream — evaluate, generate,
convert, finetune from a checkpoint — takes the same "model" argument.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from alert_jax.errors import AlertJaxError
from alert_jax.model import convert
from alert_jax.model.model import Model, dtype_from_name, init_params
from alert_jax.model.opt import RuntimeOptions
from alert_jax.model.presets import PRESETS, OPTConfig, get_preset, is_preset
from alert_jax.workdir import RunDir

MODEL_MANIFEST = "alert_jax_model.json"


class ModelSourceError(AlertJaxError):
    """A model argument that names neither an existing model directory nor a bare preset name."""


def load_model(path_or_preset: str | Path, dtype: str = "float32", *, seed: int = 0, remat: bool = False,
               attention: str = "xla") -> Model:
    """Load an OPT: bare preset name (seeded random init), HF directory, alert_jax model directory, or workdir.

    A name with a path separator is always a path: a missing one is an error, never a preset's random init.
    """
    runtime = RuntimeOptions(dtype=dtype_from_name(dtype), remat=remat, attention=attention)
    path = Path(path_or_preset)
    if path.is_dir():
        if (path / MODEL_MANIFEST).exists():
            return _load_native(path, runtime)
        if (path / "config.json").exists():
            config, params = convert.load_hf(path, place=lambda _p, a: jnp.asarray(a))
            return Model(config, params, runtime)
        native = RunDir(path).best_model()
        if native is not None:
            return _load_native(native, runtime)
        raise ModelSourceError(f"{path}: not an HF OPT directory, alert_jax model directory or training workdir")
    if is_preset(str(path_or_preset)):
        config = get_preset(str(path_or_preset))
        return Model(config, init_params(config, runtime, seed), runtime)
    raise ModelSourceError(f"{path_or_preset}: no such model directory, and not a bare preset name "
                           f"({', '.join(PRESETS)})")


def _get_param(params: Any, path: tuple[str, ...]) -> np.ndarray:
    node = params
    for key in path:
        node = node[key]
    return np.asarray(jax.device_get(node))


def save_hf(model: Model, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Export to an HF directory that `transformers.OPTForCausalLM.from_pretrained` loads."""
    return convert.export_hf(model.config, lambda p: _get_param(model.params, p), out_dir, overwrite=overwrite)


def save_model(model: Model, out_dir: str | Path) -> Path:
    """Save in alert_jax's own format: the architecture as JSON + params with orbax (sharded-array aware)."""
    import orbax.checkpoint as ocp

    out_dir = Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(out_dir / "params", model.params, force=True)
    (out_dir / MODEL_MANIFEST).write_text(json.dumps(dataclasses.asdict(model.config), indent=2))
    return out_dir


def read_manifest(directory: Path) -> OPTConfig:
    return OPTConfig(**json.loads((directory / MODEL_MANIFEST).read_text()))


def _load_native(directory: Path, runtime: RuntimeOptions) -> Model:
    import orbax.checkpoint as ocp

    config = read_manifest(directory)
    abstract = jax.eval_shape(lambda: init_params(config, runtime))
    with ocp.StandardCheckpointer() as ckptr:
        params = ckptr.restore(Path(directory).absolute() / "params", abstract)
    return Model(config, params, runtime)
