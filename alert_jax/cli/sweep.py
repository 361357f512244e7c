"""`alert-jax sweep`: expand a sweep grid (see `alert_jax.sweep`) and finetune + evaluate each run."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from alert_jax.sweep import MANIFEST_FILE, expand_sweep, format_plan, run_sweep, select


def _run(args: argparse.Namespace) -> int:
    runs = select(expand_sweep(args.sweep, args.out, args.overrides), args.only)
    print(format_plan(runs))
    run_sweep(runs, args.out, dry_run=args.dry_run)
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `sweep` subcommand to an argparse subparsers object (sets `func`)."""
    parser = subparsers.add_parser(
        "sweep", help="expand a sweep grid into runs and finetune + evaluate each (resumable)",
        description="Runs live in OUT/<name> (scores in OUT/<name>/eval); finished runs are skipped, "
                    f"and OUT/{MANIFEST_FILE} logs every run's progress.")
    parser.add_argument("sweep", type=Path, metavar="SWEEP.yaml")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory for all runs")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and log it; run nothing")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this run (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run, e.g. data.data_root=/data (repeatable)")
    parser.set_defaults(func=_run)
    return parser
