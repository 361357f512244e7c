"""The persistent compilation cache: where it lives, how it is turned off, and that a bad cache only warns."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from alert_jax import compile_cache
from alert_jax.compile_cache import default_cache_dir, resolve_cache_dir

REPO = Path(__file__).resolve().parents[1]


def test_default_is_under_xdg_cache_home():
    assert default_cache_dir({"XDG_CACHE_HOME": "/x/cache"}) == Path("/x/cache/alert_jax/jax_cache")
    assert default_cache_dir({}) == Path.home() / ".cache" / "alert_jax" / "jax_cache"
    assert resolve_cache_dir(environ={"XDG_CACHE_HOME": "/x"}) == Path("/x/alert_jax/jax_cache")


def test_precedence_flag_then_our_variable_then_jax_variable():
    environ = {"ALERT_JAX_COMPILE_CACHE": "/ours", "JAX_COMPILATION_CACHE_DIR": "/jax", "XDG_CACHE_HOME": "/x"}
    assert resolve_cache_dir("/flag", environ=environ) == Path("/flag")
    assert resolve_cache_dir(environ=environ) == Path("/ours")
    assert resolve_cache_dir(environ={"JAX_COMPILATION_CACHE_DIR": "/jax", "XDG_CACHE_HOME": "/x"}) == Path("/jax")
    assert resolve_cache_dir("/flag", disabled=True, environ=environ) is None
    assert resolve_cache_dir(environ={"ALERT_JAX_COMPILE_CACHE": "off", "XDG_CACHE_HOME": "/x"}) is None


def test_the_test_suite_never_uses_the_real_user_cache():
    assert not str(resolve_cache_dir()).startswith(str(default_cache_dir()))


def test_an_unwritable_cache_dir_turns_the_cache_off_with_a_warning(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(os, "environ", dict(os.environ))  # configure() exports its choice to child processes
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    assert compile_cache.configure(str(blocker / "cache")) is None
    assert "not usable" in caplog.text and str(blocker / "cache") in caplog.text
    assert os.environ["JAX_ENABLE_COMPILATION_CACHE"] == "false"


_PROGRAM = textwrap.dedent("""
    import sys
    from alert_jax import compile_cache
    compile_cache.configure(sys.argv[1])
    import jax, jax.numpy as jnp
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    print(float(jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).sum()))
""")


def _run(cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-c", _PROGRAM, str(cache)], env=env, capture_output=True, text=True,
                          check=True)


def test_entries_are_written_and_a_corrupt_entry_is_recompiled_with_a_warning(tmp_path):
    cache = tmp_path / "cache"
    first = _run(cache)
    entries = list(cache.glob("*-cache"))
    assert entries, "the first run should have stored its compiled program"
    for entry in entries:
        entry.write_bytes(b"garbage")
    second = _run(cache)
    assert second.stdout == first.stdout
    assert "Error reading persistent compilation cache entry" in second.stderr
