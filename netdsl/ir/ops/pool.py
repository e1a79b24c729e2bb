"""Pooling: max/average (general: kernel = stride; overlapping: kernel > stride),
adaptive and global pooling, spatial pyramid pooling and power-average (LP) pooling."""
from __future__ import annotations

from .. import dims as D
from ..registry import AttrSpec, OpSpec, register
from .common import need_rank, window_out

_LAYOUT = "[N, C, H, W]"


def _pool_attrs(kind: str) -> tuple:
    attrs = [AttrSpec("kernel_size", "pair", check="positive"),
             AttrSpec("stride", "pair", None, check="positive", doc="defaults to kernel_size"),
             AttrSpec("padding", "pair", 0, check="nonneg")]
    if kind == "max":
        attrs.append(AttrSpec("dilation", "pair", 1, check="positive"))
    attrs.append(AttrSpec("ceil_mode", "bool", False))
    if kind == "avg":
        attrs.append(AttrSpec("count_include_pad", "bool", True))
    return tuple(attrs)


def _resolve_pool(a, shapes, ctx):
    need_rank(ctx, shapes[0], (4,), _LAYOUT)
    if a["stride"] is None:
        a["stride"] = a["kernel_size"]
    a.setdefault("dilation", (1, 1))
    for k, p in zip(a["kernel_size"], a["padding"]):
        if p > k // 2:
            ctx.fail(f"padding {p} must be at most half the kernel size {k}")
    return a


def _infer_pool(a, shapes, ctx):
    x = shapes[0]
    out = list(x[:2])
    for i, size in enumerate(x[2:]):
        k, s, p, d = a["kernel_size"][i], a["stride"][i], a["padding"][i], a["dilation"][i]
        if p and d > 1:
            # A window starting in the left padding at -q reaches the input first at q mod d
            # (the dilation steps over the rest); below that size it holds only padding, where
            # torch gives -inf and onnxruntime the lowest float. Those windows start at o*s - p.
            first = max((o * s - p) % d for o in range((p + s - 1) // s))
            if first:
                ctx.require_ge(size, first + 1, f"dim {i + 2}: with dilation {d} and padding {p}, a "
                                                f"window would hold only padding unless the size is "
                                                f"at least {first + 1}")
        if a["ceil_mode"] and p + s > d * (k - 1) + 1:
            # torch drops a last window that would start in the right padding; here that
            # leaves exactly the windows starting before size + p
            out.append(D.add(D.floordiv(D.add(size, p - 1), s), 1))
        else:
            out.append(window_out(size, 2 * p, d, k, s, a["ceil_mode"]))
    return [tuple(out)]


register(OpSpec("MaxPool2d", "2-D max pooling (torch.nn.MaxPool2d).", _infer_pool,
                _pool_attrs("max"), resolve=_resolve_pool))
register(OpSpec("AvgPool2d", "2-D average pooling (torch.nn.AvgPool2d).", _infer_pool,
                _pool_attrs("avg"), resolve=_resolve_pool))


def _resolve_adaptive(a, shapes, ctx):
    need_rank(ctx, shapes[0], (4,), _LAYOUT)
    return a


def _infer_adaptive(a, shapes, ctx):
    x = shapes[0]
    return [tuple(x[:2]) + tuple(a["output_size"])]


for _kind in ("Avg", "Max"):
    register(OpSpec(f"Adaptive{_kind}Pool2d",
                    f"{_kind.lower()} pooling to a fixed output size (torch.nn.Adaptive{_kind}Pool2d).",
                    _infer_adaptive, (AttrSpec("output_size", "pair", check="positive"),),
                    resolve=_resolve_adaptive))
    register(OpSpec(f"Global{_kind}Pool2d", f"{_kind.lower()} over all of H and W -> [N, C, 1, 1].",
                    lambda a, s, ctx: [tuple(s[0][:2]) + (1, 1)], (), resolve=_resolve_adaptive))


# ---- spatial pyramid pooling (He et al. 2014) and power-average pooling ------------------

def _resolve_pyramid(a, shapes, ctx):
    need_rank(ctx, shapes[0], (4,), _LAYOUT)
    if not a["levels"]:
        ctx.fail("'levels' must name at least one level, e.g. [4, 2, 1]")
    return a


def _paper_bins(n: int, size, axis: int, ctx):
    """The paper's bins along one axis: window ceil(a / n), stride floor(a / n), no padding.
    That gives floor((a - ceil(a/n)) / floor(a/n)) + 1 windows; writing a = q n + r, this is
    n + floor((r - [r > 0]) / q), so exactly n when r <= q, i.e. (n + 1) * (a // n) >= a
    (which also excludes a < n, where the stride would be 0). An affine size rule, so the
    checker solves it, the torch module and the ONNX metadata check it like any other."""
    if D.is_static(size):
        a = int(size)
        if a < n:
            ctx.fail(f"level {n}: dim {axis} has size {a}, fewer than the {n} bins of the level")
        k, s = -(-a // n), a // n
        got = (a - k) // s + 1
        if got != n:
            ctx.fail(f"level {n}: with the paper's bins (window ceil({a} / {n}) = {k}, stride "
                     f"floor({a} / {n}) = {s}), dim {axis} of size {a} gives {got} bins, not {n}; "
                     f"the paper's rule needs size mod {n} <= size // {n} (or use bins = \"adaptive\")")
        return
    s = D.fmt(size)
    if not s.isidentifier():             # a derived size, `(H + 7) // 16 - 1`: bracket it
        s = f"({s})"
    ctx.require_ge(D.mul(n + 1, D.floordiv(size, n)), size,
                   f"level {n}: the paper's bins (window ceil({s} / {n}), stride floor({s} / {n})) "
                   f"give {n} bins on dim {axis} only when {s} mod {n} <= {s} // {n}")


def _infer_pyramid(a, shapes, ctx):
    x = shapes[0]
    levels = a["levels"]
    for axis in (2, 3):
        if a["bins"] == "adaptive":
            top = max(levels)
            ctx.require_ge(x[axis], top, f"dim {axis} is {D.fmt(x[axis])}, but adaptive bins need at "
                                         f"least as many positions as the largest level, {top}")
        else:
            for n in dict.fromkeys(levels):
                if n > 1:                         # one bin: the whole axis, for every size
                    _paper_bins(n, x[axis], axis, ctx)
    return [(x[0], D.mul(x[1], sum(n * n for n in levels)))]


register(OpSpec(
    "SpatialPyramidPool2d",
    "Spatial pyramid pooling (He et al. 2014): pool into n x n bins for each level n, flatten "
    "each level channel-major and concatenate -> [N, C * sum(n^2)], for any H and W. "
    "bins='adaptive': torch's adaptive pooling bins; bins='paper': window ceil(a/n), stride floor(a/n).",
    _infer_pyramid,
    (AttrSpec("levels", "ints", (4, 2, 1), check="positive", doc="bins per side, one level each"),
     AttrSpec("mode", "str", "max", choices=("max", "avg")),
     AttrSpec("bins", "str", "adaptive", choices=("adaptive", "paper"))),
    resolve=_resolve_pyramid))


def _resolve_lp(a, shapes, ctx):
    need_rank(ctx, shapes[0], (4,), _LAYOUT)
    if a["stride"] is None:
        a["stride"] = a["kernel_size"]
    a["padding"], a["dilation"] = (0, 0), (1, 1)     # for _infer_pool: lp_pool2d has neither
    return a


register(OpSpec(
    "LPPool2d",
    "2-D power-average pooling (torch.nn.LPPool2d): (sum over the window of x^p)^(1/p), "
    "computed as torch does, from avg_pool2d of x^p times the window size.",
    _infer_pool,
    (AttrSpec("norm_type", "float", check="positive", doc="the power p"),
     AttrSpec("kernel_size", "pair", check="positive"),
     AttrSpec("stride", "pair", None, check="positive", doc="defaults to kernel_size"),
     AttrSpec("ceil_mode", "bool", False)),
    resolve=_resolve_lp))
