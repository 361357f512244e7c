"""The `alert-jax` entry point: every subcommand registers, bad input is one line + exit 2, a bug keeps its
traceback (exit 1), argparse stays at the edge, the package imports without cycles, convert works."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import alert_jax
import alert_jax.errors
from alert_jax.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def test_every_subcommand_is_registered():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"demo", "finetune", "evaluate", "report", "convert", "data", "sweep"} <= set(commands)


def test_console_script_help_runs():
    out = subprocess.run([sys.executable, "-m", "alert_jax.cli", "--help"], capture_output=True, text=True, check=True)
    assert "finetune" in out.stdout and "evaluate" in out.stdout


def test_unknown_config_key_is_one_line_and_exit_2(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  stepz: 3\n")
    assert main(["finetune", "--config", str(config), "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.yaml" in err and "train.stepz" in err
    assert not (tmp_path / "w").exists()


@pytest.mark.slow  # end to end: tens of seconds on 2 CPU cores
def test_convert_hf_to_native_and_back(tmp_path):
    from tests.hf_reference import hf_logits, left_padded_batch, save_tiny

    hf_model, directory = save_tiny(tmp_path, False)
    assert main(["convert", str(directory), "--to", "alert_jax", "--out", str(tmp_path / "native")]) == 0
    assert main(["convert", str(tmp_path / "native"), "--to", "hf", "--out", str(tmp_path / "hf")]) == 0
    ids, mask = left_padded_batch()
    ours = alert_jax.logits(alert_jax.load_model(tmp_path / "hf"), ids, mask)
    assert np.abs(ours - hf_logits(hf_model, ids, mask))[mask.astype(bool)].max() <= 1e-4


def test_convert_refuses_to_overwrite(tmp_path, capsys):
    from tests.hf_reference import save_tiny

    directory = save_tiny(tmp_path, True)[1]
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("keep")
    assert main(["convert", str(directory), "--out", str(tmp_path / "taken")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "taken" / "file").read_text() == "keep"


def test_an_internal_error_is_a_bug_with_its_traceback_not_bad_input(tmp_path, monkeypatch):
    """Only `AlertJaxError` means bad input (exit 2, one line); anything else escapes with its traceback."""
    import alert_jax.train.loop

    def broken(cfg, workdir):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(alert_jax.train.loop, "finetune", broken)
    with pytest.raises(ValueError, match="internal invariant"):
        main(["finetune", "--workdir", str(tmp_path / "w")])
    code = ("import sys, alert_jax.train.loop as loop\n"
            "def broken(cfg, workdir): raise KeyError('bug')\n"
            "loop.finetune = broken\n"
            "from alert_jax.cli import main\n"
            "sys.exit(main(['finetune', '--workdir', sys.argv[1]]))\n")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "w2")], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 1 and "Traceback" in result.stderr and "KeyError: 'bug'" in result.stderr


@pytest.mark.parametrize("name", ["/data/models/opt-1.3b", "models/opt-tiny", "./opt-tiny", "opt-tinyy"])
def test_a_missing_model_path_is_an_error_never_a_random_preset(tmp_path, capsys, name):
    assert main(["evaluate", "--model", name, "--workdir", str(tmp_path / "e"), "--tokenizer", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and name in err
    with pytest.raises(alert_jax.errors.AlertJaxError, match="no such model directory"):
        alert_jax.load_model(name)


def test_argparse_lives_only_in_the_cli_package():
    """No module outside cli/ imports argparse (naming it as data — the checkpoint unpickler's allow-list entry for
    metaseq's pickled `argparse.Namespace` — is not using it)."""

    def imports_argparse(path: Path) -> bool:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(name.split(".")[0] == "argparse" for name in names):
                return True
        return False

    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "alert_jax").rglob("*.py")
                 if p.parent.name != "cli" and imports_argparse(p)]
    assert offenders == []


def test_the_package_import_graph_has_no_cycle():
    """Module-level `alert_jax` imports form a DAG (arrows point down the pipeline: cli → studies → core)."""
    graph = {}
    for path in (ROOT / "alert_jax").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text())
        graph[module] = {_resolve(node, module) for node in tree.body for _ in [0]
                         if isinstance(node, (ast.Import, ast.ImportFrom))} - {None}
        graph[module] = {m for m in graph[module] if m.startswith("alert_jax")}
    state: dict[str, int] = {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            target = target if target in graph else target.rsplit(".", 1)[0]
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " → ".join([*stack, module, target]))
            if state.get(target) is None and target in graph:
                visit(target, [*stack, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def _resolve(node, module: str):
    if isinstance(node, ast.Import):
        return node.names[0].name
    if node.level:
        base = module.split(".")[: -node.level]
        return ".".join([*base, node.module] if node.module else base)
    return node.module
