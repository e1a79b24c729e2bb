"""Shape functions: reshape, permute, transpose, expand, select; reductions mean, amax.

All are called as f(x, ...) or chained, `x -> permute(dims = [0, 2, 1])`.
"""
from __future__ import annotations

from .. import dims as D
from ..registry import AttrSpec, OpSpec, register


def _dim(ctx, d, rank, what="dim"):
    if not -rank <= d < rank:
        ctx.fail(f"{what}={d} is out of range for a rank-{rank} input")
    return d % rank


def _numel(shape):
    out = 1
    for d in shape:
        out = D.mul(out, d)
    return out


def _resolve_reshape(a, shapes, ctx):
    if len(shapes) != 1 + bool(a["like"]):
        ctx.fail("takes one input tensor (and optionally like= a tensor)")
    src = shapes[-1]
    if sum(1 for s in a["shape"] if s == -1) > 1:
        ctx.fail("shape may contain at most one -1")
    for i, s in enumerate(a["shape"]):
        if s < -1:
            ctx.fail(f"shape entry {s} is invalid (use a positive size, 0 to copy or -1 to infer)")
        if s == 0 and i >= len(src):
            ctx.fail(f"shape entry {i} is 0 (copy dim {i} of {'like' if a['like'] else 'the input'}), "
                     f"but that has rank {len(src)}")
    return a


def _infer_reshape(a, shapes, ctx):
    """Sizes copied (0 entries) cancel against equal input dims; what is left of the input's
    size must equal the given sizes, or divide by them when -1 is to be inferred."""
    x, src, shape = shapes[0], shapes[-1], a["shape"]
    left = list(x)
    divisor, known = 1, 1
    for i, s in enumerate(shape):
        if s > 0:
            known *= s
        elif s == 0:
            j = next((j for j, d in enumerate(left) if D.same(d, src[i]) is True), None)
            if j is None:
                divisor = D.mul(divisor, src[i])
            else:
                left.pop(j)
    rest = _numel(left)
    msg = f"cannot reshape {D.fmt_shape(x)} to {list(shape)}"
    inferred = None
    if -1 in shape:
        if not D.is_static(divisor):
            ctx.fail(f"{msg}: cannot infer the -1 entry symbolically; give that size instead")
        known *= divisor
        what = f"{msg}: the sizes left for -1 ({D.fmt(rest)}) do not divide by {known}"
        if D.is_static(rest) and rest % known:
            ctx.fail(what)
        if not D.is_static(rest):
            ctx.require_mod(rest, known, 0, what)
        inferred = D.floordiv(rest, known)
    else:
        total = D.mul(divisor, known)
        ctx.require_eq(rest, total, f"{msg}: the element counts differ ({D.fmt(_numel(x))} vs "
                                    f"{D.fmt(_numel([src[i] if s == 0 else s for i, s in enumerate(shape)]))})")
    return [tuple(src[i] if s == 0 else inferred if s == -1 else s for i, s in enumerate(shape))]


register(OpSpec(
    "reshape", "Reshape to `shape`: 0 copies the input dim at that index (or like='s, when given), "
    "one -1 is inferred.",
    _infer_reshape, (AttrSpec("shape", "ints"),), inputs=None, function=True, resolve=_resolve_reshape,
    tensor_attrs=("like",)))


def _resolve_permute(a, shapes, ctx):
    rank = len(shapes[0])
    dims = tuple(_dim(ctx, d, rank, "dims entry") for d in a["dims"])
    if sorted(dims) != list(range(rank)):
        ctx.fail(f"dims={list(a['dims'])} is not a permutation of the {rank} input dims")
    a["dims"] = dims
    return a


register(OpSpec(
    "permute", "Reorder the dims: output dim i is input dim dims[i] (torch.permute).",
    lambda a, s, ctx: [tuple(s[0][d] for d in a["dims"])], (AttrSpec("dims", "ints"),),
    function=True, resolve=_resolve_permute))


def _resolve_transpose(a, shapes, ctx):
    rank = len(shapes[0])
    a["dim0"] = _dim(ctx, a["dim0"], rank, "dim0")
    a["dim1"] = _dim(ctx, a["dim1"], rank, "dim1")
    return a


def _infer_transpose(a, shapes, ctx):
    out = list(shapes[0])
    i, j = a["dim0"], a["dim1"]
    out[i], out[j] = out[j], out[i]
    return [tuple(out)]


register(OpSpec(
    "transpose", "Swap two dims (torch.transpose).", _infer_transpose,
    (AttrSpec("dim0", "int"), AttrSpec("dim1", "int")), function=True, resolve=_resolve_transpose))


def _resolve_expand(a, shapes, ctx):
    if not a["like"]:
        ctx.fail("needs like= a tensor whose sizes to expand to")
    t, like = shapes
    rank = min(len(t), len(like))
    dims = tuple(sorted({_dim(ctx, d, len(t)) for d in a["dims"]}))
    for d in dims:
        if d >= rank:
            ctx.fail(f"dim {d} is out of range for like= of rank {len(like)}")
        if not (D.is_static(t[d]) and t[d] == 1):
            ctx.fail(f"can expand only dims of size 1, but dim {d} of {D.fmt_shape(t)} is {D.fmt(t[d])}")
    a["dims"] = dims
    return a


def _infer_expand(a, shapes, ctx):
    t, like = shapes
    return [tuple(like[i] if i in a["dims"] else d for i, d in enumerate(t))]


register(OpSpec(
    "expand", "Repeat size-1 dims of t to like='s sizes there: `expand(t, like = x, dims = [0])`.",
    _infer_expand, (AttrSpec("dims", "ints", (0,)),), inputs=2, function=True,
    resolve=_resolve_expand, tensor_attrs=("like",)))


def _resolve_select(a, shapes, ctx):
    x = shapes[0]
    d = a["dim"] = _dim(ctx, a["dim"], len(x))
    i, size = a["index"], x[d]
    if D.is_static(size):
        if not -size <= i < size:
            ctx.fail(f"index {i} is out of range for dim {d} of size {size}")
        a["index"] = i % size
    elif i >= 0:
        ctx.require_ge(size, i + 1, f"index {i} is out of range for dim {d} of size {D.fmt(size)}")
    else:
        ctx.require_ge(size, -i, f"index {i} is out of range for dim {d} of size {D.fmt(size)}")
    return a


register(OpSpec(
    "select", "Take index `index` of dim `dim`, removing that dim (x[:, 0] is select(x, 1, 0)).",
    lambda a, s, ctx: [tuple(s[0][:a["dim"]]) + tuple(s[0][a["dim"] + 1:])],
    (AttrSpec("dim", "int", 1), AttrSpec("index", "int", 0)), function=True, resolve=_resolve_select))


def _resolve_reduce(a, shapes, ctx):
    rank = len(shapes[0])
    dims = tuple(sorted({_dim(ctx, d, rank) for d in a["dims"]}))
    if not dims:
        ctx.fail("dims must name at least one dim")
    a["dims"] = dims
    return a


def _infer_reduce(a, shapes, ctx):
    x = shapes[0]
    if a["keepdim"]:
        return [tuple(1 if i in a["dims"] else d for i, d in enumerate(x))]
    return [tuple(d for i, d in enumerate(x) if i not in a["dims"])]


_REDUCE_ATTRS = (AttrSpec("dims", "ints", (1,)), AttrSpec("keepdim", "bool", True))
register(OpSpec("mean", "Mean over `dims` (torch.mean).", _infer_reduce, _REDUCE_ATTRS,
                function=True, resolve=_resolve_reduce))
register(OpSpec("amax", "Maximum over `dims` (torch.amax).", _infer_reduce, _REDUCE_ATTRS,
                function=True, resolve=_resolve_reduce))
