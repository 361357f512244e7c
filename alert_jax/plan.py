"""`alert-jax plan`: will this experiment fit its accelerators — decided ahead of time, on a laptop.

The train step and the generation programs are lowered from `jax.ShapeDtypeStruct`s carrying the shardings the
trainer and `generate` would use, and compiled for N simulated devices; XLA's `memory_analysis()` then gives the
bytes one device holds, and `cost_analysis()` the FLOPs of one step. No parameter is ever allocated, so a 13B
plan runs on a machine with a fraction of 13B × 16 bytes of memory.

When the train step does not fit, candidate changes are tried in order — each a list of `--set` overrides, so a
new knob (a remat policy, scanned layers) is one more entry in `structural_candidates` — and, for each, the
largest micro-batch (rows per device, with gradient accumulation keeping `batch_size × grad_accum_steps`, the
paper's effective batch) that fits. The first that fits is suggested.

The figures are XLA CPU's: an accelerator's compiler schedules differently (fusion, remat, collectives), so a
`RESERVE_FRACTION` of the device's memory is kept free before the verdict says "fits".
"""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from alert_jax.config import ExperimentConfig, load_config
from alert_jax.errors import AlertJaxError
from alert_jax.parallel.mesh import MESH_AXES, resolve_mesh_shape

GIB = 1024**3
RESERVE_FRACTION = 0.10  # of device memory kept for the runtime, fragmentation and compiler differences


class PlanError(AlertJaxError):
    """A plan that cannot be made: unknown hardware, a malformed size, too few simulated devices."""


@dataclasses.dataclass(frozen=True)
class Hardware:
    """One accelerator chip: memory, dense bf16 peak and HBM bandwidth, from the vendor's published numbers."""

    memory_bytes: int
    peak_bf16_flops: float
    hbm_bytes_per_s: float
    source: str


HARDWARE: dict[str, Hardware] = {
    "v4": Hardware(32 * GIB, 275e12, 1.2e12, "cloud.google.com/tpu/docs/v4: 32 GiB HBM2, 275 TFLOP/s bf16, 1200 GB/s"),
    "v5e": Hardware(16 * GIB, 197e12, 0.819e12, "cloud.google.com/tpu/docs/v5e: 16 GiB HBM2, 197 TFLOP/s bf16, 819 GB/s"),
    "v5p": Hardware(95 * GIB, 459e12, 2.765e12, "cloud.google.com/tpu/docs/v5p: 95 GiB HBM2e, 459 TFLOP/s bf16, 2765 GB/s"),
    "h100": Hardware(80 * 10**9, 989e12, 3.35e12, "NVIDIA H100 SXM5 datasheet: 80 GB HBM3, 989 TFLOP/s dense bf16, 3.35 TB/s"),
    "a100": Hardware(80 * 10**9, 312e12, 2.039e12, "NVIDIA A100 SXM4 80GB datasheet: 312 TFLOP/s dense bf16, 2.039 TB/s"),
    "h200": Hardware(141 * 10**9, 989e12, 4.8e12, "NVIDIA H200 SXM datasheet: 141 GB HBM3e, 989 TFLOP/s dense bf16, 4.8 TB/s"),
}

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_TARGET_COMMENT = re.compile(r"^#\s*target hardware:\s*(\d+)\s*x\s*([\w.-]+)", re.IGNORECASE | re.MULTILINE)


def parse_bytes(text: str) -> int:
    """`32GiB`, `80GB`, `16 gib`, `1e9` → bytes."""
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise PlanError(f"--device-memory {text!r}: expected a size such as 32GiB or 80GB")
    try:
        return int(float(match.group(1)) * _UNITS[unit])
    except ValueError:
        raise PlanError(f"--device-memory {text!r}: {match.group(1)!r} is not a number") from None


def hardware(name: str) -> Hardware:
    if name.lower() not in HARDWARE:
        raise PlanError(f"unknown hardware {name!r}; known: {', '.join(HARDWARE)}")
    return HARDWARE[name.lower()]


def target_hardware(config_path: str | Path) -> Optional[tuple[int, str]]:
    """(chips, hardware name) from a config's `# target hardware: 8 x h100` comment, if it has one."""
    try:
        match = _TARGET_COMMENT.search(Path(config_path).read_text())
    except OSError as exc:
        raise PlanError(f"{config_path}: {exc.strerror}") from None
    return (int(match.group(1)), match.group(2).lower()) if match else None


@dataclasses.dataclass(frozen=True)
class Footprint:
    """Bytes one device holds for one compiled program, and the FLOPs it runs per call (per device)."""

    params: int
    optimizer: int
    temporaries: int
    total: int  # arguments + outputs not aliased to donated arguments + temporaries
    flops: float


def analytic_flops_per_token(cfg: ExperimentConfig) -> float:
    """6N (forward + backward matmuls) + 12·layers·hidden·seq (attention scores and values, unmasked as computed),
    the PaLM paper's (Chowdhery et al. 2022, appendix B) count; N leaves out the position table, which is gathered,
    not multiplied."""
    arch = architecture(cfg.model.name)
    n = arch.num_params() - (arch.max_position_embeddings + 2) * arch.hidden_size
    return 6 * n + 12 * arch.num_hidden_layers * arch.hidden_size * cfg.train.seq_len


def per_device_bytes(tree: Any) -> int:
    """Bytes one device holds of a tree of sharded arrays or ShapeDtypeStructs."""
    import jax

    return sum(x.dtype.itemsize * math.prod(x.sharding.shard_shape(x.shape)) for x in jax.tree.leaves(tree))


def _abstract(tree: Any, shardings: Any) -> Any:
    import jax

    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def simulated_mesh(mesh_cfg, devices: int):
    import jax

    from alert_jax.parallel.mesh import make_mesh

    if jax.device_count() < devices:
        raise PlanError(f"{devices} devices asked for but jax sees {jax.device_count()}: run `alert-jax plan`, "
                        f"which simulates them (XLA_FLAGS=--xla_force_host_platform_device_count={devices})")
    return make_mesh(mesh_cfg, jax.devices()[:devices])


def architecture(name: str):
    """The OPTConfig `model.name` means, resolved as the trainer and evaluate load it (`io.model_config`: a preset,
    an HF or alert_jax model directory, a workdir's best model, a metaseq file), read without touching a weight."""
    from alert_jax.model.io import ModelSourceError, model_config

    try:
        return model_config(name)
    except ModelSourceError as err:
        raise PlanError(f"model.name: {err}") from None


def abstract_params(cfg: ExperimentConfig, mesh, dtype: str):
    """(module, params as sharded ShapeDtypeStructs) for the config's model, laid out by the default rules."""
    from alert_jax.model import io
    from alert_jax.model.model import runtime_options
    from alert_jax.model.opt import OPTForCausalLM

    runtime = runtime_options(cfg.model, dtype)
    arch = architecture(cfg.model.name)
    return OPTForCausalLM(arch, runtime), io.abstract_params(arch, runtime, mesh)


def _footprint(compiled: Any, params: int, optimizer: int) -> Footprint:
    stats = compiled.memory_analysis()
    total = stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes \
        + stats.temp_size_in_bytes
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return Footprint(params, optimizer, stats.temp_size_in_bytes, total, float((cost or {}).get("flops", 0.0)))


def train_program(cfg: ExperimentConfig, mesh) -> tuple[Any, Any, Any]:
    """(jitted train step, abstract state, abstract batch) as the trainer lays them out over `mesh`: params by the
    logical-axis rules, AdamW state like its params, rows over data × fsdp, state donated, and the trainer's own
    step (`train.step.jit_train_step`: the config's objective, with the sample fields in the batch of a ranking
    one). The benchmark (benchmarks/bench_accelerator.py) materialises the same abstract state to time the step."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    from alert_jax.parallel.rules import DEFAULT_RULES, batch_sharding, optimizer_state_shardings
    from alert_jax.train.optim import make_optimizer
    from alert_jax.train.step import TrainState, batch_spec, jit_train_step

    module, params = abstract_params(cfg, mesh, cfg.model.dtype)
    tx = make_optimizer(cfg.optim, cfg.train.steps)
    opt_shardings = optimizer_state_shardings(tx, params, jax.tree.map(lambda x: x.sharding, params), mesh)
    opt_state = _abstract(jax.eval_shape(tx.init, params), opt_shardings)
    state = TrainState(jax.ShapeDtypeStruct((), jnp.int32, sharding=NamedSharding(mesh, PartitionSpec())), params,
                       opt_state)
    rows = batch_sharding(mesh, DEFAULT_RULES)
    step = jit_train_step(cfg, module, tx, jax.tree.map(lambda x: x.sharding, state), rows)
    return step, state, batch_spec(cfg, rows)  # the step is traced (under the callers' rules) when lowered


def train_footprint(cfg: ExperimentConfig, devices: int) -> Footprint:
    """The train step of `cfg` (micro-batch `train.batch_size` × `train.seq_len`) compiled over `devices`."""
    from alert_jax.parallel.rules import DEFAULT_RULES, logical_sharding

    mesh = simulated_mesh(cfg.mesh, devices)
    step, state, batch = train_program(cfg, mesh)
    with logical_sharding(mesh, DEFAULT_RULES):
        compiled = step.lower(state, batch).compile()
    return _footprint(compiled, per_device_bytes(state.params), per_device_bytes(state.opt_state))


def generation_prompt_length(cfg: ExperimentConfig) -> int:
    """The longest prompt evaluation can give the model: the position table less the generated tokens' bucket,
    so the KV cache is as large as it ever gets."""
    from alert_jax.generation import bucket_length

    return architecture(cfg.model.name).max_position_embeddings - bucket_length(cfg.eval.max_new_tokens)


def generation_footprint(cfg: ExperimentConfig, devices: int) -> Footprint:
    """The larger (by total) of prefill and greedy decode at `eval.batch_size` and the longest prompt, over
    `eval.mesh`; the model's params in `model.param_dtype`, computing in `eval.dtype` as `evaluate` loads it."""
    from alert_jax.generation import compile_ahead_of_time

    mesh = simulated_mesh(cfg.eval.mesh, devices)
    module, params = abstract_params(cfg, mesh, cfg.eval.dtype)
    programs = compile_ahead_of_time(module, params, mesh, cfg.eval.batch_size, generation_prompt_length(cfg),
                                     cfg.eval.max_new_tokens)
    footprints = [_footprint(p, per_device_bytes(params), 0) for p in programs]
    return max(footprints, key=lambda f: f.total)


# --- what to try when the train step does not fit ------------------------------------------------------------

# Memory savers other than the micro-batch and fsdp, nearest (cheapest in step time) first; one that the config
# already has is skipped. Remat goes with scanned layers: XLA:CPU, whose figures these are, schedules an unrolled
# layer's recomputation into the forward pass and saves nothing (benchmarks/RESULTS.md, "Remat ... on XLA:CPU").
MEMORY_SAVERS: tuple[tuple[str, ...], ...] = (("model.scan_layers=true", "model.remat=full"),)


def structural_candidates(load: Callable[[Sequence[str]], ExperimentConfig], devices: int) -> list[tuple[str, ...]]:
    """Changes other than the micro-batch, nearest first; each a tuple of `--set` overrides (() = as configured).

    `load(extra)` is the config with `extra` overrides on top. More fsdp (the data axis folded into fsdp, so the
    state is sharded over it too) costs only communication, so it comes first, then each of `MEMORY_SAVERS`
    alone and with more fsdp.
    """
    base = load(())
    data, fsdp, tensor = resolve_mesh_shape(base.mesh, devices)
    changes = [("mesh.data=1", f"mesh.fsdp={data * fsdp}", f"mesh.tensor={tensor}")] if data > 1 else []
    changes += [saver for saver in MEMORY_SAVERS if load(saver) != base]
    options: list[tuple[str, ...]] = [()]
    for change in changes:
        options += [(*option, *change) for option in options]
    return options


def micro_batch_overrides(cfg: ExperimentConfig, devices: int, rows_per_device: int) -> tuple[str, ...]:
    """Overrides giving `rows_per_device` rows per device and the accumulation that keeps the effective batch."""
    data, fsdp, _ = resolve_mesh_shape(cfg.mesh, devices)
    micro = rows_per_device * data * fsdp
    accum = cfg.train.batch_size * cfg.optim.grad_accum_steps // micro
    return (f"train.batch_size={micro}", f"optim.grad_accum_steps={accum}")


def rows_per_device_options(cfg: ExperimentConfig, devices: int) -> list[int]:
    """Rows per device that split the effective batch evenly, largest first."""
    data, fsdp, _ = resolve_mesh_shape(cfg.mesh, devices)
    effective = cfg.train.batch_size * cfg.optim.grad_accum_steps
    most = cfg.train.batch_size // (data * fsdp)
    return [r for r in range(most, 0, -1) if effective % (r * data * fsdp) == 0]


@dataclasses.dataclass(frozen=True)
class Trial:
    overrides: tuple[str, ...]
    footprint: Footprint


def fit_train_step(config_path: Optional[str], overrides: Sequence[str], devices: int, budget: int,
                   say: Callable[[str], None]) -> tuple[list[Trial], Optional[Trial]]:
    """Every trial compiled, and the first that fits within `budget` bytes (None if nothing does).

    For each structural candidate: the config's own micro-batch, then one row per device; if only the latter fits,
    the largest row count a straight line through the two predicts to fit, stepping down until one does.
    """
    trials: list[Trial] = []

    def load(extra: Sequence[str]) -> ExperimentConfig:
        return load_config(config_path, [*overrides, *extra])

    def trial(extra: tuple[str, ...]) -> Trial:
        cfg = load(extra)
        say(f"  compiling train step {' '.join(extra) or '(as configured)'} ...")
        result = Trial(extra, train_footprint(cfg, devices))
        say(f"    total {human(result.footprint.total)} per device")
        trials.append(result)
        return result

    for change in structural_candidates(load, devices):
        changed = load(change)
        options = rows_per_device_options(changed, devices)
        first = trial(change)
        if first.footprint.total <= budget:
            return trials, first
        if len(options) < 2:
            continue
        smallest = trial((*change, *micro_batch_overrides(changed, devices, options[-1])))
        if smallest.footprint.total > budget:
            continue
        per_row = (first.footprint.total - smallest.footprint.total) / max(options[0] - options[-1], 1)
        predicted = options[-1] + (budget - smallest.footprint.total) / max(per_row, 1.0)
        for rows in [r for r in options[1:-1] if r <= predicted]:
            attempt = trial((*change, *micro_batch_overrides(changed, devices, rows)))
            if attempt.footprint.total <= budget:
                return trials, attempt
        return trials, smallest
    return trials, None


# --- the report ----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PlanRequest:
    config_path: Optional[str]
    overrides: tuple[str, ...]
    devices: int
    device_memory: Optional[int]  # bytes; None = report sizes without a verdict
    hardware: Optional[str]


def human(size: float) -> str:
    """Bytes in GiB, or in MiB below one GiB (tiny test models)."""
    return f"{size / GIB:.2f} GiB" if size >= GIB else f"{size / 2**20:.1f} MiB"


def _row(name: str, f: Footprint, unit: int) -> str:
    cells = (f.params, f.optimizer, f.temporaries, f.total)
    return f"  {name:<22}" + "".join(f"{b / unit:>12.2f}" for b in cells)


def plan(request: PlanRequest, say: Callable[[str], None] = print) -> bool:
    """Print the plan of `request` through `say`; True when the train step and generation fit (or no memory given)."""
    cfg = load_config(request.config_path, list(request.overrides))
    chip = hardware(request.hardware) if request.hardware else None
    memory = request.device_memory or (chip.memory_bytes if chip else None)
    budget = int(memory * (1 - RESERVE_FRACTION)) if memory else None
    mesh = dict(zip(MESH_AXES, resolve_mesh_shape(cfg.mesh, request.devices)))
    say(f"plan: {cfg.model.name} on {request.devices} devices, mesh {mesh}, "
        f"micro-batch {cfg.train.batch_size} x {cfg.train.seq_len} x {cfg.optim.grad_accum_steps} accumulated, "
        f"remat={cfg.model.remat}, dtype {cfg.model.dtype}")
    if memory:
        say(f"device memory {human(memory)} ({request.hardware or 'given'}); "
            f"budget {human(budget)} after a {RESERVE_FRACTION:.0%} reserve")
    trials, fit = fit_train_step(request.config_path, request.overrides, request.devices, budget or 2**62, say)
    train = trials[0].footprint
    generation = generation_footprint(cfg, request.devices)
    unit, unit_name = (GIB, "GiB") if max(train.total, generation.total) >= GIB else (2**20, "MiB")
    say("")
    say(f"  {unit_name + ' per device':<22}{'params':>12}{'optimizer':>12}{'temporaries':>12}{'total':>12}")
    say(_row("train step", train, unit))
    if fit is not None and fit.overrides:
        say(_row("train step, suggested", fit.footprint, unit))
    say(_row(f"generation (batch {cfg.eval.batch_size})", generation, unit))
    tokens = cfg.train.batch_size * cfg.train.seq_len
    measured = train.flops * request.devices / tokens
    analytic = analytic_flops_per_token(cfg)
    say("")
    say(f"train FLOPs per token: {measured:.4g} compiled (cost_analysis x {request.devices} devices / {tokens} "
        f"tokens), {analytic:.4g} analytic (6N + 12·L·H·T); {measured / analytic:.2f}x (remat's recomputed "
        f"forward and work replicated over tensor counts in the compiled figure only)")
    if chip:
        say(f"  MFU = tokens/s x {analytic:.4g} / ({request.devices} x {chip.peak_bf16_flops:.4g} FLOP/s); "
            f"{chip.source}")
    if budget is None:
        return True
    train_fits = fit is not None and fit.overrides == ()
    gen_fits = generation.total <= budget
    say("")
    say(f"verdict: train step {'fits' if train_fits else 'does NOT fit'}, "
        f"generation {'fits' if gen_fits else 'does NOT fit'} in {human(budget)}")
    if not train_fits:
        if fit is None:
            say("  no candidate fits: more devices, a larger chip, or a memory-saving change not yet tried")
        else:
            say(f"  nearest change that fits ({human(fit.footprint.total)}): "
                + " ".join(f"--set {o}" for o in fit.overrides))
    if not gen_fits:
        per_row = (generation.total - generation.params) / cfg.eval.batch_size
        rows = max(1, int((budget - generation.params) / per_row))
        say(f"  generation: try --set eval.batch_size={rows} (beyond the params, memory grows about linearly "
            f"with the batch)")
    return train_fits and gen_fits
