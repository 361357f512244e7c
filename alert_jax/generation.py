"""Jitted batched generation from OPT with a preallocated KV cache: greedy or temperature/nucleus sampling.

Why it is shaped this way (CPU, GPU and TPU alike, generation is dominated by fixed per-step costs):

* Prompts are LEFT padded, so every row's next token is written at the same cache slot and the whole batch
  advances with one scalar `cache_index`; a row's positions count only its real tokens (as HF does).
* The prompt length and `max_new_tokens` are rounded up to buckets (`bucket_length`), so a stream of batches
  with varied lengths compiles a handful of programs, not one per batch. Every trace is logged (`logging.info`
  with the shapes), which is also how tests count compiles.
* Prefill is one jitted call over the whole prompt that leaves the last position's hidden state pending and
  computes no logits (so greedy and sampling share its compile). Decoding is a `jax.lax.while_loop` inside one
  more jitted call that stops as soon as every row is done, with the cache (rows × heads first, see `LayerCache`)
  carried and donated through the loop: no host round-trip per token, and no LM pass after the last token.
* Each step's token comes from the pending hidden state through the LM head, computed vocabulary-major ([V, B]:
  faster on XLA:CPU). Greedy decoding of a few rows on CPU reads an int8 screen of the head instead of the float
  head and proves its token is the float head's argmax (model/screened_head.py), reading the float head only
  when it cannot (a 6-layer opt-125m-shaped step at batch 1: 14.6 → 11.5 ms; benchmarks/RESULTS.md).
* On CPU the decode loop runs a copy of the model whose dense kernels are stored [out, in] (`OutInDense`), which
  XLA:CPU multiplies by a few rows faster, and whose layers are unrolled (a scanned loop makes XLA:CPU copy every
  kernel it slices out, every step); the prompt pass, a big product, runs the model as it is.
* Stop tokens are checked on device (a `[vocab]` boolean table). Stop strings need the tokenizer, which lives on
  the host, so with stop strings the decode loop runs in chunks of `STOP_STRING_CHECK_EVERY` tokens and the host
  marks rows whose text contains a stop string as done between chunks; without stop strings the decode is one call.

Stopping follows HF's eos convention: the stop token (or the token that completes a stop string) is kept in the
output and every later position of that row holds `config.pad_token_id`. A stop string is matched in the
generated text only (not across the prompt boundary).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from alert_jax import host_memory
from alert_jax.errors import AlertJaxError
from alert_jax.model import layout
from alert_jax.model.io import mesh_of
from alert_jax.model.model import Model
from alert_jax.parallel.rules import DEFAULT_RULES, batch_sharding, logical_sharding
from alert_jax.model.opt import LayerCache, OPTForCausalLM, head_table, init_cache, positions_from_mask
from alert_jax.model.screened_head import HeadScreen, first_argmax, screened_argmax

if TYPE_CHECKING:
    from alert_jax.data.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

MIN_BUCKET = 16
STOP_STRING_CHECK_EVERY = 16  # decode steps between host-side stop-string checks
# Greedy decoding on CPU reads the LM head's int8 screen up to this many rows: XLA:CPU's int8 product gains
# little on more rows, and the float head (vocabulary-major) is as fast at 4 rows and faster at 8
# (benchmarks/RESULTS.md).
SCREEN_MAX_ROWS = 4
_GREEDY, _SAMPLE, _SAMPLE_TOP_P = "greedy", "sample", "sample_top_p"


class GenerationError(AlertJaxError):
    """Inputs to `generate` / `generate_text` that cannot be generated from (the message names the argument)."""


def bucket_length(n: int, minimum: int = MIN_BUCKET) -> int:
    """Smallest `minimum·2^k` or `1.5·minimum·2^k` that is ≥ n: at most ~50% padding, O(log n) distinct shapes."""
    size = minimum
    while True:
        if n <= size:
            return size
        if n <= size + size // 2:
            return size + size // 2
        size *= 2


@dataclasses.dataclass
class GenerationStats:
    """Work counters that `generate` / `generate_text` add to when given one: what evaluation logs as throughput
    and what shows the early stop (`decode_steps` below `batches × max_new_tokens` once rows stop early)."""

    prompts: int = 0  # real prompts (not the rows that fill up a last batch)
    new_tokens: int = 0  # tokens generated up to and including each row's stop
    batches: int = 0
    decode_steps: int = 0  # decode-loop iterations, summed over batches


class _State(NamedTuple):
    """Everything the decode loop carries; `step` = tokens generated so far (the next one goes to `tokens[:, step]`)."""

    caches: tuple[LayerCache, ...] | LayerCache  # per layer, or stacked for scan_layers
    hidden: jax.Array  # [B, d] the last fed token's final hidden state: its LM head gives tokens[:, step]
    tokens: jax.Array  # [B, new_slots] int32, pad where not generated
    step: jax.Array  # [] int32
    done: jax.Array  # [B] bool
    real_len: jax.Array  # [B] int32: real prompt tokens per row (the first generated token's position)
    kv_segments: jax.Array  # [B, slots] int32: 0 for left padding, 1 for every other slot


class _Sampling(NamedTuple):
    """Dynamic (traced) sampling inputs: changing them never recompiles."""

    stop_table: jax.Array  # [vocab] bool
    temperature: jax.Array  # [] float32
    top_p: jax.Array  # [] float32
    key: jax.Array  # PRNG key, folded with the step so chunked and unchunked decoding sample the same tokens


def _nucleus_filter(logits: jax.Array, top_p: jax.Array) -> jax.Array:
    """Keep the smallest set of most likely tokens whose probability reaches `top_p` (always the top one; tokens
    tied with the least likely kept one are kept too), in each column of vocabulary-major logits [V, B].

    Without sorting the vocabulary: the kept tokens are those with probability ≥ t, where t is the smallest
    probability whose strictly more likely mass is below `top_p`. Non-negative float32s order as their int32 bit
    patterns, so t is found exactly by bisecting the bits — `_PROBABILITY_BISECTIONS` masked sums over [V, B].
    A sort of [B, 50272] took 12.7 ms per step at batch 1 and 103 ms at batch 8 on XLA:CPU, more than the
    decode step itself.
    """
    probs = jax.nn.softmax(logits, axis=0)
    bits = jax.lax.bitcast_convert_type(probs, jnp.int32)

    def halve(_, bounds):
        too_low, threshold = bounds  # mass above `threshold` < top_p ≤ mass above `too_low` (or too_low = -1)
        middle = too_low + (threshold - too_low) // 2
        fits = jnp.sum(jnp.where(bits > middle, probs, 0.0), axis=0, keepdims=True) < top_p
        return jnp.where(fits, too_low, middle), jnp.where(fits, middle, threshold)

    start = (jnp.full((1,) + probs.shape[1:], -1, jnp.int32), jnp.max(bits, axis=0, keepdims=True))
    _, threshold = jax.lax.fori_loop(0, _PROBABILITY_BISECTIONS, halve, start)
    return jnp.where(bits >= threshold, logits, -jnp.inf)


_PROBABILITY_BISECTIONS = (int(np.float32(1.0).view(np.int32)) + 1).bit_length()  # bit patterns of [0, 1]: 30


def _choose(logits: jax.Array, step: jax.Array, sampling: _Sampling, mode: str) -> jax.Array:
    """Next token per row from vocabulary-major float32 logits [V, B] (the layout `vocab_major_logits` gives)."""
    if mode == _GREEDY:
        return first_argmax(logits, axis=0)
    scaled = logits / sampling.temperature
    if mode == _SAMPLE_TOP_P:
        scaled = _nucleus_filter(scaled, sampling.top_p)
    key = jax.random.fold_in(sampling.key, step)
    noise = jax.random.gumbel(key, scaled.shape[::-1], scaled.dtype).T  # drawn [B, V]: a row's draws keep their seed
    return first_argmax(scaled + noise, axis=0)  # Gumbel-max: a softmax draw


def _emit(module: OPTForCausalLM, params, screen: Optional[HeadScreen], state: _State, sampling: _Sampling,
          mode: str) -> _State:
    """Append one token per row from the pending hidden state (pad for finished rows); update which rows are
    finished. Greedy with a `screen` reads the int8 screen of the LM head instead of the float head
    (model/screened_head.py: the same tokens); everything else computes the float logits."""
    full_logits = lambda hidden: module.apply({"params": params}, hidden, method=OPTForCausalLM.vocab_major_logits)
    if mode == _GREEDY and screen is not None:
        choice, _ = screened_argmax(state.hidden, head_table(params), screen, state.done, full_logits)
    else:
        choice = _choose(full_logits(state.hidden), state.step, sampling, mode)
    token = jnp.where(state.done, module.cfg.pad_token_id, choice)
    tokens = jax.lax.dynamic_update_slice(state.tokens, token[:, None], (0, state.step))
    done = state.done | sampling.stop_table[token]
    return state._replace(tokens=tokens, step=state.step + 1, done=done)


@functools.lru_cache(maxsize=32)
def _prefill_program(module: OPTForCausalLM):
    """Jitted prompt pass for one model: fills the cache and leaves the last position's hidden state pending.

    It computes no logits, so one compile serves greedy and sampling alike (the head runs only in decode).
    """
    pad_id = module.cfg.pad_token_id

    def prefill(params, input_ids, attention_mask, new_slots: int) -> _State:
        batch, prompt = input_ids.shape
        slots = prompt + new_slots
        logger.info("compiling generation prefill: batch=%d prompt=%d new=%d slots=%d", batch, prompt, new_slots, slots)
        segments = attention_mask.astype(jnp.int32)
        kv_segments = _pad_segments(segments, slots)
        variables = {"params": params}
        hidden, caches = module.apply(variables, input_ids, segment_ids=segments,
                                      positions=positions_from_mask(segments != 0),
                                      caches=init_cache(module.cfg, batch, slots, module.rt.dtype,
                                                        module.rt.scan_layers),
                                      cache_index=jnp.int32(0), kv_segments=kv_segments, return_hidden=True)
        # Left padding puts every row's last real token in the last column: the only state decoding needs.
        return _State(caches=caches, hidden=hidden[:, -1], tokens=jnp.full((batch, new_slots), pad_id, jnp.int32),
                      step=jnp.int32(0), done=jnp.zeros((batch,), bool), real_len=segments.sum(axis=1),
                      kv_segments=kv_segments)

    return jax.jit(prefill, static_argnames="new_slots")


@functools.lru_cache(maxsize=32)
def _decode_program(module: OPTForCausalLM, mode: str):
    """Jitted decode loop for one model and sampling mode: emit, then feed the token back, until `limit` or all done."""
    def decode(params, screen: Optional[HeadScreen], state: _State, limit, sampling: _Sampling) -> _State:
        """Run until `limit` tokens exist (a chunk end or max_new_tokens) or every row is done."""
        batch, slots = state.kv_segments.shape
        prompt = slots - state.tokens.shape[1]
        logger.info("compiling generation decode: batch=%d prompt=%d new=%d slots=%d mode=%s",
                    batch, prompt, state.tokens.shape[1], slots, mode)

        def not_finished(s: _State, end) -> jax.Array:
            return (s.step < end) & ~jnp.all(s.done)

        def feed_back(s: _State) -> _State:
            previous = jax.lax.dynamic_slice_in_dim(s.tokens, s.step - 1, 1, axis=1)
            hidden, caches = module.apply(
                {"params": params}, previous, segment_ids=jnp.ones_like(previous),
                positions=(s.real_len + s.step - 1)[:, None], caches=s.caches, cache_index=prompt + s.step - 1,
                kv_segments=s.kv_segments, return_hidden=True,
            )
            return s._replace(caches=caches, hidden=hidden[:, 0])

        def advance(s: _State) -> _State:
            # Every emitted token is fed back, the last one too: that one wasted pass is cheaper than a `lax.cond`,
            # which makes XLA copy the whole KV cache on every step (~10% of decode time on CPU).
            return feed_back(_emit(module, params, screen, s, sampling, mode))

        return jax.lax.while_loop(lambda s: not_finished(s, limit), advance, state)

    return jax.jit(decode, donate_argnums=2)


def _pad_segments(segments: jax.Array, slots: int) -> jax.Array:
    """Cache-slot validity: the prompt's mask, then 1 for every generated slot (causality hides future ones)."""
    batch, prompt = segments.shape
    return jnp.concatenate([segments, jnp.ones((batch, slots - prompt), jnp.int32)], axis=1)


def _validated_prompt(model: Model, input_ids, attention_mask, max_new_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Checked int32 ids/mask with all-padding leading columns dropped, then left padded to the prompt bucket."""
    ids = np.asarray(input_ids)
    mask = np.asarray(attention_mask)
    if ids.ndim != 2 or mask.shape != ids.shape:
        raise GenerationError(f"input_ids {ids.shape} and attention_mask {mask.shape} must both be [batch, length]")
    if not np.isin(mask, (0, 1)).all():
        raise GenerationError("attention_mask must hold only 0 (padding) and 1 (real token)")
    if (np.diff(mask, axis=1) < 0).any():
        raise GenerationError("attention_mask must be LEFT padded (zeros before ones in every row)")
    real = mask.sum(axis=1)
    if (real == 0).any():
        raise GenerationError(f"rows {np.flatnonzero(real == 0).tolist()} of attention_mask have no real token")
    if max_new_tokens < 1:
        raise GenerationError(f"max_new_tokens must be ≥ 1, got {max_new_tokens}")
    limit = model.config.max_position_embeddings
    if real.max() + max_new_tokens > limit:
        raise GenerationError(f"prompt of {real.max()} tokens + max_new_tokens {max_new_tokens} exceeds "
                              f"max_position_embeddings {limit}")
    width = int(real.max())
    pad = bucket_length(width) - width
    ids = np.pad(ids[:, -width:], ((0, 0), (pad, 0)), constant_values=model.config.pad_token_id)
    mask = np.pad(mask[:, -width:], ((0, 0), (pad, 0)))
    return ids.astype(np.int32), mask.astype(np.int32)


def _sampling_mode(temperature: float, top_p: float) -> str:
    if temperature < 0:
        raise GenerationError(f"temperature must be ≥ 0 (0 = greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise GenerationError(f"top_p must be in (0, 1], got {top_p}")
    if temperature == 0:
        return _GREEDY
    return _SAMPLE if top_p == 1 else _SAMPLE_TOP_P


def _stop_string_end(tokens: np.ndarray, start: int, stop_strings: Sequence[str], tokenizer: "Tokenizer") -> Optional[int]:
    """Index of the token that completes the first stop string in `tokens`, searching from `start`; None if none."""
    if not any(s in tokenizer.decode(tokens.tolist()) for s in stop_strings):
        return None
    for end in range(start, len(tokens)):
        text = tokenizer.decode(tokens[: end + 1].tolist())
        if any(s in text for s in stop_strings):
            return end
    return len(tokens) - 1  # a prefix's text need not be a prefix of the text (merged bytes): stop at the end


def generate(model: Model, input_ids, attention_mask, *, max_new_tokens: int, temperature: float = 0.0,
             top_p: float = 1.0, seed: int = 0, stop_token_ids: Sequence[int] = (), stop_strings: Sequence[str] = (),
             tokenizer: Optional["Tokenizer"] = None, stats: Optional[GenerationStats] = None,
             real_rows: Optional[int] = None, screen_head: Optional[bool] = None,
             out_in_kernels: Optional[bool] = None) -> np.ndarray:
    """New tokens [B, max_new_tokens] for a LEFT-padded batch; `config.pad_token_id` after a row stops.

    `temperature=0` is greedy (argmax); otherwise tokens are sampled from softmax(logits / temperature),
    restricted to the nucleus `top_p`, with `jax.random` keyed by `seed` (deterministic). A row stops after
    emitting one of `stop_token_ids` (kept) or once its generated text contains one of `stop_strings` (the
    completing token is kept; this needs `tokenizer.decode`). `stats` (optional) counts the batch's work: the
    prompts and tokens of its first `real_rows` rows (all by default), the rest only filling up the batch.

    `screen_head` (greedy only): pick each token through the int8 screen of the float LM head, which gives the
    float head's argmax while reading a quarter of its bytes (model/screened_head.py); None = on for a float
    model on CPU at up to `SCREEN_MAX_ROWS` rows, where it was measured to pay (benchmarks/RESULTS.md); False
    reads the float head every step.

    `out_in_kernels`: decode through a copy of the model with its dense kernels stored [out, in] and its layers
    unrolled (`Model.decoding_copy`, made once per model), which XLA:CPU multiplies by a few rows faster
    (`OutInDense`) and never slices per step; the prompt pass runs the model as it is. None = on for a float
    model on CPU when the copy takes at most half the host's available memory; off elsewhere (accelerator
    libraries read either layout at full speed).
    """
    mode = _sampling_mode(temperature, top_p)
    screen = _head_screen(model, screen_head, len(input_ids)) if mode == _GREEDY else None
    decoding = _decoding_model(model, out_in_kernels)
    if stop_strings and tokenizer is None:
        raise GenerationError("stop_strings need a tokenizer to decode the generated tokens")
    vocab = model.config.vocab_size
    if any(not 0 <= t < vocab for t in stop_token_ids):
        raise GenerationError(f"stop_token_ids {list(stop_token_ids)} must be in [0, {vocab})")
    ids, mask = _validated_prompt(model, input_ids, attention_mask, max_new_tokens)
    if real_rows is not None and not 0 < real_rows <= len(ids):
        raise GenerationError(f"real_rows must be in [1, {len(ids)}] (the batch's rows), got {real_rows}")
    stop_table = np.zeros((vocab,), bool)
    stop_table[list(stop_token_ids)] = True
    sampling = _Sampling(jnp.asarray(stop_table), jnp.float32(max(temperature, 1e-30)), jnp.float32(top_p),
                         jax.random.PRNGKey(seed))
    mesh = mesh_of(model)
    rows = rows_sharding(mesh, len(ids))
    with logical_sharding(mesh, DEFAULT_RULES):
        state = _prefill_program(model.module)(model.params, to_devices(ids, rows), to_devices(mask, rows),
                                               new_slots=bucket_length(max_new_tokens))
        if model.runtime.scan_layers and not decoding.runtime.scan_layers:
            state = state._replace(caches=_per_layer_caches(state.caches))
        decode = functools.partial(_decode_program(decoding.module, mode), decoding.params, screen)
        if stop_strings:
            tokens, steps = _decode_with_stop_strings(model, state, decode, sampling, max_new_tokens, stop_strings,
                                                      tokenizer)
        else:
            state = decode(state, jnp.int32(max_new_tokens), sampling)
            tokens, steps = to_host(state.tokens)[:, :max_new_tokens], int(to_host(state.step))
    if stats is not None:
        stats.batches += 1
        stats.decode_steps += steps
        counted = tokens[:real_rows]
        stats.prompts += len(counted)
        stats.new_tokens += int(_generated_lengths(counted, pad_id=model.config.pad_token_id).sum())
    return tokens


def _head_screen(model: Model, wanted: Optional[bool], rows: int) -> Optional[HeadScreen]:
    """The model's LM-head screen if greedy decoding should read it (see `generate`'s `screen_head`)."""
    refusal = (f"screen_head needs a float LM head; this model's is quantized ({model.runtime.quantize}), and "
               f"greedy decoding reads its int8 head directly")
    use = _cpu_speedup(model, wanted, refusal, pays=lambda: rows <= SCREEN_MAX_ROWS)
    return model.head_screen() if use else None


def _decoding_model(model: Model, wanted: Optional[bool]) -> Model:
    """The model the decode loop runs: `model`, or its decoding copy (see `generate`'s `out_in_kernels`)."""
    refusal = (f"out_in_kernels needs float kernels; this model's are quantized ({model.runtime.quantize}), "
               f"stored int8 [out, in] already")
    use = _cpu_speedup(model, wanted, refusal, pays=lambda: model.has_decoding_copy() or _copy_fits(model))
    return model.decoding_copy() if use else model


def _cpu_speedup(model: Model, wanted: Optional[bool], refusal: str, pays: Callable[[], bool]) -> bool:
    """Whether decoding takes one of its CPU speed-ups for float models: as `wanted` (asking for it on a quantized
    model is a GenerationError, `refusal`), or by default (None) on a float model on CPU where `pays()`."""
    float_model = model.runtime.quantize == "none"
    if wanted and not float_model:
        raise GenerationError(refusal)
    if wanted is None:
        return float_model and jax.default_backend() == "cpu" and pays()
    return wanted


@jax.jit
def _per_layer_caches(stacked: LayerCache) -> tuple[LayerCache, ...]:
    """A scanned prefill's cache ([layers, B·H, slots, D] each) as the unrolled decode loop takes it: one per
    layer (copied once per generate, not per step)."""
    return tuple(LayerCache(key, value) for key, value in zip(stacked.key, stacked.value))


def _copy_fits(model: Model) -> bool:
    """Whether a copy of the model's kernels (this host's shards of them) takes at most half the host's available
    memory, so that the faster decode never pushes an evaluation that fits into swapping or running out. Asked
    only before the copy is made: once it exists, it has taken its share of that memory itself."""
    copy = sum(shard.data.nbytes for kernel in layout.kernels(model.params).values()
               for shard in kernel.addressable_shards)
    available = host_memory.available_bytes()
    fits = available is not None and 2 * copy <= available
    if not fits:
        logger.info("decoding through the [in, out] kernels: a [out, in] copy (%.1f GB) would not fit in half of "
                    "the available host memory", copy / 1e9)
    return fits


def _generated_lengths(tokens: np.ndarray, pad_id: int) -> np.ndarray:
    """Tokens each row generated: up to its last non-pad token (a row's padding only ever follows its stop)."""
    real = tokens != pad_id
    return np.where(real.any(axis=1), tokens.shape[1] - np.argmax(real[:, ::-1], axis=1), 0)


def rows_sharding(mesh: Mesh, batch: int) -> NamedSharding:
    """Prompt rows split over the mesh as the rules place "batch" (data × fsdp); whole on every device when the
    batch does not divide (generate_text keeps its batch size, so results never depend on the mesh's shape)."""
    sharding = batch_sharding(mesh, DEFAULT_RULES)
    rows = sharding.spec[0]
    ways = math.prod(mesh.shape[axis] for axis in ((rows,) if isinstance(rows, str) else rows or ()))
    return sharding if batch % ways == 0 else NamedSharding(mesh, PartitionSpec())


def to_devices(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A host array (the same on every process) as a global array: each device takes just its own slice."""
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def to_host(array: jax.Array) -> np.ndarray:
    """The whole value on this host, also when it spans devices of other processes (a multi-host job)."""
    if array.is_fully_addressable:
        return np.asarray(array)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def _decode_with_stop_strings(model: Model, state: _State, decode, sampling: _Sampling, max_new_tokens: int,
                              stop_strings: Sequence[str], tokenizer: "Tokenizer") -> tuple[np.ndarray, int]:
    """Decode in chunks; between chunks, finish (and pad) rows whose generated text contains a stop string.
    Returns the tokens and the decode steps taken."""
    pad_id = model.config.pad_token_id
    checked = 0  # generated tokens already searched for stop strings
    unchecked_rows = np.ones(state.done.shape, bool)  # rows that may still complete a stop string
    while True:
        step = int(to_host(state.step))
        tokens = np.array(to_host(state.tokens))
        done = np.array(to_host(state.done))
        for row in np.flatnonzero(unchecked_rows):
            end = _stop_string_end(tokens[row, :step], checked, stop_strings, tokenizer)
            if end is not None:
                tokens[row, end + 1:] = pad_id
                done[row] = True
        unchecked_rows &= ~done
        checked = step
        if step >= max_new_tokens or done.all():
            return tokens[:, :max_new_tokens], step
        state = state._replace(tokens=to_devices(tokens, state.tokens.sharding),
                               done=to_devices(done, state.done.sharding))
        limit = min(step + STOP_STRING_CHECK_EVERY, max_new_tokens)
        state = decode(state, jnp.int32(limit), sampling)


def generate_text(model: Model, tokenizer: "Tokenizer", prompts: Sequence[str], *, max_new_tokens: int,
                  batch_size: int, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                  stop_strings: Sequence[str] = (), stats: Optional[GenerationStats] = None) -> list[str]:
    """Completions of `prompts` (in their order), stopped at EOS or a stop string (which is cut off).

    Each prompt becomes `[bos] + encode(prompt)`, truncated from the left (BOS kept) to fit
    `max_position_embeddings - max_new_tokens`. Prompts are sorted by length into batches so rows of a batch
    need little padding; the last batch is filled up to `batch_size` by repeating its last prompt, so every
    batch has the same shape and compiles are shared.
    """
    if batch_size < 1:
        raise GenerationError(f"batch_size must be ≥ 1, got {batch_size}")
    room = model.config.max_position_embeddings - max_new_tokens
    if room < 2:
        raise GenerationError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt within "
                              f"max_position_embeddings {model.config.max_position_embeddings}")
    encoded = [[tokenizer.bos_id, *tokenizer.encode(p)[-(room - 1):]] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    texts: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        members = order[start:start + batch_size]
        rows = [encoded[i] for i in members]
        rows += [rows[-1]] * (batch_size - len(rows))
        width = max(len(r) for r in rows)
        ids = np.array([[tokenizer.pad_id] * (width - len(r)) + r for r in rows], np.int32)
        mask = np.array([[0] * (width - len(r)) + [1] * len(r) for r in rows], np.int32)
        new = generate(model, ids, mask, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                       seed=seed + start, stop_token_ids=(tokenizer.eos_id,), stop_strings=stop_strings,
                       tokenizer=tokenizer, stats=stats, real_rows=len(members))
        for i, tokens in zip(members, new):
            texts[i] = _cut_at_stop_strings(tokenizer.decode(tokens.tolist()), stop_strings)
    return texts


def _cut_at_stop_strings(text: str, stop_strings: Sequence[str]) -> str:
    cuts = [text.find(s) for s in stop_strings if s in text]
    return text[: min(cuts)] if cuts else text


def compile_ahead_of_time(module: OPTForCausalLM, params: Any, mesh: Mesh, batch: int, prompt: int,
                          max_new_tokens: int) -> tuple[Any, Any]:
    """(prefill, greedy decode) compiled for abstract `params` (ShapeDtypeStructs with shardings) and a
    [batch, prompt] prompt — the programs `generate` would run, built without allocating a parameter, so the
    planner (alert_jax/plan.py) can read their memory use for models larger than this machine. Decoding reads
    the float head, as `generate` does by default on the accelerators the planner sizes for (no head screen)."""
    rows = rows_sharding(mesh, batch)
    prompt_spec = jax.ShapeDtypeStruct((batch, prompt), jnp.int32, sharding=rows)
    replicated = NamedSharding(mesh, PartitionSpec())
    sampling = _Sampling(jax.ShapeDtypeStruct((module.cfg.vocab_size,), jnp.bool_, sharding=replicated),
                         jax.ShapeDtypeStruct((), jnp.float32, sharding=replicated),
                         jax.ShapeDtypeStruct((), jnp.float32, sharding=replicated),
                         jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=replicated))
    with logical_sharding(mesh, DEFAULT_RULES):
        prefill = _prefill_program(module).lower(params, prompt_spec, prompt_spec,
                                                 new_slots=bucket_length(max_new_tokens)).compile()
        state = jax.tree.map(lambda shape, sharding: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding),
                             prefill.out_info, prefill.output_shardings)
        limit = jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated)
        decode = _decode_program(module, _GREEDY).lower(params, None, state, limit, sampling).compile()
    return prefill, decode
