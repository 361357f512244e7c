"""Ahead-of-time compile time of a train step with unrolled vs scanned decoder layers (`model.scan_layers`).

Lowers and compiles the trainer's train step (`plan.train_program`) for abstract params and batch (nothing is
allocated), once per layout, and reports lowering and compile seconds plus the compiled temporaries. A scanned
model compiles one layer body instead of `num_hidden_layers` copies, which is what decides start-up time on a
TPU/GPU slice.

    python benchmarks/bench_compile_scan.py [--preset opt-1.3b --batch 1 --seq 2048 --remat full]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import jax

from alert_jax.config import load_config
from alert_jax.parallel.rules import DEFAULT_RULES, logical_sharding
from alert_jax.plan import simulated_mesh, train_program
from results import LoadAverage, cpu_model, publish  # noqa: E402  (benchmarks/results.py)


def compile_train_step(preset: str, remat: str, scan_layers: bool, batch: int, seq: int) -> dict[str, float]:
    """Lower and compile the trainer's fp32 train step (`plan.train_program`) on one device, timing each."""
    cfg = load_config(None, [f"model.name={preset}", "model.dtype=float32", f"model.remat={remat}",
                             f"model.scan_layers={str(scan_layers).lower()}", f"train.batch_size={batch}",
                             f"train.seq_len={seq}", "mesh.data=1", "mesh.fsdp=1", "mesh.tensor=1"])
    mesh = simulated_mesh(cfg.mesh, 1)
    step, state, rows = train_program(cfg, mesh)
    with logical_sharding(mesh, DEFAULT_RULES):
        start = time.perf_counter()
        lowered = step.lower(state, rows)
        lowered_at = time.perf_counter()
        compiled = lowered.compile()
        done = time.perf_counter()
    return {"lower_s": lowered_at - start, "compile_s": done - lowered_at,
            "temp_gib": compiled.memory_analysis().temp_size_in_bytes / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="opt-1.3b")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--remat", default="full")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    load = LoadAverage()
    results = {}
    for scan in (False, True):
        results[scan] = compile_train_step(args.preset, args.remat, scan, args.batch, args.seq)
        print(f"scan_layers={scan}: {results[scan]}", flush=True)
    lines = [
        f"## Train-step compile time, unrolled vs scanned layers ({datetime.date.today().isoformat()})",
        "",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores; python {platform.python_version()}, jax {jax.__version__}; "
        f"{load.text()} (shared machine)",
        f"- {args.preset}, fp32, remat={args.remat!r}, batch {args.batch} x {args.seq}; ahead-of-time "
        "`jit(train_step).lower(abstract state, batch).compile()` on one CPU device",
        "",
        "| scan_layers | lower s | compile s | compiled temporaries GiB |",
        "|---|---|---|---|",
        *(f"| {scan} | {r['lower_s']:.1f} | {r['compile_s']:.1f} | {r['temp_gib']:.2f} |" for scan, r in results.items()),
        "",
    ]
    publish(lines, args.no_write)


if __name__ == "__main__":
    main()
