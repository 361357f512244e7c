"""Logits of our Flax OPT equal transformers' PyTorch OPT (docs/contracts.md, "Numerics")."""
from __future__ import annotations

import numpy as np
import pytest

import alert_jax

transformers = pytest.importorskip("transformers")
from tests.hf_reference import hf_logits, left_padded_batch, save_tiny

TOL = 1e-4


@pytest.mark.parametrize("pre_ln", [True, False], ids=["pre_ln", "post_ln_projections"])
def test_logits_match_transformers_with_left_padding(tmp_path, pre_ln):
    hf_model, directory = save_tiny(tmp_path, pre_ln)
    ids, mask = left_padded_batch()
    model = alert_jax.load_model(directory)
    ours = alert_jax.logits(model, ids, mask)
    ref = hf_logits(hf_model, ids, mask)
    real = mask.astype(bool)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref)[real].max() <= TOL
    assert np.isfinite(ours).all(), "fully masked (left-padded) query rows must stay finite"


@pytest.mark.parametrize("pre_ln", [True, False], ids=["pre_ln", "post_ln_projections"])
def test_exported_hf_directory_reloads_in_transformers(tmp_path, pre_ln):
    hf_model, directory = save_tiny(tmp_path, pre_ln)
    ids, mask = left_padded_batch(seed=1)
    model = alert_jax.load_model(directory)
    out = alert_jax.save_hf(model, tmp_path / "exported")
    reloaded = transformers.OPTForCausalLM.from_pretrained(out).eval()
    real = mask.astype(bool)
    assert np.abs(hf_logits(reloaded, ids, mask) - hf_logits(hf_model, ids, mask))[real].max() <= 1e-5
    again = alert_jax.load_model(out)
    assert np.abs(alert_jax.logits(again, ids, mask) - alert_jax.logits(model, ids, mask)).max() <= 1e-6


def test_packed_row_equals_examples_run_alone(tmp_path):
    """Golden rule: a packed row's logits at each example's tokens equal that example run by itself."""
    hf_model, directory = save_tiny(tmp_path, True)
    model = alert_jax.load_model(directory)
    rng = np.random.RandomState(3)
    lengths = [4, 7, 3]
    examples = [rng.randint(3, 101, n) for n in lengths]
    row = np.concatenate(examples + [np.ones(2, int)])[None]
    segments = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lengths)] + [np.zeros(2, int)])[None]
    positions = np.concatenate([np.arange(n) for n in lengths] + [np.zeros(2, int)])[None]
    packed = alert_jax.logits(model, row, segment_ids=segments, positions=positions)
    start = 0
    for example in examples:
        alone = hf_logits(hf_model, example[None])[0]
        assert np.abs(packed[0, start:start + len(example)] - alone).max() <= TOL
        start += len(example)


def test_bfloat16_compute_stays_close(tmp_path):
    hf_model, directory = save_tiny(tmp_path, True)
    ids, mask = left_padded_batch()
    ours = alert_jax.logits(alert_jax.load_model(directory, dtype="bfloat16"), ids, mask)
    ref = hf_logits(hf_model, ids, mask)
    real = mask.astype(bool)
    assert np.abs(ours - ref)[real].max() < 0.1
    assert (ours[real].argmax(-1) == ref[real].argmax(-1)).mean() > 0.9
