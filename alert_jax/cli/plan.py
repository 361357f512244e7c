"""`alert-jax plan`: per-device memory of the train step and generation, ahead of time, and what to change.

The devices are simulated host devices, whose count XLA fixes when jax starts its backend; so unless this
process was started for the plan (`DEVICES_VARIABLE` set), the verb re-runs itself in a child process with
`--xla_force_host_platform_device_count` set. That also keeps a plan's tens of GiB of compile-time memory out
of a caller's process (tests call `main()` in-process).
"""
from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from alert_jax.cli.evaluate import parse_mesh
from alert_jax.config import load_config
from alert_jax.plan import HARDWARE, PlanError, PlanRequest, parse_bytes, plan, target_hardware

DEVICES_VARIABLE = "ALERT_JAX_PLAN_DEVICES"
EXIT_DOES_NOT_FIT = 3


def _overrides(args: argparse.Namespace) -> list[str]:
    mesh = [f"mesh.{axis}={size}" for axis, size in parse_mesh(args.mesh).items()] if args.mesh else []
    return [*args.set, *mesh]


def _device_count(args: argparse.Namespace, target: Optional[tuple[int, str]]) -> int:
    """--devices, else the mesh's size when it names every axis, else the config's target hardware comment."""
    if args.devices:
        return args.devices
    mesh = load_config(args.config, _overrides(args)).mesh
    sizes = (mesh.data, mesh.fsdp, mesh.tensor)
    if -1 not in sizes:
        return math.prod(sizes)
    if target:
        return target[0]
    raise PlanError("how many devices? give --devices N, a mesh without -1, or a '# target hardware: N x CHIP' "
                    "comment in the config")


def _child_argv(args: argparse.Namespace, devices: int, hardware: Optional[str]) -> list[str]:
    argv = [sys.executable, "-m", "alert_jax.cli", "plan", "--devices", str(devices)]
    argv += ["--config", args.config] if args.config else []
    argv += [item for override in _overrides(args) for item in ("--set", override)]
    argv += ["--device-memory", args.device_memory] if args.device_memory else []
    argv += ["--hardware", hardware] if hardware else []
    return argv


def _run(args: argparse.Namespace) -> int:
    target = target_hardware(args.config) if args.config else None
    devices = _device_count(args, target)
    chip = args.hardware or (target[1] if target and target[1] in HARDWARE and not args.device_memory else None)
    if os.environ.get(DEVICES_VARIABLE) != str(devices):
        others = re.sub(r"--xla_force_host_platform_device_count=\S*", "", os.environ.get("XLA_FLAGS", ""))
        flags = f"{others} --xla_force_host_platform_device_count={devices}".strip()
        here = str(Path(__file__).resolve().parents[2])  # the child imports this same alert_jax
        path = os.pathsep.join(filter(None, (here, os.environ.get("PYTHONPATH"))))
        env = {**os.environ, DEVICES_VARIABLE: str(devices), "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu",
               "PYTHONPATH": path}
        return subprocess.run(_child_argv(args, devices, chip), env=env).returncode
    request = PlanRequest(args.config, tuple(_overrides(args)), devices,
                          parse_bytes(args.device_memory) if args.device_memory else None, chip)
    return 0 if plan(request, say=lambda line: print(line, flush=True)) else EXIT_DOES_NOT_FIT


def register(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "plan", help="per-device memory and FLOPs of the train step and generation, compiled ahead of time",
        description="Compile the experiment's train step and generation for N simulated devices without allocating "
                    "a parameter; print params, optimizer state, temporaries and total bytes per device, a verdict "
                    "against the device memory, the nearest change that fits, and the train FLOPs per token. "
                    f"Exit status {EXIT_DOES_NOT_FIT} when something does not fit.")
    parser.add_argument("--config", help="experiment YAML (its '# target hardware: N x CHIP' comment gives the "
                                         "default --devices and --hardware)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.batch_size=32 (repeatable)")
    parser.add_argument("--mesh", metavar="data=D,fsdp=F,tensor=T", help="the same as --set mesh.AXIS=SIZE")
    parser.add_argument("--devices", type=int, metavar="N", help="simulated devices (default: see --config)")
    memory = parser.add_mutually_exclusive_group()
    memory.add_argument("--device-memory", metavar="SIZE", help="memory per device, e.g. 32GiB or 80GB")
    memory.add_argument("--hardware", choices=sorted(HARDWARE), help="a chip from the table in alert_jax/plan.py")
    parser.set_defaults(func=_run)
    return parser
