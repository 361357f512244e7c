"""`alert-jax report`: tables, CSVs and figures from the scores of one or more evaluated runs."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from alert_jax.analysis.report import load_overlap, write_report


def _run(args: argparse.Namespace) -> int:
    overlap = load_overlap(args.overlap) if args.overlap else None
    print(write_report(args.run_dirs, args.out, overlap, args.finetune_config))
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `report` subcommand to an argparse subparsers object (sets `func`)."""
    parser = subparsers.add_parser(
        "report", help="tables, CSVs and figures from the scores of one or more runs",
        description="Read RUN_DIR/scores.jsonl (and RUN_DIR/overlap.json if present) from each run dir and "
                    "write report.md, per_task.csv, per_skill.csv, overlap_gain.csv and PNG figures to --out. "
                    "Vocabulary overlap per finetuned variant comes from each run's training config "
                    "(RUN_DIR/config.yaml or RUN_DIR/../config.yaml) and from --finetune-config.")
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    parser.add_argument("--overlap", type=Path, metavar="JSON",
                        help="task → overlap fraction; overrides the run dirs' overlap.json")
    parser.add_argument("--finetune-config", type=Path, action="append", default=[], metavar="YAML_OR_WORKDIR",
                        help="an experiment YAML or training workdir whose finetuning text (data.suite, "
                             "data.variant, data.mixture) the overlap of its variant is computed from (repeatable)")
    parser.set_defaults(func=_run)
    return parser
