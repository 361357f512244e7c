"""`alert-jax convert`: move OPT weights between HF, metaseq and alert_jax formats."""
from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from alert_jax.atomic import refuse_existing
    from alert_jax.model.io import load_model, save_hf, save_model
    from alert_jax.model.model import Model
    from alert_jax.model.convert import load_metaseq

    refuse_existing(args.out, args.overwrite)  # before minutes of loading, not after
    if args.source_format == "metaseq":
        config, params = load_metaseq(args.source, num_attention_heads=args.num_heads)
        model = Model(config, params)
    else:
        model = load_model(args.source)
    if args.to == "hf":
        out = save_hf(model, args.out, overwrite=args.overwrite)
    else:
        out = save_model(model, args.out, overwrite=args.overwrite)
    print(out)
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("convert", help="convert checkpoints: HF/metaseq/alert_jax → HF or alert_jax")
    parser.add_argument("source", help="HF directory, alert_jax model directory, training workdir, preset, or metaseq .pt")
    parser.add_argument("--out", required=True)
    parser.add_argument("--to", choices=("hf", "alert_jax"), default="hf")
    parser.add_argument("--source-format", choices=("auto", "metaseq"), default="auto")
    parser.add_argument("--num-heads", type=int, help="attention heads, for metaseq files whose cfg lacks them")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out directory (written beside it, then swapped in)")
    parser.set_defaults(func=_run)
    return parser
