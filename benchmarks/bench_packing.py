"""Packing efficiency of the real finetuning mix: `pack` vs one padded example per row.

The corpus is the `finetune_samples` suite (GSM8K, AQuA, CoS-E samples from ../shared/data) in the
finetuning template, FT (answer only) and CoT (rationale + answer) targets. OPT's GPT-2 BPE files are not
available offline, so lengths come from two stand-ins:

* a sentencepiece BPE (vocab 8k by default) trained on this very corpus — about 3.4 bytes per token here,
  near GPT-2's roughly 4 on English, so the closest offline proxy for OPT's lengths;
* raw UTF-8 bytes (one token per byte, as a byte-level model would see them) — several times longer
  sequences, the coarse-grained hard case for packing.

The samples hold 854 examples; a full-size mix only gives the packer more to choose from.

Both count BOS before the prompt and EOS after the target, as the trainer does. Efficiency = real tokens /
(rows x seq_len). Appends a section to benchmarks/RESULTS.md unless --no-write.

    python benchmarks/bench_packing.py [--data-root ../shared/data --seq 2048 --vocab 8000]
"""
from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path
from typing import Sequence

from alert_jax.data.packing import TokenizedExample, pack, pad_per_example
from alert_jax.data.suites import load_suite
from alert_jax.data.templates import PROMPT_TARGET_SEPARATOR, task_pairs
from alert_jax.data.tokenizer import SentencePieceTokenizer
from alert_jax.data.trained import TextPair
from alert_jax.train.corpus import tokenize_pairs
from results import publish  # noqa: E402  (benchmarks/results.py)

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SUITE = "finetune_samples"
BYTE_BOS, BYTE_EOS = 256, 257  # outside the byte range: one extra token each, like the real specials
LABELS = {"ft": "FT", "cot": "CoT"}


def byte_level(pairs: Sequence[TextPair]) -> list[TokenizedExample]:
    """One token per UTF-8 byte, laid out as `tokenize_pairs` lays out real ids."""
    out = []
    for prompt, target in pairs:
        target_bytes = (PROMPT_TARGET_SEPARATOR + target).encode("utf-8")
        out.append(([BYTE_BOS, *prompt.encode("utf-8")], [*target_bytes, BYTE_EOS]))
    return out


def measure(name: str, examples: Sequence[TokenizedExample], seq: int) -> list[str]:
    lengths = sorted(len(p) + len(t) for p, t in examples)
    start = time.perf_counter()
    packed = pack(examples, seq).stats
    pack_s = time.perf_counter() - start
    padded = pad_per_example(examples, seq).stats
    return [
        f"| {name} | {len(examples)} | {lengths[len(lengths) // 2]} / {lengths[-1]} | {packed.truncated} | "
        f"{padded.rows} | {padded.efficiency:.1%} | {packed.rows} | **{packed.efficiency:.1%}** | "
        f"{padded.rows / packed.rows:.1f}× | {pack_s * 1000:.0f} |"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=8000, help="sentencepiece vocabulary size")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    suite = load_suite(SUITE)
    tasks = [task for entry, task in suite.load_tasks(args.data_root) if entry.split == "finetune"]
    pairs = {variant: task_pairs(tasks, variant) for variant in ("ft", "cot")}
    corpus = [f"{prompt}{PROMPT_TARGET_SEPARATOR}{target}" for variant in pairs for prompt, target in pairs[variant]]
    tokenizer = SentencePieceTokenizer.train(corpus, vocab_size=args.vocab, seed=0)

    rows = []
    for variant, variant_pairs in pairs.items():
        rows += measure(f"{LABELS[variant]}, sentencepiece {args.vocab}", tokenize_pairs(tokenizer, variant_pairs),
                        args.seq)
        rows += measure(f"{LABELS[variant]}, UTF-8 bytes", byte_level(variant_pairs), args.seq)
    lines = [
        f"## Packing efficiency on the finetuning mix ({datetime.date.today().isoformat()})",
        "",
        f"- corpus: suite `{SUITE}` ({', '.join(t.name for t in tasks)}; all sample instances) in the finetuning "
        f"template; FT = answer targets, CoT = rationale + answer; BOS + prompt + separator + target + EOS",
        f"- rows of {args.seq} tokens; `pack` = best-fit-decreasing (default buffer 4096), baseline = "
        f"`pad_per_example`; over-long examples truncated",
        "- token lengths: a sentencepiece BPE trained on this corpus (OPT's GPT-2 BPE is not available offline), and "
        "raw UTF-8 bytes as a pessimistic byte-level bound",
        "",
        "| corpus, tokens | examples | median / max length | truncated | padded rows | padded efficiency | "
        "packed rows | packed efficiency | rows saved | pack ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Efficiency = real tokens / (rows x seq_len); target for packing ≥ 97%.",
        "",
    ]
    publish(lines, args.no_write)


if __name__ == "__main__":
    main()
