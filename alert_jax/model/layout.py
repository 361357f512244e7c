"""Per-layer ⇄ stacked decoder params: the two layouts of one model (`model.scan_layers`); and dense kernels
[in, out] → [out, in] (`kernel_layout`), the copy CPU decoding reads.

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


def transpose_kernels(params: Any) -> Any:
    """`params` with every dense kernel [..., in, out] stored as [..., out, in] (`RuntimeOptions.kernel_layout =
    "out_in"`; a stacked kernel keeps its leading layer axis). Each is transposed shard-wise under jit: a kernel
    split over a mesh stays split, its two axes' specs swapped. Every other leaf is the same array, not a copy."""
    moving = kernels(params)
    shardings = {path: _swapped(kernel.sharding, kernel.ndim) for path, kernel in moving.items()}
    moved = jax.jit(lambda tree: jax.tree.map(lambda kernel: jnp.swapaxes(kernel, -1, -2), tree),
                    out_shardings=shardings)(moving)
    return traverse_util.unflatten_dict({**traverse_util.flatten_dict(params), **moved})


def _swapped(sharding: jax.sharding.Sharding, ndim: int) -> jax.sharding.Sharding:
    if not isinstance(sharding, NamedSharding):
        return sharding  # one device: nothing to swap
    spec = tuple(sharding.spec) + (None,) * (ndim - len(sharding.spec))
    return NamedSharding(sharding.mesh, PartitionSpec(*spec[:-2], spec[-1], spec[-2]))
