"""From an `alert-jax sample` workdir to the alignment trainer's packed rows (alert_jax/train/objectives.py).

Each sampled CoT is one segment (its finetuning prompt, then its generation + EOS, tokenized by
`corpus.tokenize_pairs` as at sample time); a question's samples stay together in one row
(`packing.pack_groups`), and each segment slot gets its question number within the row, its label (1 correct,
0 wrong) and its reference log-likelihood (the sampling model's, stored with the sample, for DPO). The rows are
a pure function of the samples file and the tokenizer, so a resumed run rebuilds exactly the rows it started with.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from alert_jax.data.packing import Packed, pack_groups
from alert_jax.data.tokenizer import Tokenizer
from alert_jax.errors import AlertJaxError
from alert_jax.sampling import SAMPLES_FILE, read_samples
from alert_jax.train.corpus import tokenize_pairs
from alert_jax.train.objectives import SAMPLE_FIELD_DTYPES, SEGMENT_SLOTS


def grouped_samples(samples_dir: str | Path) -> list[list[dict[str, Any]]]:
    """The samples of each question (questions in order of first appearance, samples by index)."""
    path = Path(samples_dir) / SAMPLES_FILE
    records = read_samples(path)
    if not records:
        raise AlertJaxError(f"alignment.samples={samples_dir}: {path} holds no samples (run `alert-jax sample`)")
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[record["question"]].append(record)
    return [sorted(members, key=lambda r: r["sample"]) for members in groups.values()]


def alignment_rows(samples_dir: str | Path, tokenizer: Tokenizer, seq_len: int) -> Packed:
    """Packed rows of every sample, with the per-segment fields `objectives.SAMPLE_FIELD_DTYPES`."""
    groups = grouped_samples(samples_dir)
    flat = [r for members in groups for r in members]
    packed, row_groups = pack_groups(tokenize_pairs(tokenizer, [(r["prompt"], r["generation"]) for r in flat]),
                                     [len(members) for members in groups], seq_len, SEGMENT_SLOTS)
    shape = (len(row_groups), SEGMENT_SLOTS)
    fields = {name: np.zeros(shape, dtype) for name, dtype in SAMPLE_FIELD_DTYPES.items()}
    index = 0
    for row, members in enumerate(row_groups):
        first = members[0]
        for slot, group in enumerate(members):
            record = flat[index]
            fields["sample_group"][row, slot] = group - first + 1
            fields["sample_label"][row, slot] = float(record["correct"])
            fields["ref_logp"][row, slot] = record["logp"]
            index += 1
    return Packed({**packed.arrays, **fields}, packed.stats)
