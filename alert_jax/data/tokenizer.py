"""Tokenizers: OPT's GPT-2 byte-level BPE from local files, or a sentencepiece model trained here.

Both expose the same small interface so packing, training and generation never care which one is
in use. Special ids follow OPT/fairseq: `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, and OPT uses
`</s>` (id 2) both as BOS — prepended to every sequence — and as EOS. The sentencepiece
tokenizer is laid out the same way, so a model trained from scratch on the synthetic corpus
follows exactly the same conventions as a converted OPT checkpoint.

On-disk formats recognised by `load_tokenizer` (a directory or a file inside it):
  * `tokenizer.json`            — a Hugging Face `tokenizers` file (what `BPETokenizer.save` writes);
  * `vocab.json` + `merges.txt` — GPT-2/OPT byte-level BPE as shipped with HF OPT checkpoints;
  * `spm.model` (or one `*.model`) — a sentencepiece model (what `SentencePieceTokenizer.save` writes).
"""
from __future__ import annotations

import abc
import io
from pathlib import Path
from typing import Iterable, Sequence

import sentencepiece as spm
import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from alert_jax.errors import AlertJaxError
from alert_jax.untrusted_json import read_json

BOS_PIECE, PAD_PIECE, EOS_PIECE, UNK_PIECE = "<s>", "<pad>", "</s>", "<unk>"
# fairseq/OPT layout; BOS for OPT-style models is `</s>` (id 2), not `<s>`.
SPECIAL_IDS = {BOS_PIECE: 0, PAD_PIECE: 1, EOS_PIECE: 2, UNK_PIECE: 3}

HF_TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE, MERGES_FILE = "vocab.json", "merges.txt"
SPM_FILE = "spm.model"


class TokenizerError(AlertJaxError):
    """A tokenizer file is missing, unreadable or lacks the special tokens we rely on."""


class Tokenizer(abc.ABC):
    """What the rest of alert_jax needs from a tokenizer.

    `encode` adds no special tokens: callers decide where BOS goes (see `encode_with_bos`), which
    keeps prompt/target concatenation free of accidental separators.
    """

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abc.abstractmethod
    def bos_id(self) -> int: ...

    @property
    @abc.abstractmethod
    def eos_id(self) -> int: ...

    @property
    @abc.abstractmethod
    def pad_id(self) -> int: ...

    @property
    @abc.abstractmethod
    def unk_id(self) -> int: ...

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no special tokens added."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`, skipping special ids (BOS/EOS/PAD) and ids beyond the vocabulary.

        Model embedding tables are often padded past the tokenizer's vocabulary (OPT: 50272 rows for
        50265 tokens), so an untrained model can emit such ids; they carry no text.
        """

    @abc.abstractmethod
    def save(self, directory: str | Path) -> Path:
        """Write the tokenizer into `directory` in a format `load_tokenizer` reads; returns the file."""

    def encode_with_bos(self, text: str) -> list[int]:
        """OPT's convention: every sequence starts with BOS (`</s>`, id 2)."""
        return [self.bos_id, *self.encode(text)]


class BPETokenizer(Tokenizer):
    """GPT-2 byte-level BPE as used by OPT, backed by the Rust `tokenizers` library."""

    def __init__(self, backend: tokenizers.Tokenizer, *, bos_piece: str = EOS_PIECE):
        self._tok = backend
        self._ids = {piece: self._special_id(piece) for piece in SPECIAL_IDS}
        self._bos_piece = bos_piece
        # Registering the specials makes `decode(skip_special_tokens=True)` drop them.
        self._tok.add_special_tokens(list(SPECIAL_IDS))

    def _special_id(self, piece: str) -> int:
        token_id = self._tok.token_to_id(piece)
        if token_id is None:
            raise TokenizerError(f"BPE vocabulary has no special token {piece!r}")
        return token_id

    @classmethod
    def from_vocab_merges(cls, vocab_file: str | Path, merges_file: str | Path) -> "BPETokenizer":
        """Build the GPT-2 pipeline (byte-level pre-tokenizer, no prefix space) over OPT's files."""
        vocab_file, merges_file = Path(vocab_file), Path(merges_file)
        for path in (vocab_file, merges_file):
            if not path.is_file():
                raise TokenizerError(f"{path}: file not found")
        vocab = read_json(vocab_file, TokenizerError, context="not a JSON vocabulary")
        if not isinstance(vocab, dict):
            raise TokenizerError(f"{vocab_file}: expected a JSON object token -> id")
        merges = _read_merges(merges_file)
        backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        return cls(backend)

    @classmethod
    def from_tokenizer_json(cls, path: str | Path) -> "BPETokenizer":
        path = Path(path)
        if not path.is_file():
            raise TokenizerError(f"{path}: file not found")
        try:
            return cls(tokenizers.Tokenizer.from_file(str(path)))
        except Exception as err:  # the Rust side raises a bare Exception on parse errors
            if isinstance(err, TokenizerError):
                raise
            raise TokenizerError(f"{path}: not a tokenizers JSON file ({err})") from err

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def bos_id(self) -> int:
        return self._ids[self._bos_piece]

    @property
    def eos_id(self) -> int:
        return self._ids[EOS_PIECE]

    @property
    def pad_id(self) -> int:
        return self._ids[PAD_PIECE]

    @property
    def unk_id(self) -> int:
        return self._ids[UNK_PIECE]

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids if 0 <= int(i) < self.vocab_size], skip_special_tokens=True)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / HF_TOKENIZER_FILE
        self._tok.save(str(path))
        return path


def _read_merges(path: Path) -> list[tuple[str, str]]:
    """GPT-2 merges.txt: an optional `#version` header, then one `left right` pair per line."""
    merges = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or (line_no == 1 and line.startswith("#")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise TokenizerError(f"{path}:{line_no}: expected 'left right', got {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


class SentencePieceTokenizer(Tokenizer):
    """A sentencepiece model whose special ids follow the OPT/fairseq layout (see module doc)."""

    def __init__(self, model_proto: bytes):
        self._proto = model_proto
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(model_proto)
        except Exception as err:  # noqa: BLE001 - the C++ side raises RuntimeError/OSError variously
            raise TokenizerError(f"not a sentencepiece model ({err})") from err
        for piece, expected in SPECIAL_IDS.items():
            if self._sp.piece_to_id(piece) != expected:
                raise TokenizerError(f"sentencepiece model: {piece!r} is not id {expected}")

    @classmethod
    def from_file(cls, path: str | Path) -> "SentencePieceTokenizer":
        path = Path(path)
        if not path.is_file():
            raise TokenizerError(f"{path}: file not found")
        try:
            return cls(path.read_bytes())
        except TokenizerError as err:
            raise TokenizerError(f"{path}: {err}") from err

    @classmethod
    def train(
        cls,
        corpus: Iterable[str],
        *,
        vocab_size: int,
        model_type: str = "bpe",
        seed: int = 0,
        byte_fallback: bool = True,
        vocab_size_is_limit: bool = False,
    ) -> "SentencePieceTokenizer":
        """Train deterministically: same corpus, options and seed → byte-identical model.

        `vocab_size_is_limit=True` makes `vocab_size` an upper bound (sentencepiece's soft limit): a corpus too
        small to support that many pieces yields fewer instead of failing. One thread, every sentence used (no sampling, no shuffling), the identity normaliser (so
        decode(encode(x)) == x), no dummy prefix (GPT-2 also adds no prefix space) and byte
        fallback (no text is ever mapped to `<unk>`).
        """
        if model_type not in ("bpe", "unigram"):
            raise TokenizerError(f"model_type must be 'bpe' or 'unigram', got {model_type!r}")
        spm.set_random_generator_seed(seed)
        out = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(list(corpus)),
                model_writer=out,
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=1.0,
                byte_fallback=byte_fallback,
                hard_vocab_limit=not vocab_size_is_limit,
                normalization_rule_name="identity",
                add_dummy_prefix=False,
                remove_extra_whitespaces=False,
                split_digits=True,
                num_threads=1,
                input_sentence_size=0,
                shuffle_input_sentence=False,
                max_sentence_length=1 << 16,
                bos_id=SPECIAL_IDS[BOS_PIECE],
                pad_id=SPECIAL_IDS[PAD_PIECE],
                eos_id=SPECIAL_IDS[EOS_PIECE],
                unk_id=SPECIAL_IDS[UNK_PIECE],
                minloglevel=2,
            )
        except RuntimeError as err:  # e.g. vocab_size larger than the corpus supports
            raise TokenizerError(f"sentencepiece training failed: {err}") from err
        return cls(out.getvalue())

    @property
    def model_proto(self) -> bytes:
        return self._proto

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def bos_id(self) -> int:
        return SPECIAL_IDS[EOS_PIECE]  # OPT convention, see module doc

    @property
    def eos_id(self) -> int:
        return SPECIAL_IDS[EOS_PIECE]

    @property
    def pad_id(self) -> int:
        return SPECIAL_IDS[PAD_PIECE]

    @property
    def unk_id(self) -> int:
        return SPECIAL_IDS[UNK_PIECE]

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        # sentencepiece already renders control pieces (<s>, </s>, <pad>) as empty text.
        return self._sp.decode([int(i) for i in ids if 0 <= int(i) < self.vocab_size])

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / SPM_FILE
        path.write_bytes(self._proto)
        return path


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Open a tokenizer from a directory (or a file in one) in any format listed in the module doc."""
    path = Path(path)
    if path.is_file():
        if path.name == HF_TOKENIZER_FILE:
            return BPETokenizer.from_tokenizer_json(path)
        if path.suffix == ".model":
            return SentencePieceTokenizer.from_file(path)
        if path.name in (VOCAB_FILE, MERGES_FILE):
            path = path.parent
        else:
            raise TokenizerError(f"{path}: not a recognised tokenizer file")
    if not path.is_dir():
        raise TokenizerError(f"{path}: no such tokenizer file or directory")
    if (path / HF_TOKENIZER_FILE).is_file():
        return BPETokenizer.from_tokenizer_json(path / HF_TOKENIZER_FILE)
    if (path / VOCAB_FILE).is_file() or (path / MERGES_FILE).is_file():
        return BPETokenizer.from_vocab_merges(path / VOCAB_FILE, path / MERGES_FILE)
    spm_models = [path / SPM_FILE] if (path / SPM_FILE).is_file() else sorted(path.glob("*.model"))
    if len(spm_models) == 1:
        return SentencePieceTokenizer.from_file(spm_models[0])
    raise TokenizerError(
        f"{path}: expected {HF_TOKENIZER_FILE}, {VOCAB_FILE}+{MERGES_FILE} or one *.model file"
    )
