"""`alert-jax data build|stats`: build the TFDS datasets and summarise corpora (see `alert_jax.data.stats`).

Bad input — a corrupt source file, a malformed suite, an unreadable tokenizer — is an `AlertJaxError` that the
CLI reports as one line with exit status 2 (readers already name `path:line:`); a failed build leaves no output.
"""
from __future__ import annotations

import argparse
import dataclasses
from collections import defaultdict
from pathlib import Path
from typing import Iterator, Optional

from alert_jax.config import DataConfig, load_config
from alert_jax.data import suites
from alert_jax.data.stats import corpus_stats, scan_data_root, token_counter
from alert_jax.data.templates import task_pairs
from alert_jax.data.trained import TextPair, trained_examples


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `data build` and `data stats` to the CLI."""
    data = subparsers.add_parser("data", help="build TFDS datasets, summarise corpora")
    commands = data.add_subparsers(dest="data_command", required=True)

    build = commands.add_parser("build", help="build the finetuning mix or an eval suite as TFDS array_record")
    build.add_argument("dataset", choices=("finetune", "eval"))
    build.add_argument("--out", required=True, type=Path, help="TFDS data_dir to write into")
    build.add_argument("--data-root", type=Path, help="folder the suite's paths are relative to")
    build.add_argument("--suite", help="suite name or YAML path (default: finetune_mix / alert)")
    build.add_argument("--variant", choices=("ft", "cot"), help="finetune targets (default: both)")
    build.add_argument("--validation-percent", type=int, default=5)
    build.add_argument("--skip-missing", action="store_true", help="skip suite entries whose file is absent")
    build.set_defaults(func=_run_build)

    stats = commands.add_parser("stats", help="examples and tokens per source")
    stats.add_argument("--config", type=Path, help="experiment YAML: count its finetuning mix as trained on "
                                                   "(data.suite, data.variant, data.examples_per_task, data.mixture)")
    stats.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set data.mixture.esnli=10000 (implies the mix view)")
    stats.add_argument("--suite", help="suite name or YAML path (default: synthetic without --data-root)")
    stats.add_argument("--data-root", type=Path, help="data root; alone, every recognised file under it")
    stats.add_argument("--tokenizer", type=Path, help="count tokenizer ids instead of whitespace words")
    stats.add_argument("--variant", choices=("ft", "cot"), help="target format counted (default: ft, or the "
                                                                "config's data.variant)")
    stats.add_argument("--skip-missing", action="store_true")
    stats.set_defaults(func=_run_stats)


def _run_build(args: argparse.Namespace) -> int:
    # Imported here: TFDS takes a moment to import and `stats` does not need it.
    from alert_jax.data import tfds_builders

    if args.dataset == "finetune":
        for variant in (args.variant,) if args.variant else ("ft", "cot"):
            built = tfds_builders.build_finetune_mix(
                args.data_root, args.out, variant, args.suite or "finetune_mix",
                validation_percent=args.validation_percent, skip_missing=args.skip_missing,
            )
            print(built)
    else:
        print(tfds_builders.build_eval_suite(args.data_root, args.out, args.suite or "alert",
                                             skip_missing=args.skip_missing))
    return 0


def _sources(args: argparse.Namespace, data: Optional[DataConfig], variant: str
             ) -> Iterator[tuple[str, list[TextPair]]]:
    """(label, its (prompt, target) pairs); suite entries are labelled `task [split]`, as a task may sit in two splits.

    With an experiment's `data` section, its suite's `finetune` tasks hold exactly the examples the run trains on
    (`trained_examples`: the validation hold-out left out, then the mixture's caps); other tasks count whole.
    """
    if data is None and args.data_root is not None and args.suite is None:
        yield from ((task.name, task_pairs([task], variant)) for task in scan_data_root(args.data_root))
        return
    suite = suites.load_suite(data.suite if data else args.suite or "synthetic")
    if data is None:
        for entry, task in suite.load_tasks(args.data_root, skip_missing=args.skip_missing):
            yield f"{entry.task} [{entry.split}]", task_pairs([task], variant)
        return
    trained: dict[str, list[TextPair]] = defaultdict(list)
    for example in trained_examples(data).train:
        trained[example.task].append((example.prompt, example.target))
    others = dict(dataclasses.replace(suite, tasks=tuple(e for e in suite.tasks if e.split != "finetune"))
                  .load_tasks(args.data_root, skip_missing=args.skip_missing))
    for entry in suite.tasks:
        if entry.split == "finetune" or entry in others:
            pairs = trained[entry.task] if entry.split == "finetune" else task_pairs([others[entry]], variant)
            yield f"{entry.task} [{entry.split}]", pairs


def _run_stats(args: argparse.Namespace) -> int:
    data = load_config(args.config, args.set).data if args.config or args.set else None
    if data is not None and args.data_root is None and data.data_root:
        args.data_root = Path(data.data_root)
    variant = args.variant or (data.variant if data else "ft")
    if data is not None:  # the flags name the run's suite, variant and data root
        data = dataclasses.replace(data, suite=args.suite or data.suite, variant=variant,
                                   data_root=str(args.data_root or ""))
    count, unit = token_counter(args.tokenizer)
    per_source = corpus_stats(_sources(args, data, variant), count)
    print(f"examples: {sum(s.examples for s in per_source.values())}")
    print(f"tokens: {sum(s.tokens for s in per_source.values())} ({unit})")
    print("per source:")
    for source, stats in per_source.items():
        print(f"  {source}: {stats.examples} examples, {stats.tokens} tokens")
    return 0
