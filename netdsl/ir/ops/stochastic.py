"""Stochastic pooling (Zeiler & Fergus 2013) and the compile-time sign analysis it needs.

While training, each window outputs one of its elements a_i, drawn with probability
p_i = a_i / sum(a); in eval (and in ONNX) it outputs the expectation sum(p_i a_i) =
sum(a^2) / sum(a), 0 for an all-zero window. Both need non-negative inputs. Where the op
producing the input is known to give negative values in general (a convolution, a
normalisation, tanh, ...), applying the pool is a located error suggesting a ReLU first.
"""
from __future__ import annotations

from ...errors import ValueRangeError
from ..registry import AttrSpec, OpSpec, register
from .pool import _infer_pool, _resolve_pool

# Ops whose outputs are >= 0 whatever their inputs.
NONNEG = frozenset({"ReLU", "Sigmoid", "Softmax", "ReLU6", "Hardsigmoid"})
# Ops whose outputs are >= 0 when all their tensor inputs are (windows, reshaping, selection,
# sums and products of such values).
PRESERVING = frozenset({"Identity", "Dropout", "Flatten", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
                        "AdaptiveMaxPool2d", "GlobalAvgPool2d", "GlobalMaxPool2d", "StochasticPool2d",
                        "LPPool2d", "SpatialPyramidPool2d", "LocalResponseNorm", "resize", "center_crop",
                        "crop", "concat", "reshape", "permute", "transpose", "expand", "select", "mean",
                        "amax", "add", "mul", "div", "ChannelShuffle", "chunk", "StochasticDepth"})
# Ops that give negative values in general, whatever their inputs.
SIGNED = frozenset({"Conv1d", "Conv2d", "ConvTranspose2d", "Linear", "BatchNorm1d", "BatchNorm2d",
                    "FrozenBatchNorm2d", "LayerNorm", "Tanh", "LeakyReLU", "ELU", "SiLU", "GELU",
                    "LogSoftmax", "matmul", "MultiheadAttention", "Hardswish", "Mish", "PReLU", "sub", "neg",
                    "LayerNorm2d"})


def _signed(n) -> bool:
    """Whether node n gives negative values in general. A tensor-and-number op (`x * 2`, `1 - x`)
    does unless it adds, multiplies or divides by a number >= 0, or subtracts one <= 0."""
    if n.op in ("add", "sub", "mul", "div") and n.attrs.get("scalar") is not None:
        c = n.attrs["scalar"]
        return (n.attrs["reverse"] or c > 0) if n.op == "sub" else c < 0
    return n.op in SIGNED


def sign_source(value):
    """The node that makes `value` negative in general, or None when `value` is non-negative or
    nothing is known (network inputs, `param` tensors, ops in no table). A value is signed
    when its producer is SIGNED (see _signed), or PRESERVING with a signed input (`x * x` of one
    input excepted)."""
    memo: dict = {}
    stack = [value]
    while stack:                    # iterative: a chain of thousands of reshapes is fine
        v = stack[-1]
        if id(v) in memo:
            stack.pop()
            continue
        n = v.producer
        if n is None or n.op in NONNEG or n.op not in PRESERVING | SIGNED:
            memo[id(v)] = None
        elif _signed(n):
            memo[id(v)] = n
        elif n.op == "mul" and len(n.inputs) == 2 and n.inputs[0] is n.inputs[1]:
            memo[id(v)] = None
        else:
            todo = [u for u in n.inputs if id(u) not in memo]
            if todo:
                stack += todo
                continue
            memo[id(v)] = next((memo[id(u)] for u in n.inputs if memo[id(u)] is not None), None)
        stack.pop()
    return memo[id(value)]


def _check_nonneg(inputs, ctx):
    src = sign_source(inputs[0])
    if src is None:
        return
    where = f" at {src.span.location()}" if src.span else ""
    raise ValueRangeError(
        f"{ctx.op}: its input can be negative (it comes from a {src.op}); stochastic pooling draws a "
        f"window's elements with probability a_i / sum(a), which needs non-negative values: put a ReLU "
        f"(or Sigmoid, Softmax) before it", ctx.span, ctx.trace,
        notes=(f"the negative values come from the {src.op}{where}",))


def _resolve(a, shapes, ctx):
    """MaxPool2d's rules, without dilation or ceil mode."""
    a = _resolve_pool(a, shapes, ctx)
    a["ceil_mode"] = False
    return a


register(OpSpec(
    "StochasticPool2d",
    "stochastic pooling (Zeiler & Fergus 2013): while training, each window outputs one element "
    "drawn with probability a_i / sum(a); in eval and ONNX, sum(a^2) / sum(a) (0 for an all-zero "
    "window). Needs non-negative inputs (zero padding).",
    _infer_pool,
    (AttrSpec("kernel_size", "pair", check="positive"),
     AttrSpec("stride", "pair", None, check="positive", doc="defaults to kernel_size"),
     AttrSpec("padding", "pair", 0, check="nonneg")),
    resolve=_resolve, check_inputs=_check_nonneg))
