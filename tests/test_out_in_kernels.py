"""Decoding through the model's decoding copy (`Model.decoding_copy`: dense kernels stored [out, in] by
`OutInDense`, layers unrolled): the same numbers as nn.Dense's [in, out] kernels, HF's greedy tokens, the same
sampled tokens, from unrolled and scanned models, on one device and on a mesh."""
from __future__ import annotations

import dataclasses

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import alert_jax
from alert_jax import host_memory
from alert_jax.config import MeshConfig
from alert_jax.errors import AlertJaxError
from alert_jax.generation import GenerationError, generate
from alert_jax.model import layout
from alert_jax.model.model import Model
from alert_jax.model.opt import OutInDense, RuntimeOptions
from alert_jax.parallel.mesh import make_mesh

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from tests.hf_reference import left_padded_batch, save_tiny  # noqa: E402

NEW = 10


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("bias", [True, False])
def test_out_in_dense_is_nn_dense_with_the_kernel_transposed(dtype, bias):
    rng = np.random.RandomState(0)
    x = jnp.asarray(rng.randn(3, 5, 24), dtype)  # [batch, length, in]: rows of a prompt pass and of a decode step
    dense = nn.Dense(40, use_bias=bias, dtype=dtype)
    params = dense.init(jax.random.PRNGKey(0), x)["params"]
    params = {**params, "bias": jnp.asarray(rng.randn(40), jnp.float32)} if bias else params
    want = dense.apply({"params": params}, x)
    transposed = {**params, "kernel": params["kernel"].T}
    got = OutInDense(40, "embed", "mlp", use_bias=bias, dtype=dtype).apply({"params": transposed}, x)
    assert got.shape == want.shape == (3, 5, 40) and got.dtype == want.dtype
    tolerance = 1e-6 if dtype == jnp.float32 else 1e-2
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=tolerance,
                               atol=tolerance)


@pytest.fixture(scope="module", params=[True, False], ids=["pre_ln", "post_ln_projections"])
def tiny(request, tmp_path_factory):
    hf_model, directory = save_tiny(tmp_path_factory.mktemp("tiny"), request.param, layers=2,
                                    init_std=0.3 if request.param else 0.1, norm_noise=0.1, bias_noise=0.0)
    return hf_model, directory


def _hf_greedy(hf_model, ids, mask) -> np.ndarray:
    with torch.no_grad():
        out = hf_model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), do_sample=False,
                                max_new_tokens=NEW, pad_token_id=1, eos_token_id=100)
    return out[:, ids.shape[1]:].numpy()


def test_decoding_through_out_in_kernels_gives_the_same_tokens(tiny):
    """HF's greedy tokens through the [out, in] copy, with and without the head screen, on unrolled and scanned
    layers and on an fsdp × tensor mesh; sampled tokens equal to the [in, out] kernels' for the same seed."""
    hf_model, directory = tiny
    ids, mask = left_padded_batch()
    want = _hf_greedy(hf_model, ids, mask)
    assert len(set(want.ravel().tolist())) > 3
    mesh = make_mesh(MeshConfig(data=1, fsdp=2, tensor=2), jax.devices()[:4])
    scanned = alert_jax.load_model(directory, runtime=RuntimeOptions(scan_layers=True))
    for model in (alert_jax.load_model(directory), scanned, alert_jax.load_model(directory, mesh=mesh)):
        for screen_head in (True, False):
            got = generate(model, ids, mask, max_new_tokens=NEW, out_in_kernels=True, screen_head=screen_head)
            np.testing.assert_array_equal(got, want)
        sample = dict(max_new_tokens=NEW, temperature=0.9, top_p=0.95, seed=4)
        np.testing.assert_array_equal(generate(model, ids, mask, out_in_kernels=True, **sample),
                                      generate(model, ids, mask, out_in_kernels=False, **sample))


def test_the_decoding_copy_keeps_shardings_shares_other_params_and_follows_new_kernels(tmp_path):
    _, directory = save_tiny(tmp_path, True, layers=2)
    mesh = make_mesh(MeshConfig(data=1, fsdp=2, tensor=2), jax.devices()[:4])
    for scan_layers in (False, True):
        model = alert_jax.load_model(directory, mesh=mesh, runtime=RuntimeOptions(scan_layers=scan_layers))
        twin = model.decoding_copy()
        assert model.decoding_copy() is twin  # made once
        assert twin.runtime.kernel_layout == "out_in" and not twin.runtime.scan_layers
        per_layer = layout.unstack(model.params) if scan_layers else model.params  # what the copy must hold
        original = traverse_util.flatten_dict(per_layer)
        copied = traverse_util.flatten_dict(twin.params)
        assert original.keys() == copied.keys()
        kernels = layout.kernels(per_layer)
        assert len(kernels) == 12  # q k v out fc1 fc2 of both layers
        for path, leaf in original.items():
            want = np.swapaxes(np.asarray(leaf), -1, -2) if path in kernels else np.asarray(leaf)
            np.testing.assert_array_equal(np.asarray(copied[path]), want)
            spec = tuple(leaf.sharding.spec) + (None,) * (leaf.ndim - len(leaf.sharding.spec))
            spec = (*spec[:-2], spec[-1], spec[-2]) if path in kernels else spec
            assert copied[path].sharding.spec == jax.sharding.PartitionSpec(*spec), path
        assert any(not copied[path].sharding.is_fully_replicated for path in kernels)
        outside_layers = [path for path in original if not path[1].startswith(layout.PER_LAYER)]
        assert outside_layers and all(copied[p] is traverse_util.flatten_dict(model.params)[p] for p in outside_layers)
        # a model whose kernels are replaced gets a fresh copy, not the stale one
        fc1 = ("decoder", "layers_0", "fc1", "kernel")
        node = model.params["decoder"]["layers"]["fc1"] if scan_layers else model.params["decoder"]["layers_0"]["fc1"]
        node["kernel"] = node["kernel"] * 2
        fresh = model.decoding_copy()
        assert fresh is not twin
        np.testing.assert_allclose(np.asarray(layout.kernels(fresh.params)[fc1]),
                                   2 * np.asarray(layout.kernels(twin.params)[fc1]))


def test_the_copy_is_made_only_where_it_fits_and_only_of_float_kernels(tmp_path, monkeypatch):
    _, directory = save_tiny(tmp_path, True, layers=2)
    ids, mask = left_padded_batch()
    model = alert_jax.load_model(directory)
    monkeypatch.setattr(host_memory, "available_bytes", lambda: 1000)  # far less than two copies of the kernels
    tight = generate(model, ids, mask, max_new_tokens=NEW)
    assert model._decoding is None  # no copy was made
    monkeypatch.setattr(host_memory, "available_bytes", lambda: None)  # unknown: no copy either
    generate(model, ids, mask, max_new_tokens=NEW)
    assert model._decoding is None
    monkeypatch.undo()
    np.testing.assert_array_equal(generate(model, ids, mask, max_new_tokens=NEW), tight)
    assert model._decoding is not None  # the default on CPU when it fits
    # Once made, the copy has taken its share of the available memory: it stays in use, not held and bypassed.
    copy = model.decoding_copy()
    monkeypatch.setattr(host_memory, "available_bytes", lambda: 1000)
    used = []
    monkeypatch.setattr(Model, "decoding_copy", lambda self, made=Model.decoding_copy: used.append(self) or made(self))
    np.testing.assert_array_equal(generate(model, ids, mask, max_new_tokens=NEW), tight)
    assert used == [model] and model.decoding_copy() is copy
    monkeypatch.undo()
    quantized = alert_jax.load_model(directory, quantize="int8")
    generate(quantized, ids, mask, max_new_tokens=NEW)  # the default leaves int8 kernels alone
    with pytest.raises(GenerationError, match="out_in_kernels needs float kernels"):
        generate(quantized, ids, mask, max_new_tokens=NEW, out_in_kernels=True)
    with pytest.raises(AlertJaxError, match="kernel_layout='out_in' is for float kernels"):
        RuntimeOptions(kernel_layout="out_in", quantize="int8")
    with pytest.raises(AlertJaxError, match="kernel_layout='columns'"):
        dataclasses.replace(RuntimeOptions(), kernel_layout="columns")
