"""One ONNX emitter per op: (builder, node, input names, output names) -> None.

Each emitter must produce exactly the node's output names, so that value_info and
graph outputs line up with the IR's values.
"""
from __future__ import annotations

import math

import numpy as np

from ...ir import dims as D
from .builder import OnnxBuilder, reduce

EMITTERS: dict = {}


def emitter(*names):
    def deco(fn):
        for n in names:
            EMITTERS[n] = fn
        return fn
    return deco


def _static_dims(node, which=0):
    shape = node.inputs[which].shape
    return all(D.is_static(d) for d in shape[2:])


# ---- convolutions ----------------------------------------------------------------------
@emitter("Conv1d", "Conv2d")
def _conv(b: OnnxBuilder, node, ins, outs):
    a = node.attrs
    args = [ins[0], b.weight(node, "weight")] + ([b.weight(node, "bias")] if a["bias"] else [])
    pads = [p[0] for p in a["pads"]] + [p[1] for p in a["pads"]]
    b.add("Conv", args, outs, kernel_shape=list(a["kernel_size"]), strides=list(a["stride"]),
          pads=pads, dilations=list(a["dilation"]), group=a["groups"])


@emitter("ConvTranspose2d")
def _deconv(b, node, ins, outs):
    a = node.attrs
    args = [ins[0], b.weight(node, "weight")] + ([b.weight(node, "bias")] if a["bias"] else [])
    pads = [p[0] for p in a["pads"]] + [p[1] for p in a["pads"]]
    b.add("ConvTranspose", args, outs, kernel_shape=list(a["kernel_size"]), strides=list(a["stride"]),
          pads=pads, dilations=list(a["dilation"]), group=a["groups"],
          output_padding=list(a["output_padding"]))


# ---- linear, reshaping ---------------------------------------------------------------------
@emitter("Linear")
def _linear(b, node, ins, outs):
    a = node.attrs
    w = b.weight(node, "weight")
    if node.inputs[0].rank == 2:
        args = [ins[0], w] + ([b.weight(node, "bias")] if a["bias"] else [])
        b.add("Gemm", args, outs, transB=1)
        return
    wt = b.add("Transpose", [w], "weight_t", perm=[1, 0])
    if not a["bias"]:
        b.add("MatMul", [ins[0], wt], outs)
        return
    y = b.add("MatMul", [ins[0], wt], "matmul")
    b.add("Add", [y, b.weight(node, "bias")], outs)


@emitter("Flatten")
def _flatten(b, node, ins, outs):
    a = node.attrs
    rank = node.inputs[0].rank
    s, e = a["start_dim"], a["end_dim"]
    if e == rank - 1 and s == 1:
        b.add("Flatten", ins, outs, axis=1)
        return
    if e == rank - 1 and s == 0:
        b.add("Reshape", [ins[0], b.ints([-1])], outs)
        return
    parts = []
    if s > 0:
        parts.append(b.shape_dims(ins[0], 0, s))
    parts.append(b.ints([-1]))
    if e + 1 < rank:
        parts.append(b.shape_dims(ins[0], e + 1))
    shape = b.add("Concat", parts, "flat_shape", axis=0) if len(parts) > 1 else parts[0]
    b.add("Reshape", [ins[0], shape], outs)


# ---- normalisation ---------------------------------------------------------------------
@emitter("BatchNorm1d", "BatchNorm2d")
def _bn(b, node, ins, outs):
    a = node.attrs
    c = a["num_features"]
    if a["affine"]:
        scale, bias = b.weight(node, "weight"), b.weight(node, "bias")
    else:
        scale = b.const(np.ones(c, np.float32), "ones")
        bias = b.const(np.zeros(c, np.float32), "zeros")
    b.add("BatchNormalization", [ins[0], scale, bias, b.weight(node, "running_mean"),
                                 b.weight(node, "running_var")], outs, epsilon=a["eps"])


@emitter("Dropout")
def _identity(b, node, ins, outs):
    b.add("Identity", ins[:1], outs)


# ---- activations -----------------------------------------------------------------------
def _simple(op_type, **fixed):
    def emit(b, node, ins, outs):
        b.add(op_type, ins, outs, **fixed)
    return emit


EMITTERS["ReLU"] = _simple("Relu")
EMITTERS["Sigmoid"] = _simple("Sigmoid")
EMITTERS["Tanh"] = _simple("Tanh")


@emitter("LeakyReLU")
def _leaky(b, node, ins, outs):
    b.add("LeakyRelu", ins, outs, alpha=node.attrs["negative_slope"])


@emitter("ELU")
def _elu(b, node, ins, outs):
    b.add("Elu", ins, outs, alpha=node.attrs["alpha"])


@emitter("SiLU")
def _silu(b, node, ins, outs):
    b.add("Mul", [ins[0], b.add("Sigmoid", ins, "sigmoid")], outs)


@emitter("GELU")
def _gelu(b, node, ins, outs):
    x = ins[0]
    if node.attrs["approximate"] == "tanh":
        cube = b.add("Mul", [b.add("Mul", [x, x], "sq"), x], "cube")
        inner = b.add("Add", [x, b.add("Mul", [cube, b.const(np.float32(0.044715), "c")], "t")], "inner")
        t = b.add("Tanh", [b.add("Mul", [inner, b.const(np.float32(math.sqrt(2 / math.pi)), "k")], "u")],
                  "tanh")
    else:
        t = b.add("Erf", [b.add("Div", [x, b.const(np.float32(math.sqrt(2.0)), "sqrt2")], "scaled")], "erf")
    one_plus = b.add("Add", [t, b.const(np.float32(1.0), "one")], "one_plus")
    half_x = b.add("Mul", [x, b.const(np.float32(0.5), "half")], "half_x")
    b.add("Mul", [half_x, one_plus], outs)


@emitter("Softmax")
def _softmax(b, node, ins, outs):
    b.add("Softmax", ins, outs, axis=node.attrs["dim"])


@emitter("LogSoftmax")
def _log_softmax(b, node, ins, outs):
    b.add("LogSoftmax", ins, outs, axis=node.attrs["dim"])


# ---- pooling ------------------------------------------------------------------------------
@emitter("MaxPool2d", "AvgPool2d")
def _pool(b, node, ins, outs):
    a = node.attrs
    kw = dict(kernel_shape=list(a["kernel_size"]), strides=list(a["stride"]),
              pads=list(a["padding"]) * 2, ceil_mode=int(a["ceil_mode"]))
    if node.op == "MaxPool2d":
        if any(d != 1 for d in a["dilation"]):
            kw["dilations"] = list(a["dilation"])
        b.add("MaxPool", ins, outs, **kw)
    else:
        b.add("AveragePool", ins, outs, count_include_pad=int(a["count_include_pad"]), **kw)


@emitter("GlobalAvgPool2d")
def _gap(b, node, ins, outs):
    b.add("GlobalAveragePool", ins, outs)


@emitter("GlobalMaxPool2d")
def _gmp(b, node, ins, outs):
    b.add("GlobalMaxPool", ins, outs)


@emitter("AdaptiveAvgPool2d", "AdaptiveMaxPool2d")
def _adaptive(b, node, ins, outs):
    is_max = node.op == "AdaptiveMaxPool2d"
    size = node.inputs[0].shape[2:]
    osz = node.attrs["output_size"]
    if tuple(osz) == (1, 1):
        b.add("GlobalMaxPool" if is_max else "GlobalAveragePool", ins, outs)
        return
    if all(D.is_static(s) for s in size) and all(s % o == 0 for s, o in zip(size, osz)):
        k = [s // o for s, o in zip(size, osz)]
        if k == [1, 1]:
            b.add("Identity", ins, outs)
        else:
            b.add("MaxPool" if is_max else "AveragePool", ins, outs, kernel_shape=k, strides=k)
        return
    if is_max:
        _adaptive_max_masked(b, ins[0], osz, outs)
    else:
        _adaptive_avg_matrix(b, ins[0], osz, outs)


def _bin_masks(b, x: str, axis: int, o: int) -> str:
    """[o, L] float mask: 1 where position l lies in adaptive bin i of an axis of length L.
    Bin i covers [floor(i L / o), ceil((i + 1) L / o)), computed at run time."""
    length = b.shape_dims(x, axis, axis + 1, "len")                       # [1]
    pos = b.add("Range", [b.ints(0), b.add("Squeeze", [length, b.ints([0])], "l"), b.ints(1)], "pos")
    idx = b.ints(np.arange(o).reshape(o, 1))                              # [o, 1]
    start = b.add("Div", [b.add("Mul", [idx, length], "il"), b.ints(o)], "start")
    i1 = b.ints(np.arange(1, o + 1).reshape(o, 1))
    end = b.add("Div", [b.add("Add", [b.add("Mul", [i1, length], "i1l"), b.ints(o - 1)], "e"),
                        b.ints(o)], "end")
    ge = b.add("GreaterOrEqual", [pos, start], "ge")
    lt = b.add("Less", [pos, end], "lt")
    return b.add("And", [ge, lt], "in_bin")


def _adaptive_avg_matrix(b, x, osz, outs):
    """Adaptive average pooling as two matrix products with run-time bin matrices."""
    mats = []
    for axis, o in ((2, osz[0]), (3, osz[1])):
        m = b.add("Cast", [_bin_masks(b, x, axis, o)], "mask_f", to=1)
        count = b.add("ReduceSum", [m, b.ints([1])], "count", keepdims=1)
        mats.append(b.add("Div", [m, count], "bin_w"))
    ph, pw = mats
    pw_t = b.add("Transpose", [pw], "bin_w_t", perm=[1, 0])
    rows = b.add("MatMul", [ph, x], "rows")          # [o_h, H] @ [N, C, H, W] -> [N, C, o_h, W]
    b.add("MatMul", [rows, pw_t], outs)


def _adaptive_max_masked(b, x, osz, outs):
    """Adaptive max pooling: max over each run-time bin, one axis at a time."""
    neg = b.const(np.float32(-np.inf), "neg_inf")
    cur = x
    for axis, o in ((3, osz[1]), (2, osz[0])):
        mask = _bin_masks(b, cur, axis, o)                                  # [o, L]
        if axis == 3:
            # [N, C, H, 1, W] against mask [o, W] -> [N, C, H, o, W], max over W
            expanded = b.add("Unsqueeze", [cur, b.ints([3])], "unsq")
            picked = b.add("Where", [mask, expanded, neg], "masked")
            cur = reduce(b, "ReduceMax", picked, [4], keepdims=0)
        else:
            # [N, C, 1, H, o_w] against mask [o, H, 1] -> [N, C, o, H, o_w], max over H
            expanded = b.add("Unsqueeze", [cur, b.ints([2])], "unsq")
            mask3 = b.add("Unsqueeze", [mask, b.ints([2])], "mask3")
            picked = b.add("Where", [mask3, expanded, neg], "masked")
            cur = reduce(b, "ReduceMax", picked, [3], keepdims=0, out=outs)


# ---- tensor functions ----------------------------------------------------------------------
EMITTERS["add"] = _simple("Add")
EMITTERS["mul"] = _simple("Mul")


@emitter("concat")
def _concat(b, node, ins, outs):
    b.add("Concat", ins, outs, axis=node.attrs["dim"])


@emitter("center_crop")
def _center_crop(b, node, ins, outs):
    x, like = ins
    rank = node.inputs[0].rank
    axes = list(range(2, rank))
    static = all(D.is_static(d) for d in node.inputs[0].shape[2:] + node.inputs[1].shape[2:])
    if static:
        src, dst = node.inputs[0].shape[2:], node.inputs[1].shape[2:]
        starts = [(s - t) // 2 for s, t in zip(src, dst)]
        ends = [st + t for st, t in zip(starts, dst)]
        b.add("Slice", [x, b.ints(starts), b.ints(ends), b.ints(axes)], outs)
        return
    src = b.shape_dims(x, 2, hint="src_hw")
    dst = b.shape_dims(like, 2, hint="dst_hw")
    start = b.add("Div", [b.add("Sub", [src, dst], "margin"), b.ints(2)], "start")
    end = b.add("Add", [start, dst], "end")
    b.add("Slice", [x, start, end, b.ints(axes)], outs)


@emitter("resize")
def _resize(b, node, ins, outs):
    a = node.attrs
    if a["mode"] == "nearest":
        kw = dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    else:
        kw = dict(mode="linear",
                  coordinate_transformation_mode="align_corners" if a["align_corners"] else "pytorch_half_pixel")
    empty = ""
    if a["like"]:
        sizes = b.add("Concat", [b.shape_dims(ins[0], 0, 2, "nc"), b.shape_dims(ins[1], 2, hint="hw")],
                      "sizes", axis=0)
        b.add("Resize", [ins[0], empty, empty, sizes], outs, **kw)
    elif a["size"] is not None:
        sizes = b.add("Concat", [b.shape_dims(ins[0], 0, 2, "nc"), b.ints(list(a["size"]))], "sizes", axis=0)
        b.add("Resize", [ins[0], empty, empty, sizes], outs, **kw)
    else:
        scales = b.const(np.array([1.0, 1.0] + [float(s) for s in a["scale"]], np.float32), "scales")
        b.add("Resize", [ins[0], empty, scales], outs, **kw)


@emitter("LocalResponseNorm")
def _lrn(b, node, ins, outs):
    """PyTorch's formula, written out: it pads the channel window asymmetrically for
    even sizes, where ONNX's LRN op centres it differently."""
    a = node.attrs
    x = ins[0]
    rank = node.inputs[0].rank
    size = a["size"]
    sq = b.add("Mul", [x, x], "sq")
    u = b.add("Unsqueeze", [sq, b.ints([1])], "sq5")                 # [N, 1, C, ...]
    pads = [0] * (rank + 1) * 2
    pads[2] = size // 2
    pads[(rank + 1) + 2] = (size - 1) // 2
    padded = b.add("Pad", [u, b.ints(pads)], "padded")
    pooled = b.add("AveragePool", [padded], "pooled", kernel_shape=[size] + [1] * (rank - 2),
                   strides=[1] * (rank - 1))
    div = b.add("Squeeze", [pooled, b.ints([1])], "div")
    div = b.add("Mul", [div, b.const(np.float32(a["alpha"]), "alpha")], "div_a")
    div = b.add("Add", [div, b.const(np.float32(a["k"]), "k")], "div_k")
    div = b.add("Pow", [div, b.const(np.float32(a["beta"]), "beta")], "div_p")
    b.add("Div", [x, div], outs)
