"""The decode roofline of this machine: how close greedy decode gets to the time its bytes and FLOPs need.

Measures the machine with jitted JAX ops (memory read bandwidth: a sum over an array far larger than cache;
matmul rate: a large fp32 GEMM), counts what one decode step of an OPT must move and compute at a batch size
(decode_step.py: every weight read once as stored, the whole KV cache read once, one slot written; 2 FLOPs per
multiply-add), and compares the floor `max(bytes / bandwidth, flops / rate)` with our measured decode step (and,
beside it, the floor of a step that cannot overlap its reads with its arithmetic, `bytes / bandwidth + flops /
rate`: near the ridge, at batch 8, the same two cores do both). The measured step is the extra time of a
64-token over a 16-token greedy generate (same prompts, no early stop), divided by the 48 extra steps, so
prefill and compile drop out. Random weights (speed does not depend on them); float32 runs three ways:
through the LM head's int8 screen (what greedy `generate` does on CPU up to 4 rows: it reads the screen instead
of the float head, so its floor is lower), through the float head (what it does beyond), both with the decode
loop's [out, in] kernels (its CPU default), and through the float head with the [in, out] kernels the model
stores (the decode before that default, for comparison); int8 runs the int8 weight-only model, w8a8 the int8
model with int8 activations (both read one byte per matmul weight, plus its scales). FLOPs are the float step's
in every row (the screen's int8 products stand in for the float head's).

    python benchmarks/roofline.py [--layers 6 --batches 1,8 --prompt-len 64 --repeats 3 --quantize none,int8,w8a8]
"""
from __future__ import annotations

import argparse
import dataclasses

import jax
import jax.numpy as jnp

from alert_jax.model.io import quantize_model
from alert_jax.model.model import Model, init_params
from alert_jax.model.opt import RuntimeOptions
from alert_jax.model.presets import OPTConfig, get_preset
from decode_step import cache_slots, decode_step_bytes, decode_step_seconds  # noqa: E402  (benchmarks/)
from results import LoadAverage  # noqa: E402  (benchmarks/results.py)
from timing import best_seconds  # noqa: E402  (benchmarks/timing.py)

SHORT, LONG = 16, 64  # new tokens of the two generates whose time difference is LONG − SHORT decode steps


def read_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes/s of the faster of two jitted full reads of a float32 array much larger than the caches: a sum, and
    a vector-matrix product (XLA-CPU may run a reduction on one thread and a product on several)."""
    matrix = jnp.ones((1024, megabytes * 2**20 // 4 // 1024), jnp.float32)
    vector = jnp.ones((1, 1024), jnp.float32)
    total, product = jax.jit(jnp.sum), jax.jit(jnp.matmul)
    return matrix.nbytes / min(best_seconds(lambda: total(matrix).block_until_ready(), repeats),
                               best_seconds(lambda: product(vector, matrix).block_until_ready(), repeats))


def matmul_rate(m: int = 1024, k: int = 768, n: int = 3072, repeats: int = 5) -> float:
    """FLOP/s of a jitted float32 [m,k]×[k,n] product (the shape of a batched MLP layer)."""
    a, b = jnp.ones((m, k), jnp.float32), jnp.ones((k, n), jnp.float32)
    product = jax.jit(jnp.matmul)
    return 2 * m * k * n / best_seconds(lambda: product(a, b).block_until_ready(), repeats)


def decode_step_flops(cfg: OPTConfig, batch: int, slots: int) -> float:
    """FLOPs of one decode step: the matmuls (layers + tied LM head) 2·B·params, attention 4·B·slots·D a layer."""
    d, f, layers = cfg.hidden_size, cfg.ffn_dim, cfg.num_hidden_layers
    matmul_params = layers * (4 * d * d + 2 * d * f) + cfg.vocab_size * d
    return 2 * batch * matmul_params + 4 * batch * slots * d * layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="opt-125m")
    parser.add_argument("--layers", type=int, default=6, help="decoder layers (0 = the preset's)")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quantize", default="none,int8,w8a8")
    args = parser.parse_args()

    cfg = get_preset(args.preset)
    if args.layers:
        cfg = dataclasses.replace(cfg, num_hidden_layers=args.layers)
    load = LoadAverage()
    bandwidth, rate = read_bandwidth(), matmul_rate()
    print(f"read bandwidth {bandwidth / 1e9:.1f} GB/s; matmul {rate / 1e9:.1f} GFLOP/s")
    print(f"{args.preset} shape, {cfg.num_hidden_layers} layers; step floor = max(bytes/bandwidth, flops/rate); "
          f"no-overlap floor = bytes/bandwidth + flops/rate")
    print("| weights | batch | MB/step | GFLOP/step | floor ms | measured ms/step | % of roofline | "
          "no-overlap floor ms | % of it |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = Model(cfg, init_params(cfg, RuntimeOptions()))
    # (name, screen_head, out_in_kernels) per float32 row; int8 models have neither
    float_rows = [("fp32, head screen", True, True), ("fp32, float head", False, True),
                  ("fp32, float head, [in, out] kernels", False, False)]
    rows = [(mode, row) for mode in args.quantize.split(",")
            for row in (float_rows if mode == "none" else [(mode, None, None)])]
    for mode, (name, screen_head, out_in_kernels) in rows:
        model = base if mode == "none" else quantize_model(base, mode=mode)
        for batch in map(int, args.batches.split(",")):
            step_bytes = decode_step_bytes(model, batch, args.prompt_len, LONG, screen_head=bool(screen_head))
            flops = decode_step_flops(cfg, batch, cache_slots(args.prompt_len, LONG))
            floor = max(step_bytes / bandwidth, flops / rate)
            serial = step_bytes / bandwidth + flops / rate
            step = decode_step_seconds(model, batch, args.prompt_len, short=SHORT, long=LONG, repeats=args.repeats,
                                       screen_head=screen_head, out_in_kernels=out_in_kernels)
            print(f"| {name} | {batch} | {step_bytes / 1e6:.0f} | {flops / 1e9:.2f} | {floor * 1e3:.1f} | "
                  f"{step * 1e3:.1f} | {100 * floor / step:.0f}% | {serial * 1e3:.1f} | {100 * serial / step:.0f}% |",
                  flush=True)
    print(load.text())


if __name__ == "__main__":
    main()
