"""TFDS builds are the data path: a finetune or an evaluation reads the same examples from
`alert-jax data build` output as from raw files, and one function defines the validation split for both."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from alert_jax.config import DataConfig, EvalConfig, TrainConfig
from alert_jax.data.splits import is_validation
from alert_jax.data.tfds_builders import build_eval_suite, build_finetune_mix
from alert_jax.errors import AlertJaxError
from alert_jax.evaluate import _scored_tasks, plan
from alert_jax.train.corpus import packed_splits, resolve_tokenizer, text_pairs

HELD_OUT = DataConfig(suite="synthetic", validation_suite="", validation_fraction=0.2, variant="cot",
                      examples_per_task=25)


def test_the_split_is_a_stable_share_of_each_source_by_content():
    inputs = [f"question {i}" for i in range(4000)]
    share = sum(is_validation("gsm8k", text, 0.2) for text in inputs) / len(inputs)
    assert 0.18 < share < 0.22
    assert not any(is_validation("gsm8k", text, 0.0) for text in inputs)
    assert all(is_validation("gsm8k", text, 1.0) for text in inputs)
    assert [is_validation("s", t, 0.3) for t in inputs[::-1]] == [is_validation("s", t, 0.3) for t in inputs][::-1]


def _packed(cfg: DataConfig, workdir, tokenizer):
    return packed_splits(cfg, TrainConfig(seq_len=128, batch_size=4), tokenizer, workdir, lambda: text_pairs(cfg))


def test_a_finetune_reads_the_same_packed_rows_from_a_tfds_build_as_from_raw_files(tmp_path):
    build_finetune_mix(None, tmp_path / "tfds", "cot", "synthetic", validation_percent=20)
    built = dataclasses.replace(HELD_OUT, tfds_dir=str(tmp_path / "tfds"))
    raw_pairs, built_pairs = text_pairs(HELD_OUT), text_pairs(built)
    assert raw_pairs == built_pairs
    train, validation = raw_pairs
    assert len(validation) > 0 and len(train) == 25 * _finetune_task_count()
    tokenizer = resolve_tokenizer(HELD_OUT, tmp_path / "raw", lambda: raw_pairs)
    raw, from_tfds = _packed(HELD_OUT, tmp_path / "raw", tokenizer), _packed(built, tmp_path / "built", tokenizer)
    for split in ("train", "validation"):
        for field, rows in raw[split].arrays.items():
            np.testing.assert_array_equal(rows, from_tfds[split].arrays[field], err_msg=f"{split}/{field}")


def _finetune_task_count() -> int:
    from alert_jax.data.suites import load_suite

    return len(load_suite("synthetic").finetune_tasks)


def test_with_dev_tasks_a_build_that_holds_nothing_out_gives_the_raw_rows_and_one_that_does_is_refused(tmp_path):
    dev = dataclasses.replace(HELD_OUT, validation_suite="synthetic")
    build_finetune_mix(None, tmp_path / "all", "cot", "synthetic", validation_percent=0)
    assert text_pairs(dataclasses.replace(dev, tfds_dir=str(tmp_path / "all"))) == text_pairs(dev)
    build_finetune_mix(None, tmp_path / "five", "cot", "synthetic", validation_percent=5)
    with pytest.raises(AlertJaxError, match=r"data.tfds_dir=.*five: the build holds out \d+ finetuning examples"):
        text_pairs(dataclasses.replace(dev, tfds_dir=str(tmp_path / "five")))


def test_a_missing_build_is_an_error_naming_the_directory(tmp_path):
    with pytest.raises(AlertJaxError, match=r"alert_finetune_mix/cot/1.0.0: no alert_finetune_mix/cot build"):
        text_pairs(dataclasses.replace(HELD_OUT, suite="finetune_mix", tfds_dir=str(tmp_path)))


def test_nothing_held_out_and_no_dev_tasks_is_an_error_naming_the_keys():
    with pytest.raises(AlertJaxError, match=r"data.validation_suite='' gives no dev examples.*validation_fraction=0.0"):
        text_pairs(dataclasses.replace(HELD_OUT, validation_fraction=0.0))


def test_an_evaluation_reads_the_same_prompts_from_a_tfds_build_as_from_raw_files(tmp_path):
    build_eval_suite(None, tmp_path / "tfds", "synthetic")
    raw = EvalConfig(suite="synthetic", max_examples_per_task=3)
    built = dataclasses.replace(raw, tfds_dir=str(tmp_path / "tfds"))
    raw_items, built_items = (plan(_scored_tasks(cfg), cfg) for cfg in (raw, built))
    assert len(raw_items) > 0
    assert [(i.entry.task, i.entry.skill, i.entry.split, i.template, i.example, i.prompt) for i in raw_items] == \
        [(i.entry.task, i.entry.skill, i.entry.split, i.template, i.example, i.prompt) for i in built_items]
