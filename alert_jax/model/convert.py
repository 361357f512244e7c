"""HF OPT checkpoints ⇄ alert_jax params, and metaseq state dicts → params, one tensor at a time.

One table (`hf_layout`) says where every HF tensor lives in our param tree and whether it is a
transposed Linear weight; import and export both walk it, so the two directions cannot drift apart.
Everything is validated from file headers (names, shapes) before any tensor is read, so a broken
checkpoint fails fast with the offending tensor named, and export writes beside its output and swaps it in
complete (`alert_jax.atomic`).
"""
from __future__ import annotations

import collections
import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np

from alert_jax.atomic import refuse_existing, staged_dir
from alert_jax.model.presets import OPTConfig
from alert_jax.model.tensor_files import (
    CheckpointFormatError,
    OpaqueObject,
    TensorRef,
    read_safetensors,
    read_torch_zip,
    write_safetensors,
)
from alert_jax.untrusted_json import read_json

ParamPath = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class TensorSlot:
    """One HF tensor: its name, where it goes in our tree, and whether it is a torch Linear weight ([out, in])."""

    hf_name: str
    path: ParamPath
    shape: tuple[int, ...]  # our (flax) shape
    transpose: bool


def hf_layout(cfg: OPTConfig) -> list[TensorSlot]:
    h, f, e = cfg.hidden_size, cfg.ffn_dim, cfg.embed_dim
    slots = [
        TensorSlot("model.decoder.embed_tokens.weight", ("decoder", "embed_tokens", "embedding"), (cfg.vocab_size, e), False),
        TensorSlot("model.decoder.embed_positions.weight", ("decoder", "embed_positions", "embedding"),
                   (cfg.max_position_embeddings + 2, h), False),
    ]
    if cfg.has_projections:
        slots += [
            TensorSlot("model.decoder.project_in.weight", ("decoder", "project_in", "kernel"), (e, h), True),
            TensorSlot("model.decoder.project_out.weight", ("decoder", "project_out", "kernel"), (h, e), True),
        ]

    def linear(hf: str, path: ParamPath, d_in: int, d_out: int) -> list[TensorSlot]:
        out = [TensorSlot(f"{hf}.weight", path + ("kernel",), (d_in, d_out), True)]
        if cfg.enable_bias:
            out.append(TensorSlot(f"{hf}.bias", path + ("bias",), (d_out,), False))
        return out

    def norm(hf: str, path: ParamPath) -> list[TensorSlot]:
        if not cfg.layer_norm_elementwise_affine:
            return []
        return [TensorSlot(f"{hf}.weight", path + ("scale",), (h,), False),
                TensorSlot(f"{hf}.bias", path + ("bias",), (h,), False)]

    for i in range(cfg.num_hidden_layers):
        hf, ours = f"model.decoder.layers.{i}", ("decoder", f"layers_{i}")
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            slots += linear(f"{hf}.self_attn.{proj}", ours + ("self_attn", proj), h, h)
        slots += norm(f"{hf}.self_attn_layer_norm", ours + ("self_attn_layer_norm",))
        slots += linear(f"{hf}.fc1", ours + ("fc1",), h, f)
        slots += linear(f"{hf}.fc2", ours + ("fc2",), f, h)
        slots += norm(f"{hf}.final_layer_norm", ours + ("final_layer_norm",))
    if cfg.do_layer_norm_before:
        slots += norm("model.decoder.final_layer_norm", ("decoder", "final_layer_norm"))
    return slots


# ---------------------------------------------------------------- config.json

_HF_CONFIG_FIELDS = [f.name for f in dataclasses.fields(OPTConfig)]


def config_from_hf(path: Path) -> OPTConfig:
    raw = read_json(path, CheckpointFormatError, context="cannot read config", expect=dict)
    if raw.get("model_type") != "opt":
        raise CheckpointFormatError(f"{path}: key model_type is {raw.get('model_type')!r}, expected 'opt'")
    values = {k: raw[k] for k in _HF_CONFIG_FIELDS if k in raw and raw[k] is not None}
    if values.get("word_embed_proj_dim") == raw.get("hidden_size"):
        values["word_embed_proj_dim"] = 0
    if raw.get("_remove_final_layer_norm"):
        raise CheckpointFormatError(f"{path}: key _remove_final_layer_norm=true is not supported")
    try:
        return OPTConfig(**values)
    except (TypeError, ValueError) as exc:
        raise CheckpointFormatError(f"{path}: {exc}") from None


def config_to_hf(cfg: OPTConfig, torch_dtype: str = "float32") -> dict:
    out = dataclasses.asdict(cfg)
    out["word_embed_proj_dim"] = cfg.embed_dim
    out.update(
        model_type="opt", architectures=["OPTForCausalLM"], torch_dtype=torch_dtype, tie_word_embeddings=True,
        dropout=0.1, attention_dropout=0.0, layerdrop=0.0, init_std=0.02, use_cache=True,
        _remove_final_layer_norm=False,
    )
    return out


# ---------------------------------------------------------------- reading tensors

def _hf_tensor_refs(directory: Path) -> dict[str, TensorRef]:
    """All tensors of an HF directory (single or sharded safetensors, or pytorch_model.bin), lazily."""
    for index_name, reader in (("model.safetensors.index.json", read_safetensors),
                               ("pytorch_model.bin.index.json", read_torch_zip)):
        index = directory / index_name
        if index.exists():
            refs: dict[str, TensorRef] = {}
            for shard in _index_shards(index):
                found = reader(shard)
                twice = sorted(set(found) & set(refs))
                if twice:
                    raise CheckpointFormatError(f"{shard}: tensor {twice[0]} is also stored in another shard")
                refs.update(found)
            return refs
    if (directory / "model.safetensors").exists():
        return read_safetensors(directory / "model.safetensors")
    if (directory / "pytorch_model.bin").exists():
        return read_torch_zip(directory / "pytorch_model.bin")
    raise CheckpointFormatError(f"{directory}: no model.safetensors, pytorch_model.bin or shard index found")


def _index_shards(index: Path) -> list[Path]:
    """The shard files a `*.index.json` names, each checked to resolve inside the checkpoint directory.

    An index is untrusted: `../`, an absolute path or a symlink pointing out of the directory would read
    (and report on) arbitrary files, so it is refused with the offending name.
    """
    weight_map = read_json(index, CheckpointFormatError, context="not a shard index", expect=dict).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointFormatError(f"{index}: key weight_map must map tensor names to file names")
    root = index.parent.resolve()
    shards = []
    for name in sorted(set(weight_map.values())):
        shard = (index.parent / name).resolve()
        if Path(name).is_absolute() or shard.parent != root:
            raise CheckpointFormatError(f"{index}: shard {name!r} is not a file inside {index.parent}")
        if not shard.is_file():
            raise CheckpointFormatError(f"{index}: shard {name!r} does not exist")
        shards.append(shard)
    return shards


def _normalise_hf_name(name: str) -> str:
    """facebook/opt-* files store `decoder.…` (OPTModel) while fine-tuned ones store `model.decoder.…`."""
    return name if name.startswith(("model.", "lm_head.")) else f"model.{name}"


def params_from_refs(cfg: OPTConfig, refs: Mapping[str, TensorRef], source: str,
                     place: Optional[Callable[[ParamPath, np.ndarray], Any]] = None) -> dict:
    """Check every tensor's presence and shape, then read them one at a time into a nested param dict.

    `place(path, array)` puts a float32 host array where it should live (e.g. a sharded device array); the
    host copy is dropped right after, so host memory holds about one tensor beyond the model.
    """
    layout = hf_layout(cfg)
    for slot in layout:
        if slot.hf_name not in refs:
            raise CheckpointFormatError(f"{source}: missing tensor {slot.hf_name}")
        expected = slot.shape[::-1] if slot.transpose else slot.shape
        if tuple(refs[slot.hf_name].shape) != expected:
            raise CheckpointFormatError(
                f"{source}: tensor {slot.hf_name} has shape {tuple(refs[slot.hf_name].shape)}, expected {expected}")
    place = place or (lambda _path, array: array)
    params: dict = {}
    for slot in layout:
        array = refs[slot.hf_name].load().astype(np.float32, copy=False)
        if slot.transpose:
            array = np.ascontiguousarray(array.T)
        node = params
        for key in slot.path[:-1]:
            node = node.setdefault(key, {})
        node[slot.path[-1]] = place(slot.path, array)
        del array
    return params


def hf_refs(directory: str | Path) -> tuple[OPTConfig, dict[str, TensorRef]]:
    """An HF directory's architecture and its tensors, unread: callers can plan placement before loading."""
    directory = Path(directory)
    if not (directory / "config.json").exists():
        raise CheckpointFormatError(f"{directory}: no config.json (not an HF model directory)")
    cfg = config_from_hf(directory / "config.json")
    return cfg, {_normalise_hf_name(k): v for k, v in _hf_tensor_refs(directory).items()}


def load_hf(directory: str | Path, place=None) -> tuple[OPTConfig, dict]:
    cfg, refs = hf_refs(directory)
    return cfg, params_from_refs(cfg, refs, str(directory), place)


# ---------------------------------------------------------------- metaseq

_METASEQ_RENAMES = [
    (re.compile(r"^decoder\.project_in_dim\."), "decoder.project_in."),
    (re.compile(r"^decoder\.project_out_dim\."), "decoder.project_out."),
    (re.compile(r"^decoder\.layer_norm\."), "decoder.final_layer_norm."),
]


def metaseq_to_hf_refs(state: Mapping[str, Any]) -> dict[str, TensorRef]:
    """Rename metaseq keys to HF's and split fused `qkv_proj` (stored in K, V, Q order) lazily."""
    out: dict[str, TensorRef] = {}
    for name, ref in state.items():
        if not isinstance(ref, TensorRef):
            continue  # e.g. decoder.version
        if not isinstance(name, str):
            raise CheckpointFormatError(f"state dict key {name!r:.50} is not a tensor name")
        name = name.removeprefix("model.")
        for pattern, replacement in _METASEQ_RENAMES:
            name = pattern.sub(replacement, name)
        if name == "decoder.output_projection.weight":
            continue  # tied to embed_tokens
        if ".qkv_proj." in name:
            for index, proj in enumerate(("k_proj", "v_proj", "q_proj")):
                part = ref.shape[0] // 3
                shape = (part,) + tuple(ref.shape[1:])
                loader = (lambda ref=ref, index=index, part=part: ref.load()[index * part:(index + 1) * part])
                out[f"model.{name.replace('qkv_proj', proj)}"] = TensorRef(shape, ref.dtype, loader)
            continue
        out[f"model.{name}"] = ref
    return out


def _find_key(obj: Any, key: str) -> Any:
    """Breadth-first search for `key` in the nested config objects metaseq pickles (dicts, namespaces).

    Iterative, visiting each container once, so a self-referencing or deeply nested cfg terminates.
    """
    queue, seen = collections.deque([obj]), set()
    while queue:
        node = queue.popleft()
        if isinstance(node, OpaqueObject):
            node = node.state
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, Mapping):
            if key in node:
                return node[key]
            queue.extend(node.values())
        elif isinstance(node, (list, tuple)):
            queue.extend(node)
    return None


def load_metaseq(path: str | Path, num_attention_heads: Optional[int] = None, place=None) -> tuple[OPTConfig, dict]:
    """Import a consolidated metaseq checkpoint (`{"model": state_dict, "cfg": …}` or a bare state dict)."""
    cfg, refs = metaseq_refs(path, num_attention_heads)
    return cfg, params_from_refs(cfg, refs, str(path), place)


def metaseq_refs(path: str | Path, num_attention_heads: Optional[int] = None) -> tuple[OPTConfig, dict[str, TensorRef]]:
    """A metaseq checkpoint's inferred architecture and its tensors under HF names, unread."""
    path = Path(path)
    loaded = read_torch_zip(path)
    state = loaded.get("model", loaded) if isinstance(loaded, Mapping) else None
    if not isinstance(state, Mapping):
        raise CheckpointFormatError(f"{path}: no model state dict inside")
    refs = metaseq_to_hf_refs(state)
    heads = num_attention_heads or _find_key(loaded.get("cfg", loaded.get("args")), "decoder_attention_heads")
    if heads is None:
        raise CheckpointFormatError(f"{path}: key decoder_attention_heads not found; pass num_attention_heads")
    if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1:
        raise CheckpointFormatError(f"{path}: key decoder_attention_heads is {heads!r:.50}, not a positive int")
    return _infer_config(refs, heads, state, str(path)), refs


def _infer_config(refs: Mapping[str, TensorRef], heads: int, state: Mapping[str, Any], source: str) -> OPTConfig:
    try:
        vocab, embed = refs["model.decoder.embed_tokens.weight"].shape
        positions, hidden = refs["model.decoder.embed_positions.weight"].shape
        ffn = refs["model.decoder.layers.0.fc1.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointFormatError(f"{source}: missing tensor {exc.args[0]}") from None
    except (ValueError, IndexError):
        raise CheckpointFormatError(f"{source}: embedding or fc1 tensors have the wrong rank") from None
    layers = len({k.split(".")[3] for k in refs if k.startswith("model.decoder.layers.")})
    pre_ln = "model.decoder.final_layer_norm.weight" in refs
    try:
        return OPTConfig(
            vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, ffn_dim=ffn,
            max_position_embeddings=positions - 2, word_embed_proj_dim=0 if embed == hidden else embed,
            do_layer_norm_before=pre_ln, enable_bias="model.decoder.layers.0.fc1.bias" in refs,
        )
    except (TypeError, ValueError) as exc:
        raise CheckpointFormatError(f"{source}: inferred architecture is invalid ({exc})") from None


# ---------------------------------------------------------------- export

def export_hf(cfg: OPTConfig, get_param: Callable[[ParamPath], np.ndarray], out_dir: str | Path,
              max_shard_bytes: int = 5 * 2**30, overwrite: bool = False) -> Path:
    """Write config.json + (sharded) model.safetensors, streaming one tensor at a time, atomically.

    `get_param(path)` returns one param as a host array (fetched from devices only when written).
    """
    out_dir = Path(out_dir)
    refuse_existing(out_dir, overwrite)
    layout = hf_layout(cfg)
    shards: list[list[TensorSlot]] = [[]]
    size = 0
    for slot in layout:
        nbytes = int(np.prod(slot.shape)) * 4
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(slot)
        size += nbytes
    with staged_dir(out_dir) as tmp:
        (tmp / "config.json").write_text(json.dumps(config_to_hf(cfg), indent=2))
        names = ["model.safetensors"] if len(shards) == 1 else [
            f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
        for file_name, shard in zip(names, shards):
            header = {s.hf_name: (s.shape[::-1] if s.transpose else s.shape, np.dtype(np.float32)) for s in shard}
            write_safetensors(tmp / file_name, _export_tensors(shard, get_param), header)
        if len(shards) > 1:
            weight_map = {s.hf_name: name for name, shard in zip(names, shards) for s in shard}
            total = sum(int(np.prod(s.shape)) * 4 for s in layout)
            (tmp / "model.safetensors.index.json").write_text(
                json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return out_dir


def _export_tensors(shard: list[TensorSlot], get_param) -> Iterator[tuple[str, np.ndarray]]:
    for slot in shard:
        array = np.asarray(get_param(slot.path), dtype=np.float32)
        yield slot.hf_name, (array.T if slot.transpose else array)
