"""Flax OPT causal language model (all sizes), numerically matching transformers' `OPTForCausalLM`.

Param names mirror HF (`decoder/layers_3/self_attn/q_proj/kernel`) so checkpoint conversion is a rename
plus transpose, and every param carries logical axis names so one rule table (parallel/rules.py) shards
any size over any mesh. The same forward serves three callers:

* plain batches with an attention mask (left padding safe: positions come from the mask, as in HF);
* packed rows (segment ids + explicit per-example positions; attention never crosses segments);
* cached decoding (a preallocated KV cache written at `cache_index`, see generate.py).

Layers run unrolled (params `decoder/layers_<i>/...`) or, with `scan_layers`, under `nn.scan` as one compiled
body over params stacked on a leading "layers" axis (`decoder/layers/...`); model/layout.py converts between the
two trees. Dropout (HF's `dropout`, `attention_dropout`, `activation_dropout`) is active only when the caller
passes a "dropout" RNG (training); evaluation and generation pass none and are deterministic.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from alert_jax.errors import AlertJaxError
from alert_jax.model.attention import MaskSpec, attend, check_available, merge_heads
from alert_jax.model.presets import OPTConfig
from alert_jax.model.quantize import Int8Dense, Int8Embed, check_mode

POSITION_OFFSET = 2  # OPT's learned position table starts at index 2 (fairseq legacy)
REMAT_POLICIES = {
    "full": None,  # keep only each layer's input; recompute everything inside it in the backward pass
    "dots_saveable": jax.checkpoint_policies.dots_saveable,  # keep matmul outputs, recompute the cheap rest
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # + not scores
}

KERNEL_LAYOUTS = ("in_out", "out_in")  # nn.Dense's [in, out]; `OutInDense`'s [out, in]


@dataclasses.dataclass(frozen=True)
class RuntimeOptions:
    """How to run the architecture (not what it is): dtypes, rematerialisation, layer loop, kernel, dropout."""

    dtype: Any = jnp.float32  # compute dtype
    param_dtype: Any = jnp.float32  # master params
    remat: str = "none"  # "none" or a REMAT_POLICIES key, applied to every decoder layer
    attention: str = "xla"  # see model/attention.py
    scan_layers: bool = False  # nn.scan over layers (params stacked on a leading axis)
    dropout: float = 0.0  # HF OPTConfig names: residual-branch, attention-probability and post-activation dropout
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    quantize: str = "none"  # "int8" | "w8a8": matmul weights held as int8 + per-channel scales (model/quantize.py)
    kernel_layout: str = "in_out"  # "out_in": float dense kernels stored transposed, as CPU decoding reads them

    def __post_init__(self) -> None:
        if self.remat != "none" and self.remat not in REMAT_POLICIES:
            raise AlertJaxError(f"model.remat={self.remat!r}: use none or one of {', '.join(REMAT_POLICIES)}")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise AlertJaxError(f"model.{name}={getattr(self, name)}: must be in [0, 1)")
        check_mode(self.quantize)
        if self.kernel_layout not in KERNEL_LAYOUTS:
            raise AlertJaxError(f"kernel_layout={self.kernel_layout!r}: use one of {', '.join(KERNEL_LAYOUTS)}")
        if self.kernel_layout == "out_in" and self.quantize != "none":
            raise AlertJaxError(f"kernel_layout='out_in' is for float kernels; quantize={self.quantize!r} kernels "
                                f"are int8 [out, in] already")

    @property
    def quantize_activations(self) -> bool:
        """The w8a8 mode: int8 activations as well as int8 weights."""
        return self.quantize == "w8a8"


class LayerCache(NamedTuple):
    """Keys and values of one layer for every cache slot: [batch × heads, slots, head_dim] (a scanned decoder's
    one cache holds every layer, stacked on a leading axis: `init_cache(..., stacked=True)`).

    One leading (row, head) axis, so the decode attention contracts the cache as stored, as one batched product,
    and no axis of size 1 is left for XLA to squeeze away. A [batch, slots, heads, …] cache made XLA transpose
    (copy) the whole cache in every layer at every decode step; a [batch, heads, slots, …] one, at batch 1, made it
    compute each cache update twice (once per layout of the squeezed product) and copy each cache three times.
    """

    key: jax.Array
    value: jax.Array


def _init(initializer, names: tuple[Optional[str], ...]):
    return nn.with_logical_partitioning(initializer, names)


class OutInDense(nn.Module):
    """`nn.Dense` with its kernel stored transposed, [out, in], computing y = x · Wᵀ as (W · xᵀ)ᵀ.

    Why: a decode step multiplies a few rows by every kernel, and XLA:CPU runs that product ~1.3× faster with the
    kernel [out, in] and the output [out, rows] (six opt-125m layers' kernels: 10.7 vs 13.4 ms at batch 8, 7.7 vs
    10.2 ms at batch 1; benchmarks/RESULTS.md). The optimisation barrier keeps XLA from folding the transpose back
    into the product, which would make it write [rows, out] again, slower than either (21.5 ms at batch 8).
    Numerically it is nn.Dense: the same products in the compute dtype, the bias added after.
    """

    features: int
    in_names: str
    out_names: str
    use_bias: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", _init(nn.initializers.normal(0.02), (self.out_names, self.in_names)),
                            (self.features, x.shape[-1]), self.param_dtype)
        rows = x.reshape(-1, x.shape[-1]).astype(self.dtype)
        product = jnp.einsum("oi,ni->on", kernel.astype(self.dtype), rows)
        y = jax.lax.optimization_barrier(product).T.reshape(*x.shape[:-1], self.features)
        if self.use_bias:
            bias = self.param("bias", _init(nn.initializers.zeros, (self.out_names,)), (self.features,),
                              self.param_dtype)
            y = y + bias.astype(self.dtype)
        return y


def _dense(features: int, in_names: str, out_names: str, cfg: OPTConfig, rt: RuntimeOptions, name: str,
           bias: bool = True) -> nn.Module:
    if rt.quantize != "none":
        return Int8Dense(features, in_names, out_names, use_bias=bias, dtype=rt.dtype,
                         quantize_activations=rt.quantize_activations, name=name)
    if rt.kernel_layout == "out_in":
        return OutInDense(features, in_names, out_names, use_bias=bias, dtype=rt.dtype, param_dtype=rt.param_dtype,
                          name=name)
    return nn.Dense(
        features,
        use_bias=bias,
        dtype=rt.dtype,
        param_dtype=rt.param_dtype,
        kernel_init=_init(nn.initializers.normal(0.02), (in_names, out_names)),
        bias_init=_init(nn.initializers.zeros, (out_names,)),
        name=name,
    )


def _layer_norm(cfg: OPTConfig, rt: RuntimeOptions, name: str) -> nn.LayerNorm:
    affine = cfg.layer_norm_elementwise_affine
    return nn.LayerNorm(
        epsilon=cfg.layer_norm_eps,
        dtype=jnp.float32,  # statistics in fp32 even under bf16 compute
        param_dtype=rt.param_dtype,
        use_bias=affine,
        use_scale=affine,
        scale_init=_init(nn.initializers.ones, ("norm",)),
        bias_init=_init(nn.initializers.zeros, ("norm",)),
        name=name,
    )


class OPTAttention(nn.Module):
    cfg: OPTConfig
    rt: RuntimeOptions

    @nn.compact
    def __call__(self, x: jax.Array, mask: MaskSpec, cache: Optional[LayerCache], cache_index: Optional[jax.Array],
                 layer: Optional[jax.Array] = None):
        cfg, rt = self.cfg, self.rt
        b, t, _ = x.shape
        heads, hd = cfg.num_attention_heads, cfg.head_dim

        def project(name: str) -> jax.Array:
            y = _dense(cfg.hidden_size, "embed", "heads", cfg, rt, name, cfg.enable_bias)(x)
            return y.reshape(b, t, heads, hd)

        q = project("q_proj") * jnp.asarray(hd**-0.5, rt.dtype)  # HF scales q (after its bias)
        k = project("k_proj")
        v = project("v_proj")
        q = nn.with_logical_constraint(q, ("batch", "length", "act_heads", None))
        if cache is not None:
            (k, key), (v, value) = (_write_cache(c, merge_heads(new), cache_index, layer)
                                    for c, new in ((cache.key, k), (cache.value, v)))
            cache = LayerCache(key, value)
        dropout = None
        if rt.attention_dropout and self.has_rng("dropout"):
            dropout = (rt.attention_dropout, self.make_rng("dropout"))
        out = attend(q, k, v, mask, implementation=rt.attention, cached_kv=cache is not None, dropout=dropout)
        out = out.reshape(b, t, cfg.hidden_size)
        out = _dense(cfg.hidden_size, "heads", "embed", cfg, rt, "out_proj", cfg.enable_bias)(out)
        return out, cache


class OPTDecoderLayer(nn.Module):
    cfg: OPTConfig
    rt: RuntimeOptions

    @nn.compact
    def __call__(self, h: jax.Array, mask: MaskSpec, cache: Optional[LayerCache] = None,
                 cache_index: Optional[jax.Array] = None, layer: Optional[jax.Array] = None):
        cfg, rt = self.cfg, self.rt
        drop = lambda rate: nn.Dropout(rate, deterministic=not (rate and self.has_rng("dropout")))
        pre_ln = cfg.do_layer_norm_before
        attn_norm = _layer_norm(cfg, rt, "self_attn_layer_norm")
        mlp_norm = _layer_norm(cfg, rt, "final_layer_norm")

        residual = h
        x = attn_norm(h).astype(rt.dtype) if pre_ln else h
        x, cache = OPTAttention(cfg, rt, name="self_attn")(x, mask, cache, cache_index, layer)
        h = residual + drop(rt.dropout)(x)
        if not pre_ln:
            h = attn_norm(h).astype(rt.dtype)

        residual = h
        x = mlp_norm(h).astype(rt.dtype) if pre_ln else h
        x = _dense(cfg.ffn_dim, "embed", "mlp", cfg, rt, "fc1", cfg.enable_bias)(x)
        x = nn.relu(x) if cfg.activation_function == "relu" else nn.gelu(x, approximate=False)
        x = drop(rt.activation_dropout)(x)
        x = nn.with_logical_constraint(x, ("batch", "length", "act_mlp"))
        x = _dense(cfg.hidden_size, "mlp", "embed", cfg, rt, "fc2", cfg.enable_bias)(x)
        h = residual + drop(rt.dropout)(x)
        if not pre_ln:
            h = mlp_norm(h).astype(rt.dtype)
        h = nn.with_logical_constraint(h, ("batch", "length", "act_embed"))
        return h, cache


def _write_cache(cache: jax.Array, new: jax.Array, cache_index: jax.Array, layer: Optional[jax.Array]
                 ) -> tuple[jax.Array, jax.Array]:
    """(this layer's keys or values with `new` written at slot `cache_index`, the updated cache).

    A scanned decoder's cache holds every layer ([layers, B·H, slots, D]) and is carried through the layer loop
    whole: `layer` picks the layer, and the write touches only the new slots. Scanning over per-layer caches
    instead (in → out) copied every layer's cache twice and the stacked cache three times per decode step.
    """
    new = new.astype(cache.dtype)
    if layer is None:
        cache = jax.lax.dynamic_update_slice(cache, new, (0, cache_index, 0))
        return cache, cache
    cache = jax.lax.dynamic_update_slice(cache, new[None], (layer, 0, cache_index, 0))
    return jax.lax.dynamic_index_in_dim(cache, layer, keepdims=False), cache


def _scan_layers(layer: nn.Module, h: jax.Array, mask: MaskSpec, caches: Optional[LayerCache],
                 cache_index: Optional[jax.Array], count: int) -> tuple[jax.Array, Optional[LayerCache]]:
    """`layer` (params stacked on a leading "layers" axis) applied `count` times under `nn.scan`, with the hidden
    state and the stacked cache (`init_cache(..., stacked=True)`) as the carry."""

    def step(module, carry, index):
        h, cache = carry
        return module(h, mask, cache, cache_index, None if cache is None else index), None

    scan = nn.scan(step, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True}, length=count,
                   metadata_params={nn.PARTITION_NAME: "layers"})
    (h, caches), _ = scan(layer, (h, caches), jnp.arange(count, dtype=jnp.int32))
    return h, caches


def decoder_layer_class(rt: RuntimeOptions) -> type[nn.Module]:
    """The decoder layer, rematerialised per `rt.remat`.

    Unrolled, `prevent_cse=True` keeps XLA from merging the backward pass's recomputation with the forward's
    (which would silently undo the remat); under `nn.scan` the loop boundary already does that, and JAX advises
    prevent_cse=False there because its optimisation barriers slow the scanned body down.
    """
    if rt.remat == "none":
        return OPTDecoderLayer
    return nn.remat(OPTDecoderLayer, policy=REMAT_POLICIES[rt.remat], prevent_cse=not rt.scan_layers)


class OPTDecoder(nn.Module):
    cfg: OPTConfig
    rt: RuntimeOptions

    def setup(self) -> None:
        cfg, rt = self.cfg, self.rt
        if rt.quantize != "none":
            self.embed_tokens = Int8Embed(cfg.vocab_size, cfg.embed_dim, dtype=rt.dtype,
                                          quantize_activations=rt.quantize_activations)
        else:
            self.embed_tokens = nn.Embed(
                cfg.vocab_size, cfg.embed_dim, dtype=rt.dtype, param_dtype=rt.param_dtype,
                embedding_init=_init(nn.initializers.normal(0.02), ("vocab", "embed")),
            )
        self.embed_positions = nn.Embed(
            cfg.max_position_embeddings + POSITION_OFFSET, cfg.hidden_size, dtype=rt.dtype, param_dtype=rt.param_dtype,
            embedding_init=_init(nn.initializers.normal(0.02), ("positions", "embed")),
        )
        if cfg.has_projections:
            self.project_in = _dense(cfg.hidden_size, "embed_proj", "embed", cfg, rt, "project_in", bias=False)
            self.project_out = _dense(cfg.embed_dim, "embed", "embed_proj", cfg, rt, "project_out", bias=False)
        layer_cls = decoder_layer_class(rt)
        if rt.scan_layers:
            self.layers = layer_cls(cfg, rt, name="layers")  # run by _scan_layers, its params stacked
        else:
            self.layers = [layer_cls(cfg, rt, name=f"layers_{i}") for i in range(cfg.num_hidden_layers)]
        if cfg.do_layer_norm_before:  # HF drops the final norm for post-LN (350m)
            self.final_layer_norm = _layer_norm(cfg, rt, "final_layer_norm")

    def __call__(self, input_ids, positions, mask, caches=None, cache_index=None):
        cfg = self.cfg
        h = self.embed_tokens(input_ids)
        if cfg.has_projections:
            h = self.project_in(h)
        h = h + self.embed_positions(positions + POSITION_OFFSET)
        h = nn.with_logical_constraint(h, ("batch", "length", "act_embed"))
        if self.rt.scan_layers:
            h, new_caches = _scan_layers(self.layers, h, mask, caches, cache_index, cfg.num_hidden_layers)
        else:
            new_caches = []
            for i, layer in enumerate(self.layers):
                h, c = layer(h, mask, None if caches is None else caches[i], cache_index)
                new_caches.append(c)
            new_caches = None if caches is None else tuple(new_caches)
        if cfg.do_layer_norm_before:
            h = self.final_layer_norm(h).astype(self.rt.dtype)
        if cfg.has_projections:
            h = self.project_out(h)
        return h, new_caches

    def lm_head(self, h: jax.Array, vocab_major: bool = False) -> jax.Array:
        """Tied output projection (OPT shares it with the token embedding); float32 logits [..., vocab], or with
        `vocab_major` [vocab, rows] for hidden rows [rows, d] — the layout decoding reads: XLA:CPU computes a few
        rows against the [vocab, d] table 1.5× faster when the vocabulary leads the product's output (batch 8,
        opt-125m's head: 9.7 vs 15.2 ms with the argmax; benchmarks/RESULTS.md)."""
        if isinstance(self.embed_tokens, Int8Embed):
            logits = self.embed_tokens.logits(h)
            return logits.T if vocab_major else logits
        table = self.embed_tokens.embedding.astype(h.dtype)
        if vocab_major:
            return jnp.einsum("vd,nd->vn", table, h, preferred_element_type=jnp.float32)
        return jnp.einsum("btd,vd->btv", h, table, preferred_element_type=jnp.float32)


class OPTForCausalLM(nn.Module):
    """OPT with the tied LM head.

    Call with `input_ids` [B, T] and either `attention_mask` (1 = real token; positions derived like HF) or
    packed `segment_ids` + `positions`. With `caches`, keys/values are written at slot `cache_index` and
    attention runs over all cache slots, whose validity is given by `kv_segments` ([B, slots]).
    """

    cfg: OPTConfig
    rt: RuntimeOptions = RuntimeOptions()

    def setup(self) -> None:
        check_available(self.rt.attention)
        self.decoder = OPTDecoder(self.cfg, self.rt)

    def __call__(self, input_ids, attention_mask=None, *, segment_ids=None, positions=None,
                 caches=None, cache_index=None, kv_segments=None, return_hidden=False):
        b, t = input_ids.shape
        if segment_ids is None:
            segment_ids = jnp.ones((b, t), jnp.int32) if attention_mask is None else attention_mask.astype(jnp.int32)
        if positions is None:
            positions = positions_from_mask(segment_ids != 0)
        if caches is None:
            index = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
            mask = MaskSpec(segment_ids, segment_ids, index, index)
        else:
            slots = kv_segments.shape[1]
            q_index = jnp.broadcast_to(cache_index + jnp.arange(t, dtype=jnp.int32), (b, t))
            kv_index = jnp.broadcast_to(jnp.arange(slots, dtype=jnp.int32), (b, slots))
            mask = MaskSpec(segment_ids, kv_segments, q_index, kv_index)
        h, caches = self.decoder(input_ids, positions, mask, caches, cache_index)
        if return_hidden:
            return h, caches
        return self.decoder.lm_head(h), caches

    def vocab_major_logits(self, hidden: jax.Array) -> jax.Array:
        """float32 logits [vocab, rows] of final hidden rows [rows, d] (see `OPTDecoder.lm_head`)."""
        return self.decoder.lm_head(hidden, vocab_major=True)


def head_table(params: Any) -> jax.Array:
    """The tied LM head's table [vocab, embed_dim] (the token embedding) in a params tree."""
    return params["decoder"]["embed_tokens"]["embedding"]


def positions_from_mask(mask: jax.Array) -> jax.Array:
    """HF OPT's positions: running count of real tokens minus one; padding gets -1 (table row 1)."""
    mask = mask.astype(jnp.int32)
    return jnp.cumsum(mask, axis=1) * mask - 1


def boxed_params(module: OPTForCausalLM, key: jax.Array) -> Any:
    """`module`'s params with their logical-axis boxes: what sharded init and shape-only tracing start from."""
    return module.init(key, jnp.ones((1, 1), jnp.int32))["params"]


def init_cache(cfg: OPTConfig, batch: int, slots: int, dtype=jnp.float32, stacked: bool = False
               ) -> tuple[LayerCache, ...] | LayerCache:
    """Zero caches: one per layer, or (`stacked`, for `scan_layers`) one holding every layer on a leading axis."""
    shape = (batch * cfg.num_attention_heads, slots, cfg.head_dim)
    if stacked:
        shape = (cfg.num_hidden_layers, *shape)
        return LayerCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))
    return tuple(LayerCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(cfg.num_hidden_layers))
