"""Fully connected layers and reshaping: Linear, Flatten."""
from __future__ import annotations

from .. import dims as D
from ..registry import AttrSpec, OpSpec, register
from ..init import layer_param
from .common import INIT_ATTRS, numel, uniform


def _resolve_linear(a, shapes, ctx):
    (x,) = shapes
    if len(x) < 2:
        ctx.fail(f"expects an input of rank >= 2 [N, ..., features], got {D.fmt_shape(x)}")
    a["in_features"] = ctx.static(x[-1], "the number of input features (last dim)")
    return a


def _linear_params(a, shapes, ctx):
    fin = a["in_features"]
    shape = (a["out_features"], fin)
    p = {"weight": layer_param(a["init"], shape, uniform(shape, fin), ctx, "weight", "Linear")}
    if a["bias"]:
        p["bias"] = layer_param(a["bias_init"], (a["out_features"],), uniform((a["out_features"],), fin),
                                ctx, "bias", "Linear")
    elif a["bias_init"] is not None:
        ctx.fail("bias_init is given but the layer has no bias (bias = false)")
    return p


register(OpSpec(
    "Linear", "Fully connected layer y = x W^T + b over the last dim (torch.nn.Linear).",
    lambda a, s, ctx: [tuple(s[0][:-1]) + (a["out_features"],)],
    (AttrSpec("out_features", "int", check="positive"), AttrSpec("bias", "bool", True)) + INIT_ATTRS,
    resolve=_resolve_linear, params=_linear_params,
    macs=lambda a, s, o: D.mul(numel(o[0]), a["in_features"])))


def _norm_dim(ctx, d, rank, what):
    if not -rank <= d < rank:
        ctx.fail(f"{what}={d} is out of range for a rank-{rank} input")
    return d % rank


def _resolve_flatten(a, shapes, ctx):
    rank = len(shapes[0])
    a["start_dim"] = _norm_dim(ctx, a["start_dim"], rank, "start_dim")
    a["end_dim"] = _norm_dim(ctx, a["end_dim"], rank, "end_dim")
    if a["start_dim"] > a["end_dim"]:
        ctx.fail("start_dim must not come after end_dim")
    return a


def _infer_flatten(a, shapes, ctx):
    x = shapes[0]
    s, e = a["start_dim"], a["end_dim"]
    merged = 1
    for d in x[s:e + 1]:
        merged = D.mul(merged, d)
    return [tuple(x[:s]) + (merged,) + tuple(x[e + 1:])]


register(OpSpec(
    "Flatten", "Merge dims start_dim..end_dim into one (torch.nn.Flatten).",
    _infer_flatten, (AttrSpec("start_dim", "int", 1), AttrSpec("end_dim", "int", -1)),
    resolve=_resolve_flatten))
