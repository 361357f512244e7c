"""The README is runnable: each documented command that fits on a CPU runs (with fewer steps and examples), the
test commands are the ones CI runs, the test suite collects without torch, and docstrings cite the repository."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CLI = [sys.executable, "-m", "alert_jax.cli"]

# Appended to each documented command so that it finishes in seconds on CPU; the command itself is the README's.
SHORTER = {
    "demo": ["--set", "model.name=opt-micro", "--set", "data.examples_per_task=40", "--set", "data.vocab_size=512",
             "--set", "train.steps=2", "--set", "train.eval_every=2", "--set", "optim.warmup_steps=1",
             "--set", "eval.max_examples_per_task=1", "--set", "eval.templates=[T5]", "--set", "eval.max_new_tokens=4"],
    "finetune": ["--set", "train.steps=2", "--set", "train.eval_every=2", "--set", "optim.warmup_steps=1",
                 "--set", "data.examples_per_task=30"],
    "evaluate": ["--max-examples", "1", "--templates", "T5", "--max-new-tokens", "4"],
}
NOT_ON_CPU = {"opt-1.3b", "opt-13b"}  # documented for accelerators; their configs are validated in test_configs.py


def _bash_blocks(text: str) -> list[list[str]]:
    return [block.splitlines() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def documented_commands() -> list[str]:
    """Every `alert-jax …` line of the README's bash blocks (after an install prefix such as `pip … &&`)."""
    commands = []
    for block in _bash_blocks(README):
        for line in block:
            command = line.split("&&")[-1].split("#")[0].strip()
            if command.startswith("alert-jax ") and not any(name in command for name in NOT_ON_CPU):
                commands.append(command)
    return commands


def _verb(command: str) -> str:
    return shlex.split(command)[1]


def test_the_readme_documents_every_verb_runnably():
    verbs = {_verb(c) for c in documented_commands()}
    assert {"demo", "finetune", "evaluate", "report", "convert", "data", "sweep"} <= verbs
    assert "alert-jax finetune --config configs/experiments/demo.yaml --workdir runs/demo-cot" in documented_commands()


@pytest.mark.slow
def test_every_documented_command_runs_on_cpu(tmp_path):
    """In README order, in one directory (later commands read what earlier ones wrote), like a user following it."""
    for shipped in ("configs", "launch"):
        (tmp_path / shipped).symlink_to(ROOT / shipped)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    for command in documented_commands():
        argv = shlex.split(command)[1:]
        ran = subprocess.run([*CLI, *argv, *SHORTER.get(argv[0], [])], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=600)
        assert ran.returncode == 0, f"{command}\n{ran.stderr[-3000:]}"
    assert (tmp_path / "runs" / "demo-cot" / "report" / "report.md").exists()
    assert (tmp_path / "runs" / "demo-cot-hf" / "config.json").exists()
    assert (tmp_path / "runs" / "demo-cot-tfds" / "best").is_dir()
    assert (tmp_path / "runs" / "demo-cot" / "eval-tfds" / "scores.jsonl").exists()


def test_ci_runs_exactly_the_readmes_full_test_command_and_the_fast_loop_is_documented():
    commands = [line for block in _bash_blocks(README) for line in block if "pytest" in line]
    full = 'python -m pip install -e ".[test]" && python -m pytest'
    assert full in commands and 'python -m pytest -m "not slow"' in commands
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "pytest" in line]
    assert [line.replace("pip install -q -e", "pip install -e") for line in ci] == [full]


_BLOCK_TORCH = """
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Absent())
import pytest
sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "tests"]))
"""


@pytest.mark.slow  # imports every test module: ~10 s of CPU, far more on a busy machine
def test_the_suite_collects_without_torch_and_transformers():
    ran = subprocess.run([sys.executable, "-c", _BLOCK_TORCH], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    summary = ran.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ tests collected in [\d.]+s", summary), summary


def test_docstrings_cite_files_inside_the_repository():
    cited = set()
    for path in (ROOT / "alert_jax").rglob("*.py"):
        text = path.read_text()
        assert "DESIGN.md" not in text and "../shared" not in text, path
        cited |= set(re.findall(r"docs/[\w.-]+\.md", text))
    assert cited and all((ROOT / doc).is_file() for doc in cited), cited
