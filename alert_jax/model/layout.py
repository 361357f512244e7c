"""Per-layer ⇄ stacked decoder params: the two layouts of one model (`model.scan_layers`); and the copy CPU
decoding reads (`decoding_params`: per layer, dense kernels [out, in]).

Unrolled params hold `decoder/layers_<i>/…`; scanned params hold `decoder/layers/…` with every leaf stacked on
a leading layer axis. Checkpoint formats (HF, metaseq, native) are all written and read per layer — the
canonical layout — so a checkpoint does not depend on how the model that saved it ran, and this module converts
on the way in and out. Conversions run under `jit` with the target shardings, so a sharded model is converted
shard-wise and never gathered onto one device.
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import traverse_util
from jax.sharding import NamedSharding, PartitionSpec

from alert_jax.errors import AlertJaxError

STACKED = "layers"
PER_LAYER = "layers_"
KERNEL = "kernel"  # the leaf name of every dense kernel (nn.Dense, OutInDense, Int8Dense)


def is_stacked(params: Any) -> bool:
    return STACKED in params["decoder"]


def _layer_names(decoder: dict) -> list[str]:
    names = [name for name in decoder if name.startswith(PER_LAYER)]
    return sorted(names, key=lambda name: int(name[len(PER_LAYER):]))


def stack(params: Any) -> Any:
    """Per-layer tree → stacked tree (layer i at index i of every leaf)."""
    decoder = dict(params["decoder"])
    names = _layer_names(decoder)
    if not names:
        raise AlertJaxError("params have no decoder/layers_<i> entries to stack")
    layers = [decoder.pop(name) for name in names]
    decoder[STACKED] = jax.tree.map(lambda *leaves: jnp.stack(leaves), *layers)
    return {**params, "decoder": decoder}


def unstack(params: Any) -> Any:
    """Stacked tree → per-layer tree."""
    decoder = dict(params["decoder"])
    stacked = decoder.pop(STACKED)
    count = jax.tree.leaves(stacked)[0].shape[0]
    for i in range(count):
        decoder[f"{PER_LAYER}{i}"] = jax.tree.map(lambda leaf, i=i: leaf[i], stacked)
    return {**params, "decoder": decoder}


def to_layout(params: Any, scan_layers: bool, shardings: Optional[Any] = None) -> Any:
    """`params` in the layout a model with `scan_layers` runs (unchanged if already so), laid out by `shardings`."""
    if is_stacked(params) == scan_layers:
        return params
    convert = stack if scan_layers else unstack
    return jax.jit(convert, out_shardings=shardings)(params)


def param_at(params: Any, path: tuple[str, ...]) -> Any:
    """The leaf at a per-layer `path` (`("decoder", "layers_3", …)`) in either layout, without converting the rest."""
    if len(path) > 1 and path[1].startswith(PER_LAYER) and is_stacked(params):
        node = params["decoder"][STACKED]
        for key in path[2:]:
            node = node[key]
        return node[int(path[1][len(PER_LAYER):])]
    node = params
    for key in path:
        node = node[key]
    return node


def kernels(params: Any) -> dict[tuple[str, ...], jax.Array]:
    """Every dense kernel in `params`, by path."""
    return {path: leaf for path, leaf in traverse_util.flatten_dict(params).items() if path[-1] == KERNEL}


def decoding_params(params: Any) -> Any:
    """`params` as the CPU decode loop reads them (`RuntimeOptions.kernel_layout = "out_in"`, unrolled layers):
    every dense kernel [in, out] stored as [out, in], and a stacked tree unstacked — a scanned layer loop slices
    each kernel out of its stack, and XLA:CPU copies every slice at every decode step. Converted shard-wise
    under jit: each leaf keeps its mesh axes (a kernel's two swapped, a stacked leaf's layer axis dropped).
    Every other leaf is the same array, not a copy."""
    flat = traverse_util.flatten_dict(params)
    stacked = is_stacked(params)
    in_stack = lambda path: stacked and path[1] == STACKED  # noqa: E731
    moving = {path: leaf for path, leaf in flat.items() if path[-1] == KERNEL or in_stack(path)}
    count = jax.tree.leaves(params["decoder"][STACKED])[0].shape[0] if stacked else 0

    def targets(path: tuple[str, ...]) -> list[tuple[Optional[int], tuple[str, ...]]]:
        if in_stack(path):
            return [(i, (path[0], f"{PER_LAYER}{i}", *path[2:])) for i in range(count)]
        return [(None, path)]

    def convert(tree: dict) -> dict:
        out = {}
        for path, leaf in tree.items():
            for index, target in targets(path):
                value = leaf if index is None else leaf[index]
                out[target] = jnp.swapaxes(value, -1, -2) if path[-1] == KERNEL else value
        return out

    shardings = {target: _decoding_sharding(leaf, index is not None, path[-1] == KERNEL)
                 for path, leaf in moving.items() for index, target in targets(path)}
    moved = jax.jit(convert, out_shardings=shardings)(moving)
    kept = {path: leaf for path, leaf in flat.items() if path not in moving}
    return traverse_util.unflatten_dict({**kept, **moved})


def _decoding_sharding(leaf: jax.Array, unstacked: bool, kernel: bool) -> jax.sharding.Sharding:
    sharding = leaf.sharding
    if not isinstance(sharding, NamedSharding):
        return sharding  # one device: nothing to move
    spec = tuple(sharding.spec) + (None,) * (leaf.ndim - len(sharding.spec))
    spec = spec[1:] if unstacked else spec
    spec = (*spec[:-2], spec[-1], spec[-2]) if kernel else spec
    return NamedSharding(sharding.mesh, PartitionSpec(*spec))
