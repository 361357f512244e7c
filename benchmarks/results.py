"""What every benchmark shares: a description of the machine and appending a section to RESULTS.md."""
from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path
from typing import Sequence

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux), for the machine line of a result."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(package: str) -> str:
    """The installed version of a distribution, or "not installed" (peers are optional)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def publish(lines: Sequence[str], no_write: bool) -> None:
    """Print a result section and, unless `no_write`, append it to RESULTS.md (other sections are kept)."""
    report = "\n".join(lines)
    print(report)
    if not no_write:
        previous = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
        RESULTS.write_text(previous.rstrip("\n") + "\n\n" + report)
