"""`alert-jax plan`: ahead-of-time memory per device, the fitting search, FLOPs, and the shipped configs' targets."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from alert_jax.cli import main
from alert_jax.config import load_config
from alert_jax.plan import (
    HARDWARE,
    PlanError,
    analytic_flops_per_token,
    micro_batch_overrides,
    parse_bytes,
    rows_per_device_options,
    structural_candidates,
    target_hardware,
    train_footprint,
)

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((REPO / "configs" / "experiments").glob("*.yaml"))
MICRO = ["model.name=opt-micro", "model.dtype=float32", "train.seq_len=64", "train.batch_size=8",
         "eval.max_new_tokens=8", "eval.batch_size=4", "eval.dtype=float32"]


def test_sizes_parse_in_binary_and_decimal_units():
    assert parse_bytes("32GiB") == 32 * 2**30
    assert parse_bytes("80GB") == 80 * 10**9
    assert parse_bytes("1.5 mib") == 3 * 2**19
    with pytest.raises(PlanError, match="--device-memory '32 parsecs'"):
        parse_bytes("32 parsecs")


def test_candidates_go_from_nearest_and_keep_the_effective_batch():
    given = ["mesh.data=2", "mesh.fsdp=4", "mesh.tensor=1", "train.batch_size=64", "optim.grad_accum_steps=2"]
    cfg = load_config(None, given)
    fsdp = ("mesh.data=1", "mesh.fsdp=8", "mesh.tensor=1")
    load = lambda extra: load_config(None, [*given, *extra])  # noqa: E731
    saver = ("model.scan_layers=true", "model.remat=full")
    assert structural_candidates(load, 8) == [(), fsdp, saver, (*fsdp, *saver)]
    assert rows_per_device_options(cfg, 8) == [8, 4, 2, 1]  # 128 rows per update over 8 row-shards
    assert micro_batch_overrides(cfg, 8, 1) == ("train.batch_size=8", "optim.grad_accum_steps=16")
    already = lambda extra: load_config(None, [*saver, "mesh.fsdp=8", *extra])  # noqa: E731
    assert structural_candidates(already, 8) == [()]


def test_fsdp_holds_an_eighth_of_the_state_that_data_parallelism_replicates():
    data = train_footprint(load_config(None, [*MICRO, "mesh.data=8", "mesh.fsdp=1"]), 8)
    fsdp = train_footprint(load_config(None, [*MICRO, "mesh.data=1", "mesh.fsdp=8"]), 8)
    assert fsdp.params < 0.2 * data.params
    assert fsdp.optimizer < 0.2 * data.optimizer
    # opt-micro by hand: tokens 1024·64 + positions 514·64 + 2 layers × (4·64² + 4·64 + 2·64·256 + 256 + 64
    #   + 2 norms · 128) + final norm 128 = 65536 + 32896 + 2·49984 + 128 = 198,528 float32 params, all on each device
    assert data.params == 4 * 198_528


@pytest.mark.parametrize("objective", ["aft", "rrhf", "dpo"])
def test_an_alignment_config_is_planned_with_its_ranking_objective(objective, tmp_path):
    """The planned program is the trainer's: a ranking objective's batch carries the per-segment sample fields and
    its step reports the ranking metrics; the same config as SFT has neither."""
    from alert_jax.parallel.rules import DEFAULT_RULES, logical_sharding
    from alert_jax.plan import simulated_mesh, train_program
    from alert_jax.train.objectives import RANKING_METRICS, SAMPLE_FIELD_DTYPES, SEGMENT_SLOTS

    def planned(*extra):
        cfg = load_config(None, [*MICRO, "mesh.fsdp=1", *extra])
        mesh = simulated_mesh(cfg.mesh, 1)
        step, state, batch = train_program(cfg, mesh)
        with logical_sharding(mesh, DEFAULT_RULES):
            _, metrics = step.lower(state, batch).out_info
        return batch, metrics

    batch, metrics = planned(f"train.objective={objective}", f"alignment.samples={tmp_path}")
    for name, dtype in SAMPLE_FIELD_DTYPES.items():
        assert (batch[name].shape, batch[name].dtype) == ((8, SEGMENT_SLOTS), dtype)
    assert set(RANKING_METRICS) <= set(metrics)
    sft_batch, sft_metrics = planned()
    assert not set(SAMPLE_FIELD_DTYPES) & set(sft_batch) and not set(RANKING_METRICS) & set(sft_metrics)


def test_compiled_train_flops_per_token_match_6n_plus_attention():
    cfg = load_config(None, [*MICRO, "mesh.fsdp=1"])
    compiled = train_footprint(cfg, 1).flops / (cfg.train.batch_size * cfg.train.seq_len)
    # opt-micro by hand: N = 1024·64 (tied head) + 2 layers × (4·64² + 4·64 + 2·64·256 + 256 + 64 + 4·64)
    #   + final norm 128 = 65536 + 2·(16384 + 256 + 32768 + 320 + 256) + 128 = 165,632 (no position table);
    # 6N + 12·2·64·64 = 993,792 + 98,304 = 1,092,096
    assert analytic_flops_per_token(cfg) == 1_092_096
    assert compiled == pytest.approx(1_092_096, rel=0.1)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_shipped_experiment_names_hardware_it_can_be_laid_over(path):
    target = target_hardware(path)
    assert target is not None, f"{path.name}: no '# target hardware: N x CHIP' comment"
    chips, chip = target
    assert chip in HARDWARE or chip == "cpu"
    cfg = load_config(path)
    mesh = (cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
    fixed = math.prod(size for size in mesh if size != -1)
    assert chips % fixed == 0 and (-1 in mesh or fixed == chips)


@pytest.mark.slow  # two plans in child processes: ~6 train-step and generation compiles of opt-micro
def test_plan_says_what_does_not_fit_and_the_suggestion_fits(capfd):
    config = str(REPO / "configs" / "experiments" / "demo.yaml")
    args = ["plan", "--config", config, *(x for o in MICRO for x in ("--set", o)), "--mesh", "data=1,fsdp=2,tensor=1"]
    # 5 MiB (4.5 usable): the configured 8 rows need 7.9 MiB, 4 rows × 2 accumulated 5.3 and 2 × 4 4.1 MiB
    assert main([*args, "--device-memory", "5MiB"]) == 3
    out = capfd.readouterr().out
    assert "train step does NOT fit" in out
    suggestion = re.search(r"nearest change that fits \(.*\): (.*)", out).group(1).split()
    assert suggestion == ["--set", "train.batch_size=2", "--set", "optim.grad_accum_steps=4"]
    assert re.search(r"train FLOPs per token: \S+ compiled .* analytic", out)
    main([*args, "--device-memory", "5MiB", *suggestion])
    assert "verdict: train step fits" in capfd.readouterr().out


@pytest.mark.slow  # ~30 s of CPU (one OPT-1.3B train step and the generation programs compile for 8 devices)
def test_the_shipped_1_3b_experiment_fits_its_stated_hardware(capfd):
    """configs/experiments/opt-1.3b-cot.yaml names 8 x h100; its own micro-batch and mesh fit with no change."""
    assert main(["plan", "--config", str(REPO / "configs" / "experiments" / "opt-1.3b-cot.yaml")]) == 0
    out = capfd.readouterr().out
    assert "opt-1.3b on 8 devices" in out and "verdict: train step fits, generation fits" in out


def test_plan_reads_the_architecture_of_a_checkpoint_directory_without_its_weights(tmp_path):
    import json

    from alert_jax.model.convert import config_to_hf
    from alert_jax.model.presets import get_preset
    from alert_jax.plan import architecture

    (tmp_path / "config.json").write_text(json.dumps(config_to_hf(get_preset("opt-micro"))))
    assert architecture(str(tmp_path)) == get_preset("opt-micro")
    assert architecture("opt-1.3b") == get_preset("opt-1.3b")
    with pytest.raises(PlanError, match="model.name: /no/such/dir"):
        architecture("/no/such/dir")
