"""int8 weight-only inference: per-output-channel symmetric int8 weights, dequantised inside the matmul.

Why: decoding reads every weight once per generated token, so the bytes of the matmul weights set the step time
wherever the step is memory-bound (batch-1/8 decode on CPU, GPU and TPU alike) and int8 stores them in a quarter
of float32's bytes — what makes evaluating a 13B model cheap. Only the matmul weights are quantised (every Dense
kernel and the tied token embedding, which is also the LM head); biases, layer norms and the position table stay
float32. Activations are never quantised, so no calibration data is needed: the scales are computed at load
(`quantize_params`) from the weights alone.

Scales are per OUTPUT channel (one per column of a Dense kernel, one per vocabulary row of the embedding):
`w ≈ q · scale` with `scale = max|w| / 127` over the reduced (input) axis, so a channel's rounding error is at
most half its own step and a large channel never coarsens a small one. A channel that is all zeros gets scale 1.

int8 kernels are stored [out, in] (a Dense kernel transposed; the embedding already is), so that each output
channel's weights are contiguous for `int8_matmul`'s small-batch path. The layers declare the int8 tree with the
float layers' logical axis names (`scale` follows the output axis), so the partition rules shard a quantised
model over a mesh exactly like its float32 original.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from alert_jax.errors import AlertJaxError

QUANTIZE_MODES = ("none", "int8")
_INT8_MAX = 127.0
SMALL_ROWS = 16  # up to this many activation rows (decode at batch ≤ 16), XLA-CPU takes the fused path below


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
    q = jnp.round(weight / jnp.expand_dims(scale, reduce_axis))
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


def int8_matmul(x: jax.Array, q: jax.Array, scale: jax.Array, dtype: Any) -> jax.Array:
    """x [..., in] · dequantised q [out, in]ᵀ → [..., out] in `dtype`, the scale applied per output.

    Why several paths: on XLA-CPU a matmul over a converted int8 operand first writes the whole weight out in
    float and then multiplies (≈9 bytes moved per weight instead of 1: 3–9× slower than the float32 matmul at
    1..16 activation rows). For those row counts a multiply + reduce over the contiguous input axis fuses the
    conversion into one pass over the int8 weight (measured 1.3–3× faster than the float32 matmul at 8 rows,
    on par with it at 1 row, where XLA's float matrix-vector product is already near the bandwidth). Larger inputs (prefill) keep the matmul,
    which is compute-bound there; other backends fuse the conversion into their matmuls themselves.
    """
    rows = x.size // x.shape[-1]
    flat, weight = x.reshape(rows, x.shape[-1]).astype(dtype), q.astype(dtype)
    on_cpu = jax.default_backend() == "cpu"
    if rows == 1 and on_cpu:  # as a vector: size-1 broadcast dimensions make XLA take a far slower loop
        y = jnp.sum(weight * flat[0], axis=-1)[None]
    elif rows <= SMALL_ROWS and on_cpu:
        y = jnp.sum(flat[:, None, :] * weight, axis=-1)
    else:
        y = flat @ weight.T
    return (y * scale.astype(dtype)).reshape(*x.shape[:-1], q.shape[0])


class Int8Dense(nn.Module):
    """`nn.Dense` over an int8 kernel [out, in]: y = (x · qᵀ) * scale + bias (`int8_matmul`)."""

    features: int
    in_names: str
    out_names: str
    use_bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel_names = (self.out_names, self.in_names)
        kernel = self.param("kernel", nn.with_logical_partitioning(nn.initializers.zeros, kernel_names),
                            (self.features, x.shape[-1]), jnp.int8)
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, (self.out_names,)),
                           (self.features,), jnp.float32)
        y = int8_matmul(x, kernel, scale, self.dtype)
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
        return int8_matmul(h, self.embedding, self.scale, jnp.float32)
