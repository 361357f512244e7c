"""JSON from files alert_jax did not write itself (or that a crash, a disk or a person may have broken), read so
that every way it can fail is one error of the caller's class naming the file.

`json.loads` fails in more ways than `JSONDecodeError`: nesting deeper than Python's recursion limit
(`"[" * 100000`) raises `RecursionError`, an integer literal longer than `sys.get_int_max_str_digits()` a plain
`ValueError`, undecodable bytes `UnicodeDecodeError` (and `json.loads(bytes)` would silently accept UTF-16/32),
and reading the file any `OSError`. Each reader used to list these itself and each list missed some; here they
are listed once. Callers keep their own error class (the `error` argument: the class, or any function from the
message to the exception) and their own validation of what the JSON holds.

Messages read `PATH: [CONTEXT: ]PROBLEM` for a whole document, e.g. `config.json: cannot read config: invalid
JSON (Expecting ',' delimiter at line 3 column 7)`. Given `line` (where the text starts in its file: a JSON-lines
record, a data file whose errors all read `path:line:`), they read `PATH:LINE: [CONTEXT: ]PROBLEM`, the line
moved on by the JSON or UTF-8 error's own line where it has one.
Pure Python: analysis and data code use it without jax.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

ErrorFactory = Callable[[str], Exception]
"""The caller's error: an `AlertJaxError` subclass, or a function building one from the message."""

_JSON_NAMES = {dict: "object", list: "array"}


def read_json(path: Path, error: ErrorFactory, *, context: str = "", expect: Optional[type] = None) -> Any:
    """The JSON document in `path` (strict UTF-8), optionally checked to be a `dict` or `list` (`expect`)."""
    with os_errors_as(error, path, context):
        data = Path(path).read_bytes()
    return parse_json(data, path, error, context=context, expect=expect)


def parse_json(data: Union[bytes, str], source: Union[Path, str], error: ErrorFactory, *, context: str = "",
               expect: Optional[type] = None, line: Optional[int] = None) -> Any:
    """`data` (bytes are decoded as strict UTF-8) parsed as JSON; failures name `source` and the line."""
    text = decode_utf8(data, source, error, context=context, line=line) if isinstance(data, bytes) else data
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        if line is None:
            raise _error(error, source, None, context,
                         f"invalid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
        raise _error(error, source, line + err.lineno - 1, context,
                     f"invalid JSON ({err.msg} at column {err.colno})") from None
    except RecursionError:
        raise _error(error, source, line, context, "invalid JSON (nested too deeply)") from None
    except ValueError as err:  # an integer literal beyond sys.get_int_max_str_digits()
        raise _error(error, source, line, context, f"invalid JSON ({str(err).split(';')[0]})") from None
    if expect is not None and not isinstance(value, expect):
        raise _error(error, source, line, context,
                     f"expected a JSON {_JSON_NAMES[expect]}, got {type(value).__name__}")
    return value


def decode_utf8(data: bytes, source: Union[Path, str], error: ErrorFactory, *, context: str = "",
                line: Optional[int] = None) -> str:
    """`data` decoded as strict UTF-8; a bad byte is reported on its own line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        lines_before = data.count(b"\n", 0, err.start)
        if line is None:
            raise _error(error, source, None, context, f"{not_utf8(err)} on line {1 + lines_before}") from None
        raise _error(error, source, line + lines_before, context, not_utf8(err)) from None


def not_utf8(err: UnicodeDecodeError) -> str:
    """The problem phrase for undecodable input, for readers that decode through a text layer themselves."""
    return f"not UTF-8 text (byte 0x{err.object[err.start]:02x})"


@contextlib.contextmanager
def os_errors_as(error: ErrorFactory, path: Union[Path, str], context: str = "") -> Iterator[None]:
    """Turn an `OSError` in the block (missing, unreadable, a directory) into `error` naming the file it names
    (else `path`); for readers that read a file in parts (a safetensors header, a directory of data files)."""
    try:
        yield
    except OSError as err:
        source = path if err.filename is None else err.filename
        raise _error(error, source, None, context, err.strerror or type(err).__name__) from None


def _error(error: ErrorFactory, source: Union[Path, str], line: Optional[int], context: str,
           problem: str) -> Exception:
    where = f"{source}:{line}" if line is not None else f"{source}"
    return error(f"{where}: {context}: {problem}" if context else f"{where}: {problem}")
