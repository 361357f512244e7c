"""`alert-jax evaluate`: one `EvalConfig` — from an experiment's `eval` section (`--config`), `--set eval.K=V`
overrides, and flags that are shorthands for those overrides — then one call to `alert_jax.evaluate.evaluate`."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from alert_jax.config import EvalConfig, eval_config_for, load_config, to_dict

# flag (argparse dest) → eval config key; each given flag becomes `--set eval.KEY=VALUE` after the --set ones
SHORTHANDS = {
    "suite": "suite", "templates": "templates", "tokenizer": "tokenizer", "data_root": "data_root",
    "max_new_tokens": "max_new_tokens", "batch_size": "batch_size", "max_examples": "max_examples_per_task",
    "temperature": "temperature", "top_p": "top_p", "dtype": "dtype", "quantize": "quantize", "label": "label",
    "variant": "variant", "size": "size", "skip_missing": "skip_missing", "prompting": "prompting", "shots": "shots",
}


def eval_config_from_args(args: argparse.Namespace) -> EvalConfig:
    """The config file's evaluation (completed from its experiment), then `--set`, then the shorthand flags."""
    shorthand = [f"eval.{key}={override_value(getattr(args, dest))}" for dest, key in SHORTHANDS.items()
                 if getattr(args, dest) is not None]
    mesh = [f"eval.mesh.{axis}={size}" for axis, size in parse_mesh(args.mesh).items()] if args.mesh else []
    cfg = load_config(args.config, [*args.set, *shorthand, *mesh])
    if args.config is None:
        return cfg.eval
    variant = cfg.eval.variant if any(o.startswith("eval.variant=") for o in [*args.set, *shorthand]) \
        else cfg.data.variant
    return eval_config_for(cfg, variant)


def parse_mesh(text: str) -> dict[str, int]:
    """`data=1,fsdp=4,tensor=2` → sizes by axis (the axes left out keep their config values; -1 = the rest)."""
    from alert_jax.config import ConfigError
    from alert_jax.parallel.mesh import MESH_AXES

    sizes: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        axis, _, size = part.partition("=")
        if axis not in MESH_AXES or not size.lstrip("-").isdigit():
            raise ConfigError(f"--mesh {text!r}: expected AXIS=SIZE pairs over {', '.join(MESH_AXES)}, got {part!r}")
        sizes[axis] = int(size)
    return sizes


def override_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(f'"{v}"' for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def _run(args: argparse.Namespace) -> int:
    from alert_jax.evaluate import evaluate
    from alert_jax.parallel.mesh import is_main_process

    scores = evaluate(args.model, eval_config_from_args(args), args.workdir)
    if is_main_process():
        print(scores)
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    defaults = to_dict(EvalConfig())
    parser = subparsers.add_parser(
        "evaluate", help="generate for suite tasks × templates and score the generations (resumable)",
        description="Write WORKDIR/generations.jsonl as it goes and WORKDIR/scores.jsonl at the end; re-running "
                    "the same command resumes an interrupted evaluation. Flags are shorthands for --set eval.KEY=V.")
    parser.add_argument("--model", required=True, metavar="PATH_OR_WORKDIR",
                        help="bare preset name, HF directory, alert_jax model directory or training workdir")
    parser.add_argument("--workdir", type=Path, required=True, metavar="DIR")
    parser.add_argument("--config", help="experiment YAML: its eval section, tokenizer, data root and variant")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set eval.max_new_tokens=128 (repeatable)")
    parser.add_argument("--suite", help=f"suite name or YAML path (default: {defaults['suite']})")
    parser.add_argument("--templates", metavar="T1,T2,...", help="templates to evaluate under (default: all)")
    parser.add_argument("--tokenizer", metavar="PATH", help="default: MODEL/tokenizer, else MODEL itself")
    parser.add_argument("--data-root", metavar="DIR", help="root that the suite's file paths are relative to")
    parser.add_argument("--max-new-tokens", type=int, metavar="N")
    parser.add_argument("--batch-size", type=int, metavar="N")
    parser.add_argument("--max-examples", type=int, metavar="N",
                        help="instances per task, a seeded choice (0 = all; default: the suite's, alert: 100)")
    parser.add_argument("--prompting", choices=("zero_shot", "few_shot", "few_shot_explained"),
                        help="OPT-R's prompting modes (default: zero_shot)")
    parser.add_argument("--shots", type=int, metavar="N", help="demonstrations per prompt when few-shot (default: 2)")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--dtype", help="compute dtype: float32, bfloat16 or float16")
    parser.add_argument("--quantize", choices=("none", "int8", "w8a8"),
                        help="int8: int8 weight-only inference, per-channel scales computed at load; w8a8: int8 "
                             "activations too, scaled per token (faster on CPU; check large models against int8) "
                             "(default: none)")
    parser.add_argument("--label", help="model name in the outputs (default: the model path's last component)")
    parser.add_argument("--variant", help="pretrained, ft, cot, ... (default: pretrained, or the config's variant)")
    parser.add_argument("--size", help='size label such as "1.3b", for scaling tables')
    parser.add_argument("--mesh", metavar="data=D,fsdp=F,tensor=T",
                        help="devices to shard the model over (default: all devices, fsdp; -1 = the rest); "
                             "the same as --set eval.mesh.AXIS=SIZE")
    parser.add_argument("--skip-missing", action="store_true", default=None,
                        help="skip suite tasks whose data file is absent")
    parser.set_defaults(func=_run)
    return parser
