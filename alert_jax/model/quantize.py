"""int8 inference: per-output-channel symmetric int8 weights, with float (`int8`) or int8 (`w8a8`) activations.

Why: decoding reads every weight once per generated token, so the bytes of the matmul weights set the step time
wherever the step is memory-bound (batch-1/8 decode on CPU, GPU and TPU alike) and int8 stores them in a quarter
of float32's bytes — what makes evaluating a 13B model cheap. Only the matmul weights are quantised (every Dense
kernel and the tied token embedding, which is also the LM head); biases, layer norms and the position table stay
float32. No calibration data is needed: weight scales are computed at load (`quantize_params`) from the weights
alone, and `w8a8` activation scales at run time from each row itself.

Two modes over the same int8 params:
- `int8` (weight-only): the product with the dequantised weight, activations at (nearly) full precision.
  Accurate for every OPT size. GPU/TPU fuse the int8→float convert into their matmuls; XLA-CPU does not, so
  decode there goes through int8 × int8 products of a two-part split of the activations (`int8_matmul`).
- `w8a8` (dynamic activation quantisation, what ctranslate2's int8 does): each activation row (one token) is
  quantised to int8 with its own scale `max|x| / 127`, the product is int8 × int8 → int32 and the two scales are
  applied to the int32 result. The matmul reads a quarter of the bytes and runs on integer units; on XLA-CPU it
  is 1.2–3× faster than the float32 matmul at every row count measured (1 … 512). The price is one more rounding,
  of activations: OPT models from 6.7B up have a few outlier activation channels (Dettmers et al. 2022,
  LLM.int8()) that a per-row scale coarsens for the whole row, so check a large model's scores against `int8`
  before relying on `w8a8` for it.

Scales are per OUTPUT channel (one per column of a Dense kernel, one per vocabulary row of the embedding):
`w ≈ q · scale` with `scale = max|w| / 127` over the reduced (input) axis, so a channel's rounding error is at
most half its own step and a large channel never coarsens a small one. A channel that is all zeros gets scale 1.

int8 kernels are stored [out, in] (a Dense kernel transposed; the embedding already is): both operands of
`int32_product` then contract their contiguous last axis. The layers declare the int8 tree with the
float layers' logical axis names (`scale` follows the output axis), so the partition rules shard a quantised
model over a mesh exactly like its float32 original.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from alert_jax.errors import AlertJaxError

QUANTIZE_MODES = ("none", "int8", "w8a8")
_INT8_MAX = 127.0
SMALL_ROWS = 16  # up to this many activation rows (decode at batch ≤ 16), XLA-CPU takes split_int8_matmul


class QuantizeError(AlertJaxError):
    """An unknown quantisation mode (the message names the accepted ones)."""


def check_mode(mode: str) -> str:
    if mode not in QUANTIZE_MODES:
        raise QuantizeError(f"quantize {mode!r}: expected one of {', '.join(QUANTIZE_MODES)}")
    return mode


def quantize_weight(weight: jax.Array, reduce_axis: int) -> tuple[jax.Array, jax.Array]:
    """(int8 weight, float32 scale per kept channel) with `weight ≈ q * expand_dims(scale, reduce_axis)`."""
    amax = jnp.max(jnp.abs(weight.astype(jnp.float32)), axis=reduce_axis)
    scale = jnp.where(amax > 0, amax / _INT8_MAX, 1.0)
    q = jnp.round(weight.astype(jnp.float32) / jnp.expand_dims(scale, reduce_axis))
    return jnp.clip(q, -_INT8_MAX, _INT8_MAX).astype(jnp.int8), scale


def quantize_params(params: Any) -> Any:
    """The int8 tree of a float OPT params tree: every Dense `kernel` [in, out] → int8 [out, in] + `scale` [out],
    the token embedding [vocab, embed] → int8 + `scale` [vocab]; everything else unchanged."""

    def walk(name: str, node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        if name == "embed_tokens":
            q, scale = quantize_weight(node["embedding"], reduce_axis=1)
            return {"embedding": q, "scale": scale}
        out = {k: walk(k, v) for k, v in node.items()}
        if "kernel" in node and node["kernel"].ndim == 2:
            out["kernel"], out["scale"] = quantize_weight(node["kernel"].T, reduce_axis=1)
        return out

    return walk("", params)


def int8_matmul(x: jax.Array, q: jax.Array, scale: jax.Array, dtype: Any, quantize_activations: bool = False
                ) -> jax.Array:
    """x [..., in] · q [out, in]ᵀ with the per-output `scale` → [..., out] in `dtype`.

    `quantize_activations` is the w8a8 product (`w8a8_matmul`). Otherwise (weight-only) the result is the float
    product with the dequantised weight, computed by whichever path is fast on the backend:
    - XLA-CPU does not fuse an int8→float convert into a matmul: it writes the whole weight out in float first
      (≈9 bytes moved per weight instead of 1), 3–9× slower than the float32 matmul at 1–16 activation rows.
      For those row counts (decode at batch ≤ SMALL_ROWS) it takes `split_int8_matmul` instead, int8 × int8
      products whose activation rounding is ≤ max|x|/254² per element — 250× below the weight's own rounding.
    - Larger inputs (prefill) are compute-bound: the dequantised float matmul costs what float32's does there.
    - GPU/TPU fuse the convert into their matmuls themselves: always the dequantised float matmul.
    """
    if quantize_activations:
        return w8a8_matmul(x, q, scale).astype(dtype)
    rows = x.size // x.shape[-1]
    flat = x.reshape(rows, x.shape[-1])
    if rows <= SMALL_ROWS and jax.default_backend() == "cpu":
        y = split_int8_matmul(flat, q, scale)
    else:
        y = (flat.astype(dtype) @ q.astype(dtype).T) * scale.astype(dtype)
    return y.astype(dtype).reshape(*x.shape[:-1], q.shape[0])


def quantize_rows(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(int8 x [rows, in], float32 scale [rows, 1]) with `x ≈ q * scale`: `quantize_weight`'s rule per row, so
    each row is scaled by its own `max|x| / 127` and one token's activations never coarsen another's."""
    q, row_scale = quantize_weight(x, reduce_axis=-1)
    return q, row_scale[:, None]


def int32_product(xq: jax.Array, q: jax.Array) -> jax.Array:
    """int8 xq [rows, in] · int8 q [out, in]ᵀ → int32 [rows, out].

    The int32 accumulator holds any OPT width: 127² × 49152 (175B's ffn) < 2³¹. XLA-CPU's int8 matrix-vector
    product is ~20× slower than its two-row matrix product, so a single row is padded to two there.
    """
    rows = xq.shape[0]
    if rows == 1 and jax.default_backend() == "cpu":
        xq = jnp.pad(xq, ((0, 1), (0, 0)))
    return jax.lax.dot_general(xq, q, (((1,), (1,)), ((), ())), preferred_element_type=jnp.int32)[:rows]


def w8a8_matmul(x: jax.Array, q: jax.Array, scale: jax.Array) -> jax.Array:
    """float32 x [..., in] quantised per row (`quantize_rows`), times q [out, in]ᵀ in int8 × int8 → int32, the
    row and output scales applied to the int32 result: float32 [..., out]."""
    rows = x.size // x.shape[-1]
    xq, row_scale = quantize_rows(x.reshape(rows, x.shape[-1]))
    y = int32_product(xq, q).astype(jnp.float32) * row_scale * scale.astype(jnp.float32)
    return y.reshape(*x.shape[:-1], q.shape[0])


def split_rows(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """x [rows, in] as two stacked int8 parts, `x ≈ hi · s_hi + lo · s_lo`: (int8 [2·rows, in] = hi over lo,
    s_hi [rows, 1], s_lo [rows, 1]). `lo` is the int8-quantised remainder, at most s_hi / 2 = max|x| / 254 per
    element, so what is left after it is at most max|x| / 254² — activations to ~15 bits."""
    x = x.astype(jnp.float32)
    hi, s_hi = quantize_rows(x)
    lo, s_lo = quantize_rows(x - hi.astype(jnp.float32) * s_hi)
    return jnp.concatenate([hi, lo]), s_hi, s_lo


def join_split(stacked: jax.Array, s_hi: jax.Array, s_lo: jax.Array) -> jax.Array:
    """`hi · s_hi + lo · s_lo` in float32 for a [2·rows, …] stack of `split_rows`' two parts, or of their
    products with a weight (the split is linear, so both recombine alike)."""
    rows = s_hi.shape[0]
    stacked = stacked.astype(jnp.float32)
    return stacked[:rows] * s_hi + stacked[rows:] * s_lo


def split_int8_matmul(x: jax.Array, q: jax.Array, scale: jax.Array) -> jax.Array:
    """The weight-only product x [rows, in] · (q · scale)ᵀ through int8 arithmetic, for XLA-CPU at few rows.

    x is split into an int8 part and the int8-quantised remainder (`split_rows`), and both go through one
    int8 × int8 product (the rows stacked): activations to ~15 bits, far finer than the int8 weight. At one row
    the stack is the two rows XLA-CPU's int8 product wants anyway.
    """
    parts, s_hi, s_lo = split_rows(x)
    return join_split(int32_product(parts, q), s_hi, s_lo) * scale.astype(jnp.float32)


class Int8Dense(nn.Module):
    """`nn.Dense` over an int8 kernel [out, in]: y = (x · qᵀ) * scale + bias (`int8_matmul`)."""

    features: int
    in_names: str
    out_names: str
    use_bias: bool = True
    dtype: Any = jnp.float32
    quantize_activations: bool = False  # the w8a8 mode

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel_names = (self.out_names, self.in_names)
        kernel = self.param("kernel", nn.with_logical_partitioning(nn.initializers.zeros, kernel_names),
                            (self.features, x.shape[-1]), jnp.int8)
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, (self.out_names,)),
                           (self.features,), jnp.float32)
        y = int8_matmul(x, kernel, scale, self.dtype, self.quantize_activations)
        if self.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, (self.out_names,)),
                              (self.features,), jnp.float32)
            y = y + bias.astype(self.dtype)
        return y


class Int8Embed(nn.Module):
    """The tied token embedding in int8 with one scale per vocabulary row: a lookup dequantises the rows it
    reads, and `logits` is the LM head (h · qᵀ) * scale."""

    num_embeddings: int
    features: int
    dtype: Any = jnp.float32
    quantize_activations: bool = False  # the w8a8 mode (the LM head only; a lookup has no activations)

    def setup(self) -> None:
        self.embedding = self.param("embedding",
                                    nn.with_logical_partitioning(nn.initializers.zeros, ("vocab", "embed")),
                                    (self.num_embeddings, self.features), jnp.int8)
        self.scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("vocab",)),
                                (self.num_embeddings,), jnp.float32)

    def __call__(self, ids: jax.Array) -> jax.Array:
        rows = jnp.take(self.embedding, ids, axis=0).astype(self.dtype)
        return rows * jnp.take(self.scale, ids, axis=0)[..., None].astype(self.dtype)

    def logits(self, h: jax.Array) -> jax.Array:
        """float32 logits [..., vocab]."""
        return int8_matmul(h, self.embedding, self.scale, jnp.float32, self.quantize_activations)
