"""`alert-jax demo`: the embedded default — tiny OPT, synthetic ALERT suite, CPU, minutes.

Its numbers are the demo experiment plus its stages (`configs/studies/demo.yaml`); `--quick` applies that
file's `quick` overrides and `--set` comes last.
"""
from __future__ import annotations

import argparse

from alert_jax.demo import RECIPES, demo_plan, run_demo


def _run(args: argparse.Namespace) -> int:
    print(run_demo(args.workdir, demo_plan(quick=args.quick, overrides=args.set), recipe=args.recipe))
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("demo", help="the embedded default: tiny OPT, synthetic ALERT suite, CPU, minutes")
    parser.add_argument("--workdir", default="runs/demo")
    parser.add_argument("--recipe", choices=RECIPES, default="alert",
                        help="alert: pretrained vs FT vs CoT; aft: CoT → sample → alignment fine-tuning → CoT vs AFT")
    parser.add_argument("--quick", action="store_true",
                        help="the study's `quick` overrides: fewer steps, examples and templates (CI smoke run)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override every stage (train.steps=50) or one (pretrain.train.steps=20); repeatable")
    parser.set_defaults(func=_run)
    return parser
