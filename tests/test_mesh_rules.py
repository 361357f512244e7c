"""Mesh construction, multi-host detection, logical partition rules and sharded init on 8 CPU devices."""
from __future__ import annotations

import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from alert_jax.config import MeshConfig
from alert_jax.parallel import mesh as mesh_lib
from alert_jax.parallel.mesh import MeshError, distributed_init_args, make_mesh, maybe_initialize_distributed
from alert_jax.parallel.rules import (
    DEFAULT_RULES,
    ShardingRuleError,
    batch_sharding,
    logical_sharding,
    param_shardings,
    sharded_init,
)

HIDDEN, VOCAB, MLP = 8, 50, 16  # 50 splits over 2 but not over 4


def _boxed(init, names):
    return nn.with_logical_partitioning(init, names)


class TinyOPTBlock(nn.Module):
    """A few OPT-shaped params carrying the same logical names as model/opt.py."""

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(VOCAB, HIDDEN, embedding_init=_boxed(nn.initializers.normal(1.0), ("vocab", "embed")),
                     name="embed_tokens")(tokens)
        x = nn.LayerNorm(scale_init=_boxed(nn.initializers.ones, ("norm",)),
                         bias_init=_boxed(nn.initializers.zeros, ("norm",)), name="self_attn_layer_norm")(x)
        x = nn.Dense(HIDDEN, kernel_init=_boxed(nn.initializers.normal(1.0), ("embed", "heads")),
                     bias_init=_boxed(nn.initializers.normal(1.0), ("heads",)), name="q_proj")(x)
        x = nn.with_logical_constraint(x, ("batch", "length", "act_heads"))
        x = nn.Dense(MLP, kernel_init=_boxed(nn.initializers.normal(1.0), ("embed", "mlp")),
                     bias_init=_boxed(nn.initializers.zeros, ("mlp",)), name="fc1")(x)
        return nn.with_logical_constraint(x, ("batch", "length", "act_mlp"))


class Unnamed(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4, name="plain")(x)


class BadName(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4, kernel_init=_boxed(nn.initializers.ones, ("embed", "bogus")),
                        bias_init=_boxed(nn.initializers.zeros, ("heads",)), name="odd_proj")(x)


TOKENS = jnp.zeros((8, 4), jnp.int32)


def _mesh(data, fsdp, tensor):
    return make_mesh(MeshConfig(data=data, fsdp=fsdp, tensor=tensor), devices=jax.devices()[: data * fsdp * tensor])


def _abstract(module, *args):
    return jax.eval_shape(module.init, jax.random.key(0), *args)


# ---------------------------------------------------------------- mesh


def test_eight_devices_are_available():
    assert jax.device_count() == 8


@pytest.mark.parametrize(
    ("cfg", "shape"),
    [
        (MeshConfig(data=1, fsdp=-1, tensor=1), (1, 8, 1)),
        (MeshConfig(data=2, fsdp=-1, tensor=2), (2, 2, 2)),
        (MeshConfig(data=-1, fsdp=1, tensor=4), (2, 1, 4)),
        (MeshConfig(data=8, fsdp=1, tensor=1), (8, 1, 1)),
    ],
)
def test_mesh_shape_with_inferred_axis(cfg, shape):
    mesh = make_mesh(cfg)
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert tuple(mesh.shape.values()) == shape
    assert sorted(d.id for d in mesh.devices.flat) == list(range(8))


def test_single_device_mesh():
    mesh = make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
    assert tuple(mesh.shape.values()) == (1, 1, 1)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (MeshConfig(data=2, fsdp=3, tensor=1), r"data=2 x fsdp=3 x tensor=1 needs 6 devices but 8"),
        (MeshConfig(data=3, fsdp=-1, tensor=1), r"8 devices do not divide by 3"),
        (MeshConfig(data=-1, fsdp=-1, tensor=1), r"mesh.data and mesh.fsdp are both -1"),
        (MeshConfig(data=0, fsdp=-1, tensor=1), r"mesh.data=0"),
    ],
)
def test_impossible_mesh_names_the_sizes(cfg, message):
    with pytest.raises(MeshError, match=message):
        make_mesh(cfg)


# ---------------------------------------------------------------- multi-host detection


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, None),
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, {}),
        ({"OMPI_COMM_WORLD_SIZE": "2"}, {}),
        ({"TPU_WORKER_HOSTNAMES": "host-0"}, None),
        ({"TPU_WORKER_HOSTNAMES": "host-0,host-1"}, {}),
        ({"ALERT_JAX_DISTRIBUTED": "1"}, {}),
        ({"ALERT_JAX_DISTRIBUTED": "0"}, None),
        (
            {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "2"},
            {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 2},
        ),
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, {"coordinator_address": "10.0.0.1:1234"}),
    ],
)
def test_multi_host_is_recognised_from_the_environment(environ, expected):
    assert distributed_init_args(environ) == expected


def test_malformed_process_count_names_the_variable():
    with pytest.raises(MeshError, match="JAX_NUM_PROCESSES='four'"):
        distributed_init_args({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "four"})


def test_initialize_runs_only_when_asked_and_only_once(monkeypatch):
    calls = []
    initialized = [False]

    def fake_initialize(**kwargs):
        calls.append(kwargs)
        initialized[0] = True

    monkeypatch.setattr(jax.distributed, "initialize", fake_initialize)
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: initialized[0])
    assert maybe_initialize_distributed({}) is False
    assert calls == []
    environ = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}
    assert maybe_initialize_distributed(environ) is True
    assert maybe_initialize_distributed(environ) is True
    assert calls == [{"coordinator_address": "h:1", "num_processes": 2, "process_id": 0}]


def test_host_shard_on_one_host():
    assert mesh_lib.host_shard() == (0, 1)


# ---------------------------------------------------------------- partition rules


@pytest.mark.parametrize(
    ("shape", "q_spec", "q_shard"),
    [
        ((1, 1, 1), P("fsdp", "tensor"), (HIDDEN, HIDDEN)),
        ((8, 1, 1), P("fsdp", "tensor"), (HIDDEN, HIDDEN)),
        ((2, 4, 1), P("fsdp", "tensor"), (HIDDEN // 4, HIDDEN)),
        ((1, 4, 2), P("fsdp", "tensor"), (HIDDEN // 4, HIDDEN // 2)),
    ],
)
def test_sharded_init_places_a_q_proj_kernel(shape, q_spec, q_shard):
    mesh = _mesh(*shape)
    module = TinyOPTBlock()
    params, shardings = sharded_init(module.init, mesh, DEFAULT_RULES, jax.random.key(0), TOKENS)
    kernel = params["params"]["q_proj"]["kernel"]
    assert shardings["params"]["q_proj"]["kernel"].spec == q_spec
    assert kernel.sharding == shardings["params"]["q_proj"]["kernel"]
    assert {s.data.shape for s in kernel.addressable_shards} == {q_shard}
    assert len(kernel.addressable_shards) == mesh.size
    # Same numbers as an ordinary single-device init: sharding changes the layout, not the values.
    reference = nn.meta.unbox(module.init(jax.random.key(0), TOKENS))
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, reference)


def test_every_logical_name_maps_as_the_table_says():
    mesh = _mesh(1, 4, 2)
    shardings = param_shardings(_abstract(TinyOPTBlock(), TOKENS), mesh)["params"]
    assert shardings["embed_tokens"]["embedding"].spec == P("tensor", "fsdp")
    assert shardings["self_attn_layer_norm"]["scale"].spec == P(None)
    assert shardings["q_proj"]["bias"].spec == P("tensor")
    assert shardings["fc1"]["kernel"].spec == P("fsdp", "tensor")
    assert shardings["fc1"]["bias"].spec == P("tensor")


def test_indivisible_dimension_falls_back_to_replication(caplog):
    mesh = _mesh(1, 2, 4)  # vocab 50 over tensor=4 does not divide
    with caplog.at_level(logging.WARNING, logger="alert_jax.parallel.rules"):
        params, shardings = sharded_init(TinyOPTBlock().init, mesh, DEFAULT_RULES, jax.random.key(0), TOKENS)
    embedding = params["params"]["embed_tokens"]["embedding"]
    assert shardings["params"]["embed_tokens"]["embedding"].spec == P(None, "fsdp")
    assert {s.data.shape for s in embedding.addressable_shards} == {(VOCAB, HIDDEN // 2)}
    assert "params/embed_tokens/embedding" in caplog.text and "'tensor'" in caplog.text
    # Only the offending axis is dropped: the q_proj kernel still splits over both.
    assert shardings["params"]["q_proj"]["kernel"].spec == P("fsdp", "tensor")


def test_partially_dividing_batch_keeps_the_axes_that_fit():
    mesh = _mesh(2, 4, 1)
    abstract = {"x": nn.LogicallyPartitioned(jax.ShapeDtypeStruct((6, 3), jnp.float32), ("batch", None))}
    assert param_shardings(abstract, mesh)["x"].spec == P(("data",), None)


def test_unknown_logical_name_names_the_param():
    abstract = _abstract(BadName(), jnp.zeros((2, 4)))
    with pytest.raises(ShardingRuleError, match=r"params/odd_proj/kernel: logical axis 'bogus'"):
        param_shardings(abstract, _mesh(1, 8, 1))


def test_param_without_logical_names_is_an_error():
    abstract = _abstract(Unnamed(), jnp.zeros((2, 4)))
    with pytest.raises(ShardingRuleError, match=r"params/plain/(bias|kernel): parameter has no logical axis names"):
        param_shardings(abstract, _mesh(1, 8, 1))


def test_rule_naming_a_missing_mesh_axis_is_an_error():
    rules = (*DEFAULT_RULES[:-1], ("act_vocab", "model"))
    with pytest.raises(ShardingRuleError, match="no axis 'model'"):
        param_shardings(_abstract(TinyOPTBlock(), TOKENS), _mesh(1, 8, 1), rules)


def test_batch_rows_split_over_data_and_fsdp():
    mesh = _mesh(2, 4, 1)
    sharding = batch_sharding(mesh)
    assert sharding.spec == P(("data", "fsdp"), None)
    batch = jax.device_put(np.arange(8 * 5).reshape(8, 5), sharding)
    assert {s.data.shape for s in batch.addressable_shards} == {(1, 5)}


def test_activation_constraints_apply_inside_the_context():
    mesh = _mesh(1, 4, 2)
    module = TinyOPTBlock()
    params, _ = sharded_init(module.init, mesh, DEFAULT_RULES, jax.random.key(0), TOKENS)
    apply = jax.jit(module.apply)
    with logical_sharding(mesh):
        hidden = apply(params, TOKENS)
    expected = NamedSharding(mesh, P(("data", "fsdp"), None, "tensor"))
    assert hidden.sharding.is_equivalent_to(expected, hidden.ndim)
