"""The `alert-jax` command line: one module per verb, each turning argparse into one call into the core.

This package is the only place argparse appears. A bad input — any `AlertJaxError`, which names its file,
line or key — becomes one line on stderr and exit status 2; any other exception is a bug in alert_jax and
keeps its traceback (exit status 1), so real bugs are never disguised as user typos.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

from alert_jax import compile_cache, host_memory
from alert_jax.errors import AlertJaxError

VERBS = ("demo", "finetune", "evaluate", "sample", "report", "convert", "data", "sweep", "plan")
EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alert-jax", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--compile-cache-dir", metavar="DIR",
                        help="persistent XLA compilation cache (default: $ALERT_JAX_COMPILE_CACHE, "
                             "$JAX_COMPILATION_CACHE_DIR, else $XDG_CACHE_HOME/alert_jax/jax_cache)")
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="compile everything afresh and store nothing (also ALERT_JAX_COMPILE_CACHE=off)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for verb in VERBS:
        importlib.import_module(f"alert_jax.cli.{verb}").register(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    compile_cache.configure(args.compile_cache_dir, disabled=args.no_compile_cache)
    try:
        host_memory.configure()  # before anything computes: see host_memory.py
        return int(args.func(args) or 0)
    except AlertJaxError as exc:
        message = " ".join(str(exc).split("\n"))
        print(f"alert-jax {args.command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
