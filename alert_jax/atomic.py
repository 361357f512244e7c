"""Write beside, then swap: the one way alert_jax replaces a directory (model exports, best/, caches, data builds)
or a file (records, logs cut back on resume).

A directory is built complete under a hidden sibling name, then swapped in with renames on the same filesystem:
the old directory is renamed aside (`.NAME.old`), the new one renamed to NAME, the old one deleted. A kill at any
instant leaves NAME holding the old or the new complete tree, or — only between the two renames — NAME absent
with the complete old tree at `.NAME.old`, which `recover` (called before every read through `RunDir` and before
every swap) renames back. Never neither, never a half-written NAME.

Pure Python: the workdir and data paths use it without jax.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

from alert_jax.errors import AlertJaxError


class OutputExistsError(AlertJaxError):
    """An output directory already holds something and replacing it was not asked for."""


def write_text(path: Path, text: str) -> None:
    """Replace the file `path` with `text` (written beside it, flushed to disk, renamed over it): a reader or a
    crash sees the old file or the new one, never a mix."""
    path = Path(path)
    tmp = _sibling(path, "tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _sibling(target: Path, role: str) -> Path:
    return target.with_name(f".{target.name}.{role}")


def recover(target: Path) -> None:
    """Finish undoing a swap a kill interrupted between its two renames: the old tree goes back to `target`.

    Readers on several hosts may call this at once on a shared filesystem: the first rename wins and the others
    find the old tree already gone, which is the same outcome."""
    target = Path(target)
    old = _sibling(target, "old")
    if old.exists() and not target.exists():
        try:
            os.replace(old, target)
        except FileNotFoundError:
            pass


def replace_dir(staging: Path, target: Path) -> None:
    """Put the complete directory `staging` at `target`, replacing what was there (see the module docstring)."""
    staging, target = Path(staging), Path(target)
    recover(target)
    old = _sibling(target, "old")
    shutil.rmtree(old, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def refuse_existing(target: Path, overwrite: bool) -> None:
    """Refuse an output path that exists (a file, or a non-empty directory) unless `overwrite`."""
    target = Path(target)
    if overwrite or not target.exists():
        return
    if target.is_dir() and not any(target.iterdir()):
        return
    raise OutputExistsError(f"{target}: exists and is not empty (use --overwrite to replace it)")


@contextlib.contextmanager
def staged_dir(target: Path, *, owner: bool = True) -> Iterator[Path]:
    """A fresh directory beside `target` to build into; when the block succeeds it replaces `target`, when it fails
    it is removed and `target` is untouched.

    The staging path is fixed (`.NAME.staging`), so every process of a multi-host job writing collectively (orbax)
    names the same one; only the `owner` process clears it beforehand and swaps it in afterwards.
    """
    target = Path(target)
    staging = _sibling(target, "staging")
    if owner:
        shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    try:
        yield staging
    except BaseException:
        if owner:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if owner:
        replace_dir(staging, target)
