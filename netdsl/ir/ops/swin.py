"""Swin Transformer's ops (Liu et al., ICCV 2021; V2: Liu et al., CVPR 2022), as
torchvision.models.swin_transformer builds them, on channels-last maps [N, H, W, C]:

    ShiftedWindowAttention(num_heads, window_size = [7, 7], shift_size = [0, 0], ...)
        multi-head self-attention within each window of the map, the windows shifted by
        shift_size (a cyclic roll, masked where it wraps); version 1: scaled dot product plus a
        learned relative position bias table; version 2: cosine attention with a learned
        logit scale and a continuous position bias (cpb_mlp).
    patch_merge(x)      [N, H, W, C] -> [N, ceil(H/2), ceil(W/2), 4C]: each 2 x 2 patch's
        pixels side by side, in torchvision's order (0, 0), (1, 0), (0, 1), (1, 1).

H and W may be any size: the map is zero padded to window multiples (and to even sizes),
as torchvision does; a window as large as the padded map is not shifted.
"""
from __future__ import annotations

import math

from .. import dims as D
from ..graph import ParamSpec
from ..registry import AttrSpec, OpSpec, register
from .common import need_rank, uniform

_LAYOUT = "[N, H, W, C] (channels last)"
CPB_HIDDEN = 512            # the hidden width of V2's continuous position bias MLP (torchvision's)


def padded(size, window: int):
    """A map's size padded up to a multiple of the window."""
    return D.mul(D.ceildiv(size, window), window)


def _resolve_swa(a, shapes, ctx):
    (x,) = shapes
    need_rank(ctx, x, (4,), _LAYOUT)
    c = ctx.static(x[3], "the embedding size (last dim)")
    h = a["num_heads"]
    if c % h:
        ctx.fail(f"the embedding size {c} is not divisible by num_heads={h}")
    for axis, (w, s) in enumerate(zip(a["window_size"], a["shift_size"])):
        if s >= w:
            ctx.fail(f"shift_size {s} must be smaller than the window size {w} (dim {axis + 1})")
    if a["version"] == 2 and min(a["window_size"]) < 2:
        ctx.fail(f"version 2's continuous position bias needs windows of at least 2 x 2, got "
                 f"{list(a['window_size'])} (torchvision divides by window - 1)")
    a["dim"] = c
    return a


def _swa_params(a, shapes, ctx):
    """torchvision's ShiftedWindowAttention(V2) state_dict, in its order: own parameters, own
    buffers, then qkv, proj (and cpb_mlp)."""
    c, h = a["dim"], a["num_heads"]
    wh, ww = a["window_size"]
    n = wh * ww
    table = (2 * wh - 1, 2 * ww - 1)
    index = ParamSpec((n * n,), "relative_position_index", fan_in=ww, buffer=True, dtype="int64")
    if a["version"] == 1:
        # trunc_normal_(std=0.02) in torchvision; a plain normal of the same std here
        p = {"relative_position_bias_table": ParamSpec((table[0] * table[1], h), "normal", scale=0.02),
             "relative_position_index": index}
    else:
        p = {"logit_scale": ParamSpec((h, 1, 1), "constant", scale=math.log(10.0)),
             "relative_coords_table": ParamSpec((1, *table, 2), "relative_coords_table", buffer=True),
             "relative_position_index": index}
    p["qkv.weight"] = uniform((3 * c, c), c)
    if a["qkv_bias"]:
        p["qkv.bias"] = uniform((3 * c,), c)
    p["proj.weight"] = uniform((c, c), c)
    if a["proj_bias"]:
        p["proj.bias"] = uniform((c,), c)
    if a["version"] == 2:
        p["cpb_mlp.0.weight"] = uniform((CPB_HIDDEN, 2), 2)
        p["cpb_mlp.0.bias"] = uniform((CPB_HIDDEN,), 2)
        p["cpb_mlp.2.weight"] = uniform((h, CPB_HIDDEN), CPB_HIDDEN)
    return p


def _swa_macs(a, shapes, outs):
    """Per sample, over the padded map's L tokens: the qkv and output projections (4 L C^2) and
    the two attention products, q k^T and attn v (2 L N C, N tokens per window); version 2's
    position-bias MLP on its (2 wh - 1)(2 ww - 1) offsets as well (it runs once per call,
    whatever the batch; torchvision's published figures count it)."""
    _, h, w, _ = shapes[0]
    c, heads = a["dim"], a["num_heads"]
    wh, ww = a["window_size"]
    tokens = D.mul(padded(h, wh), padded(w, ww))
    macs = D.mul(tokens, 4 * c * c + 2 * wh * ww * c)
    if a["version"] == 2:
        macs = D.add(macs, (2 * wh - 1) * (2 * ww - 1) * (2 * CPB_HIDDEN + CPB_HIDDEN * heads))
    return macs


register(OpSpec(
    "ShiftedWindowAttention",
    "Swin Transformer's shifted-window multi-head self-attention on [N, H, W, C] "
    "(torchvision's ShiftedWindowAttention, version 2: ShiftedWindowAttentionV2): zero padding "
    "to window multiples, a cyclic shift by -shift_size (none along a dim whose padded size is "
    "one window), attention within each window (masked across the shift's seams), a relative "
    "position bias, projection, and everything undone. Keys qkv, proj, "
    "relative_position_bias_table (V2: logit_scale, cpb_mlp), buffers relative_position_index "
    "(V2: relative_coords_table).",
    lambda a, s, ctx: [s[0]],
    (AttrSpec("num_heads", "int", check="positive"),
     AttrSpec("window_size", "pair", (7, 7), check="positive"),
     AttrSpec("shift_size", "pair", (0, 0), check="nonneg"),
     AttrSpec("qkv_bias", "bool", True), AttrSpec("proj_bias", "bool", True),
     AttrSpec("attention_dropout", "float", 0.0, check="prob"),
     AttrSpec("dropout", "float", 0.0, check="prob"),
     AttrSpec("version", "int", 1, choices=(1, 2))),
    resolve=_resolve_swa, params=_swa_params, macs=_swa_macs))


def _infer_patch_merge(a, shapes, ctx):
    (x,) = shapes
    need_rank(ctx, x, (4,), _LAYOUT)
    n, h, w, c = x
    return [(n, D.ceildiv(h, 2), D.ceildiv(w, 2), D.mul(c, 4))]


register(OpSpec(
    "patch_merge",
    "Swin's patch merging without its norm and reduction: [N, H, W, C] -> [N, ceil(H/2), "
    "ceil(W/2), 4C], odd sizes zero padded at the end; each 2 x 2 patch's pixels concatenated "
    "in torchvision's order x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2].",
    _infer_patch_merge, function=True))
