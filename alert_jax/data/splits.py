"""The one definition of a finetuning corpus's validation split, shared by the trainer's raw-file path
(`alert_jax.train.corpus`) and the TFDS builder (`alert_jax.data.tfds_builders`), so a run reads the same
training rows from either.

An example is held out by a hash of (its source, its input text), not by position or a seeded shuffle: its
split never depends on file order or on which other examples are present (ids are often positional), and a
question duplicated within a source never straddles train and validation.
"""
from __future__ import annotations

import hashlib

_HASH_RANGE = 1 << 64


def is_validation(source: str, input_text: str, fraction: float) -> bool:
    """Whether the example belongs to the held-out `fraction` (0 → never, 1 → always) of its source."""
    digest = hashlib.sha256(f"{source}\x00{input_text}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < fraction * _HASH_RANGE
