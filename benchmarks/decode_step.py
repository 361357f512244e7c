"""One decode step of alert_jax's greedy `generate`: the bytes it must move, and the seconds it takes.

Shared by the roofline (bytes against this machine's bandwidth) and the accelerator benchmark (tokens/s against
the chip's HBM bound), so that both count the same bytes for the same program.
"""
from __future__ import annotations

import jax
import numpy as np

from alert_jax.generation import bucket_length, generate
from alert_jax.model.model import Model
from timing import best_seconds  # noqa: E402  (benchmarks/timing.py)


def cache_slots(prompt_len: int, new_tokens: int) -> int:
    """KV-cache slots `generate` allocates for a full-length prompt: the prompt and the new tokens, each rounded
    up to its bucket (`bucket_length`), so a decode step reads more slots than prompt + new."""
    return bucket_length(prompt_len) + bucket_length(new_tokens)


def weight_bytes(model: Model) -> int:
    """Bytes of the parameters as stored (int8 kernels and their scales after quantisation), each read once per
    step (the tied token embedding as the LM head) — all but the position table, of which a step reads only
    `batch` rows (it stays float32 under int8, where counting it whole would add ~7% to a 6-layer opt-125m)."""
    tree_bytes = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
    return tree_bytes(model.params) - tree_bytes(model.params["decoder"]["embed_positions"])


def kv_cache_bytes(model: Model, batch: int, slots: int) -> int:
    """Bytes of the KV cache one step moves: every layer's keys and values ([batch·heads, slots, head_dim] each,
    in the compute dtype) read whole, since every attention path scores all slots and masks the unused ones, and
    one slot of each written."""
    cfg = model.config
    itemsize = np.dtype(model.runtime.dtype).itemsize
    return 2 * cfg.num_hidden_layers * batch * (slots + 1) * cfg.hidden_size * itemsize


def decode_step_bytes(model: Model, batch: int, prompt_len: int, new_tokens: int) -> int:
    """What one decode step of `generate(model, [batch, prompt_len] prompt, max_new_tokens=new_tokens)` must
    move: the weights and the whole KV cache."""
    return weight_bytes(model) + kv_cache_bytes(model, batch, cache_slots(prompt_len, new_tokens))


def decode_step_seconds(model: Model, batch: int, prompt_len: int, *, short: int, long: int,
                        repeats: int) -> float:
    """Seconds per decode step: (best time of `long` new tokens − best time of `short`) / (long − short), greedy
    with no stop token on random full-length prompts. The difference drops prefill, and each length's warm-up
    call drops its compile; a noisy difference below zero is clamped to 1 ns, so tokens/s stays finite."""
    ids = np.random.RandomState(0).randint(4, model.config.vocab_size, (batch, prompt_len)).astype(np.int32)
    mask = np.ones_like(ids)
    run = lambda new: best_seconds(lambda: generate(model, ids, mask, max_new_tokens=new), repeats)
    return max(run(long) - run(short), 1e-9) / (long - short)
