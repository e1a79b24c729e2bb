"""Multi-input tensor functions: add, mul, concat, center_crop, resize."""
from __future__ import annotations

from fractions import Fraction

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


register(OpSpec("add", "Element-wise a + b with broadcasting; written `a + b`.", _broadcast,
                inputs=2, function=True))
register(OpSpec("mul", "Element-wise a * b with broadcasting; written `a * b`.", _broadcast,
                inputs=2, function=True))


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
        if len(sc) != 2 or any(s <= 0 for s in sc):
            ctx.fail("scale must be one or two positive numbers")
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
        hw = []
        for size, s in zip(x[2:], a["scale"]):
            f = Fraction(s).limit_denominator(1 << 16)
            hw.append(D.floordiv(D.mul(size, f.numerator), f.denominator))
        hw = tuple(hw)
    return [tuple(x[:2]) + hw]


register(OpSpec("resize", "Resize H and W by scale=, to size=[h, w] or like= a tensor; "
                "mode 'nearest' or 'bilinear' (align_corners).", _infer_resize,
                (AttrSpec("scale", "floats", None), AttrSpec("size", "ints", None),
                 AttrSpec("mode", "str", "nearest", choices=("nearest", "bilinear")),
                 AttrSpec("align_corners", "bool", False)),
                inputs=None, function=True, resolve=_resolve_resize, tensor_attrs=("like",)))
