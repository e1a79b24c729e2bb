"""The op registry: one `OpSpec` per op (attribute schema, shape rule, parameters, cost).

A spec's callables receive the op's attributes (already bound and type-checked),
the input shapes and a `ShapeCtx` for reporting errors and recording input-size
constraints. Backends look ops up by name in their own emitter tables; a test
asserts that every registered op has an emitter in every backend.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

REQUIRED = object()


@dataclass(frozen=True)
class AttrSpec:
    name: str
    kind: str            # see netdsl.ir.attrs.coerce: int, float, bool, str, pair, pair_or_str, ...
    default: Any = REQUIRED
    choices: tuple = ()
    check: str = ""      # "positive", "nonneg", "prob" (0 <= p < 1), "unit" (0 <= x <= 1), "" for none
    doc: str = ""
    keyword_only: bool = False   # given by name only (init =, bias_init =)

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def _no_params(attrs, shapes, ctx):
    return {}


def _no_macs(attrs, shapes, outs):
    return 0


def _same_attrs(attrs, shapes, ctx):
    return attrs


@dataclass(frozen=True)
class OpSpec:
    name: str
    doc: str
    infer: Callable                      # (attrs, in_shapes, ctx) -> [out_shape, ...]
    attrs: tuple = ()
    inputs: int | None = 1               # tensor inputs; None = one or more (variadic)
    function: bool = False               # called as f(a, b, k=v) on tensors rather than chained
    resolve: Callable = _same_attrs      # (attrs, in_shapes, ctx) -> attrs with derived values
    params: Callable = _no_params        # (attrs, in_shapes, ctx) -> {name: ParamSpec}
    macs: Callable = _no_macs            # (attrs, in_shapes, out_shapes) -> Dim
    tensor_attrs: tuple = field(default=())   # keyword attrs that take a tensor (e.g. like=)
    check_inputs: Callable | None = None      # (input Values, ctx) -> None: checks beyond shapes
                                              # (what produced an input); run on every application
    dtypes: Callable | None = None            # (attrs, input Values) -> [dtype per output]; None:
                                              # every output float32
    dynamic: bool = False                     # makes data-dependent dims (ctx.dynamic): every
                                              # application gets fresh ones, so never cached
    tuple_result: bool = False                # its outputs are a tuple even when there is one
                                              # (chunk: how many parts depends on sizes)

    def attr(self, name: str) -> AttrSpec | None:
        for a in self.attrs:
            if a.name == name:
                return a
        return None


REGISTRY: dict[str, OpSpec] = {}


def register(spec: OpSpec) -> OpSpec:
    if spec.name in REGISTRY:
        raise ValueError(f"op {spec.name} registered twice")
    REGISTRY[spec.name] = spec
    return spec


def get(name: str) -> OpSpec | None:
    _load()
    return REGISTRY.get(name)


def all_ops() -> dict[str, OpSpec]:
    _load()
    return dict(REGISTRY)


def _load():
    from . import ops  # noqa: F401  (registers every op on first use)
