"""int8 inference (alert_jax/model/quantize.py): int8 matmul weights take a quarter of float32's bytes, logits
stay close to float32's, per-channel and per-row scales are hand-checkable, the weight-only product stays within
its analytic activation bound of the dequantised float product, and a mesh-sharded model quantises in place (each
int8 kernel keeps its float kernel's layout)."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from jax.sharding import PartitionSpec

from alert_jax.config import MeshConfig
from alert_jax.generation import generate
from alert_jax.model.io import load_model, quantize_model
from alert_jax.model.model import logits
from alert_jax.model.quantize import SMALL_ROWS, QuantizeError, int8_matmul, quantize_weight, w8a8_matmul
from alert_jax.parallel.mesh import make_mesh

IDS = np.random.RandomState(0).randint(4, 500, (2, 12))


@pytest.fixture(scope="module")
def models():
    return {mode: load_model("opt-tiny", quantize=mode) for mode in ("none", "int8", "w8a8")}


def _matmul_weights(params) -> list:
    """Every Dense kernel and the token embedding (the tied LM head)."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    names = lambda path: [getattr(k, "key", "") for k in path]
    return [leaf for path, leaf in flat if names(path)[-1] == "kernel" or "embed_tokens" in names(path)[-2:-1]
            and names(path)[-1] == "embedding"]


def test_per_output_channel_scales_by_hand():
    weight = np.array([[1.0, -0.5, 0.0], [-2.54, 0.25, 0.0]], np.float32)  # [in=2, out=3], a Dense kernel
    q, scale = quantize_weight(weight, reduce_axis=0)
    np.testing.assert_allclose(scale, [2.54 / 127, 0.5 / 127, 1.0])  # an all-zero channel gets scale 1
    np.testing.assert_array_equal(q, [[50, -127, 0], [-127, 64, 0]])  # 1/0.02 = 50, 0.25/(0.5/127) = 63.5 → 64


def _operands(rows: int, out: int = 48, width: int = 32):
    rng = np.random.RandomState(rows)
    q = rng.randint(-127, 128, (out, width)).astype(np.int8)  # [out, in]
    scale = rng.uniform(0.001, 0.01, out).astype(np.float32)
    x = (rng.randn(rows, width) * rng.uniform(0.1, 30, (rows, 1))).astype(np.float32)  # rows of different sizes
    return x, q, scale


# 1 and 3 rows: XLA-CPU's split int8 path (1 is padded-free: the split stacks two rows); SMALL_ROWS: its largest
# row count; 40: the dequantised float matmul.
@pytest.mark.parametrize("rows", [1, 3, SMALL_ROWS, 40])
def test_weight_only_product_is_the_dequantised_float_product_within_its_bound(rows):
    x, q, scale = _operands(rows)
    weight = q.astype(np.float64) * scale[:, None]
    expected = x.astype(np.float64) @ weight.T
    # Activations are represented to max|x| / 254² per element at most (hi + lo split), plus float32 rounding.
    bound = np.abs(x).max(axis=1, keepdims=True) / 254**2 * np.abs(weight).sum(axis=1) + 1e-6 * np.abs(expected)
    error = np.abs(np.asarray(int8_matmul(x, q, scale, np.float32), np.float64) - expected)
    assert np.all(error <= bound + 1e-7), float((error / bound).max())


def test_w8a8_product_by_hand():
    x = np.array([[2.54, -1.0, 0.5]], np.float32)  # row scale 2.54/127 = 0.02 → x_q = [127, -50, 25]
    q = np.array([[1, 2, 3], [-1, 0, 4]], np.int8)
    scale = np.array([0.5, 0.25], np.float32)
    # int32 sums 127 - 100 + 75 = 102 and -127 + 0 + 100 = -27, times 0.02 and the output scales
    np.testing.assert_allclose(w8a8_matmul(x, q, scale), [[102 * 0.02 * 0.5, -27 * 0.02 * 0.25]], rtol=1e-6)


@pytest.mark.parametrize("rows", [1, 3, 40])  # a single row is padded to two on XLA-CPU
def test_w8a8_product_is_the_integer_product_of_row_quantised_activations(rows):
    x, q, scale = _operands(rows)
    x[0] = 0.0  # a zero row: scale 1, result 0
    row_scale = np.where(np.abs(x).max(1, keepdims=True) > 0, np.abs(x).max(1, keepdims=True) / 127, 1.0)
    x_q = np.clip(np.round(x / row_scale), -127, 127).astype(np.int64)
    expected = (x_q @ q.astype(np.int64).T) * row_scale * scale
    got = np.asarray(w8a8_matmul(x, q, scale))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not got[0].any()
    # each row has its own scale: a row's result does not depend on the rows batched with it
    np.testing.assert_allclose(got[-1:], w8a8_matmul(x[-1:], q, scale), rtol=1e-6)


def test_int8_matmul_weights_take_a_quarter_of_the_bytes(models):
    fp32, int8 = models["none"], models["int8"]
    before, after = _matmul_weights(fp32.params), _matmul_weights(int8.params)
    assert len(before) == len(after) > 0 and all(w.dtype == np.int8 for w in after)
    scales = sum(leaf.nbytes for path, leaf in jax.tree_util.tree_flatten_with_path(int8.params)[0]
                 if getattr(path[-1], "key", "") == "scale")
    ratio = (sum(w.nbytes for w in after) + scales) / sum(w.nbytes for w in before)
    assert 0.25 <= ratio < 0.27


@pytest.mark.parametrize("mode, mean_error", [("int8", 0.02), ("w8a8", 0.03)])  # w8a8 rounds activations too
def test_quantised_logits_are_close_to_float32(models, mode, mean_error):
    reference, quantised = logits(models["none"], IDS), logits(models[mode], IDS)
    error = np.abs(quantised - reference)
    assert error.max() < 0.15 * reference.std() and error.mean() < mean_error * reference.std()
    agree = (quantised.argmax(-1) == reference.argmax(-1)).mean()
    assert agree > 0.9


@pytest.mark.parametrize("mode", ["int8", "w8a8"])
def test_quantised_decode_follows_its_own_full_forward(models, mode):
    """The cached decode (few rows: XLA-CPU's int8 paths) scores the tokens it chose like a full forward pass
    over prompt + generated tokens (many rows: the dequantised matmul for int8) — the two paths agree."""
    model = models[mode]
    mask = np.ones_like(IDS)
    new = generate(model, IDS, mask, max_new_tokens=6)
    full = logits(model, np.concatenate([IDS, new], axis=1))
    greedy = full[:, IDS.shape[1] - 1:-1].argmax(-1)
    assert (greedy == new).mean() >= 0.9


@pytest.mark.parametrize("mode", ["int8", "w8a8"])
def test_sharded_model_quantises_in_place_and_generates_like_one_device(models, mode):
    single = models[mode]
    mesh = make_mesh(MeshConfig(data=1, fsdp=2, tensor=2), jax.devices()[:4])
    sharded = load_model("opt-tiny", mesh=mesh, quantize=mode)
    fc1 = sharded.params["decoder"]["layers_0"]["fc1"]
    assert fc1["kernel"].dtype == np.int8
    assert fc1["kernel"].sharding.spec == PartitionSpec("tensor", "fsdp")  # int8 kernels are [out, in]
    assert fc1["scale"].sharding.spec == PartitionSpec("tensor")
    mask = np.ones_like(IDS)
    np.testing.assert_array_equal(generate(sharded, IDS, mask, max_new_tokens=6),
                                  generate(single, IDS, mask, max_new_tokens=6))


def test_unknown_mode_is_an_error():
    with pytest.raises(QuantizeError, match="int4"):
        load_model("opt-tiny", quantize="int4")


def test_quantising_twice_or_to_none_is_an_error(models):
    with pytest.raises(QuantizeError, match="already quantised"):
        quantize_model(models["int8"], mode="w8a8")
    with pytest.raises(QuantizeError, match="nothing to quantise"):
        quantize_model(models["none"], mode="none")
