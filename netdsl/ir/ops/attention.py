"""Transformer building blocks: LayerNorm, MultiheadAttention, matmul."""
from __future__ import annotations

import math

from .. import dims as D
from ..graph import ParamSpec
from ..registry import AttrSpec, OpSpec, register
from .common import ones, uniform, zeros
from .tensor import _broadcast


def _resolve_ln(a, shapes, ctx):
    (x,) = shapes
    if len(x) < 1:
        ctx.fail("expects an input of rank >= 1")
    a["normalized_shape"] = ctx.static(x[-1], "the normalised size (last dim)")
    return a


def _ln_params(a, shapes, ctx):
    d = a["normalized_shape"]
    return {"weight": ones((d,)), "bias": zeros((d,))} if a["elementwise_affine"] else {}


register(OpSpec(
    "LayerNorm", "Layer normalisation over the last dim (torch.nn.LayerNorm(D)).",
    lambda a, s, ctx: [s[0]],
    (AttrSpec("eps", "float", 1e-5, check="positive"), AttrSpec("elementwise_affine", "bool", True)),
    resolve=_resolve_ln, params=_ln_params))


def _resolve_mha(a, shapes, ctx):
    if len(shapes) not in (1, 3):
        ctx.fail(f"takes one input (self-attention) or three (q, k, v), got {len(shapes)}")
    for i, s in enumerate(shapes):
        if len(s) != 3:
            ctx.fail(f"input {i} must be [N, L, E] (batch first), got {D.fmt_shape(s)}")
    e = ctx.static(shapes[0][2], "the embedding size (last dim)")
    h = a["num_heads"]
    if e % h:
        ctx.fail(f"the embedding size {e} is not divisible by num_heads={h}")
    if len(shapes) == 3:
        q, k, v = shapes
        for name, s in (("k", k), ("v", v)):
            ctx.require_eq(s[2], e, f"{name} has embedding size {D.fmt(s[2])}, q has {e}")
            ctx.require_eq(s[0], q[0], f"{name} has batch size {D.fmt(s[0])}, q has {D.fmt(q[0])}")
        ctx.require_eq(k[1], v[1], f"k and v have different lengths: {D.fmt(k[1])} vs {D.fmt(v[1])}")
    a["embed_dim"] = e
    return a


def _mha_params(a, shapes, ctx):
    e = a["embed_dim"]
    p = {"in_proj_weight": ParamSpec((3 * e, e), "uniform", fan_in=e, scale=math.sqrt(6.0 / (4 * e)))}
    if a["bias"]:
        p["in_proj_bias"] = zeros((3 * e,))
    p["out_proj.weight"] = uniform((e, e), e)
    if a["bias"]:
        p["out_proj.bias"] = zeros((e,))
    return p


def _mha_macs(a, shapes, outs):
    # per sample, as every op counts: q and output projections over L query tokens, k and v over S
    e = a["embed_dim"]
    nl, ns = shapes[0][1], shapes[-1][1]
    proj = D.mul(D.add(D.mul(nl, 2), D.mul(ns, 2)), e * e)
    attn = D.mul(D.mul(nl, ns), 2 * e)                              # q k^T and attn v
    return D.add(proj, attn)


register(OpSpec(
    "MultiheadAttention", "Multi-head attention on [N, L, E] (torch.nn.MultiheadAttention, "
    "batch_first): `x -> MultiheadAttention(h)` for self-attention, `(q, k, v) -> ...` otherwise.",
    lambda a, s, ctx: [s[0]],
    (AttrSpec("num_heads", "int", check="positive"), AttrSpec("dropout", "float", 0.0, check="prob"),
     AttrSpec("bias", "bool", True)),
    inputs=None, resolve=_resolve_mha, params=_mha_params, macs=_mha_macs))


def _infer_matmul(a, shapes, ctx):
    x, y = (tuple(s) for s in shapes)
    if not x or not y:
        ctx.fail(f"needs inputs of rank >= 1, got {D.fmt_shape(x)} and {D.fmt_shape(y)}")
    xm = x if len(x) > 1 else (1,) + x
    ym = y if len(y) > 1 else y + (1,)
    ctx.require_eq(xm[-1], ym[-2], f"inner dims do not match: {D.fmt(xm[-1])} vs {D.fmt(ym[-2])} "
                                   f"(shapes {D.fmt_shape(x)} and {D.fmt_shape(y)})")
    (batch,) = _broadcast(a, [xm[:-2], ym[:-2]], ctx)
    out = batch + ((xm[-2],) if len(x) > 1 else ()) + ((ym[-1],) if len(y) > 1 else ())
    return [out]


def _matmul_macs(a, shapes, outs):
    # per sample: a leading batch dim (rank >= 3) is not counted, as for every other op
    k = shapes[0][-1]
    out = outs[0][1:] if len(outs[0]) >= 3 else outs[0]
    n = 1
    for d in out:
        n = D.mul(n, d)
    return D.mul(n, k)


register(OpSpec("matmul", "Matrix product with batch broadcasting (torch.matmul).", _infer_matmul,
                inputs=2, function=True, macs=_matmul_macs))
