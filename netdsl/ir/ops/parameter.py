"""Learned tensors declared with `param name: f32[dims] = init` (class tokens, position
embeddings). The op has no inputs; its one parameter is keyed by the node's path alone."""
from __future__ import annotations

from ..graph import ParamSpec
from ..registry import AttrSpec, OpSpec, register
from .common import prod


def _params(a, shapes, ctx):
    shape = tuple(a["shape"])
    if a["init"] == "constant":                         # layer scale: constant(1e-6)
        return {"": ParamSpec(shape, "constant", scale=a["value"])}
    if a["init"] == "uniform" and a["scale"] > 0:      # uniform(0) is zeros (scale 0: the default bound)
        return {"": ParamSpec(shape, "uniform", fan_in=max(1, prod(shape[1:])), scale=a["scale"])}
    return {"": ParamSpec(shape, "zeros" if a["init"] == "uniform" else a["init"], scale=a["scale"])}


register(OpSpec(
    "parameter", "A learned tensor, declared with `param name: f32[dims] = zeros() | ones() | "
    "constant(value) | normal(std) | uniform(bound)`.",
    lambda a, s, ctx: [tuple(a["shape"])],
    (AttrSpec("shape", "ints", check="positive"),
     AttrSpec("init", "str", "zeros", choices=("zeros", "ones", "constant", "normal", "uniform")),
     AttrSpec("scale", "float", 0.0, check="nonneg"),
     AttrSpec("value", "float", 0.0)),
    inputs=0, function=True, params=_params))
