"""Stream tensors in and out of checkpoint files one at a time, without torch and without mmap.

Why not the `safetensors`/`torch` loaders: mmap'd pages count towards resident memory and torch is a
test-time reference only. Reading each tensor with a plain seek+read keeps host RAM at about one copy
of the model while converting, whatever its size.

* safetensors: an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
  then the raw little-endian bytes.
* torch zip checkpoints (`pytorch_model.bin`, metaseq `.pt`): `*/data.pkl` is a pickle whose tensors point at
  storages stored as `*/data/<key>`; a restricted unpickler turns them into lazy `TensorRef`s and refuses
  to execute anything (unknown classes become inert `OpaqueObject`s).
"""
from __future__ import annotations

from alert_jax.errors import AlertJaxError
import builtins
import collections
import dataclasses
import io
import json
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import ml_dtypes
import numpy as np

SAFETENSORS_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_DTYPE_NAMES = {v: k for k, v in SAFETENSORS_DTYPES.items()}


class CheckpointFormatError(AlertJaxError):
    """A checkpoint file that cannot be read; the message names the file (and tensor)."""


@dataclasses.dataclass(frozen=True)
class TensorRef:
    """A tensor not read yet: `load()` reads just its bytes."""

    shape: tuple[int, ...]
    dtype: np.dtype
    loader: Callable[[], np.ndarray]

    def load(self) -> np.ndarray:
        return self.loader()


# ---------------------------------------------------------------- safetensors

def _safetensors_header(path: Path) -> tuple[dict, int]:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise CheckpointFormatError(f"{path}: too short to be a safetensors file")
        (size,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(f.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointFormatError(f"{path}: corrupt safetensors header ({exc})") from None
    header.pop("__metadata__", None)
    return header, 8 + size


def read_safetensors(path: str | Path) -> dict[str, TensorRef]:
    path = Path(path)
    header, base = _safetensors_header(path)
    refs = {}
    for name, info in header.items():
        if info.get("dtype") not in SAFETENSORS_DTYPES:
            raise CheckpointFormatError(f"{path}: tensor {name} has unsupported dtype {info.get('dtype')}")
        dtype = SAFETENSORS_DTYPES[info["dtype"]]
        shape = tuple(info["shape"])
        begin, end = info["data_offsets"]

        def load(begin=begin, end=end, dtype=dtype, shape=shape, name=name) -> np.ndarray:
            with open(path, "rb") as f:
                f.seek(base + begin)
                data = f.read(end - begin)
            if len(data) != end - begin:
                raise CheckpointFormatError(f"{path}: tensor {name} is truncated")
            return np.frombuffer(data, dtype=dtype).reshape(shape)

        refs[name] = TensorRef(shape, dtype, load)
    return refs


def write_safetensors(path: str | Path, tensors: Iterator[tuple[str, np.ndarray]] | Mapping[str, Any],
                      shapes: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> None:
    """Write tensors one by one; `shapes` (name → (shape, dtype)) fixes the header before any data is produced.

    `tensors` may be a generator so only one tensor is on the host at a time.
    """
    header, offset = {}, 0
    for name, (shape, dtype) in shapes.items():
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        header[name] = {"dtype": _DTYPE_NAMES[np.dtype(dtype)], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # keep data 8-byte aligned
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, array in items:
            shape, dtype = shapes[name]
            array = np.ascontiguousarray(np.asarray(array, dtype=dtype))
            if array.shape != tuple(shape):
                raise CheckpointFormatError(f"{path}: tensor {name} has shape {array.shape}, header says {shape}")
            f.write(array.tobytes())


# ---------------------------------------------------------------- torch zip pickles

_TORCH_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_TORCH_DTYPE_NAMES = {
    "float32": np.float32, "float": np.float32, "float64": np.float64, "double": np.float64, "float16": np.float16,
    "half": np.float16, "bfloat16": ml_dtypes.bfloat16, "int64": np.int64, "long": np.int64, "int32": np.int32,
    "int": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_,
}


class OpaqueObject:
    """Stands in for any non-tensor class in a checkpoint pickle (configs, namespaces): holds its state inertly."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.state = args, dict(kwargs)

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {"state": state}

    def __setitem__(self, key: Any, value: Any) -> None:
        self.state[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        return self.state.get(key, default)


@dataclasses.dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


def _rebuild_tensor(storage, offset, size, stride, *_args) -> TensorRef:
    reader, key, dtype = storage
    size, stride = tuple(size), tuple(stride)

    def load() -> np.ndarray:
        flat = np.frombuffer(reader(key), dtype=dtype)
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size, strides=[s * itemsize for s in stride])
        return np.array(view)  # own the memory; the storage bytes are dropped

    return TensorRef(size, np.dtype(dtype), load)


def _rebuild_parameter(data, *_args):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, reader: Callable[[str], bytes]):
        super().__init__(file)
        self._reader = reader

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _TORCH_STORAGE_DTYPES:
            return _StorageType(np.dtype(_TORCH_STORAGE_DTYPES[name]))
        if module == "torch" and name in _TORCH_DTYPE_NAMES:
            return np.dtype(_TORCH_DTYPE_NAMES[name])
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "builtins" and name in ("dict", "list", "tuple", "set", "frozenset"):
            return getattr(builtins, name)
        return OpaqueObject

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, _numel = pid
        dtype = storage_type.dtype if isinstance(storage_type, _StorageType) else np.dtype(storage_type)
        return (self._reader, str(key), dtype)


def read_torch_zip(path: str | Path) -> Any:
    """Unpickle a torch zip checkpoint into plain containers with lazy `TensorRef` leaves."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise CheckpointFormatError(f"{path}: not a torch zip checkpoint (legacy non-zip pickles are not supported)")
    archive = zipfile.ZipFile(path)
    pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
    if not pickles:
        raise CheckpointFormatError(f"{path}: no data.pkl inside")
    prefix = pickles[0][: -len("data.pkl")]

    def reader(key: str) -> bytes:
        with zipfile.ZipFile(path) as z:  # reopen per tensor: no long-lived handles, no mmap
            return z.read(f"{prefix}data/{key}")

    try:
        return _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), reader).load()
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointFormatError(f"{path}: cannot unpickle ({exc})") from None
    finally:
        archive.close()
