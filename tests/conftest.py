"""Shared pytest fixtures.

The real-data samples live beside the checkout (`../shared/data`); CI clones may not have them,
so every test that needs them goes through `shared_data`, which skips cleanly when absent.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Eight simulated CPU devices for every test, so sharding tests (meshes like (2,4,1)) run on CI's
# CPU-only machine; set before anything imports jax.
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compiled programs are shared across the suite's processes (a killed and restarted run compiles once).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(tempfile.gettempdir()) / "alert_jax_test_jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# ... and the CLI's cache (alert_jax/compile_cache.py) is that one too, never the user's ~/.cache.
os.environ["ALERT_JAX_COMPILE_CACHE"] = os.environ["JAX_COMPILATION_CACHE_DIR"]

# The suite runs on the CPU: glibc keeps freed memory from the start, as the CLI does (alert_jax/host_memory.py),
# so no test pays XLA:CPU's per-run temporaries in fresh pages, and in-process CLI calls change nothing later.
from alert_jax import host_memory  # noqa: E402  (after the environment above)

host_memory.configure()

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """`../shared/data` next to the repo (or $ALERT_JAX_SHARED_DATA), if present."""
    candidate = Path(os.environ.get("ALERT_JAX_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is not present")
    return path
