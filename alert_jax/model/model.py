"""`Model`: an OPT architecture, its params and how to run it — the one type training, generation and
evaluation pass around — plus seeded init and the plain forward pass (`logits`)."""
from __future__ import annotations

import dataclasses
import functools
import weakref
from typing import Any, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from alert_jax.config import ModelConfig
from alert_jax.errors import AlertJaxError
from alert_jax.model import layout
from alert_jax.model.opt import OPTForCausalLM, RuntimeOptions, boxed_params, head_table
from alert_jax.model.presets import OPTConfig
from alert_jax.model.screened_head import HeadScreen, head_screen

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass
class Model:
    """An OPT architecture, its (unboxed) params and how to run it."""

    config: OPTConfig
    params: Any
    runtime: RuntimeOptions = RuntimeOptions()
    _screen: Optional["_Derived"] = dataclasses.field(default=None, init=False, repr=False, compare=False)
    _decoding: Optional["_Derived"] = dataclasses.field(default=None, init=False, repr=False, compare=False)

    @property
    def module(self) -> OPTForCausalLM:
        return OPTForCausalLM(self.config, self.runtime)

    def head_screen(self) -> HeadScreen:
        """The int8 screen of the float LM head that greedy decoding reads (model/screened_head.py), computed once
        per head table, sharded as the table is, and computed afresh when `params` get a new table."""
        table = head_table(self.params)
        if not _Derived.current(self._screen, [table]):
            self._screen = _Derived.of([table], _screen_program(self.runtime.dtype)(table))
        return self._screen.value

    def decoding_copy(self) -> "Model":
        """This model as the CPU decode loop runs it (`layout.decoding_params`): dense kernels stored [out, in]
        (`OutInDense`) and layers unrolled. The kernels are copied (other params are shared, and copied only when
        unstacked) once per set of kernels, and copied afresh when `params` get a new kernel."""
        if self._is_decoding_copy():
            return self
        kernels = list(layout.kernels(self.params).values())
        if not _Derived.current(self._decoding, kernels):
            runtime = dataclasses.replace(self.runtime, kernel_layout="out_in", scan_layers=False)
            self._decoding = _Derived.of(kernels, Model(self.config, layout.decoding_params(self.params), runtime))
        return self._decoding.value

    def has_decoding_copy(self) -> bool:
        """Whether `decoding_copy` would return without copying: this model is one, or holds one of its current
        kernels already (so asking whether a new copy would fit is moot)."""
        return self._is_decoding_copy() or _Derived.current(self._decoding,
                                                            list(layout.kernels(self.params).values()))

    def _is_decoding_copy(self) -> bool:
        return self.runtime.kernel_layout == "out_in" and not self.runtime.scan_layers


class _Derived(NamedTuple):
    """A value computed from some arrays, holding them weakly: current while each of them is still the array in
    the params (a params tree that gets a new array makes it stale, and the value is computed afresh)."""

    sources: tuple[weakref.ref, ...]
    value: Any

    @classmethod
    def of(cls, sources: list[Any], value: Any) -> "_Derived":
        return cls(tuple(weakref.ref(source) for source in sources), value)

    @staticmethod
    def current(derived: Optional["_Derived"], sources: list[Any]) -> bool:
        return (derived is not None and len(derived.sources) == len(sources)
                and all(ref() is source for ref, source in zip(derived.sources, sources)))


def dtype_from_name(name: str | Any) -> Any:
    if not isinstance(name, str):
        return name
    if name not in _DTYPES:
        raise AlertJaxError(f"unknown dtype {name!r}; use one of {', '.join(_DTYPES)}")
    return _DTYPES[name]


def runtime_options(model: ModelConfig, dtype: Optional[str] = None) -> RuntimeOptions:
    """How a config's `model` section runs the architecture; `dtype` overrides `model.dtype` (e.g. eval.dtype)."""
    return RuntimeOptions(dtype=dtype_from_name(dtype or model.dtype), param_dtype=dtype_from_name(model.param_dtype),
                          remat=model.remat, attention=model.attention, scan_layers=model.scan_layers,
                          dropout=model.dropout, attention_dropout=model.attention_dropout,
                          activation_dropout=model.activation_dropout)


def init_params(config: OPTConfig, runtime: RuntimeOptions, seed: int = 0) -> Any:
    """Random params, initialised inside jit so only the final arrays are materialised."""
    module = OPTForCausalLM(config, runtime)
    return jax.jit(lambda key: nn.meta.unbox(boxed_params(module, key)))(jax.random.PRNGKey(seed))


@functools.lru_cache(maxsize=8)
def _screen_program(dtype: Any):
    return jax.jit(functools.partial(head_screen, dtype=dtype))


@functools.lru_cache(maxsize=32)
def _forward(module: OPTForCausalLM):
    def run(params, input_ids, attention_mask, segment_ids, positions):
        out, _ = module.apply({"params": params}, input_ids, attention_mask, segment_ids=segment_ids,
                              positions=positions)
        return out

    return jax.jit(run)


def logits(model: Model, input_ids, attention_mask=None, *, segment_ids=None, positions=None) -> np.ndarray:
    """float32 logits [B, T, V] (plain, left-padded, or packed with segment ids + positions)."""
    as_int = lambda x: None if x is None else jnp.asarray(np.asarray(x), jnp.int32)
    out = _forward(model.module)(model.params, as_int(input_ids), as_int(attention_mask), as_int(segment_ids),
                                 as_int(positions))
    return np.asarray(out, dtype=np.float32)
