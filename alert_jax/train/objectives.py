"""Training objectives: `sft` (the token loss) and the ranking objectives over sampled chains of thought —
`aft` (Wang et al. 2023, arXiv 2309.02144), and its baselines `rrhf` (Yuan et al. 2023) and `dpo`
(Rafailov et al. 2023).

An alignment batch is packed rows (docs/contracts.md) with one segment per sampled CoT, plus per-segment
fields `[B, S]` (S = `SEGMENT_SLOTS`, slot s describes segment s + 1):
  sample_group  int32   the question the sample answers, numbered within its row (0 = no sample in the slot);
                        a question's samples are never split across rows, so every comparison is within a row
  sample_label  float32 its quality: 1 correct, 0 wrong (a graded rank where a dataset gives one; higher = better)
  ref_logp      float32 its summed log-likelihood under the frozen reference model (DPO), stored at sample time

A sample's *score* is its length-normalised log-likelihood: the mean log-probability of its target tokens
(those with loss weight 1, EOS included). A *pair* (p, n) is two samples of one question with
label(p) > label(n); with binary labels, every correct sample against every wrong one.

Per question q with pairs P_q (scores s, summed log-likelihoods l, reference r):
  alignment  A_q   = log(1 + sum_{(p,n) in P_q} exp(s_n - s_p))                     (the paper's alignment term)
  dc         DC_q  = A_q with s_n's gradient stopped once s_n < min_{p:(p,n) in P_q} s_p
                     (a negative is pushed down only while it outscores one of its positives)
  bc         BC_q  = A_q + boundary_weight * sum_n max(0, (min_p sg(s_p) - boundary) - s_n)
                     (a negative below the boundary is pushed back up, harder than A_q pushes it down)
  rrhf       R_q   = sum_{(p,n) in P_q} max(0, s_n - s_p)
  dpo        D_q   = mean_{(p,n) in P_q} -log sigmoid(beta * ((l_p - r_p) - (l_n - r_n)))
`aft` and `rrhf` add the token loss on every positive sample (RRHF's "SFT on the best": with binary labels every
correct CoT is a best one); `dpo` is the preference term alone. The ranking term is averaged over the questions
that have a pair, the token loss over the positive samples' target tokens, both over the global batch.
Which of these details are the paper's and which are ours: README, "Alignment fine-tuning".
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from alert_jax.config import AlignmentConfig
from alert_jax.errors import AlertJaxError

OBJECTIVES = ("sft", "aft", "rrhf", "dpo")
CONSTRAINTS = ("dc", "bc", "none")
SAMPLE_FIELD_DTYPES = {"sample_group": np.int32, "sample_label": np.float32, "ref_logp": np.float32}
RANKING_METRICS = ("token_loss", "rank_loss", "pair_accuracy")  # logged next to the loss by alignment runs
SEGMENT_SLOTS = 16  # samples per packed row at most
_MASKED = -1e9

Batch = dict[str, jax.Array]
Objective = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]  # (module, params, batch, dropout_key=None)


class ObjectiveError(AlertJaxError):
    """An unknown objective or constraint, or an alignment objective without samples."""


def check(objective: str, cfg: AlignmentConfig) -> None:
    """Refuse an unknown `train.objective` or `alignment.constraint`, naming the key."""
    if objective not in OBJECTIVES:
        raise ObjectiveError(f"train.objective={objective!r}: expected one of {', '.join(OBJECTIVES)}")
    if cfg.constraint not in CONSTRAINTS:
        raise ObjectiveError(f"alignment.constraint={cfg.constraint!r}: expected one of {', '.join(CONSTRAINTS)}")
    if objective != "sft" and not cfg.samples:
        raise ObjectiveError(f"train.objective={objective}: set alignment.samples to an `alert-jax sample` workdir")


class SegmentLogProbs(NamedTuple):
    """Per-segment sums `[B, S]` over target tokens: log-likelihood and token count."""

    total: jax.Array
    count: jax.Array

    @property
    def score(self) -> jax.Array:
        """Length-normalised log-likelihood (0 for an empty slot)."""
        return self.total / jnp.maximum(self.count, 1.0)


def segment_log_probs(token_log_probs: jax.Array, batch: Batch, slots: int = SEGMENT_SLOTS) -> SegmentLogProbs:
    """Sum `token_log_probs` `[B, T]` over each segment's target tokens (loss weight 1)."""
    one_hot = (batch["segment_ids"][..., None] == jnp.arange(1, slots + 1)).astype(jnp.float32)  # [B, T, S]
    weights = batch["loss_weights"]
    return SegmentLogProbs(jnp.einsum("bt,bts->bs", token_log_probs * weights, one_hot),
                           jnp.einsum("bt,bts->bs", weights, one_hot))


def pair_mask(group: jax.Array, label: jax.Array) -> jax.Array:
    """`[..., S, S]`: [p, n] true iff p and n answer the same question and p is labelled better than n."""
    same = (group[..., :, None] == group[..., None, :]) & (group[..., :, None] > 0)
    return same & (label[..., :, None] > label[..., None, :])


def _question_one_hot(group: jax.Array) -> jax.Array:
    """`[..., Q, S]`: sample s answers question q + 1 of its row."""
    slots = group.shape[-1]
    return group[..., None, :] == jnp.arange(1, slots + 1)[:, None]


def _lowest_better_score(scores: jax.Array, pairs: jax.Array) -> jax.Array:
    """`[..., S]`: for each sample, the lowest (gradient-stopped) score of a sample labelled better than it."""
    better = jnp.where(pairs, jax.lax.stop_gradient(scores)[..., :, None], -_MASKED)
    return better.min(axis=-2)


def alignment_terms(scores: jax.Array, group: jax.Array, label: jax.Array, constraint: str = "none",
                    boundary: float = 1.0, boundary_weight: float = 1.0) -> jax.Array:
    """`[..., Q]`: A_q, DC_q or BC_q (module docstring) per question slot q; 0 for a question without pairs."""
    pairs = pair_mask(group, label)
    negative = scores
    floor = _lowest_better_score(scores, pairs)
    if constraint == "dc":
        negative = jnp.where(scores < floor, jax.lax.stop_gradient(scores), scores)
    logits = jnp.where(pairs, negative[..., None, :] - scores[..., :, None], _MASKED)  # [..., P, N]
    questions = _question_one_hot(group)  # [..., Q, S]
    per_question = jnp.where(questions[..., :, :, None], logits[..., None, :, :], _MASKED)
    terms = jnp.logaddexp(0.0, jax.scipy.special.logsumexp(per_question, axis=(-2, -1)))
    if constraint == "bc":
        is_negative = pairs.any(axis=-2)
        hinge = jnp.where(is_negative, jnp.maximum(0.0, floor - boundary - scores), 0.0)
        terms = terms + boundary_weight * (questions * hinge[..., None, :]).sum(-1)
    return terms


def rrhf_terms(scores: jax.Array, group: jax.Array, label: jax.Array) -> jax.Array:
    """`[..., Q]`: RRHF's ranking hinge per question slot."""
    pairs = pair_mask(group, label)
    hinge = jnp.where(pairs, jnp.maximum(0.0, scores[..., None, :] - scores[..., :, None]), 0.0).sum(-1)  # per p
    return (_question_one_hot(group) * hinge[..., None, :]).sum(-1)


def dpo_pair_losses(log_likelihood: jax.Array, ref_logp: jax.Array, group: jax.Array, label: jax.Array,
                    beta: float) -> tuple[jax.Array, jax.Array]:
    """(`[..., P, N]` DPO loss of every pair, 0 elsewhere; the pair mask)."""
    pairs = pair_mask(group, label)
    reward = beta * (log_likelihood - ref_logp)
    losses = -jax.nn.log_sigmoid(reward[..., :, None] - reward[..., None, :])
    return jnp.where(pairs, losses, 0.0), pairs


def questions_with_pairs(group: jax.Array, label: jax.Array) -> jax.Array:
    """`[..., Q]` float: 1 for a question slot that has at least one pair."""
    has_pair = pair_mask(group, label).any(axis=-1)  # per p
    return (_question_one_hot(group) & has_pair[..., None, :]).any(-1).astype(jnp.float32)


def pairwise_accuracy_sums(scores: jax.Array, group: jax.Array, label: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(pairs ranked right, ties counting half; pairs): the assessment measure inside a batch."""
    pairs = pair_mask(group, label)
    diff = scores[..., :, None] - scores[..., None, :]
    right = jnp.where(diff > 0, 1.0, jnp.where(diff == 0, 0.5, 0.0))
    return jnp.where(pairs, right, 0.0).sum(), pairs.sum().astype(jnp.float32)


def ranking_loss(objective: str, cfg: AlignmentConfig, segments: SegmentLogProbs, batch: Batch
                 ) -> tuple[jax.Array, jax.Array]:
    """(summed ranking term of `objective` over the batch, how many units it is averaged over)."""
    group, label = batch["sample_group"], batch["sample_label"]
    if objective == "dpo":
        losses, pairs = dpo_pair_losses(segments.total, batch["ref_logp"], group, label, cfg.beta)
        return losses.sum(), pairs.sum().astype(jnp.float32)
    if objective == "rrhf":
        terms = rrhf_terms(segments.score, group, label)
    else:
        terms = alignment_terms(segments.score, group, label, cfg.constraint, cfg.boundary, cfg.boundary_weight)
    return terms.sum(), questions_with_pairs(group, label).sum()


def make_objective(objective: str, cfg: AlignmentConfig,
                   token_losses: Callable[..., jax.Array]) -> Objective:
    """(module, params, batch, dropout_key=None) → (loss, metrics) for `objective`; `token_losses(module, params,
    batch, dropout_key)` gives per-token NLL `[B, T]` (dropout on iff a key is given).

    `sft` is the token-weighted cross-entropy of the packed batch; the others follow the module docstring.
    """
    check(objective, cfg)

    def sft(module, params, batch, dropout_key=None):
        nll = token_losses(module, params, batch, dropout_key)
        weights = batch["loss_weights"]
        tokens = weights.sum()
        loss = (nll * weights).sum() / jnp.maximum(tokens, 1.0)
        return loss, {"tokens": tokens}

    def ranked(module, params, batch, dropout_key=None):
        nll = token_losses(module, params, batch, dropout_key)
        segments = segment_log_probs(-nll, batch, batch["sample_group"].shape[-1])
        positive = (batch["sample_label"] > 0) & (batch["sample_group"] > 0)
        # The positives' token loss is a sum of their segment sums: no second [B, T, S] pass over the tokens.
        token_loss = -(segments.total * positive).sum() / jnp.maximum((segments.count * positive).sum(), 1.0)
        rank_sum, units = ranking_loss(objective, cfg, segments, batch)
        rank = rank_sum / jnp.maximum(units, 1.0)
        right, pairs = pairwise_accuracy_sums(segments.score, batch["sample_group"], batch["sample_label"])
        sft_weight = 0.0 if objective == "dpo" else 1.0
        weight = 1.0 if objective == "dpo" else cfg.alignment_weight
        loss = sft_weight * token_loss + weight * rank
        return loss, {"tokens": batch["loss_weights"].sum(), "token_loss": token_loss, "rank_loss": rank,
                      "pair_accuracy": right / jnp.maximum(pairs, 1.0)}

    return sft if objective == "sft" else ranked
