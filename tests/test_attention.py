"""Attention kernels (model/attention.py): every implementation agrees with the dense xla path on packed rows."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alert_jax.model.attention import (
    AttentionUnavailableError, MaskSpec, attend, blockwise_causal, check_available, dense, merge_heads,
)


def _packed(batch: int, t: int, heads: int = 2, head_dim: int = 8, seed: int = 0):
    """q, k, v and a mask of rows packed with three segments of different lengths, then padding."""
    rng = np.random.RandomState(seed)
    segments = np.zeros((batch, t), np.int32)
    for row in range(batch):
        cuts = sorted(rng.choice(np.arange(1, t - 4), 3, replace=False))  # three segments, then padding
        for seg, (start, stop) in enumerate(zip([0, *cuts[:2]], cuts), start=1):
            segments[row, start:stop] = seg
    index = np.broadcast_to(np.arange(t, dtype=np.int32), (batch, t))
    q, k, v = (jnp.asarray(rng.randn(batch, t, heads, head_dim), jnp.float32) for _ in range(3))
    mask = MaskSpec(*(jnp.asarray(a) for a in (segments, segments, index, index)))
    return q, k, v, mask, segments != 0


def test_blockwise_skips_the_upper_triangle_and_equals_dense():
    q, k, v, mask, real = _packed(2, 40)
    want = dense(q, k, v, mask)
    got = blockwise_causal(q, k, v, mask, block=16)  # blocks 16, 16, 8: uneven last block too
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=1e-5)
    weights = jnp.asarray(np.random.RandomState(1).randn(*q.shape) * real[..., None, None], jnp.float32)
    grads = [jax.grad(lambda *qkv: (attention(*qkv) * weights).sum(), argnums=(0, 1, 2))(q, k, v)
             for attention in (lambda *qkv: dense(*qkv, mask), lambda *qkv: blockwise_causal(*qkv, mask, block=16))]
    for name, want_grad, got_grad in zip("qkv", *grads):
        np.testing.assert_allclose(np.asarray(got_grad), np.asarray(want_grad), atol=1e-5, err_msg=f"d{name}")


def _queries(q, mask, real, stop: int, count: int):
    """Query rows [stop - count, stop) of a packed batch (its first three positions are real in every row)."""
    rows = slice(stop - count, stop)
    assert real[:, rows].all()
    return q[:, rows], mask.rows(rows, slice(None))


@pytest.mark.parametrize("batch,queries", [(1, 1), (3, 1), (2, 3)])
def test_attention_over_the_cache_layout_equals_dense(batch, queries):
    """The cache holds k/v as [B·H, K, D] (`LayerCache`): attending over it is the same function as over
    [B, K, H, D], for one decode query or several, at batch 1 too (where the layout matters to XLA)."""
    q, k, v, mask, real = _packed(batch, 24, heads=3, seed=batch)
    q, mask = _queries(q, mask, real, stop=3, count=queries)
    want = dense(q, k, v, mask)
    got = jax.jit(lambda *a: attend(*a, implementation="xla", cached_kv=True))(q, merge_heads(k), merge_heads(v),
                                                                                 mask)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_dense_mask_matches_a_hand_built_one():
    seg = jnp.asarray([[1, 1, 2, 0]])
    idx = jnp.arange(4)[None]
    got = np.asarray(MaskSpec(seg, seg, idx, idx).dense()[0, 0])
    want = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(got, want)


def test_splash_interpret_equals_xla_on_packed_rows_with_padding():
    pytest.importorskip("jax.experimental.pallas.ops.tpu.splash_attention")
    q, k, v, mask, real = _packed(2, 128, heads=2, head_dim=128, seed=1)
    want = attend(q, k, v, mask, implementation="xla", cached_kv=False)
    got = jax.jit(lambda *a: attend(*a, implementation="splash_interpret", cached_kv=False))(q, k, v, mask)
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=2e-5)


def test_kernels_this_backend_lacks_are_refused_by_name():
    if jax.default_backend() != "gpu":
        with pytest.raises(AttentionUnavailableError, match="cudnn needs a CUDA GPU"):
            check_available("cudnn")
    if jax.default_backend() != "tpu":
        with pytest.raises(AttentionUnavailableError, match="splash needs a TPU"):
            check_available("splash")
    with pytest.raises(AttentionUnavailableError, match="use one of"):
        check_available("dot_product")


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs a CUDA GPU")
def test_cudnn_equals_xla_on_packed_rows_with_padding():
    q, k, v, mask, real = _packed(2, 256, heads=4, head_dim=64, seed=2)
    q, k, v = (x.astype(jnp.bfloat16) for x in (q, k, v))
    want = attend(q, k, v, mask, implementation="xla", cached_kv=False).astype(jnp.float32)
    got = attend(q, k, v, mask, implementation="cudnn", cached_kv=False).astype(jnp.float32)
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=2e-2)


def test_the_cudnn_path_reads_the_cache_layout_right(monkeypatch):
    """cuDNN needs a GPU, but the layout work around it does not: with JAX's own (xla) implementation standing in
    for the fused kernel, attending over the cache through the cudnn branch equals dense attention."""
    real_attention = jax.nn.dot_product_attention

    def stand_in(*args, implementation=None, **kwargs):
        assert implementation == "cudnn"
        return real_attention(*args, implementation="xla", **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", stand_in)
    q, k, v, mask, real = _packed(3, 24, heads=2, head_dim=8, seed=4)
    q, k, v = (x.astype(jnp.bfloat16) for x in (q, k, v))
    q, mask = _queries(q, mask, real, stop=3, count=2)
    want = dense(q, k, v, mask).astype(jnp.float32)
    got = attend(q, merge_heads(k), merge_heads(v), mask, implementation="cudnn", cached_kv=True)
    np.testing.assert_allclose(np.asarray(got.astype(jnp.float32)), np.asarray(want), atol=2e-2)
