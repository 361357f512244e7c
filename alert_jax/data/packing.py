"""Packing tokenized (prompt, target) examples into fixed-length rows (docs/contracts.md, "Packed batch").

Every row has `seq_len` columns and five aligned arrays:
  inputs       int32   the example tokens, prompt then target, examples back to back, 0 on padding
  targets      int32   the next token *of the same example*; 0 on each example's last token and padding
  segment_ids  int32   1..k for the k examples in the row, 0 on padding
  positions    int32   0-based position within the example (the model adds OPT's offset of 2)
  loss_weights float32 1 exactly where `targets` holds a target-side token: the first target token
                       (predicted from the last prompt token) counts, prompt tokens, each example's
                       last token and padding get 0 — so no token ever predicts the next example.

BOS: the caller passes prompt ids that already start with BOS (`Tokenizer.encode_with_bos`, or
`tokenize_example`); the packer adds no token of its own (no EOS, no separator).

Placement is best-fit-decreasing over a bounded window of `buffer_size` examples taken in input
order: within a window, examples are sorted by length (longest first, ties by input order) and each
goes into the row of that window with the least room that still fits it (ties: the older row), or
opens a new row; rows are emitted in creation order. This is deterministic, keeps memory bounded
for streaming corpora, costs O(log rows) per example, and on realistic length mixes comes within a
few percent of optimal.

Examples longer than `seq_len` are either dropped or truncated (`overflow`). Truncation keeps the
whole target when it fits, and of the prompt its first token (BOS) and its *tail* — the question
sits at the end of an instruction + demonstrations prompt, so the tail is what the target depends
on. When even the target does not fit, the prompt is cut to its first token and the target keeps
its head.
"""
from __future__ import annotations

import bisect
import dataclasses
import logging
from typing import Callable, Iterator, Literal, Mapping, Sequence

import numpy as np

from alert_jax.data.templates import PROMPT_TARGET_SEPARATOR
from alert_jax.data.tokenizer import Tokenizer
from alert_jax.errors import AlertJaxError

log = logging.getLogger(__name__)

FIELD_DTYPES = {"inputs": np.int32, "targets": np.int32, "segment_ids": np.int32, "positions": np.int32,
                "loss_weights": np.float32}
FIELDS = tuple(FIELD_DTYPES)
Overflow = Literal["truncate", "drop"]
TokenizedExample = tuple[Sequence[int], ...]
"""(prompt ids, target ids), or (prompt ids, target ids, target ids as the inputs show them): the third, as
long as the target, replaces the target in `inputs` only — `targets` keep the real ids (Masked Thought)."""


def tokenize_example(tokenizer: Tokenizer, prompt: str, target: str) -> TokenizedExample:
    """(BOS + prompt ids, ids of the separator + target): the pair `pack` expects.

    The separator that joins prompt and target at evaluation time is tokenized with the target,
    so the model learns to emit it and generation can start right after the prompt's last token.
    """
    return tokenizer.encode_with_bos(prompt), tokenizer.encode(PROMPT_TARGET_SEPARATOR + target)


class PackingError(AlertJaxError):
    """An example cannot be packed (empty prompt or target) or the packing options are invalid."""


@dataclasses.dataclass(frozen=True)
class PackingStats:
    """How well the rows were filled; `efficiency` = real_tokens / total_tokens."""

    examples: int
    rows: int
    real_tokens: int
    total_tokens: int
    truncated: int
    dropped: int

    @property
    def efficiency(self) -> float:
        return self.real_tokens / self.total_tokens if self.total_tokens else 0.0


@dataclasses.dataclass(frozen=True)
class Packed:
    """Rows as a dict of `[rows, seq_len]` arrays keyed by `FIELDS`, plus how they were made."""

    arrays: dict[str, np.ndarray]
    stats: PackingStats


@dataclasses.dataclass(frozen=True)
class _Fitted:
    tokens: np.ndarray  # int32, prompt then target
    prompt_len: int
    inputs: np.ndarray  # what the model is shown: `tokens`, or with the target's shown ids


def _fit(prompt: Sequence[int], target: Sequence[int], seq_len: int, shown: Sequence[int] | None = None) -> _Fitted:
    """The example cut to `seq_len` as described in the module doc (unchanged when it fits)."""
    prompt_budget = max(1, seq_len - len(target))
    if len(prompt) > prompt_budget:
        prompt = [prompt[0], *prompt[len(prompt) - prompt_budget + 1:]]
    keep = seq_len - len(prompt)
    tokens = np.concatenate([np.asarray(prompt, np.int32), np.asarray(target[:keep], np.int32)])
    inputs = tokens if shown is None else np.concatenate(
        [np.asarray(prompt, np.int32), np.asarray(shown[:keep], np.int32)])
    return _Fitted(tokens, len(prompt), inputs)


def _prepare(
    examples: Sequence[TokenizedExample], seq_len: int, overflow: Overflow
) -> tuple[list[_Fitted], int, int]:
    """Validate, then truncate or drop over-long examples; returns (kept, truncated, dropped)."""
    if seq_len < 2:
        raise PackingError(f"seq_len must be at least 2, got {seq_len}")
    if overflow not in ("truncate", "drop"):
        raise PackingError(f"overflow must be 'truncate' or 'drop', got {overflow!r}")
    kept, truncated, dropped = [], 0, 0
    for index, (prompt, target, *shown) in enumerate(examples):
        if shown and len(shown[0]) != len(target):
            raise PackingError(f"example {index}: the shown target has {len(shown[0])} ids, the target {len(target)}")
        if not len(prompt):
            raise PackingError(f"example {index}: empty prompt (prompts must start with BOS)")
        if not len(target):
            raise PackingError(f"example {index}: empty target (nothing to learn from)")
        too_long = len(prompt) + len(target) > seq_len
        if too_long and overflow == "drop":
            dropped += 1
            continue
        kept.append(_fit(prompt, target, seq_len, shown[0] if shown else None))
        truncated += too_long
    if truncated or dropped:
        log.warning(
            "%d of %d examples longer than seq_len=%d: %d truncated, %d dropped",
            truncated + dropped, len(examples), seq_len, truncated, dropped,
        )
    return kept, truncated, dropped


def _best_fit_decreasing(lengths: Sequence[int], seq_len: int, buffer_size: int) -> list[list[int]]:
    rows: list[list[int]] = []
    for start in range(0, len(lengths), buffer_size):
        window = range(start, min(start + buffer_size, len(lengths)))
        window_rows: list[list[int]] = []
        by_room: list[tuple[int, int]] = []  # (free columns, row number), kept sorted
        for index in sorted(window, key=lambda i: (-lengths[i], i)):
            slot = bisect.bisect_left(by_room, (lengths[index], -1))
            if slot == len(by_room):
                row, room = len(window_rows), seq_len
                window_rows.append([])
            else:
                room, row = by_room.pop(slot)
            window_rows[row].append(index)
            bisect.insort(by_room, (room - lengths[index], row))
        rows.extend(window_rows)
    return rows


def _write_rows(fitted: Sequence[_Fitted], assignment: Sequence[Sequence[int]], seq_len: int) -> dict[str, np.ndarray]:
    shape = (len(assignment), seq_len)
    arrays = {name: np.zeros(shape, dtype) for name, dtype in FIELD_DTYPES.items()}
    for row, members in enumerate(assignment):
        offset = 0
        for segment, index in enumerate(members, start=1):
            example = fitted[index]
            n = len(example.tokens)
            span = slice(offset, offset + n)
            arrays["inputs"][row, span] = example.inputs
            arrays["targets"][row, offset:offset + n - 1] = example.tokens[1:]
            arrays["segment_ids"][row, span] = segment
            arrays["positions"][row, span] = np.arange(n)
            # Position i predicts token i+1; weight it iff token i+1 belongs to the target.
            arrays["loss_weights"][row, offset + example.prompt_len - 1:offset + n - 1] = 1.0
            offset += n
    return arrays


Assign = Callable[[Sequence[int]], list[list[int]]]


def _build(examples: Sequence[TokenizedExample], seq_len: int, overflow: Overflow, assign: Assign) -> Packed:
    fitted, truncated, dropped = _prepare(examples, seq_len, overflow)
    assignment = assign([len(f.tokens) for f in fitted])
    arrays = _write_rows(fitted, assignment, seq_len)
    stats = PackingStats(
        examples=len(examples),
        rows=len(assignment),
        real_tokens=int(np.count_nonzero(arrays["segment_ids"])),
        total_tokens=len(assignment) * seq_len,
        truncated=truncated,
        dropped=dropped,
    )
    return Packed(arrays, stats)


def pack(
    examples: Sequence[TokenizedExample],
    seq_len: int,
    *,
    overflow: Overflow = "truncate",
    buffer_size: int = 4096,
) -> Packed:
    """Pack (prompt_ids, target_ids) pairs into rows, best-fit-decreasing per `buffer_size` window."""
    if buffer_size < 1:
        raise PackingError(f"buffer_size must be positive, got {buffer_size}")
    return _build(examples, seq_len, overflow, lambda lengths: _best_fit_decreasing(lengths, seq_len, buffer_size))


def pad_per_example(examples: Sequence[TokenizedExample], seq_len: int, *, overflow: Overflow = "truncate") -> Packed:
    """The unpacked baseline — one example per row, padded — to measure what packing saves."""
    return _build(examples, seq_len, overflow, lambda lengths: [[i] for i in range(len(lengths))])


def steps_per_epoch(num_rows: int, batch_size: int) -> int:
    """Full global batches in one epoch (the incomplete last batch is dropped so hosts stay in lockstep)."""
    return num_rows // batch_size


def batches(
    rows: Mapping[str, np.ndarray],
    batch_size: int,
    *,
    shard_index: int = 0,
    shard_count: int = 1,
    start_batch: int = 0,
    seed: int | None = None,
    epoch: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """This host's slices of one epoch of global batches.

    `batch_size` is the *global* batch; host `shard_index` of `shard_count` gets rows
    `[shard_index * b, (shard_index + 1) * b)` of each global batch, with `b = batch_size / shard_count`,
    so the hosts together see exactly the global batch and none reads another's rows. With `seed`
    set, the epoch's row order is a permutation drawn from (seed, epoch) — identical on every host
    without communication. `start_batch` resumes mid-epoch: the batches yielded are exactly those
    an uninterrupted run would have yielded from that index on.
    """
    if batch_size % shard_count:
        raise PackingError(f"batch_size {batch_size} is not divisible by shard_count {shard_count}")
    if not 0 <= shard_index < shard_count:
        raise PackingError(f"shard_index {shard_index} is outside 0..{shard_count - 1}")
    num_rows = len(rows["inputs"])
    order = np.arange(num_rows) if seed is None else np.random.default_rng([seed, epoch]).permutation(num_rows)
    local = batch_size // shard_count
    for step in range(start_batch, steps_per_epoch(num_rows, batch_size)):
        begin = step * batch_size + shard_index * local
        picked = order[begin:begin + local]
        yield {name: array[picked] for name, array in rows.items()}


def pack_groups(examples: Sequence[TokenizedExample], group_sizes: Sequence[int], seq_len: int,
                max_segments: int) -> tuple[Packed, list[list[int]]]:
    """Pack examples so that each group (consecutive runs of `group_sizes` examples: one question's samples)
    lies whole in one row — the ranking objectives compare a question's samples within a row.

    Groups are placed in order, each into the current row while it fits (`seq_len` columns, `max_segments`
    segments), else into a new row; over-long examples are truncated as `pack` does. Returns the rows and,
    per row, the group index of each of its segments.
    """
    if sum(group_sizes) != len(examples):
        raise PackingError(f"group sizes add up to {sum(group_sizes)}, not the {len(examples)} examples")
    row_groups: list[list[int]] = []

    def assign(lengths: Sequence[int]) -> list[list[int]]:
        rows: list[list[int]] = []
        used = seq_len
        start = 0
        for group, size in enumerate(group_sizes):
            members = list(range(start, start + size))
            need = sum(lengths[i] for i in members)
            if need > seq_len or size > max_segments:
                raise PackingError(f"group {group}: {size} examples of {need} tokens do not fit one row of "
                                   f"{seq_len} tokens and {max_segments} segments (raise train.seq_len or lower "
                                   "alignment.k / alignment.max_new_tokens)")
            if not rows or used + need > seq_len or len(rows[-1]) + size > max_segments:
                rows.append([])
                row_groups.append([])
                used = 0
            rows[-1] += members
            row_groups[-1] += [group] * size
            used += need
            start += size
        return rows

    return _build(examples, seq_len, "truncate", assign), row_groups
