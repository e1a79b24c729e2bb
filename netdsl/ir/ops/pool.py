"""Pooling: max/average (general: kernel = stride; overlapping: kernel > stride),
adaptive and global pooling."""
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

