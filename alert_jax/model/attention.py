"""Attention kernels for packed rows and the KV cache, chosen by `model.attention`.

Every implementation takes the same inputs — q [B, Q, H, D] (already scaled), k/v [B, K, H, D] (or
[B·H, K, D] from the cache, see `LayerCache`) and a `MaskSpec` of segment ids and slot indices — and builds its
own mask from them, so no dense [B, 1, T, T] tensor is ever passed between layers:

* `xla` (default): einsum softmax. For full rows of at least `BLOCKWISE_MIN_LENGTH` tokens it runs blockwise
  over query blocks and only against the keys at or before each block, skipping the fully masked blocks above
  the diagonal (close to half the score work); shorter rows and cached decoding run dense.
* `cudnn`: `jax.nn.dot_product_attention(implementation="cudnn")` (GPU, bf16/fp16 only) with the boolean mask
  from segment ids (JAX's wrapper turns it into an additive bias for the fused kernel).
* `splash`: Pallas TPU splash attention with causal mask + segment ids (TPU only); `splash_interpret` runs the
  same kernel in Pallas interpret mode, which is how it is tested on CPU. Cached decoding uses the xla path.

Asking for a kernel the backend lacks is an `AttentionUnavailableError` when the model is first traced.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from alert_jax.errors import AlertJaxError

IMPLEMENTATIONS = ("xla", "cudnn", "splash", "splash_interpret")
MASK_VALUE = -1e9  # large but finite: a fully masked (left-padded) query row stays NaN-free
# Measured on CPU (benchmarks/RESULTS.md, grad of attention alone, 12 heads x 64, idle 2-core machine): blockwise
# beats one dense einsum from 256 tokens (8x256: 0.115 → 0.089 s with 128-row blocks; 4x512: 0.165 → 0.137 s;
# 1x2048: 256-row blocks 0.37 s vs 512-row 0.46 s). At most BLOCKS blocks per row keeps the unrolled program small.
BLOCKWISE_MIN_LENGTH = 256
BLOCKS = 8  # query blocks per row (fewer when MIN_BLOCK rows would not fill them)
MIN_BLOCK = 128
SPLASH_BLOCK = 128  # splash tiles rows in blocks of this many tokens (and needs T to be a multiple of it)


class AttentionUnavailableError(AlertJaxError):
    """An attention kernel asked for on a backend that does not have it, or an unknown kernel name."""


class MaskSpec(NamedTuple):
    """What attention may see: causal by slot index, within a segment, and never a padding key (segment 0).

    `*_index` are absolute slot indices (array order), which define causality for packed rows and the KV cache
    alike; segments encode padding (0) and packed example boundaries (1..k).
    """

    q_segments: jax.Array  # [B, Q] int32
    kv_segments: jax.Array  # [B, K]
    q_index: jax.Array  # [B, Q]
    kv_index: jax.Array  # [B, K]

    def dense(self) -> jax.Array:
        """[B, 1, Q, K] boolean, built from broadcast compares so XLA fuses it into the select that uses it."""
        causal = self.q_index[:, :, None] >= self.kv_index[:, None, :]
        same = self.q_segments[:, :, None] == self.kv_segments[:, None, :]
        real_key = (self.kv_segments != 0)[:, None, :]
        return (causal & same & real_key)[:, None, :, :]

    def rows(self, q: slice, kv: slice) -> "MaskSpec":
        return MaskSpec(self.q_segments[:, q], self.kv_segments[:, kv], self.q_index[:, q], self.kv_index[:, kv])


def check_available(implementation: str) -> None:
    """Fail early and clearly when `implementation` cannot run on the default backend."""
    backend = jax.default_backend()
    if implementation not in IMPLEMENTATIONS:
        raise AttentionUnavailableError(f"model.attention={implementation!r}: use one of {', '.join(IMPLEMENTATIONS)}")
    if implementation == "cudnn" and backend != "gpu":
        raise AttentionUnavailableError(f"model.attention=cudnn needs a CUDA GPU (backend here: {backend}); "
                                        "use model.attention=xla")
    if implementation == "splash" and backend != "tpu":
        raise AttentionUnavailableError(f"model.attention=splash needs a TPU (backend here: {backend}); use "
                                        "model.attention=xla, or splash_interpret to run the kernel interpreted")


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: MaskSpec, *, implementation: str, cached_kv: bool,
           dropout: Optional[tuple[float, jax.Array]] = None) -> jax.Array:
    """Attention output [B, Q, H, D] in q's dtype. `cached_kv`: k/v are the cache's [B·H, K, D].

    `dropout` = (rate, key) drops attention probabilities (HF's `attention_dropout`); only the xla path has it.
    """
    full_rows = not cached_kv and q.shape[1] == k.shape[1]
    if dropout is not None and implementation != "xla":
        raise AttentionUnavailableError(f"model.attention_dropout > 0 needs model.attention=xla "
                                        f"({implementation} has no attention dropout)")
    if implementation == "cudnn":
        if q.dtype not in (jnp.bfloat16, jnp.float16):
            raise AttentionUnavailableError(f"model.attention=cudnn runs in bfloat16/float16 only (compute dtype "
                                            f"here: {q.dtype}); set model.dtype=bfloat16")
        if cached_kv:
            k, v = (unmerge_heads(a, q.shape[0]).swapaxes(1, 2) for a in (k, v))
        return jax.nn.dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask=mask.dense(), scale=1.0,
                                            implementation="cudnn")
    if implementation.startswith("splash") and full_rows:
        return splash(q, k, v, mask, interpret=implementation == "splash_interpret")
    if cached_kv:
        return dense_cached(q, k, v, mask, dropout)
    if full_rows and q.shape[1] >= BLOCKWISE_MIN_LENGTH:
        return blockwise_causal(q, k, v, mask, max(MIN_BLOCK, -(-q.shape[1] // BLOCKS)), dropout)
    return dense(q, k, v, mask, dropout)


def merge_heads(x: jax.Array) -> jax.Array:
    """[B, T, H, D] → the cache's [B·H, T, D]."""
    b, t, h, d = x.shape
    return x.swapaxes(1, 2).reshape(b * h, t, d)


def unmerge_heads(x: jax.Array, batch: int) -> jax.Array:
    """The cache's [B·H, K, D] → [B, H, K, D]."""
    return x.reshape(batch, x.shape[0] // batch, *x.shape[1:])


def _softmax_product(q, k, v, allowed, scores_spec: str, values_spec: str,
                     dropout: Optional[tuple[float, jax.Array]]) -> tuple[jax.Array, jax.Array]:
    """(Σ exp(s − max) · v, Σ exp(s − max)) over the key axis, scores in float32, the mask one fused select.

    The caller divides the first by the second: normalising after the value product divides the [Q, H, D] output
    instead of the [H, Q, K] probabilities (K/D times fewer divisions, and none in the backward pass over the
    score matrix) — the same function, measured ~10% of a 1×2048 CPU train step.
    """
    scores = jnp.einsum(scores_spec, q, k.astype(q.dtype), preferred_element_type=jnp.float32)
    scores = jnp.where(allowed, scores, MASK_VALUE)
    weights = jnp.exp(scores - jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True)))
    total = jnp.sum(weights, axis=-1)  # every row holds at least its max, so total ≥ 1
    if dropout is not None:  # dropping unnormalised weights, then dividing by the full total, drops probabilities
        rate, key = dropout
        keep = jax.random.bernoulli(key, 1.0 - rate, weights.shape)
        weights = jnp.where(keep, weights / (1.0 - rate), 0.0)
    out = jnp.einsum(values_spec, weights.astype(q.dtype), v.astype(q.dtype), preferred_element_type=jnp.float32)
    return out, total


def dense(q: jax.Array, k: jax.Array, v: jax.Array, mask: MaskSpec,
          dropout: Optional[tuple[float, jax.Array]] = None) -> jax.Array:
    """Softmax over every key of k/v [B, K, H, D]."""
    out, total = _softmax_product(q, k, v, mask.dense(), "bqhd,bkhd->bhqk", "bhqk,bkhd->bqhd", dropout)
    return (out / total.transpose(0, 2, 1)[..., None]).astype(q.dtype)


def dense_cached(q: jax.Array, k: jax.Array, v: jax.Array, mask: MaskSpec,
                 dropout: Optional[tuple[float, jax.Array]] = None) -> jax.Array:
    """Softmax over every slot of the cache's k/v [B·H, K, D], computed in that merged layout (q is brought to
    it, never the cache — see `LayerCache`)."""
    b, t, h, _ = q.shape
    allowed = jnp.broadcast_to(mask.dense(), (b, h, t, k.shape[1])).reshape(b * h, t, k.shape[1])
    out, total = _softmax_product(merge_heads(q), k, v, allowed, "nqd,nkd->nqk", "nqk,nkd->nqd", dropout)
    return unmerge_heads(out / total[..., None], b).swapaxes(1, 2).astype(q.dtype)


def blockwise_causal(q: jax.Array, k: jax.Array, v: jax.Array, mask: MaskSpec, block: int,
                     dropout: Optional[tuple[float, jax.Array]] = None) -> jax.Array:
    """Full-row causal attention one query block at a time, each against only the keys up to its last row.

    Valid because on full rows slot order is causal order (`q_index == kv_index`), so every key after a block is
    masked for all of its queries; skipping them saves the work and the memory of the upper triangle.

    q, k and v are moved to [B, H, T, D] once, so each block's two products are plain batched matmuls over
    slices: in the [B, T, H, D] layout XLA transposed every block's key and value slices (and its output) again,
    forward and backward — grad of attention alone at 1×2048, 12 heads: ~480 → ~300 ms on a 2-core CPU.
    """
    t = q.shape[1]
    qh, kh, vh = (x.swapaxes(1, 2) for x in (q, k, v))
    outs = []
    for i, start in enumerate(range(0, t, block)):
        stop = min(start + block, t)
        block_dropout = None if dropout is None else (dropout[0], jax.random.fold_in(dropout[1], i))
        allowed = mask.rows(slice(start, stop), slice(0, stop)).dense()
        out, total = _softmax_product(qh[:, :, start:stop], kh[:, :, :stop], vh[:, :, :stop], allowed,
                                      "bhqd,bhkd->bhqk", "bhqk,bhkd->bhqd", block_dropout)
        outs.append(out / total[..., None])
    return jnp.concatenate(outs, axis=2).swapaxes(1, 2).astype(q.dtype)


def splash(q: jax.Array, k: jax.Array, v: jax.Array, mask: MaskSpec, *, interpret: bool) -> jax.Array:
    """Pallas splash attention: causal mask and segment ids handled inside the kernel, per batch row.

    Padding (segment 0) queries see only padding keys here, where the xla path gives them a uniform average;
    they carry no loss weight, so only real tokens are comparable between the two.
    """
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel_lib
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as mask_lib

    _, t, heads, _ = q.shape
    if t % SPLASH_BLOCK:
        raise AttentionUnavailableError(f"model.attention=splash needs a sequence length that is a multiple of "
                                        f"{SPLASH_BLOCK} (got {t}); set train.seq_len accordingly")
    block = min(t, 512)
    sizes = kernel_lib.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                                  block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
    heads_mask = mask_lib.MultiHeadMask([mask_lib.CausalMask((t, t)) for _ in range(heads)])
    kernel = kernel_lib.make_splash_mha(heads_mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                        interpret=interpret)

    def one_row(q_row, k_row, v_row, q_seg, kv_seg):
        return kernel(q_row, k_row, v_row, segment_ids=kernel_lib.SegmentIds(q=q_seg, kv=kv_seg))

    to_heads = lambda x: x.swapaxes(1, 2).astype(q.dtype)  # [B, H, T, D]
    out = jax.vmap(one_row)(to_heads(q), to_heads(k), to_heads(v), mask.q_segments, mask.kv_segments)
    return out.swapaxes(1, 2).astype(q.dtype)
