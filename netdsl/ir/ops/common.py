"""Helpers shared by the op specs: rank checks, window arithmetic, parameter specs."""
from __future__ import annotations

from .. import dims as D
from ..graph import ParamSpec
from ..registry import AttrSpec

# `init =` / `bias_init =` of the layers with a weight and a bias (netdsl.ir.init)
INIT_ATTRS = (AttrSpec("init", "init", None, doc="the weight's initialiser (default: torch's)",
                       keyword_only=True),
              AttrSpec("bias_init", "init", None, doc="the bias's initialiser (default: torch's)",
                       keyword_only=True))


def need_rank(ctx, shape, ranks, layout: str):
    if len(shape) not in ranks:
        ctx.fail(f"expects a {layout} input of rank {' or '.join(map(str, ranks))}, "
                 f"got rank {len(shape)} {D.fmt_shape(shape)}")


def resolve_dim(a, shapes, ctx):
    """Attribute `dim` of a one-input op made non-negative (-1: the last), checked against the
    input's rank (which must be 1 or more)."""
    rank = len(shapes[0])
    if rank == 0:
        ctx.fail("needs a tensor of rank 1 or more")
    d = a["dim"]
    if not -rank <= d < rank:
        ctx.fail(f"dim={d} is out of range for a rank-{rank} input {D.fmt_shape(shapes[0])}")
    a["dim"] = d % rank
    return a


def window_out(size, pad_total: int, dilation: int, kernel: int, stride: int, ceil_mode: bool = False):
    """Output length of a conv/pool window sliding over `size` (torch's formula)."""
    span = dilation * (kernel - 1) + 1
    avail = D.add(size, pad_total - span)
    if not ceil_mode:
        return D.add(D.floordiv(avail, stride), 1)
    return D.add(D.ceildiv(avail, stride), 1)


def same_pads(kernel, dilation) -> tuple:
    """Per-dim (begin, end) padding of 'same' (torch puts the odd pixel at the end)."""
    out = []
    for k, d in zip(kernel, dilation):
        total = d * (k - 1)
        out.append((total // 2, total - total // 2))
    return tuple(out)


def prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def numel(shape):
    """Elements per sample (batch dim excluded), as a Dim."""
    out = 1
    for d in shape[1:]:
        out = D.mul(out, d)
    return out


def uniform(shape, fan_in) -> ParamSpec:
    return ParamSpec(tuple(shape), "uniform", fan_in=max(1, fan_in))


def ones(shape, buffer=False) -> ParamSpec:
    return ParamSpec(tuple(shape), "ones", buffer=buffer)


def zeros(shape, buffer=False, dtype="float32") -> ParamSpec:
    return ParamSpec(tuple(shape), "zeros", buffer=buffer, dtype=dtype)
