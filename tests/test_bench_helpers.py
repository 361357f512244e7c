"""The benchmarks' shared helpers measure what their scripts report: benchmarks/timing.py times only the timed
rounds, in turn; benchmarks/decode_step.py counts a decode step's bytes as generate lays out its KV cache and
takes a step's seconds as a difference of two generates. A fake clock stands in for time, so nothing is slow."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import decode_step  # noqa: E402
import timing  # noqa: E402
from alert_jax.model.model import Model  # noqa: E402
from alert_jax.model.opt import OPTForCausalLM, RuntimeOptions, boxed_params  # noqa: E402
from alert_jax.model.presets import OPTConfig  # noqa: E402


@pytest.fixture
def clock(monkeypatch):
    """A clock the fake systems advance by the seconds each call 'takes'."""
    now = [0.0]
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    return now


def test_interleaved_rounds_alternate_systems_and_exclude_the_first_calls(clock):
    calls = []

    def system(name, seconds):
        durations = iter(seconds)

        def call():
            calls.append(name)
            clock[0] += next(durations)
            return calls.count(name)  # which call of this system this was

        return call

    timed = timing.interleaved_rounds({"a": system("a", [100, 1, 5, 3]), "b": system("b", [50, 7, 2, 9])}, rounds=3)
    assert calls == ["a", "b"] * 4
    # medians over the 3 rounds only (with the first call they would be 4 and 8); outputs from the 4th call
    assert timed == {"a": timing.Timed(100, 3, 4), "b": timing.Timed(50, 7, 4)}


def test_best_seconds_is_the_fastest_call_after_an_untimed_warm_up(clock):
    durations = iter([1, 4, 2, 3])  # the warm-up is the fastest here: it must not count

    def call():
        clock[0] += next(durations)

    assert timing.best_seconds(call, repeats=3) == 2


# 2 layers, hidden 8, ffn 32, vocab 16: per layer q/k/v/out 4·(8·8 + 8), fc1 8·32 + 32, fc2 32·8 + 8, two layer
# norms 2·2·8 = 872; token embedding (the LM head) 16·8 = 128; final layer norm 16. The position table (32 rows)
# is not counted: a step reads one row of it per sequence.
TINY = OPTConfig(vocab_size=16, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, ffn_dim=32,
                 max_position_embeddings=30)
TINY_READ_PARAMS = 2 * 872 + 128 + 16


def tiny_model(dtype=jnp.float32, param_dtype=jnp.float32) -> Model:
    runtime = RuntimeOptions(dtype=dtype, param_dtype=param_dtype)
    params = jax.eval_shape(lambda key: nn.meta.unbox(boxed_params(OPTForCausalLM(TINY, runtime), key)),
                            jax.random.PRNGKey(0))
    return Model(TINY, params, runtime)


def test_decode_step_bytes_are_the_weights_and_the_whole_bucketed_kv_cache():
    # prompt 20 → a 24-slot bucket, 5 new tokens → 16: 40 slots read, one written, K and V in 2 layers, 3 rows
    kv_values = 2 * 2 * 3 * (40 + 1) * 8
    assert decode_step.decode_step_bytes(tiny_model(), 3, 20, 5) == TINY_READ_PARAMS * 4 + kv_values * 4
    # a bfloat16 cache halves the cache bytes; params stay as stored (float32)
    assert decode_step.decode_step_bytes(tiny_model(jnp.bfloat16), 3, 20, 5) == TINY_READ_PARAMS * 4 + kv_values * 2
    assert decode_step.decode_step_bytes(tiny_model(jnp.bfloat16, jnp.bfloat16), 3, 20, 5) == \
        (TINY_READ_PARAMS + kv_values) * 2


def test_a_screened_step_reads_the_head_screen_and_the_candidate_rows_instead_of_the_float_head():
    kv_bytes = 2 * 2 * 3 * (40 + 1) * 8 * 4
    head, screen = 16 * 8 * 4, 16 * 8 + 3 * 16 * 4  # int8 table; scale, norm and error per vocabulary row
    candidates = 3 * 16 * 8 * 4  # every token (vocabulary 16 < CANDIDATES) for each of 3 rows
    assert decode_step.decode_step_bytes(tiny_model(), 3, 20, 5, screen_head=True) == \
        TINY_READ_PARAMS * 4 - head + screen + candidates + kv_bytes


def test_decode_step_seconds_drop_prefill_and_compiles(clock, monkeypatch):
    compiled = set()

    def fake_generate(model, ids, mask, *, max_new_tokens, screen_head, out_in_kernels):
        assert ids.shape == mask.shape == (2, 12)
        clock[0] += (0 if max_new_tokens in compiled else 1000) + 7.0 + 0.25 * max_new_tokens  # compile, prefill, steps
        compiled.add(max_new_tokens)

    monkeypatch.setattr(decode_step, "generate", fake_generate)
    seconds = decode_step.decode_step_seconds(tiny_model(), 2, 12, short=16, long=64, repeats=2)
    assert seconds == pytest.approx(0.25)
