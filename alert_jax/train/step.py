"""The compiled pieces of training: state, packed-batch loss, train step and eval step.

The loss is the token-weighted cross-entropy of docs/contracts.md ("Packed batch"): `loss_weights` select target tokens, so a
packed row and its examples run alone give the same loss. Steps are built for `jax.jit` with explicit
in/out shardings and the state donated, so params and optimizer state are updated in place.

Dropout draws from `fold_in(PRNGKey(train.seed), state.step)`: a pure function of the seed and the step, so a
resumed run replays exactly the masks of an uninterrupted one, and (with JAX's partitionable threefry) the
masks do not depend on the mesh shape. Evaluation passes no key and is deterministic.
"""
from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from alert_jax.config import AlignmentConfig, ExperimentConfig
from alert_jax.data.packing import FIELD_DTYPES
from alert_jax.model.opt import OPTForCausalLM
from alert_jax.train.objectives import SAMPLE_FIELD_DTYPES, SEGMENT_SLOTS, Objective, make_objective

Batch = dict[str, jax.Array]


class TrainState(NamedTuple):
    step: jax.Array  # int32 scalar: optimizer updates done
    params: Any
    opt_state: Any


class LossSums(NamedTuple):
    """Summed token loss and weight, so means over several batches/hosts stay exact."""

    loss: jax.Array
    weight: jax.Array


def token_losses(module: OPTForCausalLM, params: Any, batch: Batch, dropout_key: Optional[jax.Array] = None
                 ) -> jax.Array:
    """Per-token cross-entropy [B, T] of `targets` under the model, in float32 (dropout on iff a key is given)."""
    rngs = {} if dropout_key is None else {"dropout": dropout_key}
    logits, _ = module.apply({"params": params}, batch["inputs"], segment_ids=batch["segment_ids"],
                             positions=batch["positions"], rngs=rngs)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, batch["targets"][..., None], axis=-1)[..., 0]
    return log_z - target_logit


def loss_sums(module: OPTForCausalLM, params: Any, batch: Batch, dropout_key: Optional[jax.Array] = None
              ) -> LossSums:
    weights = batch["loss_weights"]
    return LossSums((token_losses(module, params, batch, dropout_key) * weights).sum(), weights.sum())


def make_train_step(module: OPTForCausalLM, tx: optax.GradientTransformation, objective: Objective | None = None,
                    seed: int = 0):
    """(state, batch) → (state, metrics): the objective's loss (default: the mean target-token loss; the others are
    in `alert_jax.train.objectives`), its gradient, one optimizer update.

    A batch whose loss or gradient norm is not finite leaves params and optimizer state as they were (its update
    is dropped inside the compiled step, so NaNs never reach the state) and sets `metrics["nonfinite"]` to 1;
    the loop decides whether that stops the run or is counted as a skip (`train.on_nonfinite`). The step counter
    still advances: it is the data position.
    """
    objective = objective or make_objective("sft", AlignmentConfig(), token_losses)

    def train_step(state: TrainState, batch: Batch):
        dropout_key = jax.random.fold_in(jax.random.PRNGKey(seed), state.step)
        loss_fn = partial(objective, module, dropout_key=dropout_key)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        keep_new = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        params = jax.tree.map(keep_new, params, state.params)
        opt_state = jax.tree.map(keep_new, opt_state, state.opt_state)
        metrics = {"loss": loss, "grad_norm": grad_norm, **aux,
                   "nonfinite": jnp.logical_not(finite).astype(jnp.int32)}
        return TrainState(state.step + 1, params, opt_state), metrics

    return train_step


def jit_train_step(cfg: ExperimentConfig, module: OPTForCausalLM, tx: optax.GradientTransformation,
                   state_shardings: Any, batch_sharding: NamedSharding):
    """The train step of `cfg` (its objective, alignment settings and dropout seed), jitted with the state's
    shardings pinned in and out, the state donated and the metrics replicated.

    The trainer runs it and `alert-jax plan` compiles it ahead of time: one definition, so the plan measures the
    program that will run (an alignment config is planned with its ranking objective, not as SFT).
    """
    objective = make_objective(cfg.train.objective, cfg.alignment, token_losses)
    step = make_train_step(module, tx, objective, seed=cfg.train.seed)
    replicated = NamedSharding(batch_sharding.mesh, PartitionSpec())
    return jax.jit(step, donate_argnums=0, in_shardings=(state_shardings, batch_sharding),
                   out_shardings=(state_shardings, replicated))


def batch_spec(cfg: ExperimentConfig, sharding: Optional[NamedSharding] = None) -> dict[str, jax.ShapeDtypeStruct]:
    """Every field of one `cfg` train batch, as shapes: the packed token fields `[B, T]` (data/packing.py) and,
    for a ranking objective, the per-segment sample fields `[B, SEGMENT_SLOTS]` (train/sample_rows.py)."""
    rows, seq_len = cfg.train.batch_size, cfg.train.seq_len
    fields = {name: ((rows, seq_len), dtype) for name, dtype in FIELD_DTYPES.items()}
    if cfg.train.objective != "sft":
        fields.update({name: ((rows, SEGMENT_SLOTS), dtype) for name, dtype in SAMPLE_FIELD_DTYPES.items()})
    return {name: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding) for name, (shape, dtype) in fields.items()}


def make_eval_step(module: OPTForCausalLM):
    def eval_step(params: Any, batch: Batch) -> LossSums:
        return loss_sums(module, params, batch)

    return eval_step
