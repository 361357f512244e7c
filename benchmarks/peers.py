"""Peer models that benchmarks build from the same transformers OPT: keras-hub's OPT on the JAX backend.

Why a copy of the weights rather than keras-hub's own random init: side-by-side results are only comparable
when every system computes the same function (the benches check tokens and step-0 losses against ours).
keras-hub's layout, read off `OPTBackbone.weights`: attention kernels [hidden, heads, head_dim] (the output one
[heads, head_dim, hidden]), Dense kernels [in, out] (torch's Linear weight transposed), and a position table
without OPT's two offset rows (keras-hub counts positions from 0 and does not shift them for left padding, so
left-padded rows can differ from HF and alert_jax; the benches report agreement rather than assume it).
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np


def keras_hub_opt(torch_model: Any, dropout: float = 0.0) -> Any:
    """A keras-hub `OPTCausalLM` (JAX backend, no preprocessor) holding `torch_model`'s weights.

    Raises ImportError when keras-hub (or a dependency such as kagglesdk) is not installed. On the JAX backend
    keras-hub needs no tensorflow, so the backend is chosen before keras is first imported.
    """
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras_hub

    cfg = torch_model.config
    heads, hidden = cfg.num_attention_heads, cfg.hidden_size
    backbone = keras_hub.models.OPTBackbone(vocabulary_size=cfg.vocab_size, num_layers=cfg.num_hidden_layers,
                                            num_heads=heads, hidden_dim=hidden, intermediate_dim=cfg.ffn_dim,
                                            dropout=dropout, max_sequence_length=cfg.max_position_embeddings)
    # Copies: JAX on CPU may alias a numpy buffer, and torch's optimizer later updates these tensors in place.
    state = {name: tensor.detach().numpy().copy() for name, tensor in torch_model.state_dict().items()}
    head_dim = hidden // heads

    def source(path: str) -> np.ndarray:
        parts = path.split("/")
        if parts[0] == "embeddings":
            table = "embed_tokens" if parts[1] == "token_embedding" else "embed_positions"
            weight = state[f"model.decoder.{table}.weight"]
            return weight if table == "embed_tokens" else weight[2:]  # OPT's first two position rows are offsets
        if parts[0] == "layer_norm":
            return state[f"model.decoder.final_layer_norm.{'weight' if parts[1] == 'gamma' else 'bias'}"]
        prefix = f"model.decoder.layers.{parts[0].rsplit('_', 1)[1]}."
        name, leaf = parts[-2], parts[-1]
        if parts[1].endswith("layer_norm"):
            norm = "self_attn_layer_norm" if parts[1].startswith("self_attention") else "final_layer_norm"
            return state[f"{prefix}{norm}.{'weight' if leaf == 'gamma' else 'bias'}"]
        if parts[1] == "self_attention":
            proj = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "attention_output": "out_proj"}[name]
            weight, bias = state[f"{prefix}self_attn.{proj}.weight"], state[f"{prefix}self_attn.{proj}.bias"]
            if proj == "out_proj":
                return weight.T.reshape(heads, head_dim, hidden) if leaf == "kernel" else bias
            return weight.T.reshape(hidden, heads, head_dim) if leaf == "kernel" else bias.reshape(heads, head_dim)
        fc = {"feedforward_intermediate_dense": "fc1", "feedforward_output_dense": "fc2"}[name]
        return state[f"{prefix}{fc}.weight"].T if leaf == "kernel" else state[f"{prefix}{fc}.bias"]

    for variable in backbone.weights:
        value = source(variable.path)
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"keras-hub {variable.path}: shape {tuple(variable.shape)} vs torch {value.shape}")
        variable.assign(value)
    return keras_hub.models.OPTCausalLM(backbone=backbone, preprocessor=None)
