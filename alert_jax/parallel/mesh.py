"""The device mesh and multi-host start-up.

Every parallel layout in alert_jax is a point in one 3-axis mesh, `("data", "fsdp", "tensor")`:
pure data parallelism, ZeRO-3 style parameter sharding and Megatron-style tensor parallelism are
just different sizes of the same axes, so the partition rules (`parallel/rules.py`) never change
with the hardware — only `MeshConfig` does.
"""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional, TypeVar

from alert_jax.config import MeshConfig
from alert_jax.errors import AlertJaxError

if TYPE_CHECKING:  # jax is imported where it is used, so that single-host bookkeeping (locks, rescoring) stays light
    import jax
    from jax.sharding import Mesh

T = TypeVar("T")

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
    import jax
    from jax.sharding import AxisType

    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(cfg, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def devices_for(cfg: MeshConfig) -> list["jax.Device"]:
    """All devices, or — for a fully specified mesh smaller than the machine — the first ones (handy on CPU)."""
    import jax

    devices = jax.devices()
    sizes = (cfg.data, cfg.fsdp, cfg.tensor)
    if -1 not in sizes and math.prod(sizes) < len(devices):
        return devices[: math.prod(sizes)]
    return devices


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
    if _distributed_running():
        return True
    args = distributed_init_args(os.environ if environ is None else environ)
    if args is None:
        return False
    import jax

    jax.distributed.initialize(**args)
    return True


def _distributed_running() -> bool:
    """Whether jax's multi-host runtime is up, without importing jax (it cannot be up if jax was never imported)."""
    jax = sys.modules.get("jax")
    return jax is not None and jax.distributed.is_initialized()


def host_shard() -> tuple[int, int]:
    """(this host's index, number of hosts): which slice of the global batch this host loads."""
    if not _distributed_running():
        return 0, 1
    import jax

    return jax.process_index(), jax.process_count()


def is_main_process() -> bool:
    """Process 0 of the job: the one that writes shared files (caches, locks, generations, scores)."""
    return host_shard()[0] == 0


def run_on_main(name: str, action: Callable[[], T]) -> Optional[T]:
    """Run `action` on process 0 only while the other processes wait for it; returns its result there, None elsewhere.

    The wait is a barrier over every device (`broadcast_one_to_all` of process 0's outcome), so the others
    read what process 0 wrote only once it is complete. If `action` fails, process 0 re-raises its error and
    the others raise one naming `name` instead of waiting forever. A no-op wrapper on a single host.
    """
    index, count = host_shard()
    if count == 1:
        return action()
    import numpy as np
    from jax.experimental import multihost_utils

    result, error = None, None
    if index == 0:
        try:
            result = action()
        except BaseException as exc:  # reported to the other hosts first, then re-raised below
            error = exc
    ok = multihost_utils.broadcast_one_to_all(np.int32(error is None), is_source=index == 0)
    if error is not None:
        raise error
    if not int(ok):
        raise MeshError(f"{name}: process 0 failed (its log says why); process {index} stops too")
    return result
