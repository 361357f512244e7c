"""Load an OPT from anywhere and save it back: presets, HF directories, metaseq files, alert_jax model
directories and training workdirs all resolve through `load_model`, so every command downstream — evaluate,
generate, convert, finetune from a checkpoint — takes the same "model" argument.

Loading takes a mesh and lays every parameter out by the partition rules (`parallel/rules.py`) as it is read:
an HF or metaseq tensor goes from the file straight into its `NamedSharding` (each device receives only its
shards, host memory holds about one tensor beyond what the devices hold), and a native checkpoint is restored by
orbax into the target shardings, whatever mesh or process count saved it (trained on 8 devices, evaluated on 1).
Every format is stored per layer; a model that runs with `scan_layers` gets its params stacked on load and
unstacked on save (model/layout.py), so one checkpoint serves both layouts.
"""
from __future__ import annotations

import dataclasses
import json
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from alert_jax.atomic import refuse_existing, staged_dir
from alert_jax.config import MeshConfig
from alert_jax.errors import AlertJaxError
from alert_jax.model import convert, layout
from alert_jax.model.model import Model, dtype_from_name
from alert_jax.model.opt import OPTForCausalLM, RuntimeOptions, boxed_params
from alert_jax.model.presets import PRESETS, OPTConfig, get_preset, is_preset
from alert_jax.model.quantize import QuantizeError, check_mode, quantize_params
from alert_jax.parallel.mesh import is_main_process, make_mesh
from alert_jax.parallel.rules import (
    DEFAULT_RULES, LogicalRules, logical_sharding, param_shardings, sharded_init, unbox,
)
from alert_jax.untrusted_json import read_json
from alert_jax.workdir import RunDir

MODEL_MANIFEST = "alert_jax_model.json"
METASEQ_SUFFIXES = (".pt", ".pth")


class ModelSourceError(AlertJaxError):
    """A model argument that names neither an existing model directory nor a bare preset name."""


def load_model(path_or_preset: str | Path, dtype: str = "float32", *, seed: int = 0,
               runtime: Optional[RuntimeOptions] = None, mesh: Optional[Mesh] = None,
               rules: LogicalRules = DEFAULT_RULES, num_attention_heads: Optional[int] = None,
               quantize: str = "none") -> Model:
    """Load an OPT: bare preset name (seeded random init), HF directory, metaseq `.pt` file, alert_jax model
    directory, or training workdir (its best model), with params laid out over `mesh` by `rules`.

    `mesh=None` is one device (the first local one). A name with a path separator is always a path: a missing
    one is an error, never a preset's random init. `num_attention_heads` is for metaseq files whose config
    lacks it. `runtime` (how to run it: remat, scan_layers, attention, ...) overrides `dtype` when given.
    `quantize="int8"` (weight-only) or `"w8a8"` returns the int8 model (`quantize_model`), for inference only.
    """
    if check_mode(quantize) != "none":
        model = load_model(path_or_preset, dtype, seed=seed, runtime=runtime, mesh=mesh, rules=rules,
                           num_attention_heads=num_attention_heads)
        return quantize_model(model, rules, quantize)
    runtime = runtime if runtime is not None else RuntimeOptions(dtype=dtype_from_name(dtype))
    mesh = mesh if mesh is not None else single_device_mesh()
    source = resolve_source(path_or_preset)
    if source.kind == "native":
        return _load_native(source.path, runtime, mesh, rules)
    if source.kind == "hf":
        return _import(convert.hf_refs(source.path), str(source.path), runtime, mesh, rules)
    if source.kind == "metaseq":
        return _import(convert.metaseq_refs(source.path, num_attention_heads), str(source.path), runtime, mesh,
                       rules)
    config = get_preset(str(source.path))
    module = OPTForCausalLM(config, runtime)
    params, _ = sharded_init(partial(boxed_params, module), mesh, rules, jax.random.PRNGKey(seed))
    return Model(config, params, runtime)


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """What a "model" argument names: `kind` is "native" (an alert_jax model directory, also a workdir's best
    model), "hf" (a directory with config.json), "metaseq" (a .pt file) or "preset" (`path` is then the name)."""

    kind: str
    path: Path


def resolve_source(path_or_preset: str | Path) -> ModelSource:
    """Resolve a model argument once, by the rules `load_model` documents, so that loading it and reading its
    architecture (`model_config`, for planning) can never disagree about what it names."""
    path = Path(path_or_preset)
    if path.is_dir():
        if (path / MODEL_MANIFEST).exists():
            return ModelSource("native", path)
        if (path / "config.json").exists():
            return ModelSource("hf", path)
        native = RunDir(path).best_model()
        if native is not None:
            return ModelSource("native", native)
        raise ModelSourceError(f"{path}: not an HF OPT directory, alert_jax model directory or training workdir")
    if path.is_file() and path.suffix in METASEQ_SUFFIXES:
        return ModelSource("metaseq", path)
    if is_preset(str(path_or_preset)):
        return ModelSource("preset", path)
    raise ModelSourceError(f"{path_or_preset}: no such model directory or metaseq file, and not a bare preset "
                           f"name ({', '.join(PRESETS)})")


def model_config(path_or_preset: str | Path, num_attention_heads: Optional[int] = None) -> OPTConfig:
    """The architecture `load_model(path_or_preset)` would build, read without touching a weight (a manifest,
    config.json, or a metaseq file's tensor shapes), so memory can be planned before anything is loaded."""
    source = resolve_source(path_or_preset)
    if source.kind == "native":
        return read_manifest(source.path)
    if source.kind == "hf":
        return convert.config_from_hf(source.path / "config.json")
    if source.kind == "metaseq":
        return convert.metaseq_refs(source.path, num_attention_heads)[0]
    return get_preset(str(source.path))


def single_device_mesh(device: Optional[jax.Device] = None) -> Mesh:
    """The mesh of one device (default: this process's first): where an unsharded model lives."""
    return make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), [device or jax.local_devices()[0]])


def mesh_of(model: Model) -> Mesh:
    """The mesh the model's params live on (`load_model(..., mesh=)`); one device for an unsharded model."""
    sharding = getattr(jax.tree.leaves(model.params)[0], "sharding", None)
    if isinstance(sharding, NamedSharding):
        return sharding.mesh
    return single_device_mesh(next(iter(sharding.device_set)) if sharding is not None else None)


def quantize_model(model: Model, rules: LogicalRules = DEFAULT_RULES, mode: str = "int8") -> Model:
    """The int8 version of a float model (model/quantize.py: `int8` weight-only or `w8a8`), on the same mesh:
    each int8 kernel keeps its float kernel's layout and each scale follows its output axis, so nothing is
    gathered."""
    if check_mode(mode) == "none":
        raise QuantizeError("quantize_model: mode 'none' has nothing to quantise; use the float model")
    if model.runtime.quantize != "none":
        raise QuantizeError(f"quantize_model: the model is already quantised ({model.runtime.quantize})")
    if model.runtime.scan_layers:
        raise QuantizeError(f"quantize {mode} needs per-layer params: load the model with scan_layers off")
    runtime = dataclasses.replace(model.runtime, quantize=mode)
    shardings = param_shardings_for(model.config, runtime, mesh_of(model), rules)
    return Model(model.config, jax.jit(quantize_params, out_shardings=shardings)(model.params), runtime)


def param_shardings_for(config: OPTConfig, runtime: RuntimeOptions, mesh: Mesh,
                        rules: LogicalRules = DEFAULT_RULES) -> Any:
    """The NamedSharding of every parameter of `config` on `mesh`, from shapes alone (nothing is allocated)."""
    module = OPTForCausalLM(config, runtime)
    with logical_sharding(mesh, rules):
        abstract = jax.eval_shape(partial(boxed_params, module), jax.random.PRNGKey(0))
        return param_shardings(abstract, mesh, rules)


def abstract_params(config: OPTConfig, runtime: RuntimeOptions, mesh: Mesh, rules: LogicalRules = DEFAULT_RULES
                    ) -> Any:
    """Shape, dtype and target sharding of every parameter: what orbax restores into."""
    module = OPTForCausalLM(config, runtime)
    shapes = jax.eval_shape(lambda key: unbox(boxed_params(module, key)), jax.random.PRNGKey(0))
    return jax.tree.map(lambda shape, sharding: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding),
                        shapes, param_shardings_for(config, runtime, mesh, rules))


def _import(source: tuple[OPTConfig, dict], where: str, runtime: RuntimeOptions, mesh: Mesh,
            rules: LogicalRules) -> Model:
    """Read a foreign checkpoint tensor by tensor, each placed straight into its sharding as it is read."""
    config, refs = source
    shardings = param_shardings_for(config, _per_layer(runtime), mesh, rules)
    params = convert.params_from_refs(config, refs, where, place=_placer(shardings))
    return Model(config, _in_layout(params, config, runtime, mesh, rules), runtime)


def _per_layer(runtime: RuntimeOptions) -> RuntimeOptions:
    """The runtime whose params have the per-layer layout that every checkpoint format stores."""
    return dataclasses.replace(runtime, scan_layers=False)


def _in_layout(params: Any, config: OPTConfig, runtime: RuntimeOptions, mesh: Mesh, rules: LogicalRules) -> Any:
    """Per-layer params converted (shard-wise) into the layout `runtime` runs."""
    if not runtime.scan_layers:
        return params
    return layout.to_layout(params, True, param_shardings_for(config, runtime, mesh, rules))


def _placer(shardings: Any) -> Callable[[tuple[str, ...], np.ndarray], jax.Array]:
    """`place(path, host_array)`: each addressable device copies just its own slice of the host array."""

    def place(path: tuple[str, ...], array: np.ndarray) -> jax.Array:
        sharding = shardings
        for key in path:
            sharding = sharding[key]
        return jax.make_array_from_callback(array.shape, sharding, lambda index: np.array(array[index]))

    return place


def _get_param(params: Any, path: tuple[str, ...]) -> np.ndarray:
    return np.asarray(jax.device_get(layout.param_at(params, path)))


class ModelSaveError(AlertJaxError):
    """A model whose params are not the float [in, out] weights a checkpoint holds (the message says what to save)."""


def _check_savable(model: Model, out_dir: str | Path) -> None:
    """Refuse, before anything is written, a model whose params a checkpoint cannot hold as they are: int8
    weights (every format stores float weights; int8 is made at load) and the [out, in] kernel copy decoding uses
    (it would be read back transposed)."""
    if model.runtime.quantize != "none":
        raise ModelSaveError(f"{out_dir}: not saved — the model's weights are quantized ({model.runtime.quantize}); "
                             f"checkpoints hold float weights: save the float model and quantize it at load")
    if model.runtime.kernel_layout != "in_out":
        raise ModelSaveError(f"{out_dir}: not saved — the model's kernels are stored {model.runtime.kernel_layout} "
                             f"(the copy decoding reads, Model.decoding_copy): save the model it was made from")


def save_hf(model: Model, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Export to an HF directory that `transformers.OPTForCausalLM.from_pretrained` loads."""
    _check_savable(model, out_dir)
    return convert.export_hf(model.config, lambda p: _get_param(model.params, p), out_dir, overwrite=overwrite)


def save_model(model: Model, out_dir: str | Path, *, overwrite: bool = False,
               extra_files: Optional[dict[str, str]] = None) -> Path:
    """Save in alert_jax's own format — the architecture as JSON + params with orbax (sharded-array aware) +
    `extra_files` (name → text) — built beside `out_dir` and swapped in complete (`alert_jax.atomic`).

    The directory is written as a unit: an existing non-empty `out_dir` is refused unless `overwrite`, and then
    replaced whole (files put there before, e.g. a tokenizer, belong in it after the model is saved)."""
    import orbax.checkpoint as ocp

    out_dir = Path(out_dir).absolute()
    _check_savable(model, out_dir)
    refuse_existing(out_dir, overwrite)  # before the layout conversion, which copies a scanned model's params
    params = layout.to_layout(model.params, False)  # the canonical per-layer layout, whatever the model runs
    with staged_dir(out_dir, owner=is_main_process()) as staging:
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(staging / "params", params, force=True)
        if is_main_process():  # orbax saved collectively; the small files are written once
            files = {MODEL_MANIFEST: json.dumps(dataclasses.asdict(model.config), indent=2), **(extra_files or {})}
            for name, text in files.items():
                (staging / name).write_text(text)
    return out_dir


def read_manifest(directory: Path) -> OPTConfig:
    path = directory / MODEL_MANIFEST
    values = read_json(path, ModelSourceError, context="unreadable model manifest", expect=dict)
    try:
        return OPTConfig(**values)
    except (TypeError, ValueError) as exc:
        raise ModelSourceError(f"{path}: unreadable model manifest ({type(exc).__name__}: {exc!s:.100})") from None


def _load_native(directory: Path, runtime: RuntimeOptions, mesh: Mesh, rules: LogicalRules) -> Model:
    """Restore orbax params into this mesh's shardings (orbax reads each device's slices; any saving topology).

    Params that cannot be read back (a truncated or corrupted directory) are one error naming it.
    """
    import orbax.checkpoint as ocp

    config = read_manifest(directory)
    params_dir = Path(directory).absolute() / "params"
    target = abstract_params(config, _per_layer(runtime), mesh, rules)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            params = ckptr.restore(params_dir, target)
    except Exception as exc:  # noqa: BLE001 — any failure to read files a crash may have broken
        raise ModelSourceError(f"{params_dir}: unreadable model params ({type(exc).__name__}: "
                               f"{' '.join(str(exc).split())[:150]})") from None
    return Model(config, _in_layout(params, config, runtime, mesh, rules), runtime)
