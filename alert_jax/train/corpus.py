"""From a run's `data` section to packed token rows: the trainer's only view of data.

The text is `alert_jax.data.trained.trained_examples`: the one definition of what a run trains on (its
finetuning examples after the validation hold-out and the mixture caps, in order) and of its validation text,
shared with `alert-jax data stats`, `alert-jax sample` and the vocabulary-overlap analysis.
Every target ends with EOS so finetuned models learn where to stop. With `data.masked_thought_rate` the training
rows' inputs (never their targets, never the validation rows) hide that fraction of each rationale.
The tokenizer and packed arrays are cached in the workdir with a fingerprint of the text, tokenizer and settings
they were built from, so a resumed run reads exactly the rows it started with and a changed config never reads
stale ones. An alignment run trains on sampled CoTs (alert_jax/train/sample_rows.py) and needs only the
validation rows from its data section: `packed_validation` builds those alone, uncached, as its sample rows are.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from alert_jax.atomic import staged_dir
from alert_jax.config import DataConfig, TrainConfig
from alert_jax.errors import AlertJaxError
from alert_jax.data.masked_thought import mask_rationale, rationale_tokens
from alert_jax.data.packing import FIELDS, Packed, PackingStats, pack, tokenize_example
from alert_jax.data.templates import PROMPT_TARGET_SEPARATOR
from alert_jax.data.tokenizer import SentencePieceTokenizer, Tokenizer, load_tokenizer
from alert_jax.data.trained import TextPair, trained_examples
from alert_jax.parallel.mesh import run_on_main
from alert_jax.workdir import RunDir, cache_is_current, stamp_cache

log = logging.getLogger(__name__)

SplitPairs = tuple[list[TextPair], list[TextPair]]  # (train, validation)


def text_pairs(cfg: DataConfig) -> SplitPairs:
    """(train, validation) (prompt, target) pairs of `trained_examples(cfg)`: the text the packed rows hold."""
    return trained_examples(cfg).pairs()


def resolve_tokenizer(cfg: DataConfig, workdir: Path, pairs: Callable[[], SplitPairs]) -> Tokenizer:
    """The configured tokenizer, or (empty `data.tokenizer`) sentencepiece trained on the run's own training text,
    cached in `workdir/tokenizer` and rebuilt when that text or `data.vocab_size` changes.

    `data.vocab_size` is an upper bound there: a small corpus (a short demo run) cannot support every piece of a
    model-sized vocabulary, and failing a shipped config over it helps nobody, so the tokenizer gets as many
    pieces as the corpus supports and a warning names the shortfall. In a multi-host job process 0 checks and
    builds the cache while the others wait, then every host loads it.
    """
    if cfg.tokenizer:
        return load_tokenizer(cfg.tokenizer)
    directory = RunDir(workdir).tokenizer
    run_on_main("tokenizer cache", lambda: _build_tokenizer_if_stale(cfg, directory, pairs))
    return load_tokenizer(directory)


def _build_tokenizer_if_stale(cfg: DataConfig, directory: Path, pairs: Callable[[], SplitPairs]) -> None:
    train, _ = pairs()
    inputs = {"vocab_size": cfg.vocab_size, "train_text": _text_digest(train)}
    if cache_is_current(directory, inputs):
        return
    corpus = [f"{prompt}{PROMPT_TARGET_SEPARATOR}{target}" for prompt, target in train]
    trained = SentencePieceTokenizer.train(corpus, vocab_size=cfg.vocab_size, seed=0, vocab_size_is_limit=True)
    if trained.vocab_size < cfg.vocab_size:
        log.warning("data.vocab_size=%d: the training text supports only %d sentencepiece pieces; using %d",
                    cfg.vocab_size, trained.vocab_size, trained.vocab_size)
    with staged_dir(directory) as staging:
        trained.save(staging)
        stamp_cache(staging, inputs)


def _text_digest(pairs: Sequence[TextPair]) -> str:
    """A digest of the exact text a cache is built from: any change of data, template or variant changes it."""
    digest = hashlib.sha256()
    for prompt, target in pairs:
        digest.update(json.dumps([prompt, target], ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def tokenizer_digest(tokenizer: Tokenizer) -> str:
    """A digest of what a tokenizer does — its vocabulary, special ids and the encoding of a probe text —
    independent of the files it was loaded from."""
    digest = hashlib.sha256()
    digest.update(json.dumps([type(tokenizer).__name__, tokenizer.vocab_size, tokenizer.bos_id, tokenizer.eos_id,
                              tokenizer.pad_id, tokenizer.encode(_PROBE_TEXT)]).encode("utf-8"))
    for token_id in range(tokenizer.vocab_size):
        digest.update(tokenizer.decode([token_id]).encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()


_PROBE_TEXT = "Question: If 12 apples cost $3.60, what do 7 cost?\nAnswer: The answer is 2.10. Ünïcödé — ok?"


def tokenize_pairs(tokenizer: Tokenizer, pairs: Sequence[TextPair], masked_thought_rate: float = 0.0,
                   seed: int = 0) -> list[tuple[list[int], ...]]:
    """(prompt ids, target ids + EOS) per pair; with a Masked Thought rate, also the target as the inputs show
    it, that fraction of its rationale ids replaced (`alert_jax.data.masked_thought`, seeded per example)."""
    out: list[tuple[list[int], ...]] = []
    for index, (prompt, target) in enumerate(pairs):
        prompt_ids, target_ids = tokenize_example(tokenizer, prompt, target)
        full = list(target_ids) + [tokenizer.eos_id]
        if masked_thought_rate <= 0:
            out.append((prompt_ids, full))
            continue
        rng = np.random.default_rng([seed, index])
        shown = mask_rationale(full, rationale_tokens(tokenizer, target, target_ids), masked_thought_rate, rng,
                               tokenizer.unk_id)
        out.append((prompt_ids, full, shown))
    return out


def packed_splits(cfg: DataConfig, train_cfg: TrainConfig, tokenizer: Tokenizer, workdir: Path,
                  pairs: Callable[[], SplitPairs]) -> dict[str, Packed]:
    """Packed train/validation rows from `pairs()`, cached under `workdir/data` and rebuilt whenever the text,
    the tokenizer, `train.seq_len` or the overflow rule differ from what the cache was built from.

    In a multi-host job process 0 checks and builds the cache while the others wait, then every host loads it.
    """
    if not 0 <= cfg.masked_thought_rate < 1 or (cfg.masked_thought_rate > 0 and cfg.variant != "cot"):
        raise AlertJaxError(f"data.masked_thought_rate={cfg.masked_thought_rate}: expected 0 <= rate < 1, and a rate "
                            f"above 0 only with data.variant=cot (got {cfg.variant!r}): only CoT targets have "
                            "rationales to mask")
    cache = RunDir(workdir).data
    run_on_main("packed-row cache", lambda: _build_rows_if_stale(cfg, train_cfg, tokenizer, cache, pairs))
    return {name: _load_packed(cache, name) for name in ("train", "validation")}


def _build_rows_if_stale(cfg: DataConfig, train_cfg: TrainConfig, tokenizer: Tokenizer, cache: Path,
                         pairs: Callable[[], SplitPairs]) -> None:
    train_pairs, validation_pairs = pairs()
    overflow = _overflow(cfg)
    inputs = {"seq_len": train_cfg.seq_len, "overflow": overflow, "tokenizer": tokenizer_digest(tokenizer),
              "train_text": _text_digest(train_pairs), "validation_text": _text_digest(validation_pairs)}
    if cfg.masked_thought_rate > 0:  # only then, so caches built before the option existed stay current
        inputs["masked_thought"] = [cfg.masked_thought_rate, train_cfg.seed]
    if cache_is_current(cache, inputs):
        return
    if cache.exists():
        log.warning("%s: packed rows were built from other inputs (data, tokenizer or train.seq_len); rebuilding",
                    cache)
    splits = {"train": pack(tokenize_pairs(tokenizer, train_pairs, cfg.masked_thought_rate, train_cfg.seed),
                             train_cfg.seq_len, overflow=overflow),
              "validation": packed_validation(cfg, train_cfg, tokenizer, validation_pairs)}
    with staged_dir(cache) as staging:
        for name, packed in splits.items():
            np.savez(staging / f"{name}.npz", **packed.arrays)
            log.info("%s: %s", name, packed.stats)
        stats = {name: dataclasses.asdict(packed.stats) for name, packed in splits.items()}
        (staging / "stats.json").write_text(json.dumps(stats, indent=2, default=float))
        stamp_cache(staging, inputs)


def packed_validation(cfg: DataConfig, train_cfg: TrainConfig, tokenizer: Tokenizer,
                      validation_pairs: Sequence[TextPair]) -> Packed:
    """The validation rows alone (never masked): the rows `packed_splits` caches, and all an alignment run
    packs from its data section."""
    return pack(tokenize_pairs(tokenizer, validation_pairs), train_cfg.seq_len, overflow=_overflow(cfg))


def _overflow(cfg: DataConfig) -> str:
    return "truncate" if cfg.truncate_long else "drop"


def _load_packed(cache: Path, name: str) -> Packed:
    """One split of the cache; a cache file damaged after it was stamped is one error naming it."""
    path = cache / f"{name}.npz"
    try:
        with np.load(path, allow_pickle=False) as arrays:
            rows = {f: np.asarray(arrays[f]) for f in FIELDS}
        path = cache / "stats.json"
        stats = PackingStats(**json.loads(path.read_text())[name])
    except Exception as exc:  # noqa: BLE001 — zip, npy and JSON decoding all fail in their own ways
        raise AlertJaxError(f"{path}: corrupt packed-row cache ({type(exc).__name__}); delete {cache} to rebuild "
                            "it") from None
    return Packed(rows, stats)
