"""Checkpoint import/export: HF layouts, metaseq, our own format, and clear failures on broken input."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import alert_jax
from alert_jax.atomic import OutputExistsError
from alert_jax.model.io import ModelSaveError
from alert_jax.model.tensor_files import CheckpointFormatError, read_safetensors, write_safetensors

torch = pytest.importorskip("torch")
from tests.hf_reference import hf_logits, left_padded_batch, save_tiny


def _assert_same_logits(model, hf_model, seed=0):
    ids, mask = left_padded_batch(seed)
    real = mask.astype(bool)
    assert np.abs(alert_jax.logits(model, ids, mask) - hf_logits(hf_model, ids, mask))[real].max() <= 1e-4


def test_pytorch_model_bin_loads_without_torch_in_the_loader(tmp_path):
    hf_model, saved = save_tiny(tmp_path, True)
    directory = tmp_path / "bin"
    directory.mkdir()
    shutil.copy(saved / "config.json", directory / "config.json")
    torch.save(hf_model.state_dict(), directory / "pytorch_model.bin")  # what transformers 4.x wrote
    _assert_same_logits(alert_jax.load_model(directory), hf_model)


def test_sharded_safetensors_with_index(tmp_path):
    hf_model = save_tiny(tmp_path, False)[0]
    directory = tmp_path / "sharded"
    hf_model.save_pretrained(directory, max_shard_size="20KB")
    assert (directory / "model.safetensors.index.json").exists()
    _assert_same_logits(alert_jax.load_model(directory), hf_model)


def test_export_shards_large_models_and_reloads(tmp_path):
    hf_model, directory = save_tiny(tmp_path, True)
    model = alert_jax.load_model(directory)
    from alert_jax.model import convert
    get = lambda path: np.asarray(_leaf(model.params, path))
    out = convert.export_hf(model.config, get, tmp_path / "small_shards", max_shard_bytes=40_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    _assert_same_logits(alert_jax.load_model(out), hf_model)


def _leaf(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def _save_as_metaseq(hf_model, path):
    """`hf_model` written as a metaseq checkpoint: fused qkv (k, v, q order), metaseq names, the config's heads."""
    state = {}
    for name, tensor in hf_model.state_dict().items():
        if name == "lm_head.weight":
            continue
        name = name.removeprefix("model.")
        name = name.replace("project_in.", "project_in_dim.").replace("project_out.", "project_out_dim.")
        name = name.replace("decoder.final_layer_norm.", "decoder.layer_norm.")
        state[name] = tensor.clone()
    for i in range(hf_model.config.num_hidden_layers):
        for kind in ("weight", "bias"):
            parts = [state.pop(f"decoder.layers.{i}.self_attn.{p}_proj.{kind}") for p in ("k", "v", "q")]
            state[f"decoder.layers.{i}.self_attn.qkv_proj.{kind}"] = torch.cat(parts, 0)
    state["decoder.output_projection.weight"] = state["decoder.embed_tokens.weight"].clone()
    state["decoder.version"] = torch.tensor([3.0])
    heads = hf_model.config.num_attention_heads
    torch.save({"model": state, "cfg": {"model": {"decoder_attention_heads": heads, "arch": "transformer_lm"}}}, path)
    return path


@pytest.mark.parametrize("pre_ln", [True, False])
def test_metaseq_state_dict_converts_to_the_same_logits(tmp_path, pre_ln):
    hf_model = save_tiny(tmp_path, pre_ln)[0]
    from alert_jax.model.convert import load_metaseq
    config, params = load_metaseq(_save_as_metaseq(hf_model, tmp_path / "consolidated.pt"))
    assert config.do_layer_norm_before == pre_ln
    _assert_same_logits(alert_jax.Model(config, params), hf_model)


def test_model_config_reads_every_source_as_load_model_resolves_it(tmp_path):
    """`model_config` (what `alert-jax plan` reads) names the architecture `load_model` builds, for every kind of
    model argument, without reading a weight: a preset, HF and alert_jax model directories, a training workdir's
    best model and a metaseq file; post-LN with projections (350m's layout) so no default can pass for a read."""
    from alert_jax.model.io import model_config
    from alert_jax.workdir import RunDir

    hf_model, hf_dir = save_tiny(tmp_path, False)
    native = alert_jax.save_model(alert_jax.load_model(hf_dir), tmp_path / "native")
    workdir = RunDir(tmp_path / "run")
    alert_jax.save_model(alert_jax.load_model(hf_dir), workdir.best)
    workdir.best_record.write_text(json.dumps({"step": 3}))
    metaseq = _save_as_metaseq(hf_model, tmp_path / "consolidated.pt")
    sources = ["opt-tiny", hf_dir, native, workdir.root, metaseq]
    assert model_config(hf_dir).do_layer_norm_before is False
    for source in sources:
        assert model_config(source) == alert_jax.load_model(source).config, source
    assert model_config(metaseq) == model_config(hf_dir)


def test_native_orbax_round_trip(tmp_path):
    hf_model, directory = save_tiny(tmp_path, True)
    model = alert_jax.load_model(directory)
    alert_jax.save_model(model, tmp_path / "native")
    _assert_same_logits(alert_jax.load_model(tmp_path / "native"), hf_model)


def test_models_a_checkpoint_cannot_hold_are_refused_before_anything_is_written(tmp_path):
    """int8 weights (they were written as if float before) and the [out, in] kernel copy decoding reads (it
    would load back transposed): both formats refuse them, name the target, and leave no file behind."""
    directory = save_tiny(tmp_path, True)[1]
    model = alert_jax.load_model(directory)
    for candidate, reason in ((alert_jax.load_model(directory, quantize="int8"), "weights are quantized \\(int8\\)"),
                              (alert_jax.load_model(directory, quantize="w8a8"), "weights are quantized \\(w8a8\\)"),
                              (model.decoding_copy(), "kernels are stored out_in")):
        for save in (alert_jax.save_model, alert_jax.save_hf):
            target = tmp_path / "never"
            with pytest.raises(ModelSaveError, match=f"never: not saved — the model's {reason}"):
                save(candidate, target)
            assert not target.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".never")]
    alert_jax.save_model(model, tmp_path / "float")  # the model the copy was made from saves as before


def test_preset_init_is_seeded():
    a = alert_jax.load_model("opt-tiny", seed=1)
    b = alert_jax.load_model("opt-tiny", seed=1)
    c = alert_jax.load_model("opt-tiny", seed=2)
    ids = np.arange(3, 13)[None]
    assert np.array_equal(alert_jax.logits(a, ids), alert_jax.logits(b, ids))
    assert not np.array_equal(alert_jax.logits(a, ids), alert_jax.logits(c, ids))


def _rewrite_without(directory, drop=None, reshape=None):
    refs = read_safetensors(directory / "model.safetensors")
    arrays = {k: r.load() for k, r in refs.items() if k != drop}
    if reshape:
        arrays[reshape] = arrays[reshape][:-1]
    (directory / "model.safetensors").unlink()
    write_safetensors(directory / "model.safetensors", arrays, {k: (a.shape, a.dtype) for k, a in arrays.items()})


def _snapshot(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_missing_tensor_is_named_and_nothing_is_written(tmp_path):
    directory = save_tiny(tmp_path, True)[1]
    name = "model.decoder.layers.1.fc2.weight"
    _rewrite_without(directory, drop=name)
    before = _snapshot(directory)
    with pytest.raises(CheckpointFormatError, match=r"missing tensor model\.decoder\.layers\.1\.fc2\.weight"):
        alert_jax.load_model(directory)
    assert _snapshot(directory) == before


def test_wrong_shape_is_named(tmp_path):
    directory = save_tiny(tmp_path, True)[1]
    _rewrite_without(directory, reshape="model.decoder.layers.2.self_attn.k_proj.bias")
    with pytest.raises(CheckpointFormatError, match=r"k_proj\.bias has shape \(31,\), expected \(32,\)"):
        alert_jax.load_model(directory)


def test_config_that_is_not_opt_is_rejected_by_key(tmp_path):
    directory = save_tiny(tmp_path, True)[1]
    config = json.loads((directory / "config.json").read_text())
    config["model_type"] = "gpt2"
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointFormatError, match="model_type is 'gpt2'"):
        alert_jax.load_model(directory)


def test_export_refuses_to_overwrite_and_leaves_no_partial_directory(tmp_path):
    directory = save_tiny(tmp_path, True)[1]
    model = alert_jax.load_model(directory)
    target = tmp_path / "existing"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    with pytest.raises(OutputExistsError, match="existing: exists and is not empty"):
        alert_jax.save_hf(model, target)
    assert (target / "keep.txt").read_text() == "precious"
    broken = alert_jax.Model(model.config, {"decoder": {}})
    with pytest.raises(KeyError):
        alert_jax.save_hf(broken, tmp_path / "never")
    assert not (tmp_path / "never").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".never")]


def test_truncated_safetensors_file_is_named(tmp_path):
    directory = save_tiny(tmp_path, True)[1]
    path = directory / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointFormatError, match="truncated"):
        alert_jax.load_model(directory)


def test_conversion_streams_tensors_peak_rss_under_1_5x_checkpoint():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_convert_memory.py"
    out = subprocess.run([sys.executable, str(script), "--small", "--json"], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["checkpoint_bytes"] > 90 * 2**20
    assert result["ratio"] < 1.5, result
