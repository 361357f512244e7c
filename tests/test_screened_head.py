"""The int8 screen of the LM head (model/screened_head.py): greedy tokens equal to the float head's argmax, the
screen deciding almost every row, and the float head read whenever the screen cannot prove its answer."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alert_jax.model.quantize import split_rows
from alert_jax.model.screened_head import first_argmax, head_screen, screened_argmax, upper_bounds

VOCAB, WIDTH = 3000, 96


def _full_logits(table):
    """The float head as `OPTDecoder.lm_head` computes it for decoding: the table in the hidden rows' dtype, float32
    sums, vocabulary-major logits [vocab, B]."""
    return lambda hidden: jnp.einsum("vd,bd->vb", table.astype(hidden.dtype), hidden,
                                     preferred_element_type=jnp.float32)


def _screened(hidden, table, ignore=None, dtype=jnp.float32, candidates=16):
    hidden = jnp.asarray(hidden, dtype)
    table = jnp.asarray(table)
    ignore = jnp.zeros(hidden.shape[0], bool) if ignore is None else jnp.asarray(ignore)
    run = jax.jit(lambda h, t, s, i: screened_argmax(h, t, s, i, _full_logits(t), candidates=candidates))
    token, decided = run(hidden, table, head_screen(table, dtype), ignore)
    return np.asarray(token), bool(decided), np.asarray(first_argmax(_full_logits(table)(hidden), axis=0))


def _table(rng, scale=0.02):
    return (rng.randn(VOCAB, WIDTH) * scale).astype(np.float32)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("hidden_kind", ["gaussian", "outlier_channels", "trained_like"])
def test_screened_tokens_are_the_float_heads_argmax(dtype, hidden_kind):
    """Hidden rows of several shapes — plain, a few channels 30× the rest (OPT's outlier features), and rows
    aligned with one vocabulary row plus noise (a confident model) — over float32 and bfloat16 heads."""
    rng = np.random.RandomState(0)
    table = _table(rng)
    hidden = rng.randn(64, WIDTH).astype(np.float32)
    if hidden_kind == "outlier_channels":
        hidden[:, [5, 40, 77]] *= 30
    elif hidden_kind == "trained_like":
        hidden = 40 * table[rng.randint(0, VOCAB, 64)] + 0.5 * hidden
    for start in range(0, 64, 8):
        token, decided, full = _screened(hidden[start:start + 8], table, dtype=dtype)
        np.testing.assert_array_equal(token, full)
        reference = np.asarray(jnp.asarray(hidden[start:start + 8], dtype), np.float64) @ \
            np.asarray(jnp.asarray(table, dtype), np.float64).T
        np.testing.assert_array_equal(token, reference.argmax(-1))
        assert decided, "the screen should decide rows that are not near-ties"


def test_upper_bounds_hold_for_rows_aligned_with_the_rounding_errors():
    """The bound is worst-case, so it is tested on the worst rows: vocabulary rows that are the signs of the
    hidden row's own int8 rounding error (exact in int8, so all the error is the activation's), and rows whose
    own int8 rounding error lines up with the hidden row (all the error is the weight's). Each would beat a
    bound that left out its term; none beats the bound."""
    rng = np.random.RandomState(4)
    x = rng.randn(4, WIDTH).astype(np.float32)
    parts, s_hi, s_lo = (np.asarray(a, np.float64) for a in split_rows(jnp.asarray(x)))
    x_error = x - (parts[:4] * s_hi + parts[4:] * s_lo)
    activation_rows = np.sign(x_error) * 0.01  # ±max: exactly int8 (scale max/127), no weight error
    base = rng.randn(4, WIDTH) * 0.02
    step = np.abs(base).max(axis=1, keepdims=True) / 127
    weight_rows = np.round(base / step) * step + np.sign(x) * step * 0.49  # rounding error ≈ half a step, along x
    weight_rows[:, 0] = np.abs(base).max(axis=1) * np.sign(x[:, 0])  # keep each row's max (so its step) fixed
    table = np.concatenate([_table(rng), activation_rows, weight_rows]).astype(np.float32)
    upper, _ = upper_bounds(jnp.asarray(x), head_screen(jnp.asarray(table), jnp.float32))
    true = x.astype(np.float64) @ table.astype(np.float64).T
    assert (np.asarray(upper, np.float64) >= true).all()


def test_upper_bounds_cover_the_float_heads_rounding():
    """Hidden rows and vocabulary rows both exact in int8: the screen is then exact, and only float32 rounding
    separates it from the float head, whose sums round either way. The bound still holds for the float head."""
    rng = np.random.RandomState(5)
    x = rng.randint(-127, 128, (8, WIDTH)).astype(np.float32)
    x[:, 0] = 127
    table = (rng.randint(-127, 128, (VOCAB, WIDTH)) * np.float32(0.013 / 127)).astype(np.float32)
    table[:, 0] = np.float32(0.013)
    upper, _ = upper_bounds(jnp.asarray(x), head_screen(jnp.asarray(table), jnp.float32))
    float_head = np.asarray(_full_logits(jnp.asarray(table))(jnp.asarray(x))).T
    assert (np.asarray(upper) >= float_head).all()


def test_near_ties_the_screen_cannot_resolve_fall_back_to_the_float_head():
    """200 rows equal to one vector, one of them ahead by far less than the int8 screen resolves, and another
    run where they are exactly tied (the first wins): the screen must not guess, and the float head decides."""
    rng = np.random.RandomState(1)
    table = _table(rng)
    shared = rng.randn(WIDTH).astype(np.float32)
    hidden = shared[None] * 2.0
    table[1000:1200] = shared * 0.5
    token, decided, full = _screened(hidden, table)
    assert not decided and token.tolist() == full.tolist() == [1000]  # exact ties: the first
    table[1137, 0] += np.float32(1e-3) * np.sign(shared[0])  # a logit 1e-3 · 2|x₀| ahead: below int8's step
    token, decided, full = _screened(hidden, table)
    assert not decided and token.tolist() == full.tolist() == [1137]


def test_rows_that_are_ignored_never_force_the_fallback_and_nans_follow_the_float_head():
    rng = np.random.RandomState(2)
    table = _table(rng)
    hidden = rng.randn(3, WIDTH).astype(np.float32)
    hidden[2, 7] = np.nan
    token, decided, full = _screened(hidden, table, ignore=[False, False, True])
    assert decided and token[:2].tolist() == full[:2].tolist()
    token, decided, full = _screened(hidden, table)
    assert not decided and token.tolist() == full.tolist() and full[2] == 0  # NaN logits: the first NaN
    broken = table.copy()
    broken[2999] = np.inf  # a non-finite head row is never screened away
    token, decided, full = _screened(hidden[:2], broken)
    assert not decided and token.tolist() == full.tolist()


def test_a_vocabulary_smaller_than_the_candidates_is_screened_whole():
    rng = np.random.RandomState(3)
    table = _table(rng)[:10]
    hidden = rng.randn(4, WIDTH).astype(np.float32)
    token, decided, full = _screened(hidden, table, candidates=64)
    assert token.tolist() == full.tolist()


def test_first_argmax_is_argmax_with_ties_nans_and_infinities():
    """Ties go to the first; a NaN anywhere wins (XLA:CPU's max may skip NaNs, argmax does not)."""
    rng = np.random.RandomState(0)
    x = rng.randn(7, 1000).astype(np.float32)
    x[1, [3, 500, 999]] = 9.0  # tie: the first wins
    x[2, [10, 20]] = np.nan  # a NaN row: the first NaN, as argmax gives
    x[3, 5] = np.inf
    x[4, :] = -np.inf  # nothing finite: index 0
    x[5, :] = 0.0  # all equal
    x[6, 999] = np.nan  # NaN as the last element beats every number
    got = np.asarray(first_argmax(jnp.asarray(x)))
    np.testing.assert_array_equal(got, np.argmax(x, axis=-1))
    np.testing.assert_array_equal(got, np.asarray(jnp.argmax(jnp.asarray(x), axis=-1)))
    assert got.tolist()[1:7] == [3, 10, 5, 0, 0, 999]
    np.testing.assert_array_equal(np.asarray(first_argmax(jnp.asarray(x.T), axis=0)), got)  # vocabulary-major
