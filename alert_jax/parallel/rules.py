"""Logical axis names → mesh axes, and parameter initialisation that is sharded from the start.

The model names the role of every dimension ("vocab", "embed", "heads", ...) and never a mesh
axis; this one table decides where each role lives, so a new parallel layout is a change of
`MeshConfig` (or of this table), never of model code. Rules are applied by flax with first-match
priority and a mesh axis used at most once per array.
"""
from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any, Union

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from alert_jax.errors import AlertJaxError

logger = logging.getLogger(__name__)

MeshAxes = Union[str, tuple[str, ...], None]
LogicalRules = tuple[tuple[str, MeshAxes], ...]

DEFAULT_RULES: LogicalRules = (
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("positions", None),
    ("norm", None),
    ("embed_proj", None),
    ("layers", None),  # the stacked layer axis of scanned params: each device holds its shards of every layer
    # activations
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("kv_length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
)


class ShardingRuleError(AlertJaxError):
    """A parameter the rules cannot place; the message names the parameter path."""


def _path_name(path: jax.tree_util.KeyPath) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/")


def _axes_tuple(entry: MeshAxes) -> tuple[str, ...]:
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def _check_rules_fit_mesh(mesh: Mesh, rules: LogicalRules) -> None:
    for logical, entry in rules:
        for axis in _axes_tuple(entry):
            if axis not in mesh.shape:
                raise ShardingRuleError(
                    f"rule {logical!r} -> {axis!r}: the mesh has no axis {axis!r} (axes: {', '.join(mesh.axis_names)})"
                )


def _fit_to_shape(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh, where: str) -> PartitionSpec:
    """Drop, per dimension, the trailing mesh axes whose sizes do not divide it (with a warning).

    jit refuses uneven parameter shardings, and a vocabulary of 50272 over tensor=3 is a fact of
    life, so such a dimension is replicated over the offending axis rather than failing the run.
    """
    fitted: list[MeshAxes] = []
    for dim, (size, entry) in enumerate(zip(shape, spec)):
        kept: list[str] = []
        for axis in _axes_tuple(entry):
            ways = math.prod(mesh.shape[a] for a in kept) * mesh.shape[axis]
            if size % ways:
                logger.warning(
                    "%s: dimension %d (size %d) does not divide over mesh axis %r (size %d); replicating it there",
                    where, dim, size, axis, mesh.shape[axis],
                )
                break
            kept.append(axis)
        if not kept:
            fitted.append(None)
        elif isinstance(entry, str):
            fitted.append(kept[0])
        else:
            fitted.append(tuple(kept))
    return PartitionSpec(*fitted)


def param_shardings(abstract_params: Any, mesh: Mesh, rules: LogicalRules = DEFAULT_RULES) -> Any:
    """A NamedSharding for every parameter of a boxed (`nn.LogicallyPartitioned`) pytree.

    Works on abstract trees from `jax.eval_shape` as well as on real arrays. Fails, naming the
    parameter path, when a parameter has no logical names or uses a name missing from `rules`.
    """
    _check_rules_fit_mesh(mesh, rules)
    known = {logical for logical, _ in rules}

    def one(path: jax.tree_util.KeyPath, leaf: Any) -> NamedSharding:
        where = _path_name(path)
        if not isinstance(leaf, nn.LogicallyPartitioned):
            raise ShardingRuleError(
                f"{where}: parameter has no logical axis names (wrap its initializer in nn.with_logical_partitioning)"
            )
        names = tuple(leaf.names)
        shape = tuple(leaf.value.shape)
        if len(names) != len(shape):
            raise ShardingRuleError(f"{where}: {len(names)} logical names {names} for a rank-{len(shape)} array")
        unknown = [name for name in names if name is not None and name not in known]
        if unknown:
            raise ShardingRuleError(f"{where}: logical axis {unknown[0]!r} is not in the partition rules")
        logical_spec = nn.get_partition_spec(leaf)
        mesh_spec = nn.logical_to_mesh_sharding(logical_spec, mesh, rules).spec
        return NamedSharding(mesh, _fit_to_shape(mesh_spec, shape, mesh, where))

    return jax.tree_util.tree_map_with_path(one, abstract_params, is_leaf=nn.meta.is_axis_metadata)


def unbox(boxed: Any) -> Any:
    """Plain arrays out of a boxed tree, without the sharding constraint flax's own unbox adds.

    Inside `logical_sharding` flax would re-apply the raw rules (ignoring `_fit_to_shape`'s
    fallbacks); the layout is already fixed by `out_shardings`, so the boxes are simply stripped.
    """
    return jax.tree_util.tree_map(
        lambda box: box.unbox(apply_constraint=False), boxed, is_leaf=nn.meta.is_axis_metadata
    )


@contextlib.contextmanager
def logical_sharding(mesh: Mesh, rules: LogicalRules = DEFAULT_RULES) -> Iterator[None]:
    """Scope in which `nn.with_logical_constraint` on activations becomes a real constraint.

    Outside it flax treats those calls as no-ops, so trace model calls (init, train and eval
    steps, generation) inside it.
    """
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def sharded_init(
    init_fn: Callable[..., Any], mesh: Mesh, rules: LogicalRules, *args: Any
) -> tuple[Any, Any]:
    """Run `init_fn(*args)` (e.g. `model.init`) directly into its sharded layout.

    The boxed output is first traced with `jax.eval_shape` (no memory), its shardings computed,
    and the initialiser then jitted with those `out_shardings`, so each device only ever holds its
    own shards — the whole parameter set never exists on one device or host.
    Returns (unboxed params, their NamedSharding tree).
    """
    with logical_sharding(mesh, rules):
        abstract = jax.eval_shape(init_fn, *args)
        shardings = param_shardings(abstract, mesh, rules)
        params = jax.jit(lambda *a: unbox(init_fn(*a)), out_shardings=shardings)(*args)
    return params, shardings


def batch_sharding(mesh: Mesh, rules: LogicalRules = DEFAULT_RULES) -> NamedSharding:
    """Sharding of [B, T] batch arrays: rows split as the rules place "batch", positions whole."""
    return NamedSharding(mesh, nn.logical_to_mesh_axes(("batch", "length"), rules))



def optimizer_state_shardings(tx: Any, params: Any, shardings: Any, mesh: Mesh) -> Any:
    """Shardings for `tx.init(params)`: param-shaped leaves (AdamW's mu, nu) laid out like their params.

    `jax.jit(tx.init)` alone does not carry the params' shardings through `zeros_like`, so the moments
    would be replicated on every device and FSDP would save only the params (OPT-1.3B on 8 devices:
    10.4 GiB of state per device instead of 1.8 GiB, benchmarks/bench_memory.py).
    """
    import optax

    replicated = NamedSharding(mesh, PartitionSpec())
    return optax.tree_map_params(tx, lambda _, sharding: sharding, jax.eval_shape(tx.init, params), shardings,
                                 transform_non_params=lambda _: replicated)
