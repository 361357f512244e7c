"""`alert-jax demo`: the embedded default — tiny OPT, synthetic ALERT suite, CPU, minutes."""
from __future__ import annotations

import argparse

from alert_jax.demo import QUICK, DemoConfig, run_demo


def _run(args: argparse.Namespace) -> int:
    demo = QUICK if args.quick else DemoConfig()
    print(run_demo(args.workdir, demo))
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("demo", help="the embedded default: tiny OPT, synthetic ALERT suite, CPU, minutes")
    parser.add_argument("--workdir", default="runs/demo")
    parser.add_argument("--quick", action="store_true", help="fewer steps, examples and templates (CI smoke run)")
    parser.set_defaults(func=_run)
    return parser
