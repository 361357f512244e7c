"""One decode step of alert_jax's greedy `generate`: the bytes it must move, and the seconds it takes.

Shared by the roofline (bytes against this machine's bandwidth) and the accelerator benchmark (tokens/s against
the chip's HBM bound), so that both count the same bytes for the same program.
"""
from __future__ import annotations

from typing import Optional

import jax
import numpy as np

from alert_jax.generation import bucket_length, generate
from alert_jax.model.model import Model
from alert_jax.model.opt import head_table
from alert_jax.model.screened_head import CANDIDATES, head_screen
from timing import best_seconds  # noqa: E402  (benchmarks/timing.py)


def cache_slots(prompt_len: int, new_tokens: int) -> int:
    """KV-cache slots `generate` allocates for a full-length prompt: the prompt and the new tokens, each rounded
    up to its bucket (`bucket_length`), so a decode step reads more slots than prompt + new."""
    return bucket_length(prompt_len) + bucket_length(new_tokens)


def tree_bytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def weight_bytes(model: Model) -> int:
    """Bytes of the parameters as stored (int8 kernels and their scales after quantisation), each read once per
    step (the tied token embedding as the LM head) — all but the position table, of which a step reads only
    `batch` rows (it stays float32 under int8, where counting it whole would add ~7% to a 6-layer opt-125m)."""
    return tree_bytes(model.params) - tree_bytes(model.params["decoder"]["embed_positions"])


def screened_weight_bytes(model: Model, batch: int) -> int:
    """`weight_bytes` of a greedy step through the LM head's int8 screen (model/screened_head.py): the screen
    (int8 table and three float32 numbers per vocabulary row) and each row's recomputed candidate rows replace
    the float head."""
    head = head_table(model.params)
    screen = jax.eval_shape(lambda table: head_screen(table, model.runtime.dtype), head)
    candidates = batch * min(CANDIDATES, head.shape[0]) * head.shape[1] * head.dtype.itemsize
    return weight_bytes(model) - head.size * head.dtype.itemsize + tree_bytes(screen) + candidates


def kv_cache_bytes(model: Model, batch: int, slots: int) -> int:
    """Bytes of the KV cache one step moves: every layer's keys and values ([batch·heads, slots, head_dim] each,
    in the compute dtype) read whole, since every attention path scores all slots and masks the unused ones, and
    one slot of each written."""
    cfg = model.config
    itemsize = np.dtype(model.runtime.dtype).itemsize
    return 2 * cfg.num_hidden_layers * batch * (slots + 1) * cfg.hidden_size * itemsize


def decode_step_bytes(model: Model, batch: int, prompt_len: int, new_tokens: int, screen_head: bool = False) -> int:
    """What one decode step of `generate(model, [batch, prompt_len] prompt, max_new_tokens=new_tokens,
    screen_head=screen_head)` must move: the weights (the head's screen in place of the float head when
    screened) and the whole KV cache."""
    weights = screened_weight_bytes(model, batch) if screen_head else weight_bytes(model)
    return weights + kv_cache_bytes(model, batch, cache_slots(prompt_len, new_tokens))


def decode_step_seconds(model: Model, batch: int, prompt_len: int, *, short: int, long: int,
                        repeats: int, screen_head: Optional[bool] = None, out_in_kernels: Optional[bool] = None
                        ) -> float:
    """Seconds per decode step: (best time of `long` new tokens − best time of `short`) / (long − short), greedy
    with no stop token on random full-length prompts (`screen_head`, `out_in_kernels` as `generate` takes them:
    None is its default). The difference drops prefill, and each length's warm-up call drops its compile; a noisy
    difference below zero is clamped to 1 ns, so tokens/s stays finite."""
    ids = np.random.RandomState(0).randint(4, model.config.vocab_size, (batch, prompt_len)).astype(np.int32)
    mask = np.ones_like(ids)
    run = lambda new: best_seconds(lambda: generate(model, ids, mask, max_new_tokens=new, screen_head=screen_head,
                                                    out_in_kernels=out_in_kernels), repeats)
    return max(run(long) - run(short), 1e-9) / (long - short)
