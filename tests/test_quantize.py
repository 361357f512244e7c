"""int8 weight-only inference (alert_jax/model/quantize.py): int8 matmul weights take a quarter of float32's
bytes, logits stay close to float32's, per-channel scales are hand-checkable, and a mesh-sharded model quantises
in place (each int8 kernel keeps its float kernel's layout)."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from jax.sharding import PartitionSpec

from alert_jax.config import MeshConfig
from alert_jax.generation import generate
from alert_jax.model.io import load_model
from alert_jax.model.model import logits
from alert_jax.model.quantize import SMALL_ROWS, QuantizeError, int8_matmul, quantize_weight
from alert_jax.parallel.mesh import make_mesh

IDS = np.random.RandomState(0).randint(4, 500, (2, 12))


@pytest.fixture(scope="module")
def pair():
    return load_model("opt-tiny"), load_model("opt-tiny", quantize="int8")


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


@pytest.mark.parametrize("rows", [1, 3, SMALL_ROWS, 40])  # matrix-vector, fused small-batch path, matmul
def test_int8_matmul_equals_the_dequantised_float_product(rows):
    rng = np.random.RandomState(rows)
    q = rng.randint(-127, 128, (48, 32)).astype(np.int8)  # [out, in]
    scale = rng.uniform(0.001, 0.01, 48).astype(np.float32)
    x = rng.randn(rows, 32).astype(np.float32)
    expected = x @ (q.astype(np.float64) * scale[:, None]).T
    np.testing.assert_allclose(int8_matmul(x, q, scale, np.float32), expected, rtol=1e-4, atol=1e-5)


def test_int8_matmul_weights_take_a_quarter_of_the_bytes(pair):
    fp32, int8 = pair
    before, after = _matmul_weights(fp32.params), _matmul_weights(int8.params)
    assert len(before) == len(after) > 0 and all(w.dtype == np.int8 for w in after)
    scales = sum(leaf.nbytes for path, leaf in jax.tree_util.tree_flatten_with_path(int8.params)[0]
                 if getattr(path[-1], "key", "") == "scale")
    ratio = (sum(w.nbytes for w in after) + scales) / sum(w.nbytes for w in before)
    assert 0.25 <= ratio < 0.27


def test_int8_logits_are_close_to_float32(pair):
    fp32, int8 = pair
    reference, quantised = logits(fp32, IDS), logits(int8, IDS)
    error = np.abs(quantised - reference)
    assert error.max() < 0.15 * reference.std() and error.mean() < 0.02 * reference.std()
    agree = (quantised.argmax(-1) == reference.argmax(-1)).mean()
    assert agree > 0.9


def test_sharded_model_quantises_in_place_and_generates_like_one_device(pair):
    _, single = pair
    mesh = make_mesh(MeshConfig(data=1, fsdp=2, tensor=2), jax.devices()[:4])
    sharded = load_model("opt-tiny", mesh=mesh, quantize="int8")
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
