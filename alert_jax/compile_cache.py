"""The persistent XLA compilation cache, switched on once when the command line starts.

Compiling the train step or the generation programs of a real OPT takes tens of seconds to minutes; a second
`alert-jax evaluate` or `demo` over the same shapes should load them instead. jax's persistent cache does that,
keyed by the program, the jax/XLA version and the devices, so a stale entry is never reused for another setup.

Where it lives, first match wins:
  1. `--no-compile-cache` (or `ALERT_JAX_COMPILE_CACHE=off`): no cache;
  2. `--compile-cache-dir DIR` (or `ALERT_JAX_COMPILE_CACHE=DIR`);
  3. `JAX_COMPILATION_CACHE_DIR`, jax's own variable (the test suite points it at a temporary directory);
  4. `$XDG_CACHE_HOME/alert_jax/jax_cache` (`~/.cache/alert_jax/jax_cache` when XDG_CACHE_HOME is unset).
A cache directory that cannot be created or written to turns the cache off with a warning: the run goes on,
only slower. Unreadable or corrupt entries are jax's to skip (it warns and recompiles).
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Mapping, Optional

log = logging.getLogger(__name__)

ENV_VARIABLE = "ALERT_JAX_COMPILE_CACHE"
_OFF = ("off", "0", "false", "no", "none")


def default_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "alert_jax" / "jax_cache"


def resolve_cache_dir(directory: Optional[str] = None, disabled: bool = False,
                      environ: Mapping[str, str] = os.environ) -> Optional[Path]:
    """The cache directory the module docstring's rules pick, or None when the cache is off."""
    if disabled:
        return None
    if directory:
        return Path(directory).expanduser()
    ours = environ.get(ENV_VARIABLE, "").strip()
    if ours.lower() in _OFF:
        return None
    if ours:
        return Path(ours).expanduser()
    if environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(environ["JAX_COMPILATION_CACHE_DIR"])
    return default_cache_dir(environ)


def _writable(directory: Path) -> Optional[str]:
    """None when `directory` can hold cache entries, else why not."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def configure(directory: Optional[str] = None, disabled: bool = False) -> Optional[Path]:
    """Point jax's persistent compilation cache at the resolved directory (or turn it off); returns the directory.

    Call before the first compile. jax itself would fail later, mid-run, on a directory it cannot write; checking
    here turns that into one warning at start-up. Before jax is imported this sets jax's own environment
    variables (so verbs that never compile never import jax, and child processes inherit the choice); after, it
    updates jax's config.
    """
    path = resolve_cache_dir(directory, disabled)
    if path is not None:
        problem = _writable(path)
        if problem is not None:
            log.warning("compilation cache %s is not usable (%s): compiling without a persistent cache", path, problem)
            path = None
    if "jax" in sys.modules:
        import jax

        jax.config.update("jax_enable_compilation_cache", path is not None)
        jax.config.update("jax_compilation_cache_dir", str(path) if path is not None else None)
    os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "true" if path is not None else "false"
    if path is not None:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = str(path)
    else:
        os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
    return path
