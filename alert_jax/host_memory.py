"""Keep freed host memory mapped on CPU runs, so XLA:CPU's per-step temporaries stop page-faulting.

Why: XLA:CPU allocates an executable's temporaries afresh on every run, as one buffer, from a worker thread
(2.3 GB for a 1×2048 train step of a 4-layer opt-125m). glibc serves an allocation that large with `mmap` and
gives it back with `munmap`, so every step touches fresh pages: ~570 000 page faults per step there, each page
faulted in and zeroed by the kernel — 19–23% of a CPU train step at 1024–2048-token rows, less at shorter rows
(benchmarks/RESULTS.md). Told to use one arena, never to `mmap` and never to trim, glibc keeps freed memory
mapped and the next step reuses it.

The price: the process keeps its peak heap (RSS does not shrink after a big step), and all threads allocate
from one arena. Both are right for a dedicated CPU training or evaluation process; on a GPU/TPU host the big
buffers live in device memory, the host side gains nothing, and input-pipeline threads would share the arena —
so `auto` applies it only when JAX will run on the CPU.

It must run before XLA's threads first allocate (before the first computation): a thread that already owns an
arena keeps it. Hence the call at the top of the CLI's `main` (and of the test suite's conftest), and the
environment variable `ALERT_JAX_HOST_MALLOC` = `auto` (default) | `keep` | `system` to override the choice;
`benchmarks/bench_train_step.py --host-malloc` measures both ways.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import logging
import os
import pkgutil

from alert_jax.errors import AlertJaxError

logger = logging.getLogger(__name__)

ENV = "ALERT_JAX_HOST_MALLOC"
SETTINGS = ("auto", "keep", "system")
# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_ACCELERATOR_PACKAGES = ("libtpu",)  # TPU support ships as a package, not as a jax plugin


class HostMallocError(AlertJaxError):
    """An unknown ALERT_JAX_HOST_MALLOC value (the message lists the accepted ones)."""


def accelerator_expected() -> bool:
    """Whether JAX will pick a GPU/TPU backend, decided without initialising any backend (that would start the
    threads this module has to come before): an explicit `JAX_PLATFORMS`, else any installed accelerator plugin."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip() != "cpu"
    if importlib.metadata.entry_points(group="jax_plugins"):
        return True
    try:
        import jax_plugins  # namespace package that GPU/ROCm plugins install into
    except ImportError:
        pass
    else:
        if next(pkgutil.iter_modules(jax_plugins.__path__), None) is not None:
            return True
    return any(importlib.util.find_spec(name) is not None for name in _ACCELERATOR_PACKAGES)


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def keep_freed_memory() -> bool:
    """Set glibc to one arena, no `mmap`, no trimming. False (and nothing changed) where libc is not glibc."""
    libc = _glibc()
    if libc is None:
        logger.debug("host malloc left as it is: the C library is not glibc")
        return False
    # trim threshold -1 is SIZE_MAX to glibc: never give the top of the heap back
    done = all(libc.mallopt(param, value) == 1
               for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
    logger.debug("host malloc set to keep freed memory: %s", done)
    return done


def configure(setting: str | None = None) -> bool:
    """Apply `setting` (default: $ALERT_JAX_HOST_MALLOC, else `auto`); True when freed memory is now kept."""
    setting = (setting or os.environ.get(ENV) or "auto").strip()
    if setting not in SETTINGS:
        raise HostMallocError(f"{ENV}={setting!r}: expected one of {', '.join(SETTINGS)}")
    if setting == "system" or (setting == "auto" and accelerator_expected()):
        return False
    return keep_freed_memory()


def available_bytes() -> int | None:
    """Memory this host can still hand out without swapping (MemAvailable of /proc/meminfo); None where the
    system does not say. What decides whether an optional copy of the weights is worth making (generation.py)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
