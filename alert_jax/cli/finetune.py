"""`alert-jax finetune`: train per an experiment YAML with `--set a.b=c` overrides."""
from __future__ import annotations

import argparse
import json


def _run(args: argparse.Namespace) -> int:
    from alert_jax.config import load_config
    from alert_jax.train.loop import finetune
    from alert_jax.train.metrics_log import strict_record

    cfg = load_config(args.config, args.set)
    print(json.dumps(strict_record(finetune(cfg, args.workdir)), allow_nan=False))
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("finetune", help="packed-sequence finetuning (resumes from the workdir's checkpoints)")
    parser.add_argument("--config", help="experiment YAML (configs/experiments/*.yaml); defaults apply when omitted")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.steps=100 (repeatable)")
    parser.add_argument("--workdir", required=True, help="checkpoints, metrics.jsonl, best/ and tokenizer/ go here")
    parser.set_defaults(func=_run)
    return parser
