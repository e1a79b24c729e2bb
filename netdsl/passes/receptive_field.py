"""Receptive fields: for each value on a convolutional path from the network's input, the size of
the input window one of its elements sees and the jump (the distance in input pixels between
neighbouring elements), per spatial axis.

The recurrence is the usual one (Araujo, Norris & Sim, "Computing Receptive Fields of
Convolutional Neural Networks", Distill 2019): a layer with kernel k, dilation d and stride s
maps (size r, jump j) to (r + (d·(k − 1)) · j, j · s). The size is the theoretical one: not
clipped to the input, and counting the padding. Other layers:

- element-wise ops, normalisation over channels, activations, dropout, channel shuffles and
  chunks, crops: unchanged;
- merges (add, sub, mul, div, concat along channels): the largest size, when every input has
  the same jump (else n/a); inputs that do not depend on the network's input (a `param`) are
  left out;
- a transposed convolution (kernel k, dilation d, stride s) whose input's jump is a multiple of
  s (a decoder undoing an encoder's strides, as in U-Net): the jump divides by s and the size
  grows by floor(d·(k − 1) / s) input elements, the most any output element sees; with a jump
  that s does not divide (upsampling past the input's resolution), n/a;
- an adaptive pooling whose input size is a multiple of its output size is a pooling with
  kernel = stride = input / output; at other sizes, or symbolic ones, n/a;
- layers mixing a whole axis (global pooling, Flatten and reshapes, Linear or LayerNorm or
  softmax over a spatial axis, attention, resizing, detection ops): n/a, as is everything after
  them (the whole input is then in view, or the field is not a window).

`receptive_fields(graph)` returns {id(value): RF | None} for every value; an RF is a tuple of
(axis, size, jump) triples over the value's spatial axes, jumps as Fractions.
"""
from __future__ import annotations

from fractions import Fraction

from ..ir import dims as D

CONST = "const"     # a value that does not depend on the network's inputs

_KERNEL_OPS = frozenset({"Conv1d", "Conv2d", "MaxPool2d", "AvgPool2d", "LPPool2d", "StochasticPool2d"})
_POINTWISE = frozenset({
    "ReLU", "ReLU6", "LeakyReLU", "ELU", "GELU", "SiLU", "Mish", "Sigmoid", "Tanh", "Hardsigmoid",
    "Hardswish", "PReLU", "BatchNorm1d", "BatchNorm2d", "FrozenBatchNorm2d", "LayerNorm2d",
    "LocalResponseNorm", "Dropout", "Identity", "StochasticDepth", "ChannelShuffle", "neg",
    "center_crop", "crop"})
_MERGE = frozenset({"add", "sub", "mul", "div"})
_ADAPTIVE = frozenset({"AdaptiveAvgPool2d", "AdaptiveMaxPool2d"})


def receptive_fields(graph) -> dict:
    state: dict = {}
    for v in graph.inputs:
        state[id(v)] = _input_rf(v)
    for n in graph.nodes:
        outs = _node_rf(n, state)
        for v, rf in zip(n.outputs, outs):
            state[id(v)] = rf
    return state


def _input_rf(v):
    if len(v.shape) < 3 or not v.dtype.startswith("float"):
        return None
    return tuple((a, 1, Fraction(1)) for a in range(2, len(v.shape)))


def _node_rf(n, state) -> list:
    k = len(n.outputs)
    op = n.op
    if op == "parameter":
        return [CONST] * k
    ins = [state.get(id(v)) for v in n.inputs]
    if ins and all(s == CONST for s in ins):
        return [CONST] * k
    if op in _KERNEL_OPS:
        return [_kernel(ins[0], n.inputs[0].shape, n.attrs)]
    if op in _POINTWISE:
        return [ins[0]] * k if _same_rank(n) else [None] * k
    if op in _MERGE:
        return [_merge(n, ins)]
    if op == "concat":
        rank = len(n.outputs[0].shape)
        dim = _axis(n.attrs.get("dim", 1), rank)
        merged = _merge(n, ins)
        return [None if _has_axis(merged, dim) else merged]
    if op == "chunk":
        rank = len(n.inputs[0].shape)
        s = ins[0]
        return [None if _has_axis(s, _axis(n.attrs.get("dim", 1), rank)) else s] * k
    if op in ("Softmax", "LogSoftmax"):
        s = ins[0]
        return [None if _has_axis(s, _axis(n.attrs.get("dim", 1), len(n.inputs[0].shape))) else s]
    if op in ("Linear", "LayerNorm"):
        rank = len(n.inputs[0].shape)
        width = len(n.attrs["normalized_shape"]) if op == "LayerNorm" and \
            isinstance(n.attrs.get("normalized_shape"), (tuple, list)) else 1
        s = ins[0]
        if not _same_rank(n) or any(_has_axis(s, rank - 1 - i) for i in range(width)):
            return [None]
        return [s]
    if op in ("permute", "transpose"):
        return [_permute(n, ins[0])]
    if op in ("mean", "amax"):
        return [_reduce(n, ins[0])]
    if op == "ConvTranspose2d":
        return [_transposed(ins[0], n.inputs[0].shape, n.attrs)]
    if op in _ADAPTIVE:
        return [_adaptive(ins[0], n.inputs[0].shape, n.outputs[0].shape)]
    return [None] * k


def _same_rank(n) -> bool:
    r = len(n.inputs[0].shape)
    return all(len(v.shape) == r for v in n.outputs)


def _axis(dim, rank):
    return dim + rank if isinstance(dim, int) and dim < 0 else dim


def _has_axis(s, axis) -> bool:
    return isinstance(s, tuple) and any(a == axis for a, _, _ in s)


def _window(s, shape, nk):
    """The entries of `s` for the last `nk` axes of a value of `shape`, or None where those are
    not exactly its spatial axes."""
    if not isinstance(s, tuple) or len(s) != nk:
        return None
    want = tuple(range(len(shape) - nk, len(shape)))
    return s if tuple(a for a, _, _ in s) == want else None


def _kernel(s, shape, attrs):
    k = attrs.get("kernel_size")
    if not isinstance(k, tuple):
        return None
    s = _window(s, shape, len(k))
    if s is None:
        return None
    stride = attrs.get("stride") or k
    dil = attrs.get("dilation") or (1,) * len(k)
    return tuple((a, r + dil[i] * (k[i] - 1) * j, j * stride[i]) for i, (a, r, j) in enumerate(s))


def _transposed(s, shape, attrs):
    k = attrs.get("kernel_size")
    if not isinstance(k, tuple):
        return None
    s = _window(s, shape, len(k))
    if s is None:
        return None
    stride, dil = attrs["stride"], attrs.get("dilation") or (1,) * len(k)
    if any(j % st for (_, _, j), st in zip(s, stride)):
        return None     # finer than the input's pixels: the field varies with the position
    return tuple((a, r + (dil[i] * (k[i] - 1) // stride[i]) * j, j / stride[i])
                 for i, (a, r, j) in enumerate(s))


def _adaptive(s, shape, out_shape):
    s = _window(s, shape, 2)
    if s is None:
        return None
    out = []
    for (a, r, j), i, o in zip(s, shape[-2:], out_shape[-2:]):
        if not (D.is_static(i) and D.is_static(o)) or o == 1 or int(i) % int(o):
            return None     # global, or windows of varying sizes
        kk = int(i) // int(o)
        out.append((a, r + (kk - 1) * j, j * kk))
    return tuple(out)


def _merge(n, ins):
    rank = len(n.outputs[0].shape)
    out_shape = n.outputs[0].shape
    merged: dict = {}
    axes = None
    for v, s in zip(n.inputs, ins):
        if s == CONST:
            continue
        if s is None:
            return None
        shift = rank - len(v.shape)
        entries = {a + shift: (r, j) for a, r, j in s}
        for a in entries:        # an input broadcast along a spatial axis: not a window
            if not D.same(v.shape[a - shift], out_shape[a]):
                return None
        if axes is None:
            axes = set(entries)
        elif axes != set(entries):
            return None
        for a, (r, j) in entries.items():
            if a in merged:
                r0, j0 = merged[a]
                if j0 != j:
                    return None
                merged[a] = (max(r0, r), j)
            else:
                merged[a] = (r, j)
    if axes is None:
        return CONST
    return tuple((a, r, j) for a, (r, j) in sorted(merged.items()))


def _permute(n, s):
    if not isinstance(s, tuple):
        return s
    rank = len(n.inputs[0].shape)
    if n.op == "permute":
        order = [_axis(d, rank) for d in n.attrs["dims"]]
    else:
        order = list(range(rank))
        d0, d1 = _axis(n.attrs["dim0"], rank), _axis(n.attrs["dim1"], rank)
        order[d0], order[d1] = order[d1], order[d0]
    where = {src: dst for dst, src in enumerate(order)}
    return tuple(sorted((where[a], r, j) for a, r, j in s))


def _reduce(n, s):
    if not isinstance(s, tuple):
        return s
    rank = len(n.inputs[0].shape)
    dims = {_axis(d, rank) for d in n.attrs["dims"]}
    if any(a in dims for a, _, _ in s):
        return None
    if n.attrs.get("keepdim", True):
        return s
    return tuple((a - sum(1 for d in dims if d < a), r, j) for a, r, j in s)


def to_json(rf):
    """{"size": [...], "jump": [...]} (a jump that is not whole as a float), or None."""
    if not isinstance(rf, tuple) or not rf:
        return None
    return {"size": [int(r) for _, r, _ in rf],
            "jump": [int(j) if j.denominator == 1 else float(j) for _, _, j in rf]}


def fmt(rf) -> str:
    """'212 (32)' for a field and jump alike on every axis, '7x3 (2x1)' else; '-' for none."""
    if not isinstance(rf, tuple) or not rf:
        return "-"
    sizes = [str(int(r)) for _, r, _ in rf]
    jumps = [str(j) for _, _, j in rf]

    def one(xs):
        return xs[0] if len(set(xs)) == 1 else "x".join(xs)
    return f"{one(sizes)} ({one(jumps)})"
