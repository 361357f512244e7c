"""Batched KV-cache generation: token-for-token parity with transformers' greedy `generate`, stopping, sampling,
and compile bucketing (docs/contracts.md, "Numerics": greedy generation equals HF's greedy output)."""
from __future__ import annotations

import dataclasses
import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import alert_jax
from alert_jax.config import MeshConfig
from alert_jax.generation import (
    GenerationError, GenerationStats, _choose, _decode_program, _nucleus_filter, _per_layer_caches, _prefill_program,
    _Sampling, bucket_length, generate, generate_text,
)
from alert_jax.model import layout
from alert_jax.model.layout import to_layout
from alert_jax.parallel.mesh import make_mesh

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from tests.hf_reference import left_padded_batch, tiny_hf_opt

PAD, BOS = 1, 2
NEW = 12
ABSENT = 100  # a token id the tiny models below never emit greedily from these prompts


def _hf_opt(pre_ln: bool) -> transformers.OPTForCausalLM:
    """Tiny random OPT whose greedy continuations vary (the default init_std makes them one repeated token)."""
    return tiny_hf_opt(pre_ln, layers=2, init_std=0.3 if pre_ln else 0.1, norm_noise=0.1, bias_noise=0.0)


@pytest.fixture(scope="module", params=[True, False], ids=["pre_ln", "post_ln_projections"])
def models(request, tmp_path_factory):
    hf_model = _hf_opt(request.param)
    directory = tmp_path_factory.mktemp("hf_opt")
    hf_model.save_pretrained(directory)
    return hf_model, alert_jax.load_model(directory)


@pytest.fixture(scope="module")
def post_ln(tmp_path_factory):
    hf_model = _hf_opt(False)
    directory = tmp_path_factory.mktemp("hf_post")
    hf_model.save_pretrained(directory)
    return hf_model, alert_jax.load_model(directory)


def hf_greedy(hf_model, ids, mask, new: int = NEW, eos: int = ABSENT) -> np.ndarray:
    """transformers' greedy new tokens, padded to `new` columns (HF stops early once every row hit eos)."""
    with torch.no_grad():
        out = hf_model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), do_sample=False,
                                max_new_tokens=new, pad_token_id=PAD, eos_token_id=eos)
    out = out[:, ids.shape[1]:].numpy()
    return np.pad(out, ((0, 0), (0, new - out.shape[1])), constant_values=PAD)


class CharTokenizer:
    """Characters ' '..'\\x80' as ids 4..100, OPT's special ids below; decode skips specials."""

    bos_id, pad_id, eos_id = BOS, PAD, BOS

    def encode(self, text: str) -> list[int]:
        return [ord(c) - 32 + 4 for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(i - 4 + 32) for i in ids if i >= 4)


def test_greedy_matches_transformers_on_left_padded_batch(models):
    hf_model, model = models
    ids, mask = left_padded_batch()
    ref = hf_greedy(hf_model, ids, mask)
    assert len(set(ref.ravel().tolist())) > 3, "the reference continuation should not be one repeated token"
    np.testing.assert_array_equal(generate(model, ids, mask, max_new_tokens=NEW), ref)


def test_greedy_through_the_head_screen_is_greedy_through_the_float_head(models, tmp_path):
    """The int8 screen of the LM head (on by default on CPU) picks the float head's tokens: with and without it,
    in float32 and bfloat16, with and without a stop token, pre-LN and post-LN with projections (whose head
    reads the projected hidden state)."""
    hf_model, model = models
    ids, mask = left_padded_batch()
    stop = int(hf_greedy(hf_model, ids, mask)[1, 2])
    hf_model.save_pretrained(tmp_path)
    for candidate in (model, alert_jax.load_model(tmp_path, dtype="bfloat16")):
        for kwargs in ({}, {"stop_token_ids": (stop,)}):
            screened = generate(candidate, ids, mask, max_new_tokens=NEW, screen_head=True, **kwargs)
            np.testing.assert_array_equal(
                screened, generate(candidate, ids, mask, max_new_tokens=NEW, screen_head=False, **kwargs))
    mesh = make_mesh(MeshConfig(data=1, fsdp=2, tensor=2), jax.devices()[:4])
    sharded = alert_jax.load_model(tmp_path, mesh=mesh)  # the head table, so its screen, split over the mesh
    assert not sharded.head_screen().weights.sharding.is_fully_replicated
    np.testing.assert_array_equal(generate(sharded, ids, mask, max_new_tokens=NEW, screen_head=True),
                                  generate(model, ids, mask, max_new_tokens=NEW, screen_head=False))
    # Its embedding axis split 8 ways: XLA:CPU aborted the process compiling an earlier screen's top-k here.
    micro = alert_jax.load_model("opt-micro", mesh=make_mesh(MeshConfig(data=1, fsdp=8), jax.devices()[:8]))
    prompt = np.arange(4, 12, dtype=np.int32)[None]
    np.testing.assert_array_equal(generate(micro, prompt, np.ones_like(prompt), max_new_tokens=4, screen_head=True),
                                  generate(micro, prompt, np.ones_like(prompt), max_new_tokens=4, screen_head=False))
    with pytest.raises(GenerationError, match="screen_head needs a float LM head"):
        generate(alert_jax.load_model(tmp_path, quantize="int8"), ids, mask, max_new_tokens=NEW, screen_head=True)


def test_stop_token_is_kept_and_followed_by_padding_like_hf_eos(models):
    hf_model, model = models
    ids, mask = left_padded_batch()
    stop = int(hf_greedy(hf_model, ids, mask)[0, 3])
    ref = hf_greedy(hf_model, ids, mask, eos=stop)
    ours = generate(model, ids, mask, max_new_tokens=NEW, stop_token_ids=(stop,))
    np.testing.assert_array_equal(ours, ref)
    first_stop = list(ours[0]).index(stop)
    assert first_stop <= 3 and (ours[0, first_stop + 1:] == PAD).all()


def test_kv_cache_equals_recomputing_full_logits_each_step(models):
    _, model = models
    ids, mask = left_padded_batch(seed=2)
    width = ids.shape[1] + NEW  # recompute at one fixed (left-padded) width: one compile, not one per step
    seq = np.pad(ids, ((0, 0), (NEW, 0)), constant_values=PAD)
    seq_mask = np.pad(mask, ((0, 0), (NEW, 0)))
    expected = []
    for _ in range(NEW):
        nxt = alert_jax.logits(model, seq, seq_mask)[:, -1].argmax(-1)
        expected.append(nxt)
        seq = np.concatenate([seq, nxt[:, None]], axis=1)[:, -width:]
        seq_mask = np.concatenate([seq_mask, np.ones_like(nxt)[:, None]], axis=1)[:, -width:]
    np.testing.assert_array_equal(generate(model, ids, mask, max_new_tokens=NEW), np.stack(expected, axis=1))


def _scanned(model):
    """The same model run with its decoder layers under nn.scan (params stacked)."""
    return dataclasses.replace(model, params=to_layout(model.params, scan_layers=True),
                               runtime=dataclasses.replace(model.runtime, scan_layers=True))


@pytest.mark.parametrize("out_in", [False, True], ids=["in_out", "out_in"])
@pytest.mark.parametrize("scan_layers", [False, True], ids=["unrolled", "scanned"])
@pytest.mark.parametrize("batch", [1, 3])
def test_the_compiled_decode_step_never_copies_the_kv_cache_nor_sorts_the_vocabulary(post_ln, batch, scan_layers,
                                                                                     out_in):
    """Every cache copy is a full read and write of the cache per layer and step. The old [B, H, slots, D] layout
    gave three per layer at batch 1 (XLA squeezed the batch axis away for the attention product and computed
    each cache update twice, once per layout). A scanned decoder that scanned over a per-layer cache (in → out)
    copied each layer's cache twice and the whole stacked cache three times per step. Both models the decode
    loop may run: the model itself, and (`out_in`, the CPU default) its decoding copy, which must not copy nor
    slice out a kernel per step either (a scanned layer loop copied every kernel it sliced out of its stack)."""
    _, model = post_ln
    model = _scanned(model) if scan_layers else model
    ids = np.full((batch, 8), 5, np.int32)
    state = _prefill_program(model.module)(model.params, ids, np.ones_like(ids), new_slots=bucket_length(NEW))
    if out_in:
        model = model.decoding_copy()
        state = state._replace(caches=_per_layer_caches(state.caches)) if scan_layers else state
    sampling = _Sampling(jnp.zeros((model.config.vocab_size,), bool), jnp.float32(1.0), jnp.float32(1.0),
                         jax.random.PRNGKey(0))
    hlo = _decode_program(model.module, "greedy").lower(model.params, model.head_screen(), state, jnp.int32(NEW),
                                                        sampling).compile()
    layer_shape = jax.tree.leaves(state.caches)[0].shape[-3:]  # [B·H, slots, D], stacked or not
    copies = re.findall(r"= f32\[([0-9,]+)\]\S* copy\(", hlo.as_text())
    assert [c for c in copies if tuple(map(int, c.split(",")))[-3:] == layer_shape] == [], copies
    assert " sort(" not in hlo.as_text()  # the head screen's top-k stays a top-k, not a sort of the vocabulary
    if out_in:
        kernel_shapes = {",".join(map(str, k.shape)) for k in layout.kernels(model.params).values()}
        made = re.findall(r"= f32\[([0-9,]+)\]\S* (?:copy|dynamic-slice|fusion)\(", hlo.as_text())
        assert kernel_shapes and not kernel_shapes & set(made), kernel_shapes & set(made)


def test_the_scanned_model_generates_what_the_unrolled_one_does(post_ln):
    _, model = post_ln
    ids, mask = left_padded_batch()
    greedy = generate(model, ids, mask, max_new_tokens=NEW)
    stop = int(greedy[0, 2])
    for kwargs in ({}, {"stop_token_ids": (stop,)}, {"temperature": 0.8, "top_p": 0.9, "seed": 3}):
        np.testing.assert_array_equal(generate(_scanned(model), ids, mask, max_new_tokens=NEW, **kwargs),
                                      generate(model, ids, mask, max_new_tokens=NEW, **kwargs))


def test_extra_left_padding_does_not_change_the_output(post_ln):
    _, model = post_ln
    ids, mask = left_padded_batch()
    wider_ids = np.pad(ids, ((0, 0), (5, 0)), constant_values=PAD)
    wider_mask = np.pad(mask, ((0, 0), (5, 0)))
    np.testing.assert_array_equal(generate(model, wider_ids, wider_mask, max_new_tokens=NEW),
                                  generate(model, ids, mask, max_new_tokens=NEW))


def test_sampling_is_deterministic_per_seed_and_varies_across_seeds(post_ln):
    _, model = post_ln
    ids, mask = left_padded_batch()
    first = generate(model, ids, mask, max_new_tokens=NEW, temperature=1.0, seed=0)
    np.testing.assert_array_equal(first, generate(model, ids, mask, max_new_tokens=NEW, temperature=1.0, seed=0))
    assert (first != generate(model, ids, mask, max_new_tokens=NEW, temperature=1.0, seed=1)).any()
    assert (first != generate(model, ids, mask, max_new_tokens=NEW)).any(), "temperature 1 should not be greedy here"


def test_tiny_temperature_or_tiny_top_p_is_greedy(post_ln):
    hf_model, model = post_ln
    ids, mask = left_padded_batch()
    greedy = hf_greedy(hf_model, ids, mask)
    np.testing.assert_array_equal(generate(model, ids, mask, max_new_tokens=NEW, temperature=1e-4, seed=3), greedy)
    np.testing.assert_array_equal(
        generate(model, ids, mask, max_new_tokens=NEW, temperature=1.0, top_p=1e-6, seed=3), greedy)


def test_nucleus_keeps_the_smallest_set_reaching_top_p():
    logits = np.log(np.array([[0.05, 0.5, 0.15, 0.3]], np.float32))
    kept = lambda p: np.isfinite(np.asarray(_nucleus_filter(logits.T, np.float32(p))))[:, 0].tolist()
    assert kept(0.7) == [False, True, False, True]  # 0.5 + 0.3 ≥ 0.7
    assert kept(0.5) == [False, True, False, False]  # 0.5 alone reaches 0.5
    assert kept(0.81) == [False, True, True, True]
    assert kept(1.0) == [True, True, True, True]


def _sorted_nucleus(logits: np.ndarray, top_p: float) -> tuple[np.ndarray, float]:
    """The nucleus by its definition, in float64: sort, keep while the mass before a token is below top_p, then
    every token at least as likely as the last kept one. Also the closest that mass comes to top_p."""
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    ordered = np.sort(probs)[::-1]
    before = np.cumsum(ordered) - ordered
    return probs >= ordered[before < top_p].min(), np.abs(before - top_p).min()


def test_nucleus_filter_equals_the_sorted_definition():
    """Peaked and flat rows, a vocabulary of OPT's size, several top_p; the bisection never sorts but must keep
    exactly the sorted definition's set. A row whose sorted mass comes within 1e-6 of top_p (float32 summation
    error) could go either way, and is not compared."""
    rng = np.random.RandomState(0)
    logits = rng.randn(6, 50272).astype(np.float32) * np.array([[0.3], [1.0], [2.0], [4.0], [8.0], [16.0]], np.float32)
    compared = 0
    for top_p in (0.05, 0.3, 0.5, 0.9, 0.99):
        got = np.isfinite(np.asarray(_nucleus_filter(jnp.asarray(logits.T), np.float32(top_p)))).T
        for row in range(len(logits)):
            want, margin = _sorted_nucleus(logits[row].astype(np.float64), top_p)
            if margin > 1e-6:
                np.testing.assert_array_equal(got[row], want, err_msg=f"row {row}, top_p {top_p}")
                compared += 1
        kept = got.sum(axis=1)
        assert kept.min() >= 1 and (kept < logits.shape[1]).any()
    assert compared >= 24  # of 30


def test_nucleus_keeps_every_token_tied_with_the_last_one_kept():
    logits = np.log(np.array([[0.125, 0.25, 0.125, 0.25, 0.125, 0.125]], np.float32))
    kept = lambda p: np.isfinite(np.asarray(_nucleus_filter(logits.T, np.float32(p))))[:, 0].tolist()  # noqa: E731
    assert kept(0.2) == [False, True, False, True, False, False]  # one 0.25 reaches it; its twin is tied
    assert kept(0.6) == [True] * 6  # 0.5 + one 0.125 reaches it; the other three 0.125s are tied
    for p in (0.2, 0.4, 0.6, 0.7):
        assert kept(p) == _sorted_nucleus(logits[0].astype(np.float64), p)[0].tolist()


@pytest.mark.parametrize("top_p", [1.0, 0.75])
def test_sampled_tokens_follow_the_tempered_softmax(top_p):
    """20 000 draws of one row: each token's frequency within 5 standard errors of softmax(logits / T), renormalised
    over the nucleus; tokens outside it never drawn. Successive steps draw independently."""
    logits = np.tile(np.array([[2.0, 1.0, 0.5, 0.0, -1.0]], np.float32), (20_000, 1))
    temperature = 1.5
    mode = "sample" if top_p == 1.0 else "sample_top_p"
    sampling = _Sampling(jnp.zeros(5, bool), jnp.float32(temperature), jnp.float32(top_p), jax.random.PRNGKey(7))
    choose = jax.jit(lambda x, step: _choose(x, step, sampling, mode))
    tokens = np.asarray(choose(jnp.asarray(logits.T), jnp.int32(0)))
    probs = np.exp(logits[0] / temperature) / np.exp(logits[0] / temperature).sum()
    if top_p < 1:
        probs *= _sorted_nucleus(logits[0].astype(np.float64) / temperature, top_p)[0]
        probs /= probs.sum()
    frequencies = np.bincount(tokens, minlength=5) / len(tokens)
    error = np.sqrt(probs * (1 - probs) / len(tokens))
    assert (np.abs(frequencies - probs) <= 5 * error + 1e-12).all(), (frequencies, probs)
    assert (frequencies[probs == 0] == 0).all() and (probs == 0).any() == (top_p < 1)
    following = np.asarray(choose(jnp.asarray(logits.T), jnp.int32(1)))
    assert 0.2 < (following == tokens).mean() < 0.5  # Σp² ≈ 0.3 for independent draws


def test_stop_string_pads_after_the_token_that_completes_it(post_ln):
    hf_model, model = post_ln
    ids, mask = left_padded_batch()
    greedy = hf_greedy(hf_model, ids, mask)
    tok = CharTokenizer()
    stop = tok.decode(greedy[1, 4:6].tolist())
    ours = generate(model, ids, mask, max_new_tokens=NEW, stop_strings=(stop,), tokenizer=tok)
    for row, expected in zip(ours, greedy):
        text = tok.decode(expected.tolist())
        if stop in text:
            end = next(i for i in range(NEW) if stop in tok.decode(expected[: i + 1].tolist()))
            expected = np.concatenate([expected[: end + 1], np.full(NEW - end - 1, PAD)])
        np.testing.assert_array_equal(row, expected)
    assert (ours[1, 6:] == PAD).all()


def test_generate_text_matches_one_prompt_at_a_time_in_original_order(post_ln):
    hf_model, model = post_ln
    tok = CharTokenizer()
    new = 20
    room = 64 - new  # the 60-character prompt keeps BOS + its last 43 characters
    prompts = ["a" * 34, "b" * 60, "mid " * 9, "c" * 38, "d" * 40]
    stop = "e"
    texts = generate_text(model, tok, prompts, max_new_tokens=new, batch_size=2, stop_strings=(stop,))
    for prompt, text in zip(prompts, texts):
        ids = np.array([[BOS, *tok.encode(prompt)[-(room - 1):]]])
        full = tok.decode(hf_greedy(hf_model, ids, np.ones_like(ids), new=new, eos=BOS)[0].tolist())
        assert text == full.split(stop)[0]


def test_a_batch_stops_as_soon_as_every_row_has_stopped(post_ln):
    _, model = post_ln
    ids, mask = left_padded_batch()
    greedy = generate(model, ids, mask, max_new_tokens=NEW)
    stop = int(greedy[0, 2])  # row 0 stops at its third token; other rows at their first occurrence of it
    stats = GenerationStats()
    out = generate(model, ids, mask, max_new_tokens=NEW, stop_token_ids=(stop,), stats=stats)
    ends = [int(np.flatnonzero(row == stop)[0]) + 1 if (row == stop).any() else NEW for row in greedy]
    assert stats.decode_steps == max(ends) < NEW
    assert stats.new_tokens == sum(ends) and stats.prompts == len(ids) and stats.batches == 1
    for row, greedy_row, end in zip(out, greedy, ends):
        np.testing.assert_array_equal(row[:end], greedy_row[:end])
        assert (row[end:] == PAD).all()


def test_grouping_by_length_changes_no_output_and_counts_only_real_prompts(post_ln):
    _, model = post_ln
    tok = CharTokenizer()
    prompts = ["a" * 3, "b" * 30, "cc " * 5, "d" * 31, "e" * 2]
    stats = GenerationStats()
    grouped = generate_text(model, tok, prompts, max_new_tokens=6, batch_size=2, stats=stats)
    alone = [generate_text(model, tok, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert grouped == alone
    assert stats.prompts == len(prompts) and stats.batches == 3


def test_stats_count_each_real_prompt_and_its_tokens_once(post_ln):
    """5 prompts in batches of 2: the row that fills up the last batch generates tokens too, uncounted."""
    _, model = post_ln
    tok = CharTokenizer()
    prompts = ["a" * 3, "b" * 30, "cc " * 5, "d" * 31, "e" * 2]
    alone = GenerationStats()
    for prompt in prompts:
        generate_text(model, tok, [prompt], max_new_tokens=6, batch_size=1, stats=alone)
    grouped = GenerationStats()
    generate_text(model, tok, prompts, max_new_tokens=6, batch_size=2, stats=grouped)
    assert alone.new_tokens > len(prompts)
    assert (grouped.prompts, grouped.new_tokens, grouped.batches) == (len(prompts), alone.new_tokens, 3)
    ids, mask = left_padded_batch()
    direct = GenerationStats()
    generate(model, ids, mask, max_new_tokens=NEW, stats=direct, real_rows=2)  # no stop token: NEW tokens a row
    assert (direct.prompts, direct.new_tokens, direct.batches) == (2, 2 * NEW, 1)
    with pytest.raises(GenerationError, match="real_rows"):
        generate(model, ids, mask, max_new_tokens=NEW, real_rows=len(ids) + 1)


def test_prompt_lengths_in_one_bucket_share_a_compile(post_ln, caplog):
    _, model = post_ln
    compiles = lambda: sum("compiling generation" in r.getMessage() for r in caplog.records)
    run = lambda length, new: generate(model, np.full((2, length), 7), np.ones((2, length)), max_new_tokens=new)
    with caplog.at_level(logging.INFO, logger="alert_jax.generation"):
        run(5, 30)
        assert compiles() == 2  # prefill + decode for prompt bucket 16, new-token bucket 32
        run(11, 25)
        assert compiles() == 2


def test_bucket_lengths():
    assert [bucket_length(n) for n in (1, 16, 17, 24, 25, 33, 48, 49, 64, 65, 100)] == \
        [16, 16, 24, 24, 32, 48, 48, 64, 64, 96, 128]


@pytest.mark.parametrize("mask, new, message", [
    ([[1, 1, 0]], 4, "LEFT padded"),
    ([[0, 0, 0]], 4, "no real token"),
    ([[1, 1, 1]], 62, "max_position_embeddings"),
    ([[1, 1, 1]], 0, "max_new_tokens"),
])
def test_bad_inputs_raise_generation_error(post_ln, mask, new, message):
    _, model = post_ln
    with pytest.raises(GenerationError, match=message):
        generate(model, np.full((1, 3), 7), np.array(mask), max_new_tokens=new)


def test_stop_strings_need_a_tokenizer(post_ln):
    _, model = post_ln
    with pytest.raises(GenerationError, match="tokenizer"):
        generate(model, np.full((1, 3), 7), np.ones((1, 3)), max_new_tokens=2, stop_strings=("x",))
