"""Per-device memory of the OPT-1.3B train step, 1 device vs 8 (mesh fsdp=8), ahead of time only.

The trainer's own train step (`alert_jax.plan.train_program`: parameters by the logical-axis rules, AdamW's
moments sharded like their parameters, batch rows over data x fsdp, state donated) is lowered from
`jax.ShapeDtypeStruct`s and compiled; XLA's `memory_analysis()` then says what one device would hold. No
parameter is ever materialised, so this runs on a laptop. The 8 devices are simulated host devices, so this script
sets XLA_FLAGS itself before jax is imported.

    python benchmarks/bench_memory.py [--preset opt-1.3b --seq 2048 --per-device-batch 1 --remat full --scan-layers]
"""
from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402

from alert_jax.config import load_config  # noqa: E402
from alert_jax.parallel.rules import DEFAULT_RULES, logical_sharding  # noqa: E402
from alert_jax.plan import architecture, per_device_bytes, simulated_mesh, train_program  # noqa: E402
from results import publish  # noqa: E402  (benchmarks/results.py)

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class MemoryReport:
    devices: int
    state_bytes: int  # params + optimizer state held by one device
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    compile_s: float

    @property
    def peak_estimate(self) -> int:
        """Arguments + outputs not aliased to (donated) arguments + temporaries."""
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes


def analyse(preset: str, devices: int, seq: int, per_device_batch: int, remat: str,
            scan_layers: bool = False) -> MemoryReport:
    """The fp32 train step of `preset` over `devices` simulated devices in one fsdp axis."""
    cfg = load_config(None, [f"model.name={preset}", "model.dtype=float32", f"model.remat={remat}",
                             f"model.scan_layers={str(scan_layers).lower()}", f"train.seq_len={seq}",
                             f"train.batch_size={per_device_batch * devices}", "mesh.data=1",
                             f"mesh.fsdp={devices}", "mesh.tensor=1"])
    mesh = simulated_mesh(cfg.mesh, devices)
    step, state, batch = train_program(cfg, mesh)
    with logical_sharding(mesh, DEFAULT_RULES):
        start = time.perf_counter()
        compiled = step.lower(state, batch).compile()
        compile_s = time.perf_counter() - start
    stats = compiled.memory_analysis()
    return MemoryReport(
        devices=devices,
        state_bytes=per_device_bytes(state),
        argument_bytes=stats.argument_size_in_bytes,
        output_bytes=stats.output_size_in_bytes,
        alias_bytes=stats.alias_size_in_bytes,
        temp_bytes=stats.temp_size_in_bytes,
        compile_s=compile_s,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="opt-1.3b")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--per-device-batch", type=int, default=1)
    parser.add_argument("--remat", default="none", help="model.remat policy for each decoder layer")
    parser.add_argument("--scan-layers", action="store_true",
                        help="layers under nn.scan (on XLA:CPU remat only lowers temporaries with it)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    reports = []
    for devices in (1, 8):
        report = analyse(args.preset, devices, args.seq, args.per_device_batch, args.remat, args.scan_layers)
        print(report, flush=True)
        reports.append(report)
    one, eight = reports
    params = architecture(args.preset).num_params()

    def row(r: MemoryReport) -> str:
        cells = (r.state_bytes, r.argument_bytes, r.output_bytes, r.alias_bytes, r.temp_bytes, r.peak_estimate)
        return f"| {r.devices} | " + " | ".join(f"{b / GIB:.2f}" for b in cells) + f" | {r.compile_s:.0f} |"

    lines = [
        f"## Train-step memory per device, {args.preset}: 1 device vs fsdp=8 ({datetime.date.today().isoformat()})",
        "",
        f"- ahead-of-time `jit(train_step).lower(ShapeDtypeStructs with shardings).compile().memory_analysis()` of "
        f"the trainer's step (`plan.train_program`); nothing materialised; 8 simulated CPU devices "
        f"(XLA_FLAGS=--xla_force_host_platform_device_count=8), jax {jax.__version__}",
        f"- model: {args.preset} ({params / 1e9:.2f} B params), fp32 params and AdamW state "
        f"(params + mu + nu, moments sharded like their params), remat={args.remat!r}, "
        f"scan_layers={args.scan_layers}; seq {args.seq}, {args.per_device_batch} row(s) per device "
        f"(global batch = {args.per_device_batch} x devices); state donated",
        "",
        "| devices | params+opt state GiB | arguments GiB | outputs GiB | aliased GiB | temporaries GiB | "
        "args+outputs-aliased+temps GiB | compile s |",
        "|---|---|---|---|---|---|---|---|",
        row(one),
        row(eight),
        "",
        f"Params + optimizer state per device fall **{one.state_bytes / eight.state_bytes:.2f}×** with fsdp=8. "
        f"Temporaries change {one.temp_bytes / max(eight.temp_bytes, 1):.2f}×: activations scale with the "
        f"per-device batch, the same on both, plus the all-gathered parameters fsdp needs.",
        "",
    ]
    publish(lines, args.no_write)


if __name__ == "__main__":
    main()
