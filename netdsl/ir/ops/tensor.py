"""Tensor functions: arithmetic (add, sub, mul, div, neg), concat, center_crop, crop, resize."""
from __future__ import annotations

import math
import struct

from ...errors import ValueRangeError
from .. import dims as D
from ..registry import AttrSpec, OpSpec, register


def _broadcast(a, shapes, ctx):
    x, y = shapes
    rank = max(len(x), len(y))
    x = (1,) * (rank - len(x)) + tuple(x)
    y = (1,) * (rank - len(y)) + tuple(y)
    out = []
    for i, (p, q) in enumerate(zip(x, y)):
        if D.is_static(p) and p == 1:
            out.append(q)
        elif D.is_static(q) and q == 1:
            out.append(p)
        else:
            ctx.require_eq(p, q, f"dim {i} does not match: {D.fmt(p)} vs {D.fmt(q)} "
                                  f"(shapes {D.fmt_shape(shapes[0])} and {D.fmt_shape(shapes[1])})")
            out.append(p if D.is_static(p) or not D.is_static(q) else q)
    return [tuple(out)]


# float32's largest finite value: a larger number would be inf in a float32 tensor's arithmetic
_FLOAT32_MAX = 3.4028234663852886e38


def _resolve_arith(a, shapes, ctx):
    """Two tensors, or one tensor and `scalar` (a number; `reverse`: the number is on the
    left, as in `1 - x`). The number is applied in float32, as torch does to a float32 tensor."""
    if len(shapes) > 2:
        ctx.fail(f"takes two tensors, or a tensor and a number, got {len(shapes)} tensors")
    if (len(shapes) == 2) == (a["scalar"] is not None):
        ctx.fail("takes two tensors, or one tensor and a number (scalar =), not "
                 + ("both" if a["scalar"] is not None else "one tensor alone"))
    if a["scalar"] is None:
        if a["reverse"]:
            ctx.fail("reverse = true applies to a number (scalar =) only")
        return a
    if abs(a["scalar"]) > _FLOAT32_MAX:
        raise ValueRangeError(f"{ctx.op}: the number {a['scalar']:g} is out of float32's range (at most "
                              f"{_FLOAT32_MAX:.7g})", ctx.span, ctx.trace)
    if ctx.op == "div" and a["scalar"] == 0 and not a["reverse"]:
        raise ValueRangeError(f"{ctx.op}: division by zero", ctx.span, ctx.trace)
    return a


def _infer_arith(a, shapes, ctx):
    return [tuple(shapes[0])] if len(shapes) == 1 else _broadcast(a, shapes, ctx)


_ARITH_ATTRS = (AttrSpec("scalar", "float", None, doc="the number, where the other operand is not a tensor"),
                AttrSpec("reverse", "bool", False, keyword_only=True,
                         doc="the number is the left operand (`1 - x`, `6 / x`)"))

for _name, _sym in (("add", "+"), ("sub", "-"), ("mul", "*"), ("div", "/")):
    register(OpSpec(_name, f"Element-wise a {_sym} b with broadcasting, written `a {_sym} b`; or of a tensor "
                    f"and a number, `x {_sym} 2`, `2 {_sym} x` (scalar =, reverse =).", _infer_arith,
                    _ARITH_ATTRS, inputs=None, function=True, resolve=_resolve_arith))
register(OpSpec("neg", "Element-wise -x; written `-x`.", lambda a, s, ctx: [tuple(s[0])], function=True))


def _resolve_concat(a, shapes, ctx):
    rank = len(shapes[0])
    for i, s in enumerate(shapes):
        if len(s) != rank:
            ctx.fail(f"input {i} has rank {len(s)}, input 0 has rank {rank}")
    if not -rank <= a["dim"] < rank:
        ctx.fail(f"dim={a['dim']} is out of range for rank-{rank} inputs")
    a["dim"] %= rank
    return a


def _infer_concat(a, shapes, ctx):
    d = a["dim"]
    first = shapes[0]
    total = 0
    for i, s in enumerate(shapes):
        for j, (p, q) in enumerate(zip(first, s)):
            if j != d:
                ctx.require_eq(p, q, f"input {i} has size {D.fmt(q)} in dim {j}, input 0 has {D.fmt(p)} "
                                     f"(shapes {D.fmt_shape(first)} and {D.fmt_shape(s)})")
        total = D.add(total, s[d])
    return [tuple(first[:d]) + (total,) + tuple(first[d + 1:])]


register(OpSpec("concat", "Concatenate tensors along dim (default 1, channels).", _infer_concat,
                (AttrSpec("dim", "int", 1),), inputs=None, function=True, resolve=_resolve_concat))


def _infer_crop(a, shapes, ctx):
    x, like = shapes
    if len(x) != len(like) or len(x) < 3:
        ctx.fail(f"needs two tensors of the same rank >= 3, got {D.fmt_shape(x)} and {D.fmt_shape(like)}")
    out = list(x[:2])
    for i in range(2, len(x)):
        margin = D.sub(x[i], like[i])
        ctx.require_ge(margin, 0, f"dim {i}: cannot crop {D.fmt(x[i])} to the larger {D.fmt(like[i])}")
        ctx.require_mod(margin, 2, 0, f"dim {i}: cropping {D.fmt(x[i])} to {D.fmt(like[i])} leaves an odd "
                                      f"margin, so the crop cannot be centred")
        out.append(like[i])
    return [tuple(out)]


register(OpSpec("center_crop", "Crop the spatial dims of x to those of `like`, centred "
                "(the margin must be even on every side).", _infer_crop, inputs=2, function=True,
                tensor_attrs=("like",)))


def _resolve_crop(a, shapes, ctx):
    x, like = shapes
    if len(x) != len(like) or len(x) < 3:
        ctx.fail(f"needs two tensors of the same rank >= 3, got {D.fmt_shape(x)} and {D.fmt_shape(like)}")
    spatial = len(x) - 2
    off = a["offset"]
    if len(off) == 1:
        off = off * spatial
    if len(off) != spatial:
        ctx.fail(f"offset needs one value or {spatial} (one per dim 2..{len(x) - 1}), got {len(off)}")
    a["offset"] = tuple(off)
    return a


def _infer_offset_crop(a, shapes, ctx):
    x, like = shapes
    out = list(x[:2])
    for i, k in enumerate(a["offset"], 2):
        ctx.require_ge(D.sub(x[i], D.add(like[i], k)), 0,
                       f"dim {i}: cannot take {D.fmt(like[i])} from {D.fmt(x[i])} at offset {k}")
        out.append(like[i])
    return [tuple(out)]


register(OpSpec("crop", "Crop the spatial dims of x to those of `like`, starting at `offset` "
                "(one int or one per dim 2..; Caffe's Crop layer with axis 2).", _infer_offset_crop,
                (AttrSpec("offset", "ints", 0, check="nonneg"),), inputs=2, function=True,
                resolve=_resolve_crop, tensor_attrs=("like",)))


def _resolve_resize(a, shapes, ctx):
    x = shapes[0]
    if len(x) != 4:
        ctx.fail(f"expects an [N, C, H, W] input, got {D.fmt_shape(x)}")
    given = [k for k in ("scale", "size", "like") if a.get(k) not in (None, False)]
    if len(given) != 1:
        ctx.fail("give exactly one of scale=, size= or like=")
    if a["align_corners"] and a["mode"] != "bilinear":
        ctx.fail("align_corners applies to mode='bilinear' only")
    if a["scale"] is not None:
        sc = a["scale"]
        if len(sc) == 1:
            sc = sc * 2
        if len(sc) != 2 or not all(0 < s < math.inf for s in sc):
            ctx.fail("scale must be one or two positive finite numbers")
        a["scale"] = tuple(sc)
    if a["size"] is not None:
        if len(a["size"]) == 1:
            a["size"] = a["size"] * 2
        if len(a["size"]) != 2 or any(s <= 0 for s in a["size"]):
            ctx.fail("size must be one or two positive ints")
    if a["like"]:
        if len(shapes) != 2 or len(shapes[1]) != 4:
            ctx.fail("like= must be an [N, C, H, W] tensor")
    return a


def _infer_resize(a, shapes, ctx):
    x = shapes[0]
    if a["like"]:
        hw = tuple(shapes[1][2:])
    elif a["size"] is not None:
        hw = tuple(a["size"])
    else:
        # torch's F.interpolate(scale_factor=s): floor(L * s), the product rounded to a double
        hw = tuple(D.scaled_floor(size, s) for size, s in zip(x[2:], a["scale"]))
        for axis, (size, out, s) in enumerate(zip(x[2:], hw, a["scale"]), 2):
            # required of the input size itself, so that run-time checks need no float arithmetic
            ctx.require_ge(size, _least_size(s, 0), f"scale {s!r} leaves dim {axis} (size "
                                                    f"{D.fmt(size)}) empty")
            k = _nearest_shortcut(s) if a["mode"] == "nearest" else None
            if k is not None:
                ctx.require_ge(size, _least_size(s, k), _shortcut_message(axis, size, out, s, k))
    return [tuple(x[:2]) + hw]


def _least_size(s: float, k: int) -> int:
    """The least size L with floor(L * s) > k * L (torch's double rounding); every larger size
    has it too. k = 0: the least size that `scale = s` does not empty."""
    if s - k <= 2.0 ** -62:
        return 2 ** 62
    size = max(1, math.ceil(1 / (s - k)) - 2)
    while size > 1 and math.floor((size - 1) * s) > k * (size - 1):
        size -= 1
    while math.floor(size * s) <= k * size:
        size += 1
    return size


def _nearest_shortcut(s: float) -> int | None:
    """torch's nearest kernel for small outputs (out_h + out_w <= 128, or channels-last)
    copies a dim resized to k = 1 times its length L, and reads j // 2 at k = 2; the kernel
    for larger outputs reads min(floor(j * float32(1 / s)), L - 1). The two differ for some
    L exactly when s > k but float32(1 / s) < 1 / k (1 < s < 1.5 or 2 < s < 2.5): that k."""
    for k in (1, 2):
        if k < s < k + 0.5 and struct.unpack("f", struct.pack("f", 1 / s))[0] < 1 / k:
            return k
    return None


def _shortcut_message(axis, size, out, s, k) -> str:
    times, small = ("its size", "copies the dim") if k == 1 else ("twice its size", "reads j // 2")
    return (f"mode 'nearest' with scale {s!r} needs dim {axis} to grow beyond {times} "
            f"({D.fmt(size)} -> {D.fmt(out)}): there torch {small} for small outputs but reads "
            f"floor(j / {s!r}) for large ones; use size= for such inputs")


register(OpSpec("resize", "Resize H and W by scale=, to size=[h, w] or like= a tensor; "
                "mode 'nearest' or 'bilinear' (align_corners).", _infer_resize,
                (AttrSpec("scale", "floats", None), AttrSpec("size", "ints", None),
                 AttrSpec("mode", "str", "nearest", choices=("nearest", "bilinear")),
                 AttrSpec("align_corners", "bool", False)),
                inputs=None, function=True, resolve=_resolve_resize, tensor_attrs=("like",)))
