"""Stream tensors in and out of checkpoint files one at a time, without torch and without mmap.

Why not the `safetensors`/`torch` loaders: mmap'd pages count towards resident memory and torch is a
test-time reference only. Reading each tensor with a plain seek+read keeps host RAM at about one copy
of the model while converting, whatever its size.

* safetensors: an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
  then the raw little-endian bytes.
* torch zip checkpoints (`pytorch_model.bin`, metaseq `.pt`): `*/data.pkl` is a pickle whose tensors point at
  storages stored as `*/data/<key>`; a restricted unpickler turns them into lazy `TensorRef`s. It resolves only
  an allow-list of globals (any other refuses the whole file, so nothing is ever executed) and checks each
  tensor's size, stride and offset against its storage's true length before a view can exist.
* Both formats are untrusted input: every header field is checked against the file's length before anything
  is allocated, and every failure is a `CheckpointFormatError` naming the file.
"""
from __future__ import annotations

import builtins
import collections
import dataclasses
import io
import json
import math
import os
import pickle
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import ml_dtypes
import numpy as np

from alert_jax.errors import AlertJaxError
from alert_jax.untrusted_json import os_errors_as, parse_json

SAFETENSORS_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_DTYPE_NAMES = {v: k for k, v in SAFETENSORS_DTYPES.items()}


MAX_PICKLE_BYTES = 256 * 2**20  # a torch checkpoint's data.pkl (tensor bytes live beside it): far above any real one


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
    """The header (`__metadata__` dropped) and where the data starts, checked against the file's length first:
    a lying header length must not make us allocate or read gigabytes."""
    with os_errors_as(CheckpointFormatError, path), open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        raw = f.read(8)
        if len(raw) != 8:
            raise CheckpointFormatError(f"{path}: too short to be a safetensors file")
        (size,) = struct.unpack("<Q", raw)
        if size > file_size - 8:
            raise CheckpointFormatError(f"{path}: header length {size} exceeds the file's {file_size - 8} bytes")
        header = parse_json(f.read(size), path, CheckpointFormatError, context="corrupt safetensors header")
    if not isinstance(header, dict):
        raise CheckpointFormatError(f"{path}: safetensors header is a {type(header).__name__}, not a mapping")
    header.pop("__metadata__", None)
    return header, 8 + size


def _checked_entry(path: Path, name: str, info: Any, data_size: int) -> tuple[np.dtype, tuple[int, ...], int, int]:
    """(dtype, shape, begin, end) of one header entry, after checking it describes bytes inside the file."""
    if not isinstance(info, dict):
        raise CheckpointFormatError(f"{path}: tensor {name}: header entry is a {type(info).__name__}, not a mapping")
    dtype_name = info.get("dtype")
    if not isinstance(dtype_name, str) or dtype_name not in SAFETENSORS_DTYPES:
        raise CheckpointFormatError(f"{path}: tensor {name} has unsupported dtype {dtype_name!r}")
    dtype = SAFETENSORS_DTYPES[dtype_name]
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if not _is_int_list(shape) or any(d < 0 for d in shape):
        raise CheckpointFormatError(f"{path}: tensor {name}: shape {shape!r} is not a list of non-negative ints")
    if not _is_int_list(offsets) or len(offsets) != 2:
        raise CheckpointFormatError(f"{path}: tensor {name}: data_offsets {offsets!r} is not [begin, end]")
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        raise CheckpointFormatError(
            f"{path}: tensor {name}: data_offsets [{begin}, {end}] outside the {data_size} data bytes")
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if end - begin != nbytes:
        raise CheckpointFormatError(
            f"{path}: tensor {name}: data_offsets span {end - begin} bytes, shape {shape} × {dtype_name} needs {nbytes}")
    return dtype, tuple(shape), begin, end


def _is_int_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def read_safetensors(path: str | Path) -> dict[str, TensorRef]:
    """Lazy refs to every tensor, after validating the whole header: dtypes, shapes, and offsets that lie inside
    the file, agree with shape × dtype and do not overlap."""
    path = Path(path)
    header, base = _safetensors_header(path)
    data_size = path.stat().st_size - base
    entries = {name: _checked_entry(path, name, info, data_size) for name, info in header.items()}
    spans = sorted((begin, end, name) for name, (_, _, begin, end) in entries.items() if end > begin)
    for (_, end_a, name_a), (begin_b, _, name_b) in zip(spans, spans[1:]):
        if begin_b < end_a:
            raise CheckpointFormatError(f"{path}: tensors {name_a} and {name_b} overlap in the data section")
    refs = {}
    for name, (dtype, shape, begin, end) in entries.items():

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


@dataclasses.dataclass(frozen=True)
class _Storage:
    """A storage of the archive, not read: its key, element dtype and true element count (from the zip entry)."""

    reader: Callable[[str], bytes]
    key: str
    dtype: np.dtype
    numel: int


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise CheckpointFormatError(f"tensor {what} {value!r} is not a tuple of ints")
    return tuple(value)


def _check_view(storage: _Storage, offset: Any, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
    """Refuse a tensor whose view would reach outside its storage, before any view exists.

    Python ints throughout, so huge sizes, strides or offsets cannot overflow into a "valid" small number; the
    element count is capped by the storage's so a stride-0 view cannot make us allocate an enormous copy.
    """
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise CheckpointFormatError(f"storage {storage.key}: tensor offset {offset!r} is not a non-negative int")
    if len(size) != len(stride):
        raise CheckpointFormatError(f"storage {storage.key}: tensor size {size} and stride {stride} differ in rank")
    if any(d < 0 for d in size) or any(s < 0 for s in stride):
        raise CheckpointFormatError(f"storage {storage.key}: negative size {size} or stride {stride}")
    numel = math.prod(size)
    if numel == 0:
        return
    last = offset + sum((d - 1) * s for d, s in zip(size, stride))
    if last >= storage.numel or numel > storage.numel:
        raise CheckpointFormatError(
            f"storage {storage.key}: tensor of size {size}, stride {stride}, offset {offset} reaches beyond the "
            f"storage's {storage.numel} elements")


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_args: Any) -> TensorRef:
    if not isinstance(storage, _Storage):
        raise CheckpointFormatError(f"tensor storage is a {type(storage).__name__}, not an archive storage")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    _check_view(storage, offset, size, stride)

    def load() -> np.ndarray:
        data = storage.reader(storage.key)
        flat = np.frombuffer(data[: len(data) - len(data) % storage.dtype.itemsize], dtype=storage.dtype)
        if len(flat) < storage.numel:
            raise CheckpointFormatError(f"storage {storage.key} is truncated")
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size, strides=[s * itemsize for s in stride])
        return np.array(view)  # own the memory; the storage bytes are dropped

    return TensorRef(size, storage.dtype, load)


def _rebuild_parameter(data: Any, *_args: Any) -> Any:
    if not isinstance(data, TensorRef):
        raise CheckpointFormatError(f"parameter data is a {type(data).__name__}, not a tensor")
    return data


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """Every global a checkpoint pickle may name, and what it becomes; anything else refuses the whole file."""
    allowed: dict[tuple[str, str], Any] = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("argparse", "Namespace"): OpaqueObject,  # metaseq's `args`: kept inert
    }
    allowed.update({("torch", name): _StorageType(np.dtype(dtype)) for name, dtype in _TORCH_STORAGE_DTYPES.items()})
    allowed.update({("torch", name): np.dtype(dtype) for name, dtype in _TORCH_DTYPE_NAMES.items()})
    allowed.update({("builtins", name): getattr(builtins, name) for name in ("dict", "list", "tuple", "set",
                                                                              "frozenset")})
    return allowed


_ALLOWED_GLOBALS = _allowed_globals()


class _RestrictedUnpickler(pickle._Unpickler):  # noqa: SLF001 — the pure-Python one, see below
    """Resolves only `_ALLOWED_GLOBALS`; storages become `_Storage`s sized from the archive, never read here.

    Built on the pure-Python unpickler: the C one grows its memo table to whatever index a `LONG_BINPUT` names,
    so four forged bytes can demand gigabytes; the Python one keeps the memo in a dict. A checkpoint's pickle is
    small (names and shapes), so the speed does not matter.
    """

    def __init__(self, file, reader: Callable[[str], bytes], storage_bytes: Callable[[str], int]):
        super().__init__(file)
        self._reader, self._storage_bytes = reader, storage_bytes

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CheckpointFormatError(f"refusing global {module}.{name} (not a tensor, storage or plain "
                                        "container)") from None

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointFormatError(f"unsupported persistent id {pid!r:.80}")
        _, storage_type, key, _location, _numel = pid
        if isinstance(storage_type, _StorageType):
            dtype = storage_type.dtype
        elif isinstance(storage_type, np.dtype):
            dtype = storage_type
        else:
            raise CheckpointFormatError(f"storage {key!r:.80}: type {type(storage_type).__name__} is not a storage")
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            raise CheckpointFormatError(f"storage key {key!r:.80} is not a name")
        key = str(key)
        return _Storage(self._reader, key, dtype, self._storage_bytes(key) // dtype.itemsize)


def read_torch_zip(path: str | Path) -> Any:
    """Unpickle a torch zip checkpoint into plain containers with lazy `TensorRef` leaves.

    The pickle is untrusted input: any failure while decoding it (a refused global, a view outside its storage,
    malformed opcodes) refuses the whole file with one message naming it.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise CheckpointFormatError(f"{path}: not a torch zip checkpoint (legacy non-zip pickles are not supported)")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointFormatError(f"{path}: corrupt zip archive ({exc})") from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if not pickles:
            raise CheckpointFormatError(f"{path}: no data.pkl inside")
        prefix = pickles[0][: -len("data.pkl")]

        def storage_bytes(key: str) -> int:
            try:
                return archive.getinfo(f"{prefix}data/{key}").file_size
            except KeyError:
                raise CheckpointFormatError(f"storage {key} is missing from the archive") from None

        def reader(key: str) -> bytes:
            try:
                with zipfile.ZipFile(path) as z:  # reopen per tensor: no long-lived handles, no mmap
                    return z.read(f"{prefix}data/{key}")
            except (zipfile.BadZipFile, zlib.error, OSError, KeyError, EOFError) as exc:
                raise CheckpointFormatError(f"{path}: storage {key} is unreadable ({type(exc).__name__}: "
                                            f"{exc!s:.100})") from None

        if archive.getinfo(pickles[0]).file_size > MAX_PICKLE_BYTES:
            raise CheckpointFormatError(f"{path}: {pickles[0]} declares {archive.getinfo(pickles[0]).file_size} "
                                        f"bytes; a checkpoint's pickle holds names and shapes only (limit "
                                        f"{MAX_PICKLE_BYTES})")
        try:
            return _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), reader, storage_bytes).load()
        except CheckpointFormatError as exc:
            raise CheckpointFormatError(f"{path}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 — untrusted bytes: every decoding failure is bad input
            raise CheckpointFormatError(f"{path}: cannot unpickle ({type(exc).__name__}: {exc!s:.200})") from None
