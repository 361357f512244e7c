"""int8 on a trained model: how often greedy generations stay identical to float32, and what the scores do.

Random weights say little here (their logits are nearly flat, so any rounding flips near-ties); a trained model
is the honest test. Evaluates one model directory on the same suite instances with `quantize` none, int8
(weight-only) and w8a8 (int8 activations too), each through the real `evaluate` path, and reports per mode:
generations identical to float32, mean ROUGE-L and exact match over the instances, and prompts/s. The quick
demo's CoT model is a small trained model that exists after `alert-jax demo --quick --workdir W`:

    python benchmarks/bench_quantize.py --model W/cot --tokenizer W/tokenizer --templates T1,T5 --max-examples 12
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import tempfile
import time
from pathlib import Path

from results import cpu_model, publish  # noqa: E402  (benchmarks/results.py)

from alert_jax.config import EvalConfig
from alert_jax.evaluate import GENERATIONS_FILE, evaluate, read_generations

MODES = ("none", "int8", "w8a8")


def _key(record: dict) -> tuple:
    return record["task"], record["split"], record["template"], record["id"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained model directory (or training workdir)")
    parser.add_argument("--tokenizer", default="", help="default: the model's own (MODEL/tokenizer or HF files)")
    parser.add_argument("--suite", default="synthetic")
    parser.add_argument("--templates", default="T1,T5")
    parser.add_argument("--max-examples", type=int, default=12, help="instances per task")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    base = EvalConfig(suite=args.suite, templates=tuple(args.templates.split(",")), max_new_tokens=args.max_new_tokens,
                      max_examples_per_task=args.max_examples, tokenizer=args.tokenizer, label="model")
    records, seconds = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for mode in MODES:
            workdir = Path(scratch) / mode
            start = time.perf_counter()
            evaluate(args.model, dataclasses.replace(base, quantize=mode), workdir)
            seconds[mode] = time.perf_counter() - start
            records[mode] = {_key(r): r for r in read_generations(workdir / GENERATIONS_FILE)}
    reference = records["none"]
    lines = [
        f"## int8 on a trained model: greedy agreement with float32 and score change ({datetime.date.today()})",
        "",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores; model {args.model}; suite {args.suite}, templates "
        f"{args.templates}, {args.max_examples} instances per task = {len(reference)} prompts; greedy, "
        f"{args.max_new_tokens} new tokens; prompts/s includes load, quantisation and compiles",
        "",
        "| weights | generations identical to fp32 | ROUGE-L | exact match | prompts/s |",
        "|---|---|---|---|---|",
    ]
    for mode in MODES:
        got = records[mode]
        same = sum(got[k]["generation"] == r["generation"] for k, r in reference.items())
        rouge = sum(r["rouge_l"] for r in got.values()) / len(got)  # per-record metrics are in percent
        exact = sum(r["exact_match"] for r in got.values()) / len(got)
        lines.append(f"| {'fp32' if mode == 'none' else mode} | {same} of {len(reference)} | {rouge:.2f} | "
                     f"{exact:.2f} | {len(got) / seconds[mode]:.1f} |")
    lines.append("")
    publish(lines, args.no_write)


if __name__ == "__main__":
    main()
