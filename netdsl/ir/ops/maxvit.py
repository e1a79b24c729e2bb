"""MaxViT's ops (Tu et al., ECCV 2022, as torchvision.models.maxvit builds it): window
partitioning of a [B, C, H, W] map into p x p windows and back, and the relative positional
multi-head attention that runs inside each window.

    window_partition(x, p)                  [B, C, H, W] -> [B, (H/p)(W/p), p*p, C]
    window_departition(t, p, like = x)      [B, (H/p)(W/p), p*p, C] -> [B, C, H, W] (H, W of x)
    RelativePositionalMultiHeadAttention(head_dim)    on [B, G, P, D], P = s*s tokens of an
                                            s x s window, D / head_dim heads

Grid attention (MaxViT's dilated, global mixing) is window_partition with p = H / s, then
transpose(1, 2): each group holds the s x s tokens spaced H / s apart.
"""
from __future__ import annotations

import math

from .. import dims as D
from ..graph import ParamSpec
from ..registry import AttrSpec, OpSpec, register
from .common import need_rank, uniform


def _windows(ctx, h, w, p, what):
    """Require H and W to be multiples of p; (H / p, W / p)."""
    for name, d in (("H", h), ("W", w)):
        ctx.require_mod(d, p, 0, f"{what}: {name} = {D.fmt(d)} is not a multiple of the window size {p}")
    return D.floordiv(h, p), D.floordiv(w, p)


def _infer_partition(a, shapes, ctx):
    (x,) = shapes
    need_rank(ctx, x, (4,), "[B, C, H, W]")
    b, c, h, w = x
    p = a["p"]
    hp, wp = _windows(ctx, h, w, p, f"cannot split {D.fmt_shape(x)} into {p} x {p} windows")
    return [(b, D.mul(hp, wp), p * p, c)]


register(OpSpec(
    "window_partition",
    "Split [B, C, H, W] into non-overlapping p x p windows: [B, (H/p)(W/p), p*p, C], windows "
    "row-major, tokens row-major within each (torchvision's MaxViT WindowPartition).",
    _infer_partition, (AttrSpec("p", "int", check="positive", doc="the window side"),),
    function=True))


def _resolve_departition(a, shapes, ctx):
    if not a["like"] or len(shapes) != 2:
        ctx.fail("needs like= the [B, C, H, W] map whose H and W to restore: "
                 "window_departition(t, p, like = x)")
    return a


def _infer_departition(a, shapes, ctx):
    t, like = shapes
    need_rank(ctx, t, (4,), "[B, G, P, C] (windows)")
    if len(like) != 4:
        ctx.fail(f"like= must be a [B, C, H, W] map, got rank {len(like)} {D.fmt_shape(like)}")
    b, g, pp, c = t
    p = a["p"]
    ctx.require_eq(pp, p * p, f"the windows hold {D.fmt(pp)} tokens, not p * p = {p * p}")
    hp, wp = _windows(ctx, like[2], like[3], p, f"like= {D.fmt_shape(like)} does not split into "
                                                  f"{p} x {p} windows")
    ctx.require_eq(g, D.mul(hp, wp), f"there are {D.fmt(g)} windows, but like= {D.fmt_shape(like)} "
                                     f"has {D.fmt(D.mul(hp, wp))} windows of {p} x {p}")
    ctx.require_eq(b, like[0], f"the batch sizes differ: {D.fmt(b)} vs like='s {D.fmt(like[0])}")
    return [(b, c, like[2], like[3])]


register(OpSpec(
    "window_departition",
    "Inverse of window_partition: [B, (H/p)(W/p), p*p, C] -> [B, C, H, W], H and W taken "
    "from like= (torchvision's MaxViT WindowDepartition).",
    _infer_departition, (AttrSpec("p", "int", check="positive", doc="the window side"),),
    inputs=None, function=True, resolve=_resolve_departition, tensor_attrs=("like",)))


def _resolve_rpmha(a, shapes, ctx):
    (x,) = shapes
    need_rank(ctx, x, (4,), "[B, G, P, D] (groups of P tokens)")
    d = ctx.static(x[3], "the feature size (last dim)")
    p = ctx.static(x[2], "the tokens per group (dim 2)")
    hd = a["head_dim"]
    if d % hd:
        ctx.fail(f"the feature size {d} is not divisible by head_dim={hd}")
    s = math.isqrt(p)
    if s * s != p:
        ctx.fail(f"the relative position bias needs a square window: {p} tokens per group is not "
                 f"a square number")
    a["feat_dim"], a["max_seq_len"], a["size"], a["num_heads"] = d, p, s, d // hd
    return a


def _rpmha_params(a, shapes, ctx):
    d, s, h, p = a["feat_dim"], a["size"], a["num_heads"], a["max_seq_len"]
    # torch's state_dict order: the module's own parameter and buffer, then its children's
    return {
        "relative_position_bias_table": ParamSpec(((2 * s - 1) ** 2, h), "normal", scale=0.02),
        "relative_position_index": ParamSpec((p, p), "relative_position_index", fan_in=s, buffer=True,
                                             dtype="int64"),
        "to_qkv.weight": uniform((3 * d, d), d), "to_qkv.bias": uniform((3 * d,), d),
        "merge.weight": uniform((d, d), d), "merge.bias": uniform((d,), d),
    }


def _rpmha_macs(a, shapes, outs):
    # per sample, every group: the qkv and merge projections, q k^T and attn v
    d, p = a["feat_dim"], a["max_seq_len"]
    g = shapes[0][1]
    return D.mul(g, 4 * p * d * d + 2 * p * p * d)


register(OpSpec(
    "RelativePositionalMultiHeadAttention",
    "MaxViT's attention within each group of P = s*s tokens of [B, G, P, D] "
    "(torchvision.models.maxvit.RelativePositionalMultiHeadAttention): D / head_dim heads, "
    "softmax(q (k D^-1/2)^T + relative position bias) v; params to_qkv, merge, "
    "relative_position_bias_table, buffer relative_position_index.",
    lambda a, s, ctx: [s[0]],
    (AttrSpec("head_dim", "int", check="positive", doc="features per head"),),
    resolve=_resolve_rpmha, params=_rpmha_params, macs=_rpmha_macs))
