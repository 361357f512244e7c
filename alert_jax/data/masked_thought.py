"""Masked Thought (Chen et al. 2024): during CoT finetuning, hide a fraction of the rationale from the *inputs*.

Each training example's rationale tokens are, with `data.masked_thought_rate` r, replaced in the model's inputs
by `<unk>` (OPT has no mask token; `<unk>` is in its vocabulary and never produced by its tokenizer), while the
targets keep the true next tokens: the model must predict a reasoning step without seeing every earlier token
of it, a regulariser against copying surface patterns. Exactly round(r · n) of an example's n rationale tokens
are replaced, chosen by a generator seeded with (train.seed, the example's index), so a run's rows are
reproducible and cacheable. Prompts, the answer statement and EOS are never touched.

Which target tokens are rationale: the CoT target is `<rationale> The answer is <answer>.` tokenized as one
text; the rationale tokens are the longest common prefix of that and the rationale tokenized alone — exactly
the tokens that spell rationale text, whatever the tokenizer does at the boundary.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from alert_jax.data.templates import ANSWER_CUE, PROMPT_TARGET_SEPARATOR
from alert_jax.data.tokenizer import Tokenizer


def rationale_tokens(tokenizer: Tokenizer, target: str, target_ids: Sequence[int]) -> int:
    """How many leading ids of `target_ids` (the tokenized separator + `target`) spell its rationale; 0 for a
    target without one (FT answers, bare `The answer is …` statements)."""
    cue = f" {ANSWER_CUE} "
    if cue not in target:
        return 0
    rationale = target.rsplit(cue, 1)[0]
    alone = tokenizer.encode(PROMPT_TARGET_SEPARATOR + rationale)
    common = 0
    for a, b in zip(alone, target_ids):
        if a != b:
            break
        common += 1
    return common


def mask_rationale(target_ids: Sequence[int], n_rationale: int, rate: float, rng: np.random.Generator,
                   mask_id: int) -> list[int]:
    """`target_ids` with round(rate · n_rationale) of its first `n_rationale` ids replaced by `mask_id`."""
    shown = list(target_ids)
    for position in rng.choice(n_rationale, size=round(rate * n_rationale), replace=False):
        shown[int(position)] = mask_id
    return shown
