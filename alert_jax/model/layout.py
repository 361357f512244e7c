"""Per-layer ⇄ stacked decoder params: the two layouts of one model (`model.scan_layers`).

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

from alert_jax.errors import AlertJaxError

STACKED = "layers"
PER_LAYER = "layers_"


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
