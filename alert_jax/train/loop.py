"""`alert-jax finetune`: the sharded packed-sequence training loop with validation and exact resume.

One process per host; every host builds the same packed rows and reads only its slice of each global
batch. The loop counts micro-batches (`state.step`), which is also the data position, so a restored
checkpoint says exactly where in the data the run resumes; with gradient accumulation over k micro-batches
one optimizer update happens every k steps and `train.steps` counts optimizer updates.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import yaml
from jax.sharding import NamedSharding, PartitionSpec

from alert_jax.atomic import write_text
from alert_jax.config import ExperimentConfig, to_dict
from alert_jax.data.packing import batches, steps_per_epoch
from alert_jax.errors import AlertJaxError
from alert_jax.model.io import load_model
from alert_jax.model.model import Model, runtime_options
from alert_jax.model.opt import OPTForCausalLM, RuntimeOptions, boxed_params
from alert_jax.model.presets import OPTConfig, get_preset, is_preset
from alert_jax.parallel.mesh import devices_for, host_shard, is_main_process, make_mesh, maybe_initialize_distributed, run_on_main
from alert_jax.parallel.rules import (
    DEFAULT_RULES,
    batch_sharding,
    logical_sharding,
    optimizer_state_shardings,
    sharded_init,
)
from alert_jax.data.tokenizer import Tokenizer
from alert_jax.train import checkpoints, objectives
from alert_jax.train.corpus import packed_splits, packed_validation, resolve_tokenizer, text_pairs
from alert_jax.train.metrics_log import MetricsLog, truncate_after
from alert_jax.train.optim import learning_rate_schedule, make_optimizer
from alert_jax.train.sample_rows import alignment_rows
from alert_jax.train.selection import DevGeneration, check_select_by, is_better
from alert_jax.train.step import TrainState, jit_train_step, make_eval_step
from alert_jax.workdir import RunDir, check_contract, write_json_atomically

log = logging.getLogger(__name__)


def _runtime(cfg: ExperimentConfig) -> RuntimeOptions:
    return runtime_options(cfg.model)


def initial_params(cfg: ExperimentConfig, mesh, vocab_size: int) -> tuple[OPTConfig, Any, Any]:
    """(architecture, sharded params, their shardings): a seeded sharded init or a checkpoint loaded into `mesh`.

    A checkpoint (HF directory, metaseq file, alert_jax model, workdir) is read tensor by tensor straight into
    its shards (`model.io.load_model`), so no device ever holds more than its share of the model.
    """
    runtime = _runtime(cfg)
    if is_preset(cfg.model.name):
        arch = _fit_vocab(get_preset(cfg.model.name), vocab_size, cfg.model.name)
        module = OPTForCausalLM(arch, runtime)
        params, shardings = sharded_init(partial(boxed_params, module), mesh, DEFAULT_RULES,
                                         jax.random.PRNGKey(cfg.model.seed))
        return arch, params, shardings
    model = load_model(cfg.model.name, runtime=runtime, mesh=mesh, rules=DEFAULT_RULES)
    return model.config, model.params, jax.tree.map(lambda x: x.sharding, model.params)


def check_positions(cfg: ExperimentConfig, arch: OPTConfig) -> None:
    """Refuse rows longer than the model has learned positions for (naming both numbers), before training."""
    if cfg.train.seq_len > arch.max_position_embeddings:
        raise AlertJaxError(f"train.seq_len={cfg.train.seq_len} exceeds model.name={cfg.model.name}'s "
                            f"max_position_embeddings={arch.max_position_embeddings}")


def _fit_vocab(arch: OPTConfig, vocab_size: int, name: str) -> OPTConfig:
    """A fresh model's embedding table sized to the tokenizer (rounded up to a multiple of 8, as OPT's 50272).

    Only random inits are resized; a checkpoint keeps its table.
    """
    if vocab_size > arch.vocab_size:
        raise AlertJaxError(f"model.name={name}: vocab {arch.vocab_size} is smaller than the tokenizer's {vocab_size}")
    return dataclasses.replace(arch, vocab_size=-(-vocab_size // 8) * 8)


class Trainer:
    """Owns the compiled steps, the sharded state and the data position for one run."""

    def __init__(self, cfg: ExperimentConfig, workdir: Path):
        maybe_initialize_distributed()
        check_select_by(cfg.train.select_by)
        self.cfg, self.run_dir = cfg, RunDir(workdir)
        self.workdir = self.run_dir.root
        self.run_dir.claim()
        self.dev_generation = DevGeneration(cfg.data, cfg.eval) if cfg.train.select_by == "dev_rouge_l" else None
        self.is_main = is_main_process()
        self.accum = cfg.optim.grad_accum_steps
        self.total_micro = cfg.train.steps * self.accum
        self.mesh = make_mesh(cfg.mesh, devices_for(cfg.mesh))
        if is_preset(cfg.model.name):  # known before any data is built; a checkpoint's is checked once loaded
            check_positions(cfg, get_preset(cfg.model.name))
        self._prepare_data()
        state = self._initial_state()
        self._compile_steps(state)
        self.state = self._restore(state)
        self.metrics = MetricsLog(self.workdir, enabled=self.is_main)
        if self.is_main:
            truncate_after(self.run_dir.metrics, int(self.state.step) // self.accum)
            write_text(self.run_dir.config, yaml.safe_dump(to_dict(cfg), sort_keys=False))

    def _prepare_data(self) -> None:
        """Tokenizer and packed train/validation rows of `data.trained.trained_examples` (built once, cached in the
        workdir); an alignment run trains on the sampled CoTs instead, and packs only the data section's
        validation rows."""
        cfg = self.cfg
        objectives.check(cfg.train.objective, cfg.alignment)
        pairs = functools.cache(lambda: text_pairs(cfg.data))  # read the corpus at most once
        self.tokenizer = self._tokenizer(pairs)
        if cfg.train.objective == "sft":
            self.splits = packed_splits(cfg.data, cfg.train, self.tokenizer, self.workdir, pairs)
        else:
            self.splits = {"train": alignment_rows(cfg.alignment.samples, self.tokenizer, cfg.train.seq_len),
                           "validation": packed_validation(cfg.data, cfg.train, self.tokenizer, pairs()[1])}
        self._check_batch()
        self.validation_rows = pad_rows(self.splits["validation"].arrays, cfg.train.batch_size)

    def _tokenizer(self, pairs) -> Tokenizer:
        """`data.tokenizer`, else for an alignment run the tokenizer of the model it starts from (its samples were
        tokenized by it), else one trained on the corpus (`corpus.resolve_tokenizer`)."""
        cfg = self.cfg
        if cfg.train.objective != "sft" and not cfg.data.tokenizer:
            from alert_jax.evaluate import resolve_tokenizer as model_tokenizer

            return model_tokenizer(cfg.model.name, None)
        return resolve_tokenizer(cfg.data, self.workdir, pairs)

    def _initial_state(self) -> TrainState:
        """Sharded params (seeded init or a checkpoint) and AdamW state sharded like them, at step 0."""
        cfg = self.cfg
        self.arch, params, param_sh = initial_params(cfg, self.mesh, self.tokenizer.vocab_size)
        check_positions(cfg, self.arch)
        self.module = OPTForCausalLM(self.arch, _runtime(cfg))
        self.tx = make_optimizer(cfg.optim, cfg.train.steps)
        self.schedule = learning_rate_schedule(cfg.optim, cfg.train.steps)
        opt_shardings = optimizer_state_shardings(self.tx, params, param_sh, self.mesh)
        with logical_sharding(self.mesh, DEFAULT_RULES):
            opt_state = jax.jit(self.tx.init, out_shardings=opt_shardings)(params)
        step = jax.device_put(jnp.zeros((), jnp.int32), NamedSharding(self.mesh, PartitionSpec()))
        return TrainState(step, params, opt_state)

    def _compile_steps(self, state: TrainState) -> None:
        """The jitted train and eval steps, with the state's shardings pinned in and out (state donated)."""
        replicated = NamedSharding(self.mesh, PartitionSpec())
        self.state_shardings = jax.tree.map(lambda x: x.sharding, state)
        self.batch_sharding = batch_sharding(self.mesh, DEFAULT_RULES)
        self.train_step = jit_train_step(self.cfg, self.module, self.tx, self.state_shardings, self.batch_sharding)
        self.eval_step = jax.jit(make_eval_step(self.module),
                                 in_shardings=(self.state_shardings.params, self.batch_sharding),
                                 out_shardings=replicated)

    def _restore(self, state: TrainState) -> TrainState:
        """The latest checkpoint restored into `state`'s shardings (whatever mesh saved it), or `state` itself for a
        fresh run. Checkpoints trained under another architecture or seq_len are refused, naming the keys."""
        self.manager = checkpoints.checkpoint_manager(self.workdir, self.cfg.train.keep_checkpoints,
                                                      self.cfg.train.async_checkpointing)
        contract = {"model": dataclasses.asdict(self.arch), "train.seq_len": self.cfg.train.seq_len}
        if self.cfg.model.scan_layers:  # stacked params and moments: the per-layer state of every other run won't fit
            contract["model.scan_layers"] = True
        if self.manager.latest_step() is not None:
            check_contract(self.run_dir.checkpoint_contract, contract)
        run_on_main("checkpoint contract", lambda: write_json_atomically(self.run_dir.checkpoint_contract, contract))
        restored = checkpoints.restore_state(self.manager, state)
        return restored if restored is not None else state

    def _check_batch(self) -> None:
        shards = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        if self.cfg.train.batch_size % shards:
            raise AlertJaxError(f"train.batch_size={self.cfg.train.batch_size} must be divisible by "
                             f"mesh.data*mesh.fsdp={shards}")
        rows = len(self.splits["train"].arrays["inputs"])
        if rows < self.cfg.train.batch_size:
            raise AlertJaxError(f"train.batch_size={self.cfg.train.batch_size} exceeds the {rows} packed training rows")

    def _global(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return {k: jax.make_array_from_process_local_data(self.batch_sharding, v) for k, v in local.items()}

    def train_batches(self, start: int) -> Iterator[dict[str, jax.Array]]:
        """Batches from micro-step `start` on, epoch after epoch, identical to an uninterrupted run's."""
        rows = self.splits["train"].arrays
        per_epoch = steps_per_epoch(len(rows["inputs"]), self.cfg.train.batch_size)
        index, count = host_shard()
        epoch, offset = divmod(start, per_epoch)
        while True:
            for local in batches(rows, self.cfg.train.batch_size, shard_index=index, shard_count=count,
                                 start_batch=offset, seed=self.cfg.train.seed, epoch=epoch):
                yield self._global(local)
            epoch, offset = epoch + 1, 0

    def validate(self) -> dict[str, float]:
        """Token-weighted loss over every validation row (or the first `train.eval_batches` batches)."""
        index, count = host_shard()
        loss = weight = 0.0
        for i, local in enumerate(batches(self.validation_rows, self.cfg.train.batch_size, shard_index=index,
                                          shard_count=count)):
            if self.cfg.train.eval_batches and i >= self.cfg.train.eval_batches:
                break
            sums = self.eval_step(self.state.params, self._global(local))
            loss, weight = loss + float(sums.loss), weight + float(sums.weight)
        val_loss = loss / max(weight, 1.0)
        return {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50.0))}

    def run(self) -> dict[str, Any]:
        cfg = self.cfg.train
        start = int(self.state.step)
        last: dict[str, Any] = {}
        progress = _progress(self.total_micro, start, self.is_main)
        tick, tick_micro = time.perf_counter(), start
        tokens_per_micro = cfg.batch_size * cfg.seq_len
        data = self.train_batches(start)
        watch = NonFiniteWatch(cfg.on_nonfinite, self.accum)
        try:
            with logical_sharding(self.mesh, DEFAULT_RULES):
                for micro in range(start, self.total_micro):
                    self.state, metrics = self.train_step(self.state, next(data))
                    watch.add(micro, metrics["nonfinite"])
                    progress.update(1)
                    if (micro + 1) % self.accum:
                        continue
                    step = (micro + 1) // self.accum
                    logs, evals = step % cfg.log_every == 0 or step == cfg.steps, \
                        step % cfg.eval_every == 0 or step == cfg.steps
                    saves = step % cfg.checkpoint_every == 0 or step == cfg.steps
                    if not (logs or evals or saves):
                        continue
                    record: dict[str, Any] = {}
                    if logs:
                        loss = float(metrics["loss"])  # waits for the step, so the clock below is honest
                        elapsed = time.perf_counter() - tick
                        record = {"step": step, "loss": loss,
                                  "lr": float(self.schedule(step - 1)), "grad_norm": float(metrics["grad_norm"]),
                                  "tokens_per_s": (micro + 1 - tick_micro) * tokens_per_micro / max(elapsed, 1e-9),
                                  **watch.log_fields(),
                                  **{k: float(metrics[k]) for k in objectives.RANKING_METRICS if k in metrics}}
                        tick, tick_micro = time.perf_counter(), micro + 1
                    watch.check(lambda: self.metrics.write(record) if record else None)  # before anything is saved
                    if evals:
                        model = Model(self.arch, self.state.params, self.module.rt)
                        record = {"step": step, **record, **self.validate()}
                        if self.dev_generation is not None:
                            # its own Model: the decode-time kernel copy generation caches on it (CPU) is freed
                            # with it here, not kept through the training steps that follow
                            record["dev_rouge_l"] = self.dev_generation.rouge_l(
                                Model(self.arch, self.state.params, self.module.rt), self.tokenizer)
                        if self._keeps_as_best(record):
                            checkpoints.save_best(self.workdir, model, step,
                                                  {k: v for k, v in record.items() if k not in ("step", "lr")}
                                                  | {"select_by": cfg.select_by})
                    if record:
                        self.metrics.write(record)
                        progress.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k in ("loss", "val_ppl")})
                        last.update(record)
                    if saves:
                        checkpoints.save_state(self.manager, micro + 1, self.state)
        finally:
            self.manager.wait_until_finished()  # an in-flight save completes even when the run stops
            progress.close()
            self.metrics.close()
        return last

    def _keeps_as_best(self, record: dict[str, Any]) -> bool:
        """An SFT run keeps its best evaluation by `train.select_by`; an alignment run keeps its latest: its
        objective ranks samples, which neither dev perplexity nor dev ROUGE-L measures, and a fixed schedule is
        how AFT is trained."""
        return self.cfg.train.objective != "sft" or is_better(self.cfg.train.select_by, record,
                                                              checkpoints.best_record(self.workdir))


class NonFiniteStop(AlertJaxError):
    """Training met a non-finite loss or gradient norm under `train.on_nonfinite=stop`."""


class NonFiniteWatch:
    """Counts batches whose update the train step dropped as non-finite, on the device, without a host sync per
    step: the count is read only where the loop syncs anyway (log, eval and checkpoint steps), and always before
    a checkpoint or `best/` is written, so under `stop` nothing trained after a non-finite batch is ever saved."""

    def __init__(self, mode: str, accum: int):
        self.mode, self.accum = mode, accum
        self.count = jnp.zeros((), jnp.int32)
        self.first = jnp.full((), -1, jnp.int32)  # micro-step of the first non-finite batch

    def add(self, micro: int, nonfinite: jax.Array) -> None:
        self.first = jnp.where((self.first < 0) & (nonfinite > 0), micro, self.first)
        self.count = self.count + nonfinite

    def log_fields(self) -> dict[str, int]:
        return {"skipped_batches": int(self.count)} if self.mode == "skip" else {}

    def check(self, before_stopping) -> None:
        """Under `stop`, end the run (after `before_stopping()`, e.g. logging the bad step) if any batch was bad."""
        if self.mode != "stop" or int(self.count) == 0:
            return
        before_stopping()
        step = int(self.first) // self.accum + 1
        raise NonFiniteStop(f"train.on_nonfinite=stop: non-finite loss or grad norm at step {step}; stopped without "
                            "saving anything trained after it (earlier checkpoints and best/ are kept; set "
                            "train.on_nonfinite=skip to drop such batches instead)")


def pad_rows(rows: dict[str, np.ndarray], multiple: int) -> dict[str, np.ndarray]:
    """Append all-zero rows (segment 0, loss weight 0: they add nothing to a loss sum) up to a multiple of `multiple`."""
    missing = -len(rows["inputs"]) % multiple
    return {k: np.concatenate([v, np.zeros((missing, *v.shape[1:]), v.dtype)]) for k, v in rows.items()}


def _progress(total: int, start: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, disable=not enabled, desc="finetune", unit="step", dynamic_ncols=True)


def finetune(cfg: ExperimentConfig, workdir: str | Path) -> dict[str, Any]:
    """Train per `cfg` in `workdir` (resuming if it holds checkpoints); returns the last logged metrics."""
    return Trainer(cfg, Path(workdir)).run()
