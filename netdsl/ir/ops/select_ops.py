"""Selecting elements: `topk` (the k largest or smallest along a dim, with their indices) and
`take` (rows of a tensor by index). Function-style: ``v, i = topk(x, k = 5)``,
``rows = take(x, i)``.

Their index tensors are int64 (`Value.dtype`). A top-k along a symbolic size keeps
min(k, size) elements: a data-dependent size (`dims.Dyn`, bound k), known at run time.
"""
from __future__ import annotations

from .. import dims as D
from ..registry import AttrSpec, OpSpec, register
from .common import resolve_dim


def _infer_topk(a, shapes, ctx):
    x = shapes[0]
    k, d = a["k"], a["dim"]
    size = x[d]
    if D.is_static(size):
        kept = min(k, int(size))
    elif k == 1 and not D.is_dynamic(size):
        kept = 1                  # every input size is at least 1 (a data-dependent one may be 0)
    else:
        kept = ctx.dynamic("K", bound=k)     # min(k, size): known when the size is
    out = tuple(kept if i == d else s for i, s in enumerate(x))
    return [out, out]


register(OpSpec(
    "topk",
    "The k largest (largest = false: smallest) elements along `dim`, sorted, and their int64 "
    "indices (torch.topk): `values, indices = topk(x, k = 5, dim = -1)`. Keeps min(k, size) "
    "elements: a size known at run time when the dim is symbolic.",
    _infer_topk,
    (AttrSpec("k", "int", 1, check="positive", doc="how many to keep (at most the dim's size)"),
     AttrSpec("dim", "int", -1),
     AttrSpec("largest", "bool", True)),
    function=True, resolve=resolve_dim, dynamic=True,
    dtypes=lambda a, ins: [ins[0].dtype, "int64"]))


def _resolve_take(a, shapes, ctx):
    x, idx = shapes
    if len(x) == 0:
        ctx.fail("needs a tensor of rank 1 or more to take rows from")
    if len(idx) != 1:
        ctx.fail(f"indices must be a rank-1 tensor (a list of row numbers), got rank {len(idx)} "
                 f"{D.fmt_shape(idx)}")
    return a


def _check_take(inputs, ctx):
    idx = inputs[1]
    if idx.dtype != "int64":
        ctx.fail(f"indices must be int64 (as topk's indices are), got {idx.dtype}")


register(OpSpec(
    "take",
    "Rows of x by index along dim 0 (x[indices]): `take(x, indices)` with int64 indices "
    "[K] gives [K, ...x.shape[1:]].",
    lambda a, s, ctx: [(s[1][0],) + tuple(s[0][1:])],
    inputs=2, function=True, resolve=_resolve_take, check_inputs=_check_take,
    dtypes=lambda a, ins: [ins[0].dtype]))
