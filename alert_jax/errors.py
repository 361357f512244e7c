"""The one base class of every error that means "bad input", not "bug".

The command line reports an `AlertJaxError` as one line naming the file, line or key and exits 2; any
other exception is a bug in alert_jax and keeps its traceback (exit 1). Each area keeps its own subclass
(`ConfigError`, `DataFormatError`, `CheckpointFormatError`, …) so callers can catch narrowly. The base
derives from `ValueError` because every one of them is a value the user supplied that cannot be used.
Pure Python: `alert_jax.metrics` imports it and must never pull in jax.
"""
from __future__ import annotations


class AlertJaxError(ValueError):
    """Bad input (a file, a line, a config key, a checkpoint) that the user can fix; the message names it."""
