"""`alert-jax sample`: k sampled chains of thought per training question, labelled and scored
(alert_jax/sampling.py) — the data `train.objective: aft | rrhf | dpo` trains on. Flags are shorthands for
`--set data.KEY=V` / `--set alignment.KEY=V`."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from alert_jax.cli.evaluate import override_value, parse_mesh

# flag (argparse dest) → config key; each given flag becomes `--set KEY=VALUE` after the --set ones
SHORTHANDS = {"suite": "data.suite", "data_root": "data.data_root", "tokenizer": "data.tokenizer",
              "k": "alignment.k", "temperature": "alignment.temperature", "top_p": "alignment.top_p",
              "max_new_tokens": "alignment.max_new_tokens", "batch_size": "alignment.batch_size",
              "seed": "alignment.seed", "max_questions": "alignment.max_questions_per_task"}


def _run(args: argparse.Namespace) -> int:
    from alert_jax.config import load_config
    from alert_jax.parallel.mesh import is_main_process
    from alert_jax.sampling import sample

    shorthand = [f"{key}={override_value(getattr(args, dest))}" for dest, key in SHORTHANDS.items()
                 if getattr(args, dest) is not None]
    mesh = [f"eval.mesh.{axis}={size}" for axis, size in parse_mesh(args.mesh).items()] if args.mesh else []
    path = sample(args.model, load_config(args.config, [*args.set, *shorthand, *mesh]), args.workdir)
    if is_main_process():
        print(path)
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "sample", help="k sampled CoTs per training question, labelled by answer and scored (resumable)",
        description="Write WORKDIR/samples.jsonl as it goes; re-running the same command resumes.")
    parser.add_argument("--model", required=True, metavar="PATH_OR_WORKDIR", help="the CoT-finetuned model")
    parser.add_argument("--workdir", type=Path, required=True, metavar="DIR")
    parser.add_argument("--config", help="experiment YAML: its data and alignment sections")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set alignment.k=8 (repeatable)")
    parser.add_argument("--suite", help="finetuning suite whose training questions are sampled (data.suite)")
    parser.add_argument("--data-root", metavar="DIR")
    parser.add_argument("--tokenizer", metavar="PATH", help="default: MODEL/tokenizer, else MODEL itself")
    parser.add_argument("--k", type=int, help="samples per question (alignment.k)")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--max-new-tokens", type=int, metavar="N")
    parser.add_argument("--batch-size", type=int, metavar="N")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--max-questions", type=int, metavar="N", help="questions per task (0 = all)")
    parser.add_argument("--mesh", metavar="data=D,fsdp=F,tensor=T", help="the same as --set eval.mesh.AXIS=SIZE")
    parser.set_defaults(func=_run)
    return parser
