"""Tiny random transformers OPT models: the numerical reference every parity test compares against."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

# Test-time references: a test that imports this module is skipped, not broken, where they are not installed.
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 101


def tiny_hf_opt(pre_ln: bool = True, seed: int = 0, layers: int = 3, *, init_std: float = 0.02,
                norm_noise: float = 0.3, bias_noise: float = 0.05) -> transformers.OPTForCausalLM:
    """A small OPT with non-trivial layer-norm params (and biases); post-LN uses 350m's project_in/out layout.

    A larger `init_std` makes greedy continuations vary (at 0.02 they are one repeated token).
    """
    torch.manual_seed(seed)
    config = transformers.OPTConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, ffn_dim=64,
        max_position_embeddings=64, word_embed_proj_dim=32 if pre_ln else 16, do_layer_norm_before=pre_ln,
        dropout=0.0, attention_dropout=0.0, pad_token_id=1, bos_token_id=2, eos_token_id=2, init_std=init_std,
    )
    model = transformers.OPTForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layer_norm" in name:
                param.add_(torch.randn_like(param) * norm_noise)
            elif bias_noise and name.endswith("bias"):
                param.add_(torch.randn_like(param) * bias_noise)
    return model


def save_tiny(tmp_path: Path, pre_ln: bool = True, **kwargs) -> tuple[transformers.OPTForCausalLM, Path]:
    model = tiny_hf_opt(pre_ln, **kwargs)
    directory = tmp_path / ("hf_pre" if pre_ln else "hf_post")
    model.save_pretrained(directory)
    return model, directory


def left_padded_batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three rows of length 10; row 1 has 3 left pads, row 2 has 6."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(3, VOCAB, (3, 10))
    mask = np.ones_like(ids)
    for row, pads in ((1, 3), (2, 6)):
        ids[row, :pads] = 1
        mask[row, :pads] = 0
    return ids, mask


def hf_logits(model: transformers.OPTForCausalLM, ids: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    with torch.no_grad():
        kwargs = {} if mask is None else {"attention_mask": torch.tensor(mask)}
        return model(input_ids=torch.tensor(ids), **kwargs).logits.float().numpy()
