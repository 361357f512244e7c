"""benchmarks/bench_accelerator.py keeps working: its --tiny run on CPU trains, decodes and reports MFU."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~30 s of CPU: a train step and four generation programs of opt-micro compile
def test_tiny_accelerator_benchmark_reports_mfu_and_the_bandwidth_bound():
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_accelerator.py"), "--tiny", "--no-write",
                          "--steps", "2", "--hardware", "h100"], env=env, capture_output=True, text=True, check=True,
                         timeout=600).stdout
    assert re.search(r"\| train tokens/s \| [\d.]+ \([\d.]+ ms/step\)", out)
    assert re.search(r"\| train MFU \| [\d.]+% \|", out)  # a CPU against an H100's peak: tiny but a number
    for head in ("float head", "through the LM head's int8 screen"):
        line = rf"\| decode batch 1, {head}: tokens/s \(HBM bound\) \| [\d.]+ \([\d.]+ tokens/s; [\d.]+% of it\)"
        assert re.search(line, out)
