"""benchmarks/peers.py: keras-hub's OPT built from a transformers OPT computes the same function (the benchmarks'
side-by-side rows are only comparable if it does). Skipped unless torch, transformers and keras-hub (JAX backend) are
importable — the `bench` extra; CI installs only torch and transformers of it."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
os.environ.setdefault("KERAS_BACKEND", "jax")
pytest.importorskip("keras_hub")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from peers import keras_hub_opt  # noqa: E402


def test_keras_hub_copy_has_the_torch_models_logits_and_does_not_alias_its_tensors():
    torch.manual_seed(0)
    config = transformers.OPTConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    ffn_dim=64, max_position_embeddings=64, word_embed_proj_dim=32, dropout=0.0,
                                    attention_dropout=0.0)
    model = transformers.OPTForCausalLM(config).eval()
    lm = keras_hub_opt(model)
    ids = np.random.RandomState(0).randint(4, 96, (2, 12))
    with torch.no_grad():
        reference = model(torch.tensor(ids)).logits.numpy()
        for parameter in model.parameters():  # an optimizer step on the torch side must not move keras' weights
            parameter.add_(1.0)
    logits = np.asarray(lm({"token_ids": ids, "padding_mask": np.ones_like(ids)}))
    np.testing.assert_allclose(logits, reference, atol=1e-5)
