"""OPT architecture hyper-parameters as data: every published size plus tiny ones for tests and the demo.

Sizes follow the OPT paper (Zhang et al. 2022, Table 1) and the released HF configs; 350m is the odd one
out (post-LN, 512-wide embeddings projected in and out of the 1024-wide decoder).
"""
from __future__ import annotations

import dataclasses

from alert_jax.errors import AlertJaxError


_MAY_BE_ZERO = frozenset({"word_embed_proj_dim", "pad_token_id", "bos_token_id", "eos_token_id"})


@dataclasses.dataclass(frozen=True)
class OPTConfig:
    """The architecture of one OPT model; field names follow transformers' `OPTConfig`."""

    vocab_size: int = 50272
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    ffn_dim: int = 3072
    max_position_embeddings: int = 2048
    word_embed_proj_dim: int = 0  # 0 = same as hidden_size (no project_in/out)
    do_layer_norm_before: bool = True  # False only for 350m (post-LN)
    enable_bias: bool = True
    layer_norm_elementwise_affine: bool = True
    activation_function: str = "relu"
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    bos_token_id: int = 2
    eos_token_id: int = 2

    def __post_init__(self) -> None:
        """Types and ranges first: an architecture read from a checkpoint's JSON is untrusted (a string "false" for
        a bool would silently build another model, zero heads would divide by zero)."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type in ("int", "bool") and (isinstance(value, bool) != (field.type == "bool")
                                                  or not isinstance(value, int)):
                raise AlertJaxError(f"{field.name}={value!r:.40}: expected {field.type}")
            if field.type == "int" and value < (0 if field.name in _MAY_BE_ZERO else 1):
                raise AlertJaxError(f"{field.name}={value}: must be >= {0 if field.name in _MAY_BE_ZERO else 1}")
        if isinstance(self.layer_norm_eps, bool) or not isinstance(self.layer_norm_eps, (int, float)) \
                or not 0 < self.layer_norm_eps < 1:
            raise AlertJaxError(f"layer_norm_eps={self.layer_norm_eps!r:.40}: must be a number in (0, 1)")
        if self.hidden_size % self.num_attention_heads:
            raise AlertJaxError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )
        if self.activation_function not in ("relu", "gelu"):
            raise AlertJaxError(f"activation_function {self.activation_function!r} is not supported (relu, gelu)")

    @property
    def embed_dim(self) -> int:
        """Width of token embeddings and of the tied LM head (differs from hidden_size only for 350m)."""
        return self.word_embed_proj_dim or self.hidden_size

    @property
    def has_projections(self) -> bool:
        return self.embed_dim != self.hidden_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def num_params(self) -> int:
        """Parameter count (tied head counted once); used for MFU and memory estimates."""
        h, f, e = self.hidden_size, self.ffn_dim, self.embed_dim
        norm = 2 * h if self.layer_norm_elementwise_affine else 0
        bias = self.enable_bias
        attn = 4 * h * h + (4 * h if bias else 0)
        mlp = 2 * h * f + ((f + h) if bias else 0)
        layer = attn + mlp + 2 * norm
        total = self.num_hidden_layers * layer + self.vocab_size * e + (self.max_position_embeddings + 2) * h
        if self.has_projections:
            total += 2 * e * h
        if self.do_layer_norm_before:
            total += norm
        return total


def _opt(hidden: int, layers: int, heads: int, **kw) -> OPTConfig:
    return OPTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, ffn_dim=4 * hidden, **kw)


PRESETS: dict[str, OPTConfig] = {
    "opt-125m": _opt(768, 12, 12),
    "opt-350m": _opt(1024, 24, 16, word_embed_proj_dim=512, do_layer_norm_before=False),
    "opt-1.3b": _opt(2048, 24, 32),
    "opt-2.7b": _opt(2560, 32, 32),
    "opt-6.7b": _opt(4096, 32, 32),
    "opt-13b": _opt(5120, 40, 40),
    "opt-30b": _opt(7168, 48, 56),
    "opt-66b": _opt(9216, 64, 72),
    "opt-175b": _opt(12288, 96, 96),
    # Tiny models for tests and the embedded CPU demo (vocab sized for a small sentencepiece model).
    "opt-tiny": OPTConfig(
        vocab_size=1024, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, ffn_dim=512,
        max_position_embeddings=512,
    ),
    "opt-micro": OPTConfig(  # the smallest useful model: keeps compile times of the test suite low
        vocab_size=1024, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=256,
        max_position_embeddings=512,
    ),
    "opt-tiny-postln": OPTConfig(
        vocab_size=1024, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, ffn_dim=512,
        max_position_embeddings=512, word_embed_proj_dim=64, do_layer_norm_before=False,
    ),
}


def _preset_key(name: str) -> str | None:
    """The PRESETS key a bare name means, or None: a name with a path separator is a path, never a preset,
    so a mistyped checkpoint path such as `/data/models/opt-1.3b` cannot silently become a random init."""
    name = str(name)
    if "/" in name or "\\" in name or name.startswith((".", "~")):
        return None
    return name if name.startswith("opt-") else f"opt-{name}"


def is_preset(name: str) -> bool:
    """Whether `name` is a bare preset name ("opt-1.3b" or "1.3b")."""
    return _preset_key(name) in PRESETS


def get_preset(name: str) -> OPTConfig:
    """Look up a preset by its bare name ("opt-1.3b", also accepting "1.3b")."""
    key = _preset_key(name)
    if key not in PRESETS:
        raise AlertJaxError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[key]


def size_label(model_name: str) -> str:
    """"1.3b" for `opt-1.3b` or `/path/to/opt-1.3b`; "" when the name's last component is no preset."""
    last = str(model_name).rstrip("/").split("/")[-1]
    return last.removeprefix("opt-") if is_preset(last) else ""
