"""Layer execution options: remat policies that really cut memory, scanned layers, dropout (model/opt.py)."""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import alert_jax
from alert_jax.config import MeshConfig
from alert_jax.model.model import Model
from alert_jax.model.opt import OPTForCausalLM, RuntimeOptions, boxed_params
from alert_jax.model.presets import OPTConfig
from alert_jax.parallel.mesh import make_mesh
from alert_jax.parallel.rules import DEFAULT_RULES, batch_sharding, logical_sharding
from alert_jax.train.step import TrainState, loss_sums, make_train_step

SCANNED = RuntimeOptions(scan_layers=True)


def _train_step_temp_bytes(runtime: RuntimeOptions) -> int:
    """Compiled temporaries of one train step of a 4-layer model at 2 x 256 (ahead of time, nothing allocated)."""
    cfg = OPTConfig(vocab_size=256, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, ffn_dim=256,
                    max_position_embeddings=256)
    module = OPTForCausalLM(cfg, runtime)
    params = jax.eval_shape(lambda key: nn.meta.unbox(boxed_params(module, key)), jax.random.PRNGKey(0))
    tx = optax.adamw(1e-3)
    state = TrainState(jax.ShapeDtypeStruct((), jnp.int32), params, jax.eval_shape(tx.init, params))
    batch = {k: jax.ShapeDtypeStruct((2, 256), jnp.int32) for k in ("inputs", "targets", "segment_ids", "positions")}
    batch["loss_weights"] = jax.ShapeDtypeStruct((2, 256), jnp.float32)
    compiled = jax.jit(make_train_step(module, tx), donate_argnums=0).lower(state, batch).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_remat_cuts_compiled_temporaries_under_scan():
    none = _train_step_temp_bytes(SCANNED)
    full = _train_step_temp_bytes(dataclasses.replace(SCANNED, remat="full"))
    dots = _train_step_temp_bytes(dataclasses.replace(SCANNED, remat="dots_with_no_batch_dims_saveable"))
    # Without remat all four layers' activations (incl. 2 x 4 x 256 x 256 fp32 scores) live until the backward pass;
    # with full remat only each layer's input does, and the policy that saves projections sits in between.
    assert full < 0.4 * none, (full, none)
    assert full < dots < none, (full, dots, none)


def _packed_batch(vocab: int, seed: int = 0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(3, vocab, (2, 24)).astype(np.int32)
    segments = np.array([[1] * 10 + [2] * 9 + [0] * 5, [1] * 4 + [2] * 12 + [3] * 8], np.int32)
    positions = np.concatenate([np.r_[np.arange(10), np.arange(9), np.zeros(5)], np.r_[np.arange(4), np.arange(12),
                                                                                     np.arange(8)]]).reshape(2, 24)
    return ids, segments, positions.astype(np.int32)


def test_scanned_and_unrolled_models_load_one_checkpoint_and_agree(tmp_path):
    from tests.hf_reference import save_tiny

    _, directory = save_tiny(tmp_path, True)
    unrolled = alert_jax.load_model(directory)
    scanned = alert_jax.load_model(directory, runtime=SCANNED)
    assert scanned.params["decoder"]["layers"]["fc1"]["kernel"].shape == (3, 32, 64)
    ids, segments, positions = _packed_batch(101)
    want = alert_jax.logits(unrolled, ids, segment_ids=segments, positions=positions)
    np.testing.assert_allclose(alert_jax.logits(scanned, ids, segment_ids=segments, positions=positions), want,
                               atol=1e-5)
    # native and HF saves from the scanned model are per layer: both load unrolled to the same logits
    alert_jax.save_model(scanned, tmp_path / "native")
    alert_jax.save_hf(scanned, tmp_path / "hf_again")
    for path in (tmp_path / "native", tmp_path / "hf_again"):
        again = alert_jax.load_model(path)
        np.testing.assert_allclose(alert_jax.logits(again, ids, segment_ids=segments, positions=positions), want,
                                   atol=1e-5)
    # the KV-cache path through the scanned layers generates what the unrolled one does
    prompt, mask = ids[:, :6], np.ones((2, 6), np.int32)
    np.testing.assert_array_equal(alert_jax.generate(scanned, prompt, mask, max_new_tokens=5),
                                  alert_jax.generate(unrolled, prompt, mask, max_new_tokens=5))


def test_scanned_params_init_sharded_with_the_layer_axis_whole():
    mesh = make_mesh(MeshConfig(data=1, fsdp=4, tensor=2), jax.devices()[:8])
    model = alert_jax.load_model("opt-micro", runtime=SCANNED, mesh=mesh)
    kernel = model.params["decoder"]["layers"]["fc1"]["kernel"]  # [layers, embed, mlp]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    assert kernel.addressable_shards[0].data.shape == (kernel.shape[0], kernel.shape[1] // 4, kernel.shape[2] // 2)


def _dropout_model(mesh=None) -> Model:
    runtime = RuntimeOptions(dropout=0.1, attention_dropout=0.1, activation_dropout=0.1)
    return alert_jax.load_model("opt-micro", seed=1, runtime=runtime, mesh=mesh)


def _loss(model: Model, key, mesh=None):
    ids, segments, positions = _packed_batch(model.config.vocab_size)
    batch = {"inputs": ids, "segment_ids": segments, "positions": positions, "targets": np.roll(ids, -1, 1),
             "loss_weights": (segments != 0).astype(np.float32)}
    if mesh is not None:
        batch = jax.device_put(batch, batch_sharding(mesh, DEFAULT_RULES))
        with logical_sharding(mesh, DEFAULT_RULES):
            sums = jax.jit(lambda p, b, k: loss_sums(model.module, p, b, k))(model.params, batch, key)
    else:
        sums = jax.jit(lambda p, b, k: loss_sums(model.module, p, b, k))(model.params, batch, key)
    return float(sums.loss)


def test_dropout_is_off_at_evaluation_and_on_in_training():
    model = _dropout_model()
    plain = dataclasses.replace(model, runtime=RuntimeOptions())
    ids, segments, positions = _packed_batch(model.config.vocab_size)
    np.testing.assert_array_equal(alert_jax.logits(model, ids, segment_ids=segments, positions=positions),
                                  alert_jax.logits(plain, ids, segment_ids=segments, positions=positions))
    key = jax.random.PRNGKey(0)
    assert _loss(model, key) != _loss(plain, key)  # a key switches dropout on...
    assert _loss(plain, key) == _loss(plain, None)  # ...only where the rates are non-zero
    assert _loss(model, key) == _loss(model, key) != _loss(model, jax.random.PRNGKey(1))


def test_dropout_masks_do_not_depend_on_the_mesh():
    key = jax.random.PRNGKey(3)
    losses = []
    for shape in ((1, 1, 1), (1, 2, 4)):
        mesh = make_mesh(MeshConfig(*shape), jax.devices()[: int(np.prod(shape))])
        losses.append(_loss(_dropout_model(mesh), key, mesh))
    assert abs(losses[0] - losses[1]) < 1e-5 * abs(losses[0]), losses


@pytest.mark.slow  # two short end-to-end runs
def test_a_scanned_remat_dropout_run_resumes_exactly_and_its_model_loads_unrolled(tmp_path):
    from alert_jax.config import load_config
    from alert_jax.train.loop import Trainer
    from tests.test_training import TINY_RUN, _losses

    run = TINY_RUN + ["model.scan_layers=true", "model.remat=full", "model.dropout=0.1", "model.activation_dropout=0.1",
                      "train.steps=8", "train.eval_every=4", "mesh.fsdp=2"]
    Trainer(load_config(None, run), tmp_path / "whole").run()
    Trainer(load_config(None, run + ["train.steps=4"]), tmp_path / "split").run()
    Trainer(load_config(None, run), tmp_path / "split").run()  # resumes at step 4 with the same dropout masks
    np.testing.assert_allclose(_losses(tmp_path / "split"), _losses(tmp_path / "whole"), rtol=1e-5)
    model = alert_jax.load_model(tmp_path / "whole")
    assert "layers_0" in model.params["decoder"]
