"""The decode roofline of this machine: how close greedy decode gets to the time its bytes and FLOPs need.

Measures the machine with jitted JAX ops (memory read bandwidth: a sum over an array far larger than cache;
matmul rate: a large fp32 GEMM), counts what one decode step of an OPT must move and compute at a batch size
(every weight read once, the KV cache read once, one slot written; 2 FLOPs per multiply-add), and compares the
floor `max(bytes / bandwidth, flops / rate)` with our measured decode step: the extra time of a 64-token over a
16-token greedy generate (same prompts, no early stop), divided by the 48 extra steps, so prefill and compile
drop out. Random weights (speed does not depend on them); int8 runs the int8 weight-only model, w8a8 the int8
model with int8 activations (both read one byte per matmul weight).

    python benchmarks/roofline.py [--layers 6 --batches 1,8 --prompt-len 64 --repeats 3 --quantize none,int8,w8a8]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from alert_jax.generation import bucket_length, generate
from alert_jax.model.io import quantize_model
from alert_jax.model.model import Model, init_params
from alert_jax.model.opt import RuntimeOptions
from alert_jax.model.presets import OPTConfig, get_preset


def _best_seconds(fn, repeats: int) -> float:
    fn()  # compile / warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def read_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes/s of the faster of two jitted full reads of a float32 array much larger than the caches: a sum, and
    a vector-matrix product (XLA-CPU may run a reduction on one thread and a product on several)."""
    matrix = jnp.ones((1024, megabytes * 2**20 // 4 // 1024), jnp.float32)
    vector = jnp.ones((1, 1024), jnp.float32)
    total, product = jax.jit(jnp.sum), jax.jit(jnp.matmul)
    return matrix.nbytes / min(_best_seconds(lambda: total(matrix).block_until_ready(), repeats),
                               _best_seconds(lambda: product(vector, matrix).block_until_ready(), repeats))


def matmul_rate(m: int = 1024, k: int = 768, n: int = 3072, repeats: int = 5) -> float:
    """FLOP/s of a jitted float32 [m,k]×[k,n] product (the shape of a batched MLP layer)."""
    a, b = jnp.ones((m, k), jnp.float32), jnp.ones((k, n), jnp.float32)
    product = jax.jit(jnp.matmul)
    return 2 * m * k * n / _best_seconds(lambda: product(a, b).block_until_ready(), repeats)


@dataclasses.dataclass(frozen=True)
class StepCost:
    """What one decode step of `batch` rows over `slots` cache slots moves and computes."""

    weight_bytes: float
    cache_bytes: float
    flops: float

    @property
    def bytes(self) -> float:
        return self.weight_bytes + self.cache_bytes


def decode_step_cost(cfg: OPTConfig, batch: int, slots: int, weight_bytes_per_param: float = 4.0) -> StepCost:
    """Bytes and FLOPs of one decode step: every matmul weight (layers + tied LM head) read once, biases and
    norms (float32), the whole KV cache read and one slot written; matmuls 2·B·params, attention 4·B·slots·D."""
    d, f, layers, vocab = cfg.hidden_size, cfg.ffn_dim, cfg.num_hidden_layers, cfg.vocab_size
    layer_matmul = 4 * d * d + 2 * d * f
    matmul_params = layers * layer_matmul + vocab * d
    small_params = layers * (4 * d + f + d + 4 * d)  # biases and two layer norms per layer
    cache = 2 * layers * batch * slots * d * 4 + 2 * layers * batch * d * 4
    flops = 2 * batch * matmul_params + 4 * batch * slots * d * layers
    return StepCost(matmul_params * weight_bytes_per_param + small_params * 4, cache, flops)


def measured_step_seconds(model, batch: int, prompt_len: int, repeats: int) -> float:
    """(time of 64 new tokens − time of 16) / 48, greedy with no stop token: decode steps alone."""
    rng = np.random.RandomState(0)
    ids = rng.randint(4, model.config.vocab_size, (batch, prompt_len))
    mask = np.ones_like(ids)
    run = lambda new: (lambda: generate(model, ids, mask, max_new_tokens=new))
    long_s, short_s = _best_seconds(run(64), repeats), _best_seconds(run(16), repeats)
    return (long_s - short_s) / 48


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
    bandwidth, rate = read_bandwidth(), matmul_rate()
    print(f"load {os.getloadavg()[0]:.1f}; read bandwidth {bandwidth / 1e9:.1f} GB/s; matmul {rate / 1e9:.1f} GFLOP/s")
    print(f"{args.preset} shape, {cfg.num_hidden_layers} layers; step floor = max(bytes/bandwidth, flops/rate)")
    print("| weights | batch | MB/step | GFLOP/step | floor ms | measured ms/step | % of roofline |")
    print("|---|---|---|---|---|---|---|")
    base = Model(cfg, init_params(cfg, RuntimeOptions()))
    for mode in args.quantize.split(","):
        model = base if mode == "none" else quantize_model(base, mode=mode)
        for batch in map(int, args.batches.split(",")):
            slots = bucket_length(args.prompt_len) + bucket_length(64)
            cost = decode_step_cost(cfg, batch, slots, 4.0 if mode == "none" else 1.0)
            floor = max(cost.bytes / bandwidth, cost.flops / rate)
            step = measured_step_seconds(model, batch, args.prompt_len, args.repeats)
            print(f"| {mode} | {batch} | {cost.bytes / 1e6:.0f} | {cost.flops / 1e9:.2f} | {floor * 1e3:.1f} | "
                  f"{step * 1e3:.1f} | {100 * floor / step:.0f}% |", flush=True)
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
