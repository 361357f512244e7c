"""Packed rows per docs/contracts.md ("Packed batch"), checked against hand-written arrays (seqio feature-converter style)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alert_jax.data.packing import (
    FIELDS,
    PackingError,
    batches,
    pack,
    pad_per_example,
    steps_per_epoch,
    tokenize_example,
)
from alert_jax.data.tokenizer import Tokenizer

BOS = 2


def as_lists(packed) -> dict[str, list]:
    return {name: packed.arrays[name].tolist() for name in FIELDS}


def test_golden_best_fit_decreasing_rows():
    examples = [
        ([BOS, 10, 11], [12, 13]),          # 5 tokens
        ([BOS, 20], [21]),                  # 3 tokens
        ([BOS, 30, 31, 32], [33, 34, 35]),  # 7 tokens
    ]
    packed = pack(examples, seq_len=8)
    # Longest first: [30..] opens row 0 (1 free), [10..] does not fit → row 1, [20..] fits row 1.
    assert as_lists(packed) == {
        "inputs": [[2, 30, 31, 32, 33, 34, 35, 0],
                   [2, 10, 11, 12, 13, 2, 20, 21]],
        "targets": [[30, 31, 32, 33, 34, 35, 0, 0],
                    [10, 11, 12, 13, 0, 20, 21, 0]],
        "segment_ids": [[1, 1, 1, 1, 1, 1, 1, 0],
                        [1, 1, 1, 1, 1, 2, 2, 2]],
        "positions": [[0, 1, 2, 3, 4, 5, 6, 0],
                      [0, 1, 2, 3, 4, 0, 1, 2]],
        "loss_weights": [[0, 0, 0, 1, 1, 1, 0, 0],
                         [0, 0, 1, 1, 0, 0, 1, 0]],
    }
    assert {name: packed.arrays[name].dtype for name in FIELDS} == {
        "inputs": np.int32, "targets": np.int32, "segment_ids": np.int32,
        "positions": np.int32, "loss_weights": np.float32,
    }
    stats = packed.stats
    assert (stats.examples, stats.rows, stats.real_tokens, stats.total_tokens) == (3, 2, 15, 16)
    assert (stats.truncated, stats.dropped, stats.efficiency) == (0, 0, 15 / 16)


def test_golden_padding_baseline_and_efficiency():
    examples = [([BOS], [5]), ([BOS, 6], [7]), ([BOS], [8, 9]), ([BOS], [4])]
    baseline = pad_per_example(examples, seq_len=4)
    assert as_lists(baseline) == {
        "inputs": [[2, 5, 0, 0], [2, 6, 7, 0], [2, 8, 9, 0], [2, 4, 0, 0]],
        "targets": [[5, 0, 0, 0], [6, 7, 0, 0], [8, 9, 0, 0], [4, 0, 0, 0]],
        "segment_ids": [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 0, 0]],
        "positions": [[0, 1, 0, 0], [0, 1, 2, 0], [0, 1, 2, 0], [0, 1, 0, 0]],
        "loss_weights": [[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0]],
    }
    assert baseline.stats.efficiency == 10 / 16
    packed = pack(examples, seq_len=4)
    # Sorted 3,3,2,2: rows [6 7 | ...] and [8 9 | ...] cannot take a 2; the two 2s share row 2.
    assert as_lists(packed)["inputs"] == [[2, 6, 7, 0], [2, 8, 9, 0], [2, 5, 2, 4]]
    assert as_lists(packed)["loss_weights"] == [[0, 1, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0]]
    assert (packed.stats.rows, packed.stats.real_tokens, packed.stats.efficiency) == (3, 10, 10 / 12)


class CodePointTokenizer(Tokenizer):
    """One id per character (its code point + 10), OPT's special ids below 10."""

    vocab_size, bos_id, eos_id, pad_id, unk_id = 0x110000 + 10, 2, 2, 1, 3

    def encode(self, text):
        return [ord(c) + 10 for c in text]

    def decode(self, ids):
        return "".join(chr(i - 10) for i in ids if i >= 10)

    def save(self, directory):
        raise NotImplementedError


def test_tokenize_example_puts_bos_on_the_prompt_and_the_separator_on_the_target():
    prompt_ids, target_ids = tokenize_example(CodePointTokenizer(), "Q:", "ab")
    assert prompt_ids == [2, ord("Q") + 10, ord(":") + 10]
    assert target_ids == [ord(" ") + 10, ord("a") + 10, ord("b") + 10]
    assert as_lists(pack([(prompt_ids, target_ids)], seq_len=6))["loss_weights"] == [[0, 0, 1, 1, 1, 0]]


def test_truncation_keeps_bos_prompt_tail_and_whole_target(caplog):
    examples = [
        ([BOS, 10, 11, 12, 13, 14], [20, 21]),  # prompt cut to BOS + tail
        ([BOS, 10, 11], [20, 21, 22, 23, 24, 25, 26]),  # even the target is too long
        ([BOS, 40], [41]),
    ]
    with caplog.at_level(logging.WARNING, logger="alert_jax.data.packing"):
        packed = pad_per_example(examples, seq_len=6)
    assert as_lists(packed) == {
        "inputs": [[2, 12, 13, 14, 20, 21], [2, 20, 21, 22, 23, 24], [2, 40, 41, 0, 0, 0]],
        "targets": [[12, 13, 14, 20, 21, 0], [20, 21, 22, 23, 24, 0], [40, 41, 0, 0, 0, 0]],
        "segment_ids": [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]],
        "positions": [[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5], [0, 1, 2, 0, 0, 0]],
        "loss_weights": [[0, 0, 0, 1, 1, 0], [1, 1, 1, 1, 1, 0], [0, 1, 0, 0, 0, 0]],
    }
    assert (packed.stats.truncated, packed.stats.dropped) == (2, 0)
    assert "2 of 3 examples longer than seq_len=6: 2 truncated, 0 dropped" in caplog.text


def test_drop_overflow_counts_and_skips(caplog):
    examples = [([BOS, 1, 1, 1, 1], [9]), ([BOS, 3], [4]), ([BOS], [5, 6, 7, 8, 9])]
    with caplog.at_level(logging.WARNING, logger="alert_jax.data.packing"):
        packed = pack(examples, seq_len=5, overflow="drop")
    assert as_lists(packed)["inputs"] == [[2, 3, 4, 0, 0]]
    assert (packed.stats.examples, packed.stats.rows, packed.stats.dropped, packed.stats.truncated) == (3, 1, 2, 0)
    assert "2 truncated" not in caplog.text and "0 truncated, 2 dropped" in caplog.text


def test_buffer_window_bounds_what_best_fit_can_see():
    examples = [([BOS, 1, 1], [1]), ([BOS, 2, 2], [2]), ([BOS], [3]), ([BOS], [4])]
    whole = pack(examples, seq_len=6)
    assert as_lists(whole)["inputs"] == [[2, 1, 1, 1, 2, 3], [2, 2, 2, 2, 2, 4]]
    windowed = pack(examples, seq_len=6, buffer_size=2)
    # Window 1 = the two 4-token examples; the short ones arrive later and share a new row.
    assert as_lists(windowed)["inputs"] == [[2, 1, 1, 1, 0, 0], [2, 2, 2, 2, 0, 0], [2, 3, 2, 4, 0, 0]]
    assert (whole.stats.efficiency, windowed.stats.efficiency) == (1.0, 12 / 18)


@pytest.mark.parametrize(
    "examples, kwargs, message",
    [
        ([([], [1])], {}, "example 0: empty prompt"),
        ([([BOS], [1]), ([BOS], [])], {}, "example 1: empty target"),
        ([([BOS], [1])], {"seq_len": 1}, "seq_len must be at least 2"),
        ([([BOS], [1])], {"overflow": "wrap"}, "overflow must be"),
        ([([BOS], [1])], {"buffer_size": 0}, "buffer_size must be positive"),
    ],
)
def test_invalid_input_is_a_clear_error(examples, kwargs, message):
    with pytest.raises(PackingError, match=message):
        pack(examples, **{"seq_len": 4, **kwargs})


token_lists = st.lists(st.integers(4, 50), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(token_lists, token_lists), min_size=1, max_size=12), st.integers(13, 16))
def test_every_example_is_recoverable_and_weighted_exactly_on_its_target(pairs, seq_len):
    examples = [([BOS, *prompt], target) for prompt, target in pairs]
    arrays = pack(examples, seq_len=seq_len).arrays
    recovered = []
    for row in range(len(arrays["inputs"])):
        segments = arrays["segment_ids"][row]
        for seg in sorted(set(segments.tolist()) - {0}):
            where = segments == seg
            tokens = arrays["inputs"][row][where].tolist()
            assert arrays["positions"][row][where].tolist() == list(range(len(tokens)))
            assert arrays["targets"][row][where].tolist() == tokens[1:] + [0]
            recovered.append((tokens, arrays["loss_weights"][row][where].tolist()))
    expected = [
        (p + t, [0.0] * (len(p) - 1) + [1.0] * len(t) + [0.0]) for p, t in examples
    ]
    assert sorted(recovered) == sorted(expected)


def labelled_rows(n: int, seq_len: int = 3) -> dict[str, np.ndarray]:
    """Rows whose every field holds the row number, so a batch shows which rows it took."""
    label = np.repeat(np.arange(n, dtype=np.int32)[:, None], seq_len, axis=1)
    return {name: label.copy() for name in FIELDS}


def row_ids(batch: dict[str, np.ndarray]) -> list[int]:
    return batch["inputs"][:, 0].tolist()


def test_batches_in_order_split_across_hosts_drop_remainder():
    rows = labelled_rows(10)
    assert steps_per_epoch(10, 4) == 2
    host0 = [row_ids(b) for b in batches(rows, 4, shard_index=0, shard_count=2)]
    host1 = [row_ids(b) for b in batches(rows, 4, shard_index=1, shard_count=2)]
    assert host0 == [[0, 1], [4, 5]]
    assert host1 == [[2, 3], [6, 7]]
    assert [row_ids(b) for b in batches(rows, 4, start_batch=1)] == [[4, 5, 6, 7]]
    assert set(next(batches(rows, 4))) == set(FIELDS)


def test_shuffled_batches_are_deterministic_shardable_and_resumable():
    rows = labelled_rows(24)
    full = [row_ids(b) for b in batches(rows, 6, seed=3, epoch=0)]
    assert len(full) == 4 and sorted(sum(full, [])) == list(range(24))
    assert full != [list(range(i, i + 6)) for i in range(0, 24, 6)]
    assert full == [row_ids(b) for b in batches(rows, 6, seed=3, epoch=0)]
    assert full != [row_ids(b) for b in batches(rows, 6, seed=3, epoch=1)]
    assert full != [row_ids(b) for b in batches(rows, 6, seed=4, epoch=0)]
    per_host = [[row_ids(b) for b in batches(rows, 6, shard_index=h, shard_count=3, seed=3)] for h in range(3)]
    assert [sum((per_host[h][step] for h in range(3)), []) for step in range(4)] == full
    assert [row_ids(b) for b in batches(rows, 6, seed=3, start_batch=2)] == full[2:]


def test_batches_reject_bad_sharding():
    with pytest.raises(PackingError, match="not divisible"):
        next(batches(labelled_rows(8), 4, shard_count=3))
    with pytest.raises(PackingError, match="shard_index 2 is outside"):
        next(batches(labelled_rows(8), 4, shard_index=2, shard_count=2))
