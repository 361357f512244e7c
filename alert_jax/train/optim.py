"""AdamW as the ALERT finetuning recipe uses it: warmup, linear decay, clipping, fp32 state.

Steps are counted in *optimizer updates*. With `grad_accum_steps = k > 1` the optimizer is
wrapped in `optax.MultiSteps`: the train loop calls `update` once per micro-batch, the inner
AdamW (and so the schedule's step counter) advances only on every k-th call, with the mean of
the k gradients. `total_steps` is therefore the number of parameter updates (`train.steps`),
and the loop feeds `k * total_steps` micro-batches.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from alert_jax.config import ConfigError, OptimConfig

NO_DECAY_LEAVES = frozenset({"bias", "scale"})


def _validate(cfg: OptimConfig, total_steps: int) -> None:
    if total_steps < 1:
        raise ConfigError(f"train.steps={total_steps}: need at least one optimizer step")
    if not 0 <= cfg.warmup_steps <= total_steps:
        raise ConfigError(f"optim.warmup_steps={cfg.warmup_steps}: must lie in [0, train.steps={total_steps}]")
    if cfg.end_lr_ratio < 0:
        raise ConfigError(f"optim.end_lr_ratio={cfg.end_lr_ratio}: must be >= 0")
    if cfg.grad_accum_steps < 1:
        raise ConfigError(f"optim.grad_accum_steps={cfg.grad_accum_steps}: must be >= 1")


def learning_rate_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """0 → lr linearly over `warmup_steps`, then lr → `end_lr_ratio * lr` linearly until
    `total_steps`, constant afterwards (a resumed or extended run never sees a negative rate)."""
    _validate(cfg, total_steps)
    peak = cfg.learning_rate
    end = cfg.end_lr_ratio * peak
    warmup = cfg.warmup_steps
    decay_steps = max(total_steps - warmup, 1)

    def schedule(step: jax.typing.ArrayLike) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        warming = peak * step / max(warmup, 1)
        progress = jnp.clip((step - warmup) / decay_steps, 0.0, 1.0)
        decaying = peak + (end - peak) * progress
        return jnp.where(step < warmup, warming, decaying)

    return schedule


def weight_decay_mask(params: Any) -> Any:
    """True where AdamW should decay: every leaf but biases and layer-norm parameters.

    Decided from the parameter path (leaf named `bias` or `scale`, or any path part containing
    `layer_norm`), so it holds for every OPT size and for the HF-mirroring names of `model/opt.py`.
    """

    def decays(path: jax.tree_util.KeyPath, _leaf: Any) -> bool:
        keys = jax.tree_util.keystr(path, simple=True, separator="/").split("/")
        return keys[-1] not in NO_DECAY_LEAVES and not any("layer_norm" in k for k in keys)

    return jax.tree_util.tree_map_with_path(decays, params)


def _as_float32(tree: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


def _in_float32(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """Run `inner` on fp32 views of gradients and params.

    optax keeps Adam's second moment in the params' dtype; with bf16 params that loses the
    small squared gradients, so both moments (and clipping, weight decay) are computed in fp32
    whatever the param dtype. `optax.apply_updates` casts the fp32 updates back.
    """

    def init(params: Any) -> Any:
        return inner.init(_as_float32(params))

    def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        return inner.update(_as_float32(updates), state, None if params is None else _as_float32(params))

    return optax.GradientTransformation(init, update)


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    """Global-norm clipping (`clip_norm` > 0, checked by the config's FIELD_RULES), then AdamW with decoupled weight decay
    (`p -= lr * (adam_update + weight_decay * p)`, masked by `weight_decay_mask`), fp32 state,
    and gradient accumulation when `grad_accum_steps > 1` (see the module docstring)."""
    schedule = learning_rate_schedule(cfg, total_steps)
    adamw = optax.adamw(
        schedule,
        b1=cfg.beta1,
        b2=cfg.beta2,
        eps=cfg.eps,
        mu_dtype=jnp.float32,
        weight_decay=cfg.weight_decay,
        mask=weight_decay_mask,
    )
    tx = _in_float32(optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adamw))
    if cfg.grad_accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=cfg.grad_accum_steps).gradient_transformation()
    return tx
