"""What every benchmark shares: a description of the machine (and its load) and appending a section to RESULTS.md."""
from __future__ import annotations

import importlib.metadata
import os
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


class LoadAverage:
    """The machine's 1-minute load average when a measurement starts, to report beside the one when it ends.

    The benchmarks run on shared machines: a load that was high, or rose, during a run says how far its absolute
    times can be trusted.
    """

    def __init__(self) -> None:
        self.before = os.getloadavg()[0]

    def text(self) -> str:
        """`1-min load average X before, Y after`, with Y read now (at the end of the measurement)."""
        return f"1-min load average {self.before:.1f} before, {os.getloadavg()[0]:.1f} after"


def publish(lines: Sequence[str], no_write: bool) -> None:
    """Print a result section and, unless `no_write`, append it to RESULTS.md (other sections are kept)."""
    report = "\n".join(lines)
    print(report)
    if not no_write:
        previous = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
        RESULTS.write_text(previous.rstrip("\n") + "\n\n" + report)
