"""One run per directory: an exclusive `fcntl.flock` on a lock file, held for the life of the process.

Two runs writing one workdir interleave checkpoints, metrics and generations beyond repair, so the second one
must stop at once and say who holds the directory. `flock` is released by the kernel when the holder exits or is
killed (no stale lock to clean up after a crash), and works on local disks and NFSv4 (where Linux maps it to a
POSIX lock). The lock file holds its holder's pid, host, command and start time, for the message the next
process prints. A process may claim the same directory again (a resumed stage, a sweep): that is a no-op.

Pure Python (no jax); the multi-host rule (process 0 locks for the whole job) is `RunDir.claim`.
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys
from pathlib import Path

from alert_jax.errors import AlertJaxError

_HELD: dict[Path, int] = {}  # lock file (resolved) → the open descriptor that holds it; never closed


class DirectoryBusyError(AlertJaxError):
    """Another process holds the directory's lock; the message names it (pid, host, command, start time)."""


def lock_directory(directory: Path, lock_file: Path) -> None:
    """Hold `lock_file` exclusively (creating `directory`) until this process exits, or raise DirectoryBusyError."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    key = Path(lock_file).resolve()
    if key in _HELD:
        return
    fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise DirectoryBusyError(f"{directory} is in use by another run ({holder}; lock file {key}); wait for it "
                                 f"to finish or stop it — one run per workdir") from None
    _write_holder(fd)
    _HELD[key] = fd


def _holder_record() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _write_holder(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(_holder_record()).encode("utf-8"), 0)
    os.fsync(fd)


def _read_holder(fd: int) -> str:
    """The holder as `pid P on HOST since TIME: COMMAND` (or what is known of it: it may not have written yet)."""
    try:
        record = json.loads(os.pread(fd, 1 << 16, 0).decode("utf-8"))
        return f"pid {record['pid']} on {record['host']} since {record['started']}: {record['command']}"
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return "holder not yet recorded"
