"""The ranking objectives on hand-written score vectors, against values worked out by hand."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alert_jax.config import AlignmentConfig
from alert_jax.train import objectives as obj

# One row, one question with samples: two correct (scores -1.0, -2.0), two wrong (-1.5, -3.0).
SCORES = jnp.array([-1.0, -2.0, -1.5, -3.0])
GROUP = jnp.array([1, 1, 1, 1])
LABEL = jnp.array([1.0, 1.0, 0.0, 0.0])


def test_pair_mask_keeps_questions_apart():
    group = jnp.array([1, 1, 2, 2, 0])
    label = jnp.array([1.0, 0.0, 1.0, 0.0, 0.0])
    pairs = np.asarray(obj.pair_mask(group, label))
    assert {tuple(p) for p in np.argwhere(pairs)} == {(0, 1), (2, 3)}


def test_alignment_term_matches_hand_value():
    # pairs (p, n): s_n - s_p = -1.5+1 = -0.5, -3+1 = -2, -1.5+2 = 0.5, -3+2 = -1
    expected = math.log(1 + math.exp(-0.5) + math.exp(-2.0) + math.exp(0.5) + math.exp(-1.0))
    terms = obj.alignment_terms(SCORES, GROUP, LABEL, "none")
    assert float(terms[0]) == pytest.approx(expected, rel=1e-6)
    assert np.allclose(np.asarray(terms[1:]), 0.0)  # question slots 2..4 are empty


def test_dc_has_the_alignment_value_and_bc_adds_the_boundary_hinge():
    plain = float(obj.alignment_terms(SCORES, GROUP, LABEL, "none")[0])
    assert float(obj.alignment_terms(SCORES, GROUP, LABEL, "dc")[0]) == pytest.approx(plain, rel=1e-6)
    # lowest positive -2.0, boundary 0.5 -> floor -2.5: only the negative at -3.0 is below it, by 0.5.
    bc = float(obj.alignment_terms(SCORES, GROUP, LABEL, "bc", boundary=0.5, boundary_weight=2.0)[0])
    assert bc == pytest.approx(plain + 2.0 * 0.5, rel=1e-6)


def _negative_gradients(constraint: str) -> np.ndarray:
    grad = jax.grad(lambda s: obj.alignment_terms(s, GROUP, LABEL, constraint, boundary=0.5).sum())(SCORES)
    return np.asarray(grad)


def test_plain_alignment_pushes_every_negative_down():
    grad = _negative_gradients("none")
    assert grad[2] > 0 and grad[3] > 0  # descent lowers both negatives' scores, without limit


def test_dc_stops_the_push_once_a_negative_is_below_every_positive():
    grad = _negative_gradients("dc")
    assert grad[2] > 0  # -1.5 still outscores the positive at -2.0: pushed down
    assert grad[3] == 0.0  # -3.0 is below both positives: no longer pushed
    assert grad[0] < 0 and grad[1] < 0  # positives are still pushed up


def test_bc_pushes_a_negative_below_the_boundary_back_up():
    grad = _negative_gradients("bc")
    assert grad[2] > 0  # above the boundary (-2.5): pushed down
    assert grad[3] < 0  # below it: pushed up


def test_rrhf_hinge_matches_hand_value():
    # only the pair (positive -2.0, negative -1.5) is misranked, by 0.5
    assert float(obj.rrhf_terms(SCORES, GROUP, LABEL)[0]) == pytest.approx(0.5)


def test_dpo_pair_losses_match_hand_values():
    logp = jnp.array([-10.0, -20.0])
    ref = jnp.array([-12.0, -19.0])
    losses, pairs = obj.dpo_pair_losses(logp, ref, jnp.array([1, 1]), jnp.array([1.0, 0.0]), beta=0.5)
    margin = 0.5 * ((-10.0 + 12.0) - (-20.0 + 19.0))  # 1.5
    assert float(losses.sum()) == pytest.approx(-math.log(1 / (1 + math.exp(-margin))), rel=1e-6)
    assert int(pairs.sum()) == 1


def test_pairwise_accuracy_counts_ties_half():
    right, pairs = obj.pairwise_accuracy_sums(jnp.array([-1.0, -1.0, -2.0]), jnp.array([1, 1, 1]),
                                              jnp.array([1.0, 0.0, 0.0]))
    assert (float(right), float(pairs)) == (1.5, 2.0)


def test_segment_log_probs_sum_target_tokens_per_segment():
    batch = {"segment_ids": jnp.array([[1, 1, 1, 2, 2, 0]]),
             "loss_weights": jnp.array([[0.0, 1.0, 0.0, 1.0, 0.0, 0.0]])}
    token_lp = jnp.array([[-5.0, -1.0, -7.0, -3.0, -9.0, -11.0]])
    seg = obj.segment_log_probs(token_lp, batch, slots=3)
    assert np.allclose(np.asarray(seg.total), [[-1.0, -3.0, 0.0]])
    assert np.allclose(np.asarray(seg.score), [[-1.0, -3.0, 0.0]])


def test_unknown_objective_or_constraint_is_refused():
    with pytest.raises(obj.ObjectiveError, match="train.objective"):
        obj.check("ppo", AlignmentConfig(samples="x"))
    with pytest.raises(obj.ObjectiveError, match="alignment.constraint"):
        obj.check("aft", AlignmentConfig(samples="x", constraint="hard"))
    with pytest.raises(obj.ObjectiveError, match="alignment.samples"):
        obj.check("aft", AlignmentConfig())


def _one_question_batch():
    """One row: segment 1 (correct) has target tokens at columns 1-2, segment 2 (wrong) at 4-5."""
    slots = 4
    return {"segment_ids": jnp.array([[1, 1, 1, 2, 2, 2, 0]]),
            "loss_weights": jnp.array([[0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0]]),
            "sample_group": jnp.array([[1, 1, 0, 0]])[:, :slots],
            "sample_label": jnp.array([[1.0, 0.0, 0.0, 0.0]]),
            "ref_logp": jnp.array([[-4.0, -1.0, 0.0, 0.0]])}


@pytest.mark.parametrize("objective", ["aft", "rrhf", "dpo"])
def test_whole_objectives_on_a_packed_batch_match_hand_values(objective):
    nll = jnp.array([[9.0, 1.0, 2.0, 9.0, 0.5, 1.5, 9.0]])  # positive: logp -3, score -1.5; negative: -2, -1.0
    cfg = AlignmentConfig(samples="x", constraint="none", alignment_weight=0.5, beta=0.5)
    loss_fn = obj.make_objective(objective, cfg, lambda module, params, batch, dropout_key=None: params)
    loss, metrics = loss_fn(None, nll, _one_question_batch())
    token = 1.5  # mean nll of the positive's target tokens
    expected = {"aft": token + 0.5 * math.log(1 + math.exp(-1.0 + 1.5)),
                "rrhf": token + 0.5 * 0.5,
                "dpo": math.log(1 + math.exp(-0.5 * ((-3.0 + 4.0) - (-2.0 + 1.0))))}[objective]
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(metrics["pair_accuracy"]) == 0.0  # the wrong sample outscores the right one


def _random_alignment_batch(rows=3, length=64, slots=6, seed=0):
    """Rows of several segments with padding (segment 0) at the end, empty slots (group 0, some labelled 1),
    a slot whose segment has no tokens, and several questions per row."""
    rng = np.random.default_rng(seed)
    segment_ids = np.sort(rng.integers(1, slots, (rows, length)), axis=1)  # the last slot has no tokens
    segment_ids[:, -8:] = 0
    return {"segment_ids": jnp.asarray(segment_ids, jnp.int32),
            "loss_weights": jnp.asarray((rng.random((rows, length)) < 0.6) & (segment_ids > 0), jnp.float32),
            "sample_group": jnp.asarray(rng.integers(0, 3, (rows, slots)), jnp.int32),
            "sample_label": jnp.asarray(rng.integers(0, 2, (rows, slots)), jnp.float32),
            "ref_logp": jnp.asarray(rng.normal(size=(rows, slots)), jnp.float32)}


def _reference_ranked_loss(objective, cfg, nll, batch):
    """The objective as first written: the positives' token weights from a [B, T, S] one-hot of its own."""
    segments = obj.segment_log_probs(-nll, batch, batch["sample_group"].shape[-1])
    positive = (batch["sample_label"] > 0) & (batch["sample_group"] > 0)
    slots = jnp.arange(1, positive.shape[-1] + 1)
    token_positive = (batch["segment_ids"][..., None] == slots) & positive[:, None, :]
    weights = batch["loss_weights"] * token_positive.any(-1)
    token_loss = (nll * weights).sum() / jnp.maximum(weights.sum(), 1.0)
    rank_sum, units = obj.ranking_loss(objective, cfg, segments, batch)
    rank = rank_sum / jnp.maximum(units, 1.0)
    if objective == "dpo":
        return rank
    return token_loss + cfg.alignment_weight * rank


@pytest.mark.parametrize("objective,constraint", [("aft", "none"), ("aft", "dc"), ("aft", "bc"),
                                                  ("rrhf", "none"), ("dpo", "none")])
def test_ranked_objectives_match_the_per_token_formulation_in_value_and_gradient(objective, constraint):
    batch = _random_alignment_batch()
    assert set(np.unique(np.asarray(batch["segment_ids"]))) >= {0, 1, 2, 3}
    nll = jnp.asarray(np.random.default_rng(1).random(batch["segment_ids"].shape) * 3, jnp.float32)
    cfg = AlignmentConfig(samples="x", constraint=constraint, alignment_weight=0.7, beta=0.3, boundary=0.2)
    loss_fn = obj.make_objective(objective, cfg, lambda module, params, batch, dropout_key=None: params)
    loss, grad = jax.value_and_grad(lambda p: loss_fn(None, p, batch)[0])(nll)
    want, want_grad = jax.value_and_grad(lambda p: _reference_ranked_loss(objective, cfg, p, batch))(nll)
    assert float(loss) == pytest.approx(float(want), rel=1e-6, abs=1e-6)
    assert np.abs(np.asarray(grad)).max() > 0
    np.testing.assert_allclose(np.asarray(grad), np.asarray(want_grad), rtol=1e-6, atol=1e-6)
