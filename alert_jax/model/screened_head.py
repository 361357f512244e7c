"""Exact greedy tokens from an int8 screen of the LM head: the float head's argmax without reading the float head.

Why: a greedy decode step reads every weight once, and the tied LM head is a large share of them (154 MB of a
6-layer opt-125m's 324 MB in float32). Greedy decoding needs only the argmax of the logits, and that argmax is
almost always decided by a handful of tokens. So a step first reads an int8 copy of the head (a quarter of the
bytes), bounds every token's float logit from it, recomputes the few tokens that could be the argmax from
their float rows, and proves that no other token can beat them. Only when that proof fails (near-ties the
screen cannot separate, non-finite values) does the step read the whole float head, as it would without a
screen. The chosen token is the float head's argmax, not an approximation of it.

The bound, for one hidden row x and a vocabulary row w (both as the head computes them, in its dtype):
- the screen is x̂ · ŵ with ŵ = q · scale (per-row int8, `quantize_weight`) and x̂ = hi · s_hi + lo · s_lo
  (x split into two int8 parts, as `split_int8_matmul` does), computed as exact int32 products;
- x · w − x̂ · ŵ = (x − x̂) · w + x̂ · (w − ŵ), so by Cauchy–Schwarz
  |x · w − screen| ≤ ‖x − x̂‖ ‖w‖ + ‖x̂‖ ‖w − ŵ‖, where ‖w‖ and ‖w − ŵ‖ are stored per row with the screen;
- float32 rounding is bounded by (d + 16)·2⁻²³ ‖x‖ ‖w‖ ≥ 2·γ_d Σ|x_i w_i|, which covers both the reference
  float head's dot products (any summation order, γ_d = d·2⁻²⁴) and the screen's own few roundings.
Every token's float logit is therefore below its upper bound `screen + radius`. The candidates are the
`CANDIDATES` tokens with the largest upper bounds; their logits are recomputed from their float rows, and if
the best of them (less its own rounding bound) beats the least of the candidates' upper bounds, which no token
outside them exceeds, no token outside the candidates can be the float head's argmax. Among the candidates the
first maximum wins, as `first_argmax` picks; two candidates within float32 rounding of each other may be
ordered differently by another summation order — the same freedom any two float32 matmul implementations have.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from alert_jax.model.quantize import int32_product, join_split, quantize_weight, split_rows

CANDIDATES = 64  # float rows recomputed per step: 64 × d floats, ~0.2 MB at d = 768, ~1/250 of the head


class HeadScreen(NamedTuple):
    """The int8 copy of a head table [vocab, d] and what bounds its error; computed once per table."""

    weights: jax.Array  # int8 [vocab, d]
    scale: jax.Array  # float32 [vocab]: w ≈ weights · scale, per row
    norm: jax.Array  # float32 [vocab]: ‖w‖
    error: jax.Array  # float32 [vocab]: ‖w − weights · scale‖


def head_screen(table: jax.Array, dtype) -> HeadScreen:
    """The screen of `table` as the head uses it: cast to the compute `dtype` (see `OPTDecoder.lm_head`)."""
    rows = table.astype(dtype).astype(jnp.float32)
    weights, scale = quantize_weight(rows, reduce_axis=1)
    error = rows - weights.astype(jnp.float32) * scale[:, None]
    return HeadScreen(weights, scale, jnp.linalg.norm(rows, axis=1), jnp.linalg.norm(error, axis=1))


def first_argmax(x: jax.Array, axis: int = -1) -> jax.Array:
    """`jnp.argmax` over `axis` (the first maximum; the first NaN if there is one), as a max and then a min over the
    indices that hit it. XLA:CPU runs argmax as one (value, index) reduction that is 3–5× slower than these two
    plain ones over [B, 50272] logits (226 vs 32 µs at batch 1, 944 vs 283 µs at batch 8): 1–3% of a decode step
    there."""
    axis = axis % x.ndim
    size = x.shape[axis]
    index = jax.lax.broadcasted_iota(jnp.int32, x.shape, axis)
    top = jnp.max(x, axis=axis, keepdims=True)  # XLA:CPU's max may skip NaNs: they are ranked apart, below 0
    ranked = jnp.where(jnp.isnan(x), index - size, jnp.where(x == top, index, size))
    first = jnp.min(ranked, axis=axis)
    return jnp.where(first < 0, first + size, first)


def upper_bounds(x: jax.Array, screen: HeadScreen) -> tuple[jax.Array, jax.Array]:
    """(upper bound [B, vocab] on every float logit of float32 rows x [B, d], the rounding bound [B, 1]: to be
    multiplied by a row's ‖w‖), from one int8 × int8 product with the screen (see the module docstring)."""
    parts, s_hi, s_lo = split_rows(x)
    approx = join_split(parts, s_hi, s_lo)
    screened = join_split(int32_product(parts, screen.weights), s_hi, s_lo) * screen.scale
    rounding = (x.shape[-1] + 16) * 2.0**-23 * jnp.linalg.norm(x, axis=-1, keepdims=True)
    x_error = jnp.linalg.norm(x - approx, axis=-1, keepdims=True)
    radius = (x_error + rounding) * screen.norm + jnp.linalg.norm(approx, axis=-1, keepdims=True) * screen.error
    return screened + radius * (1 + 2.0**-10), rounding  # the margin covers rounding in the radius itself


def screened_argmax(hidden: jax.Array, table: jax.Array, screen: HeadScreen, ignore: jax.Array,
                    full_logits: Callable[[jax.Array], jax.Array], candidates: int = CANDIDATES
                    ) -> tuple[jax.Array, jax.Array]:
    """(token [B] = `first_argmax` of the float head's logits for `hidden` [B, d] in the compute dtype, whether
    the screen decided every row that counts). Rows where `ignore` holds (finished rows, whose token is discarded)
    never force the fallback, `full_logits(hidden)`: the float head's vocabulary-major logits [vocab, B], computed
    only when the screen cannot decide.
    """
    vocab = table.shape[0]
    candidates = min(candidates, vocab)
    x = hidden.astype(jnp.float32)
    upper, rounding = upper_bounds(x, screen)
    # Every token outside the candidates has an upper bound ≤ the least of theirs. Reading that as a min, not as
    # the (k+1)-th value, matters: a slice of top_k's output that does not start at 0 makes XLA:CPU sort the whole
    # vocabulary instead (13 vs 0.2 ms at batch 1).
    top_upper, chosen = jax.lax.top_k(upper, candidates)
    outside = jnp.min(top_upper, axis=-1) if candidates < vocab else jnp.full((x.shape[0],), -jnp.inf)
    rows = jnp.take(table, chosen, axis=0).astype(hidden.dtype).astype(jnp.float32)  # [B, K, d]
    exact = jnp.einsum("bd,bkd->bk", x, rows, precision=jax.lax.Precision.HIGHEST)
    best = jnp.max(exact, axis=-1)
    token = jnp.min(jnp.where(exact == best[:, None], chosen, vocab), axis=-1).astype(jnp.int32)
    worst_case = best - 2 * rounding[:, 0] * jnp.take(screen.norm, token)
    decided = (worst_case > outside) & jnp.all(jnp.isfinite(upper), axis=-1)
    screened_all = jnp.all(decided | ignore)
    token = jax.lax.cond(screened_all, lambda: token,
                         lambda: first_argmax(full_logits(hidden), axis=0).astype(jnp.int32))
    return token, screened_all
