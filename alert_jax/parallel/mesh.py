"""The device mesh and multi-host start-up.

Every parallel layout in alert_jax is a point in one 3-axis mesh, `("data", "fsdp", "tensor")`:
pure data parallelism, ZeRO-3 style parameter sharding and Megatron-style tensor parallelism are
just different sizes of the same axes, so the partition rules (`parallel/rules.py`) never change
with the hardware — only `MeshConfig` does.
"""
from __future__ import annotations

from alert_jax.errors import AlertJaxError
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import jax
from jax.sharding import AxisType, Mesh

from alert_jax.config import MeshConfig

MESH_AXES: tuple[str, str, str] = ("data", "fsdp", "tensor")

# Set to 1 to ask jax to auto-detect the cluster itself (needed on Cloud TPU pods created with
# `gcloud ... tpu-vm`, where only the metadata server — not the environment — knows the topology).
OPT_IN_VARIABLE = "ALERT_JAX_DISTRIBUTED"


class MeshError(AlertJaxError):
    """A mesh shape that cannot be laid over the devices, or a malformed multi-host environment."""


def resolve_mesh_shape(cfg: MeshConfig, device_count: int) -> tuple[int, int, int]:
    """Sizes for (data, fsdp, tensor), with the one -1 (if any) replaced by the remaining devices."""
    sizes = {axis: getattr(cfg, axis) for axis in MESH_AXES}
    for axis, size in sizes.items():
        if size == 0 or size < -1:
            raise MeshError(f"mesh.{axis}={size}: a mesh axis size must be positive or -1 (= the rest)")
    inferred = [axis for axis, size in sizes.items() if size == -1]
    if len(inferred) > 1:
        raise MeshError(f"mesh.{inferred[0]} and mesh.{inferred[1]} are both -1; at most one axis may be inferred")
    fixed = math.prod(size for size in sizes.values() if size != -1)
    described = " x ".join(f"{axis}={size}" for axis, size in sizes.items())
    if inferred:
        if device_count % fixed:
            raise MeshError(f"mesh {described}: {device_count} devices do not divide by {fixed}")
        sizes[inferred[0]] = device_count // fixed
    elif fixed != device_count:
        raise MeshError(f"mesh {described} needs {fixed} devices but {device_count} are available")
    return tuple(sizes[axis] for axis in MESH_AXES)  # type: ignore[return-value]


def make_mesh(cfg: MeshConfig, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A ("data", "fsdp", "tensor") mesh over `devices` (default: every device of every host).

    Axes are `Auto` (GSPMD propagation), so `jit` in/out shardings plus `with_sharding_constraint`
    on activations decide layouts, as the logical-axis rules expect; `jax.make_mesh` picks a
    device order that follows the physical interconnect (TPU rings, NVLink islands).
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(cfg, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def _int_variable(environ: Mapping[str, str], name: str) -> Optional[int]:
    raw = environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise MeshError(f"environment variable {name}={raw!r} is not an integer") from None


def distributed_init_args(environ: Mapping[str, str]) -> Optional[dict[str, Any]]:
    """Keyword arguments for `jax.distributed.initialize`, or None when this is a single-host run.

    Multi-host is recognised from the environment only (no network probes), in this order:
      1. `JAX_COORDINATOR_ADDRESS` set: explicit set-up; `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`
         are passed along when set (jax itself reads only the address), the rest auto-detected.
      2. `ALERT_JAX_DISTRIBUTED=1`: explicit opt-in; jax auto-detects everything (Cloud TPU pods).
      3. SLURM with more than one task (`SLURM_JOB_ID` and `SLURM_NTASKS` > 1).
      4. Open MPI with more than one rank (`OMPI_COMM_WORLD_SIZE` > 1).
      5. A GKE/queued-resource TPU slice whose `TPU_WORKER_HOSTNAMES` / `TPU_PROCESS_ADDRESSES`
         lists more than one host.
    Cases 2–5 rely on jax's own cluster detection for the coordinator, process count and id.
    """
    if environ.get("JAX_COORDINATOR_ADDRESS"):
        args: dict[str, Any] = {"coordinator_address": environ["JAX_COORDINATOR_ADDRESS"]}
        for variable, key in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
            value = _int_variable(environ, variable)
            if value is not None:
                args[key] = value
        return args
    if environ.get(OPT_IN_VARIABLE, "") not in ("", "0"):
        return {}
    if environ.get("SLURM_JOB_ID") and (_int_variable(environ, "SLURM_NTASKS") or 1) > 1:
        return {}
    if (_int_variable(environ, "OMPI_COMM_WORLD_SIZE") or 1) > 1:
        return {}
    hosts = environ.get("TPU_PROCESS_ADDRESSES") or environ.get("TPU_WORKER_HOSTNAMES") or ""
    if len([h for h in hosts.split(",") if h.strip()]) > 1:
        return {}
    return None


def maybe_initialize_distributed(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Start jax's multi-host runtime when the environment asks for it; True if it is running.

    Safe to call more than once (later calls are no-ops) and a no-op on a single host, so every
    entry point calls it first, before anything touches a device.
    """
    if jax.distributed.is_initialized():
        return True
    args = distributed_init_args(os.environ if environ is None else environ)
    if args is None:
        return False
    jax.distributed.initialize(**args)
    return True


def host_shard() -> tuple[int, int]:
    """(this host's index, number of hosts): which slice of the global batch this host loads."""
    return jax.process_index(), jax.process_count()
