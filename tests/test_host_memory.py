"""host_memory: glibc keeps freed memory so XLA:CPU's per-run temporaries stop page-faulting, and the setting is
chosen (or refused) as documented."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from alert_jax import host_memory
from alert_jax.cli import main

# One jitted program whose 64 MiB temporary (exp of a dot output, fed to a second dot) is allocated per run; the child
# reports page faults per run after a warm-up. glibc would serve a temporary that large with mmap.
_PROBE = """
import json, resource, sys
from alert_jax import host_memory
kept = host_memory.configure(sys.argv[1])
import jax, jax.numpy as jnp
f = jax.jit(lambda a, b: (jnp.exp(a @ b) @ b.T).sum())
a, b = jnp.full((16384, 64), 0.01), jnp.full((64, 1024), 0.01)
f(a, b).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    f(a, b).block_until_ready()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4
print(json.dumps({"kept": kept, "faults": faults}))
"""


def _faults_per_run(setting: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as a CPU run has
    out = subprocess.run([sys.executable, "-c", _PROBE, setting], env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(host_memory._glibc() is None, reason="the C library is not glibc")
def test_keeping_freed_memory_stops_the_page_faults_of_a_repeated_temporary():
    system, keep = _faults_per_run("system"), _faults_per_run("keep")
    assert not system["kept"] and keep["kept"]
    pages = 64 * 2**20 // 4096
    assert system["faults"] >= pages / 2  # the temporary is faulted in afresh on every run
    assert keep["faults"] < pages / 20  # ... and reused once kept


def test_auto_keeps_only_when_jax_runs_on_the_cpu(monkeypatch):
    calls = []
    monkeypatch.setattr(host_memory, "keep_freed_memory", lambda: calls.append(1) or True)
    for platforms, expected in (("cuda", False), ("tpu,cpu", False), ("cpu", True), ("cpu,cuda", True)):
        monkeypatch.setenv("JAX_PLATFORMS", platforms)
        assert host_memory.configure("auto") is expected, platforms
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    assert host_memory.configure("keep") is True  # an explicit choice wins
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert host_memory.configure("system") is False
    assert len(calls) == 3


def test_without_jax_platforms_an_installed_accelerator_plugin_decides(monkeypatch):
    import importlib.metadata
    import importlib.util

    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.setitem(sys.modules, "jax_plugins", None)  # no plugin namespace package
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert host_memory.accelerator_expected() is False
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group: ["cuda"] if group == "jax_plugins" else [])
    assert host_memory.accelerator_expected() is True
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "libtpu" else None)
    assert host_memory.accelerator_expected() is True


def test_a_bad_setting_is_a_clear_cli_error_before_anything_runs(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv(host_memory.ENV, "always")
    monkeypatch.setattr(host_memory, "keep_freed_memory", lambda: pytest.fail("must not be applied"))
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "no_run"), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "ALERT_JAX_HOST_MALLOC='always'" in error and "auto, keep, system" in error
    assert not out.exists()
