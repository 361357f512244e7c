"""Train-step MFU and decode speed against the memory-bandwidth bound, on whatever accelerator jax sees.

One command for the first hour on a GPU or TPU host:

    python benchmarks/bench_accelerator.py                       # OPT-1.3B, configs/experiments/opt-1.3b-cot.yaml
    python benchmarks/bench_accelerator.py --tiny --no-write     # opt-micro on CPU: what the test suite runs

Train: the experiment's train step (bf16 compute, fp32 master params and AdamW state, its mesh over every device,
its micro-batch) on random packed rows, laid out exactly as `alert-jax plan` compiles it
(`alert_jax.plan.train_program`), timed over `--steps` steps after a compile step. MFU = analytic train FLOPs per
token (6N + 12·L·H·T, alert_jax/plan.py) × tokens/s / (devices × the chip's dense bf16 peak from
`alert_jax.plan.HARDWARE`). Target on H100: MFU ≥ 50%.

Decode: greedy `generate` at batch 1 (and the experiment's eval batch); decode time = (time(prompt + N new tokens)
− time(prompt + 1 new token)) / (N − 1). The bound: a decode step must read every parameter (as stored: fp32 unless
`--set model.param_dtype=bfloat16`) and the whole KV cache it allocated once (decode_step.py), so tokens/s ≤
batch × devices × HBM bandwidth / (param bytes + KV bytes). Target on H100: batch-1 decode ≥ 60% of that bound.
Decode runs twice: reading the float LM head (`generate`'s default off CPU) and through its int8 screen (the
default on CPU up to 4 rows, model/screened_head.py; its bound counts the screen's bytes), to decide whether the
screen pays off on this chip too.
"""
from __future__ import annotations

import argparse
import datetime
import math
import time
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from alert_jax.config import ExperimentConfig, load_config
from alert_jax.model.model import Model
from alert_jax.model.opt import head_table
from alert_jax.parallel.mesh import devices_for, make_mesh
from alert_jax.parallel.rules import DEFAULT_RULES, logical_sharding
from alert_jax.plan import HARDWARE, Hardware, abstract_params, analytic_flops_per_token, train_program
from decode_step import decode_step_bytes, decode_step_seconds  # benchmarks/decode_step.py
from results import publish  # benchmarks/results.py

REPO = Path(__file__).resolve().parents[1]
TINY_OVERRIDES = ("model.name=opt-micro", "model.dtype=float32", "mesh.data=1", "mesh.fsdp=-1", "mesh.tensor=1",
                  "train.batch_size=8", "train.seq_len=128", "optim.grad_accum_steps=1", "eval.batch_size=1",
                  "eval.dtype=float32", "eval.mesh.fsdp=-1")
# device_kind substrings → the HARDWARE entry whose peak and bandwidth apply
DEVICE_KINDS = (("h100", "h100"), ("h200", "h200"), ("a100", "a100"), ("v5 lite", "v5e"), ("v5e", "v5e"),
                ("v5p", "v5p"), ("v5", "v5p"), ("v4", "v4"))


def detect_hardware() -> Optional[Hardware]:
    kind = jax.devices()[0].device_kind.lower()
    return next((HARDWARE[name] for key, name in DEVICE_KINDS if key in kind), None)


def materialise(abstract: Any, seed: int = 0, scale: float = 0.02) -> Any:
    """Arrays in the shapes, dtypes and shardings of an abstract tree: floats ~ N(0, scale²) (all zeros for
    scale 0, as a fresh AdamW state must be: a negative second moment would make the update NaN), integers 0."""
    leaves, treedef = jax.tree.flatten(abstract)

    def make(key):
        keys = jax.random.split(key, len(leaves))
        return treedef.unflatten([
            scale * jax.random.normal(k, x.shape, x.dtype) if jnp.issubdtype(x.dtype, jnp.floating)
            else jnp.zeros(x.shape, x.dtype) for k, x in zip(keys, leaves)])

    return jax.jit(make, out_shardings=treedef.unflatten([x.sharding for x in leaves]))(jax.random.PRNGKey(seed))


def random_rows(batch: dict[str, jax.ShapeDtypeStruct], vocab: int) -> dict[str, jax.Array]:
    """Packed rows of random tokens: one example per row, every token a target (any other field, such as a
    ranking objective's sample fields, zero: no samples)."""
    rows, length = batch["inputs"].shape
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, vocab, (rows, length + 1), dtype=np.int32)
    host = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "segment_ids": np.ones((rows, length), np.int32),
            "positions": np.broadcast_to(np.arange(length, dtype=np.int32), (rows, length)),
            "loss_weights": np.ones((rows, length), np.float32)}
    host.update({k: np.zeros(v.shape, v.dtype) for k, v in batch.items() if k not in host})
    return {k: jax.device_put(v, batch[k].sharding) for k, v in host.items()}


def bench_train(cfg: ExperimentConfig, mesh, steps: int) -> dict[str, float]:
    step, abstract_state, abstract_batch = train_program(cfg, mesh)
    state = abstract_state._replace(params=materialise(abstract_state.params),
                                    opt_state=materialise(abstract_state.opt_state, scale=0.0))
    state = state._replace(step=materialise(state.step, scale=0.0))
    batch = random_rows(abstract_batch, head_table(abstract_state.params).shape[0])
    with logical_sharding(mesh, DEFAULT_RULES):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        float(metrics["loss"])
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = step(state, batch)
        loss = float(metrics["loss"])  # waits for the last step
        seconds = (time.perf_counter() - start) / steps
    return {"compile_s": compile_s, "step_s": seconds, "loss": loss,
            "tokens_per_s": cfg.train.batch_size * cfg.train.seq_len / seconds}


def bench_decode(model: Model, batch: int, prompt: int, new_tokens: int, screen_head: bool) -> dict[str, Any]:
    decode_s = decode_step_seconds(model, batch, prompt, short=1, long=new_tokens, repeats=1,
                                   screen_head=screen_head)
    return {"batch": batch, "screen_head": screen_head, "decode_s": decode_s, "tokens_per_s": batch / decode_s,
            "bytes_per_step": decode_step_bytes(model, batch, prompt, new_tokens, screen_head=screen_head)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs/experiments/opt-1.3b-cot.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--tiny", action="store_true", help="opt-micro, short rows: runs on a CPU in seconds")
    parser.add_argument("--steps", type=int, default=10, help="timed train steps")
    parser.add_argument("--prompt", type=int, default=512, help="decode prompt length")
    parser.add_argument("--new-tokens", type=int, default=128, help="decode length")
    parser.add_argument("--hardware", choices=sorted(HARDWARE), help="peak/bandwidth entry (default: detected)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    cfg = load_config(args.config, [*(TINY_OVERRIDES if args.tiny else ()), *args.set])
    prompt, new_tokens = (32, 16) if args.tiny else (args.prompt, args.new_tokens)
    chip = HARDWARE[args.hardware] if args.hardware else detect_hardware()
    devices = devices_for(cfg.mesh)
    train = bench_train(cfg, make_mesh(cfg.mesh, devices), args.steps)
    eval_mesh = make_mesh(cfg.eval.mesh, devices_for(cfg.eval.mesh))
    module, abstract = abstract_params(cfg, eval_mesh, cfg.eval.dtype)
    model = Model(module.cfg, materialise(abstract), module.rt)
    decodes = [bench_decode(model, b, prompt, new_tokens, screen) for b in sorted({1, cfg.eval.batch_size})
               for screen in (False, True)]
    flops_per_token = analytic_flops_per_token(cfg)
    n = len(devices)

    def mfu(tokens_per_s: float) -> str:
        return f"{tokens_per_s * flops_per_token / (n * chip.peak_bf16_flops):.1%}" if chip else "n/a"

    def bound(d: dict[str, float]) -> str:
        if chip is None:
            return "n/a"
        ceiling = d["batch"] * len(eval_mesh.devices.flat) * chip.hbm_bytes_per_s / d["bytes_per_step"]
        return f"{ceiling:.1f} tokens/s; {d['tokens_per_s'] / ceiling:.1%} of it"

    lines = [
        f"## Accelerator benchmark: {cfg.model.name} on {n} x {jax.devices()[0].device_kind} "
        f"({datetime.date.today().isoformat()})",
        "",
        f"- jax {jax.__version__}; config {Path(args.config).name}{' --tiny' if args.tiny else ''} "
        f"{' '.join(args.set)}; mesh {dict(make_mesh(cfg.mesh, devices).shape)}; compute {cfg.model.dtype}, "
        f"params {cfg.model.param_dtype}; peak/bandwidth: {chip.source if chip else 'unknown chip (no MFU)'}",
        f"- train: micro-batch {cfg.train.batch_size} x {cfg.train.seq_len}, remat={cfg.model.remat}, "
        f"{args.steps} timed steps after the compile step ({train['compile_s']:.1f} s); "
        f"{flops_per_token:.4g} FLOPs/token (6N + 12·L·H·T)",
        f"- decode: greedy, prompt {prompt}, {new_tokens} new tokens, eval dtype {cfg.eval.dtype}; "
        f"time(N new) − time(1 new)",
        "",
        "| measurement | value | target |",
        "|---|---|---|",
        f"| train tokens/s | {train['tokens_per_s']:.1f} ({train['step_s'] * 1e3:.1f} ms/step) | |",
        f"| train MFU | {mfu(train['tokens_per_s'])} | ≥ 50% on H100 |",
    ]
    for d in decodes:
        target = "≥ 60% of the bound on H100" if d["batch"] == 1 and not d["screen_head"] else ""
        head = "through the LM head's int8 screen" if d["screen_head"] else "float head"
        lines.append(f"| decode batch {d['batch']}, {head}: tokens/s (HBM bound) | {d['tokens_per_s']:.1f} "
                     f"({bound(d)}) | {target} |")
    lines.append("")
    if not math.isfinite(train["loss"]):
        raise SystemExit(f"train loss is {train['loss']}: the benchmark's step is broken")
    publish(lines, args.no_write)


if __name__ == "__main__":
    main()
