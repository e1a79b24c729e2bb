"""One ONNX emitter per op: (builder, node, input names, output names) -> None.

Each emitter must produce exactly the node's output names, so that value_info and
graph outputs line up with the IR's values.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ...ir import dims as D
from .builder import DOUBLE, FLOAT, INT64, OnnxBuilder, reduce

EMITTERS: dict = {}


def emitter(*names):
    def deco(fn):
        for n in names:
            EMITTERS[n] = fn
        return fn
    return deco


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
    """torch's output_padding first un-crops up to `padding` rows at the end of the full
    transposed convolution, then appends rows (bias only). onnxruntime rejects
    output_padding >= stride, which torch allows when output_padding < dilation; then the full
    result is cropped and extended by one Pad with negative begin pads."""
    a = node.attrs
    begin, op_ = [p[0] for p in a["pads"]], a["output_padding"]
    extra = [max(o - p, 0) for o, p in zip(op_, begin)]
    kw = dict(kernel_shape=list(a["kernel_size"]), strides=list(a["stride"]), dilations=list(a["dilation"]),
              group=a["groups"])
    bias = [b.weight(node, "bias")] if a["bias"] else []
    if all(e < s for e, s in zip(extra, a["stride"])):
        end = [max(p - o, 0) for o, p in zip(op_, begin)]
        b.add("ConvTranspose", [ins[0], b.weight(node, "weight")] + bias, outs, pads=begin + end,
              output_padding=extra, **kw)
        return
    y = b.add("ConvTranspose", [ins[0], b.weight(node, "weight")], "deconv", **kw)
    pads = [0, 0] + [-p for p in begin] + [0, 0] + [o - p for o, p in zip(op_, begin)]
    if not bias:
        b.add("Pad", [y, b.ints(pads)], outs)
        return
    y = b.add("Pad", [y, b.ints(pads)], "deconv_padded")
    b.add("Add", [y, b.add("Unsqueeze", [bias[0], b.ints([1, 2])], "bias_c11")], outs)


# ---- linear, reshaping ---------------------------------------------------------------------
@emitter("Linear")
def _linear(b, node, ins, outs):
    a = node.attrs
    w = b.weight(node, "weight")
    if node.inputs[0].rank == 2:
        args = [ins[0], w] + ([b.weight(node, "bias")] if a["bias"] else [])
        b.add("Gemm", args, outs, transB=1)
        return
    lead = node.outputs[0].shape[:-1]
    static = all(D.is_static(d) for d in lead)
    if node.inputs[0].rank == 4 and a["bias"] and (static or b.opset >= 14):
        # [N, H, W, C] (channels-last, ConvNeXt's and Swin's MLPs): as one Gemm over [N*H*W, C],
        # the form onnxruntime gives MatMul + Add itself when the sizes are fixed. On symbolic
        # sizes it cannot, and it then fuses the Add into the following GELU instead, which is slower.
        # A run-time shape may hold a 0 (H = 0), which Reshape reads as "copy the input's dim"
        # unless allowzero (opset 14): below 14 symbolic sizes take MatMul + Add.
        flat = b.add("Reshape", [ins[0], b.ints([-1, node.inputs[0].shape[-1]])], "rows")
        y = b.add("Gemm", [flat, w, b.weight(node, "bias")], "gemm", transB=1)
        if static:
            b.add("Reshape", [y, b.ints([*lead, a["out_features"]])], outs)
        else:
            shape = b.add("Concat", [b.shape_dims(ins[0], 0, 3), b.ints([a["out_features"]])], "shape", axis=0)
            b.add("Reshape", [y, shape], outs, allowzero=1)
        return
    project(b, ins[0], w, b.weight(node, "bias") if a["bias"] else None, "matmul", outs)


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


@emitter("FrozenBatchNorm2d")
def _frozen_bn(b, node, ins, outs):
    b.add("BatchNormalization", [ins[0]] + [b.weight(node, p) for p in ("weight", "bias", "running_mean",
                                                                        "running_var")],
          outs, epsilon=node.attrs["eps"])


@emitter("Dropout")
def _identity(b, node, ins, outs):
    b.add("Identity", ins[:1], outs)


# ---- activations -----------------------------------------------------------------------
def _simple(op_type, **fixed):
    def emit(b, node, ins, outs):
        b.add(op_type, ins, outs, **fixed)
    return emit


EMITTERS["Identity"] = _simple("Identity")
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
    if b.opset >= 20:
        b.add("Gelu", [x], outs, approximate=node.attrs["approximate"])
        return
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


@emitter("ReLU6")
def _relu6(b, node, ins, outs):
    b.add("Clip", [ins[0], b.const(np.float32(0.0), "zero"), b.const(np.float32(6.0), "six")], outs)


@emitter("Hardsigmoid")
def _hardsigmoid(b, node, ins, outs):
    """torch's relu6(x + 3) / 6 is ONNX's max(0, min(1, x / 6 + 0.5))."""
    b.add("HardSigmoid", ins, outs, alpha=1.0 / 6, beta=0.5)


@emitter("Hardswish")
def _hardswish(b, node, ins, outs):
    if b.opset >= 14:
        b.add("HardSwish", ins, outs)
        return
    b.add("Mul", [ins[0], b.add("HardSigmoid", ins, "hardsigmoid", alpha=1.0 / 6, beta=0.5)], outs)


@emitter("Mish")
def _mish(b, node, ins, outs):
    if b.opset >= 18:
        b.add("Mish", ins, outs)
        return
    b.add("Mul", [ins[0], b.add("Tanh", [b.add("Softplus", ins, "softplus")], "tanh")], outs)


@emitter("PReLU")
def _prelu(b, node, ins, outs):
    """The slope [C] reshaped to [C, 1, ..., 1], so that it broadcasts over dim 1 (ONNX
    broadcasts from the last dim); a single slope [1] broadcasts as it is."""
    w = b.weight(node, "weight")
    n, rank = node.attrs["num_parameters"], node.inputs[0].rank
    if n > 1 and rank > 2:
        w = b.add("Reshape", [w, b.ints([n] + [1] * (rank - 2))], "slope")
    b.add("PRelu", [ins[0], w], outs)


# ---- pooling ------------------------------------------------------------------------------
@emitter("MaxPool2d", "AvgPool2d")
def _pool(b, node, ins, outs):
    """Pooling in floor mode. torch's ceil_mode becomes an end pad of min(pad + stride, span) - 1,
    which gives torch's window count for every input size, including its rule that drops a
    last window starting in the right padding (ONNX's ceil_mode has no such rule)."""
    a = node.attrs
    k, s, p, d = a["kernel_size"], a["stride"], list(a["padding"]), a["dilation"]
    begin = p
    end = [min(pi + si, di * (ki - 1) + 1) - 1 for ki, si, pi, di in zip(k, s, p, d)] if a["ceil_mode"] else p
    x = ins[0]
    kw = dict(kernel_shape=list(k), strides=list(s))
    if node.op == "MaxPool2d":
        if any(di > 1 for di in d) and any(begin + end):
            # padding by -inf, as torch pads: ceil mode's end pad may exceed the kernel, which
            # onnxruntime rejects (a window wholly in the padding, where torch gives -inf and
            # onnxruntime the lowest float, is refused by the checker)
            pads = b.ints([0, 0] + begin + [0, 0] + end)
            x = b.add("Pad", [x, pads, b.const(np.float32(-np.inf), "neg_inf")], "padded")
            begin = end = [0, 0]
        if any(di != 1 for di in d):
            kw["dilations"] = list(d)
        b.add("MaxPool", [x], outs, pads=begin + end, **kw)
        return
    include = a["count_include_pad"] and any(p)
    if a["ceil_mode"] and include:
        # torch's divisor counts the padding but not a window's overhang past it
        x = b.add("Pad", [x, b.ints([0, 0] + p + [0, 0] + p)], "padded")
        begin, end, include = [0, 0], [e - pi for e, pi in zip(end, p)], False
    b.add("AveragePool", [x], outs, pads=begin + end, count_include_pad=int(include), **kw)


@emitter("GlobalAvgPool2d")
def _gap(b, node, ins, outs):
    b.add("GlobalAveragePool", ins, outs)


@emitter("GlobalMaxPool2d")
def _gmp(b, node, ins, outs):
    b.add("GlobalMaxPool", ins, outs)


@emitter("AdaptiveAvgPool2d", "AdaptiveMaxPool2d")
def _adaptive(b, node, ins, outs):
    _adaptive_pool(b, ins[0], node.inputs[0].shape, node.attrs["output_size"],
                   node.op == "AdaptiveMaxPool2d", outs)


def _adaptive_pool(b, x, shape, osz, is_max, outs):
    if tuple(osz) == (1, 1):
        b.add("GlobalMaxPool" if is_max else "GlobalAveragePool", [x], outs)
        return
    if all(D.is_static(s) and s % o == 0 for s, o in zip(shape[2:], osz)):
        k = [s // o for s, o in zip(shape[2:], osz)]
        if k == [1, 1]:
            b.add("Identity", [x], outs)
        else:
            b.add("MaxPool" if is_max else "AveragePool", [x], outs, kernel_shape=k, strides=k)
        return
    (_adaptive_max_masked if is_max else _adaptive_avg_matrix)(b, x, shape, osz, outs)


def _static_bins(length: int, o: int, paper: bool = False) -> np.ndarray:
    pos, i = np.arange(length), np.arange(o).reshape(o, 1)
    if paper:
        return (pos >= i * (length // o)) & (pos < i * (length // o) - (-length // o))
    return (pos >= i * length // o) & (pos < -(-(i + 1) * length // o))


def _bin_masks(b, x: str, axis: int, o: int, length, paper: bool = False) -> str:
    """[o, L] bool mask: true where position l lies in adaptive bin i of an axis of length L.
    Bin i covers [floor(i L / o), ceil((i + 1) L / o)); computed at run time if L is symbolic.
    paper: the bins of spatial pyramid pooling's paper, [i floor(L / o), i floor(L / o) + ceil(L / o))."""
    if D.is_static(length):
        return b.const(_static_bins(length, o, paper), "in_bin")
    length = b.shape_dims(x, axis, axis + 1, "len")                       # [1]
    pos = b.add("Range", [b.ints(0), b.add("Squeeze", [length, b.ints([0])], "l"), b.ints(1)], "pos")
    idx = b.ints(np.arange(o).reshape(o, 1))                              # [o, 1]
    if paper:
        stride = b.add("Div", [length, b.ints(o)], "stride")
        window = b.add("Div", [b.add("Add", [length, b.ints(o - 1)], "l_up"), b.ints(o)], "window")
        start = b.add("Mul", [idx, stride], "start")
        end = b.add("Add", [start, window], "end")
    else:
        start = b.add("Div", [b.add("Mul", [idx, length], "il"), b.ints(o)], "start")
        i1 = b.ints(np.arange(1, o + 1).reshape(o, 1))
        end = b.add("Div", [b.add("Add", [b.add("Mul", [i1, length], "i1l"), b.ints(o - 1)], "e"),
                            b.ints(o)], "end")
    ge = b.add("GreaterOrEqual", [pos, start], "ge")
    lt = b.add("Less", [pos, end], "lt")
    return b.add("And", [ge, lt], "in_bin")


def _adaptive_avg_matrix(b, x, shape, osz, outs, paper=False):
    """Adaptive average pooling as two matrix products with bin-averaging matrices."""
    mats = []
    for axis, o in ((2, osz[0]), (3, osz[1])):
        if D.is_static(shape[axis]):
            m = _static_bins(shape[axis], o, paper).astype(np.float32)
            mats.append(b.const(m / m.sum(1, keepdims=True), "bin_w"))
            continue
        m = b.add("Cast", [_bin_masks(b, x, axis, o, shape[axis], paper)], "mask_f", to=FLOAT)
        count = b.add("ReduceSum", [m, b.ints([1])], "count", keepdims=1)
        mats.append(b.add("Div", [m, count], "bin_w"))
    ph, pw = mats
    pw_t = b.add("Transpose", [pw], "bin_w_t", perm=[1, 0])
    rows = b.add("MatMul", [ph, x], "rows")          # [o_h, H] @ [N, C, H, W] -> [N, C, o_h, W]
    b.add("MatMul", [rows, pw_t], outs)


def _adaptive_max_masked(b, x, shape, osz, outs, paper=False):
    """Adaptive max pooling: max over each bin, one axis at a time."""
    neg = b.const(np.float32(-np.inf), "neg_inf")
    # [N, C, H, 1, W] against mask [o_w, W] -> [N, C, H, o_w, W], max over W
    mask = _bin_masks(b, x, 3, osz[1], shape[3], paper)
    picked = b.add("Where", [mask, b.add("Unsqueeze", [x, b.ints([3])], "unsq"), neg], "masked")
    cur = reduce(b, "ReduceMax", picked, [4], keepdims=0)
    # [N, C, 1, H, o_w] against mask [o_h, H, 1] -> [N, C, o_h, H, o_w], max over H
    mask = b.add("Unsqueeze", [_bin_masks(b, x, 2, osz[0], shape[2], paper), b.ints([2])], "mask3")
    picked = b.add("Where", [mask, b.add("Unsqueeze", [cur, b.ints([2])], "unsq"), neg], "masked")
    reduce(b, "ReduceMax", picked, [3], keepdims=0, out=outs)


# ---- spatial pyramid and power-average pooling ------------------------------------------
@emitter("SpatialPyramidPool2d")
def _pyramid(b, node, ins, outs):
    """Each level pooled to n x n bins, flattened to [N, C n^2], the levels concatenated.
    Adaptive bins as AdaptiveMax/AvgPool2d's emitter, so one file serves every H and W
    (torch.onnx.export of adaptive pooling needs sizes that divide by the output size). The
    paper's bins, window ceil(a / n) and stride floor(a / n), as MaxPool / AveragePool where H
    and W are static, else as masks over those windows."""
    a = node.attrs
    x, shape = ins[0], node.inputs[0].shape
    is_max = a["mode"] == "max"
    flat = []
    for n in a["levels"]:
        pooled = b.fresh(f"level{n}")
        if a["bins"] == "adaptive" or n == 1:         # one paper bin is the whole map as well
            _adaptive_pool(b, x, shape, (n, n), is_max, [pooled])
        elif all(D.is_static(s) for s in shape[2:]):
            b.add("MaxPool" if is_max else "AveragePool", [x], [pooled],
                  kernel_shape=[-(-int(s) // n) for s in shape[2:]], strides=[int(s) // n for s in shape[2:]])
        else:
            (_adaptive_max_masked if is_max else _adaptive_avg_matrix)(b, x, shape, (n, n), [pooled],
                                                                       paper=True)
        flat.append(b.add("Flatten", [pooled], f"level{n}_flat", axis=1))
    b.add("Concat", flat, outs, axis=1)


@emitter("LPPool2d")
def _lp_pool(b, node, ins, outs):
    """torch's lp_pool2d: avg_pool2d of x^p times kw * kh, to the power 1 / p. Its average has
    no padding, so a last window that ceil_mode clips at the end is divided by the part inside
    (count_include_pad=0 here, with _pool's end pad for ceil_mode). torch's sign(s) * relu(|s|)
    before the product changes no value. (ONNX's LpPool sums |x|^p: it differs for odd p and
    for clipped windows.)"""
    a = node.attrs
    k, s, p = a["kernel_size"], a["stride"], a["norm_type"]
    end = [min(si, ki) - 1 for ki, si in zip(k, s)] if a["ceil_mode"] else [0, 0]
    powered = b.add("Pow", [ins[0], b.const(np.float32(p), "p")], "x_pow")
    mean = b.add("AveragePool", [powered], "pow_mean", kernel_shape=list(k), strides=list(s),
                 pads=[0, 0] + end, count_include_pad=0)
    total = b.add("Mul", [mean, b.const(np.float32(k[0] * k[1]), "window")], "pow_sum")
    b.add("Pow", [total, b.const(np.float32(1.0 / p), "inv_p")], outs)


# ---- tensor functions ----------------------------------------------------------------------
@emitter("add", "sub", "mul", "div")
def _arith(b, node, ins, outs):
    """Two tensors, or a tensor and its number as a float32 scalar constant (on the left where
    the spec wrote it there: `1 - x`)."""
    op_type = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div"}[node.op]
    if len(ins) == 2:
        b.add(op_type, ins, outs)
        return
    num = b.const(np.float32(node.attrs["scalar"]), "scalar")
    b.add(op_type, [num, ins[0]] if node.attrs["reverse"] else [ins[0], num], outs)


EMITTERS["neg"] = _simple("Neg")


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


@emitter("crop")
def _crop(b, node, ins, outs):
    """Slice dims 2.. of x from the fixed offsets to offset + like's size there."""
    x, like = ins
    offsets = list(node.attrs["offset"])
    axes = list(range(2, 2 + len(offsets)))
    dst = node.inputs[1].shape[2:]
    if all(D.is_static(d) for d in dst):
        ends = b.ints([k + int(d) for k, d in zip(offsets, dst)])
    else:
        ends = b.add("Add", [b.shape_dims(like, 2, hint="like_hw"), b.ints(offsets)], "end")
    b.add("Slice", [x, b.ints(offsets), ends, b.ints(axes)], outs)


@emitter("resize")
def _resize(b, node, ins, outs):
    """torch's rule (see `resize` in docs/language.md): output lengths floor(L * scale) in
    double, positions read from 1 / scale. ONNX Resize sizes its output in float32 from
    scales= and maps positions from out / L with sizes=, so it serves only where that agrees."""
    a = node.attrs
    x, scale = ins[0], a["scale"]
    if all(D.is_static(d) and d == 1 for d in node.inputs[0].shape[2:]):
        # a 1 x 1 map (DeepLabV3's pooled ASPP branch): every mode fills the output with its one
        # value (torch's bilinear weighs it by w0 + w1 = 1, within rounding). An Expand is a
        # plain copy where onnxruntime's Resize interpolates.
        def hw():       # built only where used: no unused constants in a static file
            return [_resized_len(b, node, ins, axis) for axis in (2, 3)]
        if b.direct_resize and not any(D.is_static(d) and d == 0 for d in node.outputs[0].shape[2:]):
            # the same copy as a nearest Resize by scales [1, 1, H', W'] (exact in float32: any
            # position floors to 0): constant once the sizes are (a static file, or onnxruntime's
            # constant folding when the session fixes them), it runs as an NCHWc Upsample, and the
            # concat it feeds (DeepLabV3's ASPP) stays in NCHWc layout
            if all(D.is_static(d) for d in node.outputs[0].shape[2:]):
                scales = b.const(np.array([1, 1, *node.outputs[0].shape[2:]], np.float32), "scales")
            else:
                hw_f = b.add("Cast", [b.add("Concat", hw(), "out_hw", axis=0)], "out_hw_f", to=FLOAT)
                scales = b.add("Concat", [b.const(np.ones(2, np.float32), "ones"), hw_f], "scales", axis=0)
            b.add("Resize", [x, "", scales], outs, mode="nearest",
                  coordinate_transformation_mode="asymmetric", nearest_mode="floor")
            b.direct_resized = True
            return
        b.add("Expand", [x, b.add("Concat", [b.ints([1, 1]), *hw()], "expand_shape", axis=0)], outs)
        return
    whole = scale is not None and all(float(s).is_integer() for s in scale)
    if a["mode"] == "bilinear":
        if scale is not None and not a["align_corners"] and not whole:
            _bilinear_taps(b, node, ins, outs)
            return
        # half_pixel rather than pytorch_half_pixel: torch maps an output of length 1 like any other
        kw = dict(mode="linear",
                  coordinate_transformation_mode="align_corners" if a["align_corners"] else "half_pixel")
        # whole scales without align_corners: float32 sizes and positions are exact, scales serve
        _linear_resize_merged(b, node, ins, outs, kw, scale if whole and not a["align_corners"] else None)
        return
    if whole and all(Fraction(float(np.float32(1 / s))) >= Fraction(1, int(s)) for s in scale):
        # whole scales whose float32 reciprocal is not below 1 / s: ONNX's floor(i / s) is torch's index
        b.add("Resize", [x, "", b.const(np.array([1, 1, *scale], np.float32), "scales")], outs,
              mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        return
    ks = [_exact_multiple(node.inputs[0].shape[i], node.outputs[0].shape[i]) for i in (2, 3)]
    if scale is None and all(k and not k & (k - 1) for k in ks):
        # like= a tensor whose sizes are provably k times the input's (an FPN's top-down path), k a
        # power of two: torch reads floor(j / k) (its float32 ratio L / out is exact), as ONNX's
        # nearest Resize by scales k does; a Resize runs as one NCHWc Upsample, not two Gathers
        b.add("Resize", [x, "", b.const(np.array([1, 1, *ks], np.float32), "scales")], outs,
              mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        return
    rows = b.add("Gather", [x, _nearest_index(b, node, ins, 2)], "rows", axis=2)
    b.add("Gather", [rows, _nearest_index(b, node, ins, 3)], outs, axis=3)


def _exact_multiple(length, out, most: int = 8):
    """k when `out` is k * `length` for every input size (1 <= k <= most), else None."""
    for k in range(1, most + 1):
        if D.same(out, D.mul(length, k)) is True:
            return k
    return None


def _linear_resize_merged(b, node, ins, outs, kw: dict, scale=None):
    """Resize(mode=linear) of x [N, C, H, W] viewed as [N * C, 1, H, W]: by `scale` if given, else
    to its output sizes; the result is viewed as [N, C, H', W'].

    Why the Reshapes: onnxruntime's CPU linear Resize takes a 4-D input only when it resizes the
    last two axes (or the middle two, NHWC), and at its default optimisation level its transpose
    optimiser pushes neighbouring Transposes through a Resize, which can move the resized axes: a
    valid model then fails to run ("'Linear' mode only supports: ... 4-D inputs with the
    corresponding outermost 2 scale values being 1"), e.g. permute -> resize -> transpose. The
    optimiser does not move Transposes through a Reshape. (Its Resize handling:
    microsoft/onnxruntime#9857, #9870, #17664. opset 18's `axes=[2, 3]` fares worse there; a 3-D
    Resize runs as a slower trilinear one.)

    Where the graph has no Transpose the optimiser could move (b.direct_resize, decided in
    export.build_graph_proto), the Resize runs on x itself: with constant scales or sizes (a
    static file, or sizes fixed when the session starts) onnxruntime's NCHWc transformer runs it
    as an NCHWc Upsample, without the Reshapes' copy."""
    x = ins[0]
    in_shape, out_shape = node.inputs[0].shape, node.outputs[0].shape
    if scale is None and not node.attrs["align_corners"] and all(
            D.is_static(d) and d > 0 for d in [*in_shape[2:], *out_shape[2:]]):
        ratio = [out_shape[axis] / in_shape[axis] for axis in (2, 3)]
        if all(r.is_integer() for r in ratio):      # e.g. `like =` with static sizes, 8x
            scale = ratio

    def dims(shape, start, end, hint):      # [ints] when static, else a name read at run time
        part = shape[start:end]
        if all(D.is_static(d) for d in part):
            return [int(d) for d in part]
        return b.shape_dims(x, start, end, hint)

    def cat(parts, hint):
        if all(isinstance(p, list) for p in parts):
            return b.ints([d for p in parts for d in p], hint)
        return b.add("Concat", [b.ints(p) if isinstance(p, list) else p for p in parts], hint, axis=0)

    if b.direct_resize and scale is not None:
        b.add("Resize", [x, "", b.const(np.array([1, 1, *scale], np.float32), "scales")], outs, **kw)
        b.direct_resized = True
        return
    nc = dims(in_shape, 0, 2, "nc")
    hw_out = [[int(out_shape[axis])] if D.is_static(out_shape[axis]) else _resized_len(b, node, ins, axis)
              for axis in (2, 3)]
    if b.direct_resize:
        b.add("Resize", [x, "", "", cat([nc, *hw_out], "sizes")], outs, **kw)
        b.direct_resized = True
        return
    # N * C first: a Reshape copies a 0 from its input, so a batch of 0 stays 0
    if isinstance(nc, list):
        merged = [[nc[0] * nc[1], 1]]
    else:
        merged = [b.add("ReduceProd", [nc], "nc_prod", keepdims=1), [1]]
    xm = b.add("Reshape", [x, cat([*merged, dims(in_shape, 2, 4, "hw_in")], "merged_shape")], "merged")
    if scale is not None:
        scales = b.const(np.array([1, 1, *scale], np.float32), "scales")
        ym = b.add("Resize", [xm, "", scales], "resized", **kw)
    else:
        ym = b.add("Resize", [xm, "", "", cat([*merged, *hw_out], "sizes")], "resized", **kw)
    b.add("Reshape", [ym, cat([nc, *hw_out], "unmerged_shape")], outs)


def _bilinear_taps(b, node, ins, outs):
    """Bilinear resize by scale= without align_corners, written out as torch computes it: along
    W, then H, out[j] = x[i0] * w0 + x[i1] * w1 with the taps of `_linear_taps`."""
    x_shape, y_shape = node.inputs[0].shape, node.outputs[0].shape
    axes = [axis for axis in (3, 2)                     # torch copies an axis it does not resize
            if not (D.is_static(x_shape[axis]) and x_shape[axis] == y_shape[axis])]
    if not axes:
        b.add("Identity", [ins[0]], outs)
        return
    y = ins[0]
    for axis in axes:
        i0, i1, w0, w1 = _linear_taps(b, node, ins, axis)
        if axis == 2:                                   # weights [out, 1] against [N, C, out, W]
            w0, w1 = (b.add("Unsqueeze", [w, b.ints([1])], "w_col") for w in (w0, w1))
        lo = b.add("Mul", [b.add("Gather", [y, i0], "lo_in", axis=axis), w0], "lo")
        hi = b.add("Mul", [b.add("Gather", [y, i1], "hi_in", axis=axis), w1], "hi")
        y = b.add("Add", [lo, hi], outs if axis == axes[-1] else "resized_w")


def _linear_taps(b, node, ins, axis: int):
    """(i0, i1, w0, w1) along `axis`: torch's bilinear source positions and weights, in float32,
    src = max(r * (j + 0.5) - 0.5, 0) with r = float32(1 / scale), i0 = min(floor(src), L - 1),
    i1 = min(i0 + 1, L - 1), w1 = clamp(src - i0, 0, 1), w0 = 1 - w1; an output as long as its
    input copies it (i0 = i1 = j, w0 = 1). Constants when the sizes are static."""
    length, n_out = node.inputs[0].shape[axis], node.outputs[0].shape[axis]
    r = np.float32(1 / node.attrs["scale"][axis - 2])
    half, zero, one = np.float32(0.5), np.float32(0), np.float32(1)
    if D.is_static(length) and D.is_static(n_out):
        src = np.maximum(r * (np.arange(n_out, dtype=np.float32) + half) - half, zero)
        i0 = np.minimum(np.floor(src).astype(np.int64), length - 1)
        w1 = np.minimum(np.maximum(src - i0.astype(np.float32), zero), one)
        return (b.ints(i0, "i0"), b.ints(np.minimum(i0 + 1, length - 1), "i1"),
                b.const(one - w1, "w0"), b.const(w1, "w1"))
    length = b.shape_dims(ins[0], axis, axis + 1, "len")                 # [1]
    n_out = _resized_len(b, node, ins, axis)
    j = b.add("Range", [b.ints(0), b.add("Squeeze", [n_out, b.ints([0])], "n"), b.ints(1)], "j")
    jf = b.add("Add", [b.add("Cast", [j], "j_f", to=FLOAT), b.const(half, "half")], "j_half")
    src = b.add("Sub", [b.add("Mul", [jf, b.const(r, "inv_scale")], "src_s"), b.const(half, "half")], "src_h")
    src = b.add("Max", [src, b.const(zero, "zero")], "src")
    last = b.add("Sub", [length, b.ints([1])], "last")
    i0 = b.add("Min", [b.add("Cast", [b.add("Floor", [src], "src_fl")], "src_i", to=INT64), last], "i0")
    w1 = b.add("Sub", [src, b.add("Cast", [i0], "i0_f", to=FLOAT)], "frac")
    w1 = b.add("Min", [b.add("Max", [w1, b.const(zero, "zero")], "frac_lo"), b.const(one, "one")], "w1")
    i1 = b.add("Min", [b.add("Add", [i0, b.ints([1])], "next"), last], "i1")
    w0 = b.add("Sub", [b.const(one, "one"), w1], "w0")
    same = b.add("Equal", [n_out, length], "same")
    return (b.add("Where", [same, j, i0], "i0_c"), b.add("Where", [same, j, i1], "i1_c"),
            b.add("Where", [same, b.const(one, "one"), w0], "w0_c"),
            b.add("Where", [same, b.const(zero, "zero"), w1], "w1_c"))


def _resized_len(b, node, ins, axis: int) -> str:
    """[1] int64: the output length along `axis`, at run time if symbolic; from scale=, it is
    floor(L * scale) in double, as torch computes it."""
    a = node.attrs
    n_out = node.outputs[0].shape[axis]
    if D.is_static(n_out):
        return b.ints([n_out])
    if a["like"]:       # from the graph input's shape where it gives it (see OnnxBuilder.input_dim)
        return b.input_dim(n_out, "out_len") or b.shape_dims(ins[1], axis, axis + 1, "out_len")
    length = b.add("Cast", [b.shape_dims(ins[0], axis, axis + 1, "len")], "len_d", to=DOUBLE)
    prod = b.add("Mul", [length, b.const(np.float64(a["scale"][axis - 2]), "scale_d")], "prod")
    return b.add("Cast", [b.add("Floor", [prod], "floor")], "out_len", to=INT64)


def _nearest_index(b, node, ins, axis: int) -> str:
    """The input positions torch's nearest mode reads along `axis`: min(floor(j * r), L - 1) in
    float32, with r = float32(1 / scale) or float32(L) / out, and exact special cases
    out == L and out == 2 L. Constant when the sizes are static."""
    a = node.attrs
    length, n_out = node.inputs[0].shape[axis], node.outputs[0].shape[axis]
    scale = a["scale"][axis - 2] if a["scale"] is not None else None
    if D.is_static(length) and D.is_static(n_out):
        j = np.arange(n_out)
        if n_out in (length, 2 * length):
            return b.ints(j * length // n_out, "nearest_idx")
        r = np.float32(1 / scale) if scale is not None else np.float32(length) / np.float32(n_out)
        return b.ints(np.minimum(np.floor(j.astype(np.float32) * r), length - 1), "nearest_idx")
    length = b.shape_dims(ins[0], axis, axis + 1, "len")                  # [1]
    n_out = _resized_len(b, node, ins, axis)
    j = b.add("Range", [b.ints(0), b.add("Squeeze", [n_out, b.ints([0])], "n"), b.ints(1)], "j")
    if scale is not None:
        r = b.const(np.float32(1 / scale), "inv_scale")
    else:
        out_f = b.add("Cast", [n_out], "out_f", to=FLOAT)
        r = b.add("Div", [b.add("Cast", [length], "len_f", to=FLOAT), out_f], "r")
    src = b.add("Floor", [b.add("Mul", [b.add("Cast", [j], "j_f", to=FLOAT), r], "jr")], "src_f")
    last = b.add("Sub", [length, b.ints([1])], "last")
    idx = b.add("Min", [b.add("Cast", [src], "src", to=INT64), last], "idx")
    if scale is None:       # r is then exactly 1 or 1/2 in torch's special cases
        return idx
    same = b.add("Equal", [n_out, length], "same")
    double = b.add("Equal", [n_out, b.add("Mul", [length, b.ints([2])], "twice")], "double")
    idx = b.add("Where", [double, b.add("Div", [j, b.ints([2])], "half"), idx], "idx2")
    return b.add("Where", [same, j, idx], "nearest_idx")


@emitter("StochasticPool2d")
def _stochastic_pool(b, node, ins, outs):
    """The eval form, sum(a^2) / sum(a) per window and 0 for an all-zero one: AveragePool of x * x
    over AveragePool of x (the same divisor cancels), a zero window divided by 1 instead."""
    a = node.attrs
    kw = dict(kernel_shape=list(a["kernel_size"]), strides=list(a["stride"]), pads=list(a["padding"]) * 2,
              count_include_pad=1)
    x = ins[0]
    num = b.add("AveragePool", [b.add("Mul", [x, x], "sq")], "sq_mean", **kw)
    den = b.add("AveragePool", [x], "mean", **kw)
    nonzero = b.add("Greater", [den, b.const(np.float32(0), "zero")], "nonzero")
    den = b.add("Where", [nonzero, den, b.const(np.float32(1), "one")], "divisor")
    b.add("Div", [num, den], outs)


@emitter("LocalResponseNorm")
def _lrn(b, node, ins, outs):
    """ONNX's LRN centres the channel window as torch does only for odd sizes; otherwise torch's
    formula is written out on [N, 1, C, rest], with its window padded by size // 2 channels
    before and (size - 1) // 2 after."""
    a = node.attrs
    x, size = ins[0], a["size"]
    if size % 2 and node.inputs[0].rank == 4:
        b.add("LRN", [x], outs, size=size, alpha=a["alpha"], beta=a["beta"], bias=a["k"])
        return
    sq = b.add("Mul", [x, x], "sq")
    sq = b.add("Reshape", [b.add("Unsqueeze", [sq, b.ints([1])], "sq5"), b.ints([0, 0, 0, -1])], "sq4")
    padded = b.add("Pad", [sq, b.ints([0, 0, size // 2, 0, 0, 0, (size - 1) // 2, 0])], "padded")
    pooled = b.add("AveragePool", [padded], "pooled", kernel_shape=[size, 1])
    div = b.add("Reshape", [pooled, b.add("Shape", [x], "x_shape")], "div")
    div = b.add("Mul", [div, b.const(np.float32(a["alpha"]), "alpha")], "div_a")
    div = b.add("Add", [div, b.const(np.float32(a["k"]), "k")], "div_k")
    div = b.add("Pow", [div, b.const(np.float32(a["beta"]), "beta")], "div_p")
    b.add("Div", [x, div], outs)


@emitter("parameter")
def _parameter(b, node, ins, outs):
    b.add("Identity", [b.weight(node, "")], outs)


# ---- attention, shape functions, reductions ------------------------------------------------
def layer_norm_affine(b, node, size: int) -> tuple:
    """LayerNormalization's scale and bias: the node's weight and bias, or ones and zeros
    without elementwise_affine (made only where LayerNormalization takes them: no unused
    initializers below opset 17)."""
    if node.attrs["elementwise_affine"]:
        return b.weight(node, "weight"), b.weight(node, "bias")
    return b.const(np.ones(size, np.float32), "ones"), b.const(np.zeros(size, np.float32), "zeros")


def normalise_by_reduce(b, x: str, axis: int, eps: float) -> str:
    """(x - mean) / sqrt(var + eps) over `axis`, with ReduceMean: layer normalisation below
    opset 17, which has no LayerNormalization."""
    centred = b.add("Sub", [x, reduce(b, "ReduceMean", x, [axis])], "centred")
    var = reduce(b, "ReduceMean", b.add("Mul", [centred, centred], "sq"), [axis])
    std = b.add("Sqrt", [b.add("Add", [var, b.const(np.float32(eps), "eps")], "var_eps")], "std")
    return b.add("Div", [centred, std], "normed")


@emitter("LayerNorm")
def _layer_norm(b, node, ins, outs):
    a = node.attrs
    if b.opset >= 17:
        w, bias = layer_norm_affine(b, node, a["normalized_shape"])
        b.add("LayerNormalization", [ins[0], w, bias], outs, axis=-1, epsilon=a["eps"])
        return
    normed = normalise_by_reduce(b, ins[0], -1, a["eps"])
    if not a["elementwise_affine"]:
        b.add("Identity", [normed], outs)
        return
    b.add("Add", [b.add("Mul", [normed, b.weight(node, "weight")], "scaled"), b.weight(node, "bias")], outs)


def project(b, x, w, bias, hint, out=None):
    """x @ w^T + bias (bias may be None): a Linear's weight and bias on x of any rank. `out`:
    the node outputs to write it to (else new values named from `hint`)."""
    wt = b.add("Transpose", [w], hint + "_wt", perm=[1, 0])
    if not bias:
        return b.add("MatMul", [x, wt], out or hint)
    return b.add("Add", [b.add("MatMul", [x, wt], hint), bias], out or hint + "_b")


@emitter("MultiheadAttention")
def _mha(b, node, ins, outs):
    """torch's MultiheadAttention (eval): in-projection, heads as [N, h, L, d], scaled dot-product
    softmax attention, heads merged, out-projection. Reshapes copy N and L (0 entries)."""
    a = node.attrs
    e, h = a["embed_dim"], a["num_heads"]
    d = e // h
    w = b.weight(node, "in_proj_weight")
    bias = b.weight(node, "in_proj_bias") if a["bias"] else None
    if len(ins) == 1:
        qkv = project(b, ins[0], w, bias, "qkv")
        q, k, v = b.add("Split", [qkv, b.ints([e, e, e])], [b.fresh(t) for t in "qkv"], axis=-1)
    else:
        ws = b.add("Split", [w, b.ints([e, e, e])], [b.fresh("w" + t) for t in "qkv"], axis=0)
        bs = (b.add("Split", [bias, b.ints([e, e, e])], [b.fresh("b" + t) for t in "qkv"], axis=0)
              if bias else [None] * 3)
        q, k, v = (project(b, x, wi, bi, t) for x, wi, bi, t in zip(ins, ws, bs, "qkv"))
    heads = b.ints([0, 0, h, d])
    q = b.add("Transpose", [b.add("Reshape", [q, heads], "q_heads")], "q_t", perm=[0, 2, 1, 3])
    k = b.add("Transpose", [b.add("Reshape", [k, heads], "k_heads")], "k_t", perm=[0, 2, 3, 1])
    v = b.add("Transpose", [b.add("Reshape", [v, heads], "v_heads")], "v_t", perm=[0, 2, 1, 3])
    q = b.add("Mul", [q, b.const(np.float32(1 / math.sqrt(d)), "inv_sqrt_d")], "q_scaled")
    attn = b.add("Softmax", [b.add("MatMul", [q, k], "scores")], "attn", axis=-1)
    ctx = b.add("Transpose", [b.add("MatMul", [attn, v], "ctx")], "ctx_t", perm=[0, 2, 1, 3])
    merged = b.add("Reshape", [ctx, b.ints([0, 0, e])], "merged")
    project(b, merged, b.weight(node, "out_proj.weight"), b.weight(node, "out_proj.bias") if a["bias"] else None,
            "out", outs)


@emitter("matmul")
def _matmul(b, node, ins, outs):
    b.add("MatMul", ins, outs)


@emitter("reshape")
def _reshape(b, node, ins, outs):
    shape = list(node.attrs["shape"])
    if not node.attrs["like"] or 0 not in shape:
        b.add("Reshape", [ins[0], b.ints(shape)], outs)
        return
    parts = [b.shape_dims(ins[1], i, i + 1, "size") if s == 0 else b.ints([s]) for i, s in enumerate(shape)]
    b.add("Reshape", [ins[0], b.add("Concat", parts, "shape", axis=0) if len(parts) > 1 else parts[0]], outs)


@emitter("permute")
def _permute(b, node, ins, outs):
    b.add("Transpose", ins, outs, perm=list(node.attrs["dims"]))


@emitter("transpose")
def _transpose(b, node, ins, outs):
    perm = list(range(node.inputs[0].rank))
    i, j = node.attrs["dim0"], node.attrs["dim1"]
    perm[i], perm[j] = perm[j], perm[i]
    b.add("Transpose", ins, outs, perm=perm)


@emitter("expand")
def _expand(b, node, ins, outs):
    t, like = ins
    dims = node.attrs["dims"]
    parts = [b.shape_dims(like, i, i + 1, "size") if i in dims else b.ints([1])
             for i in range(node.inputs[0].rank)]
    shape = b.add("Concat", parts, "expand_shape", axis=0) if len(parts) > 1 else parts[0]
    b.add("Expand", [t, shape], outs)


@emitter("select")
def _select(b, node, ins, outs):
    b.add("Gather", [ins[0], b.ints(node.attrs["index"], "index")], outs, axis=node.attrs["dim"])


@emitter("mean", "amax")
def _reduce(b, node, ins, outs):
    op = "ReduceMean" if node.op == "mean" else "ReduceMax"
    reduce(b, op, ins[0], node.attrs["dims"], keepdims=int(node.attrs["keepdim"]), out=outs)


from . import detection  # noqa: E402,F401 - registers the detection emitters


# ---- selection: topk, take ---------------------------------------------------------------------
@emitter("topk")
def _topk(b, node, ins, outs):
    """TopK keeping min(k, size): k itself where the size is known, else Min(k, size) computed
    at run time (from the graph inputs' shapes where the size is a function of them)."""
    a = node.attrs
    d = a["dim"]
    size = node.inputs[0].shape[d]
    if D.is_static(size):
        k = b.ints([min(a["k"], int(size))], "k")
    else:
        length = b.input_dim(size, "size") or b.shape_dims(ins[0], d, d + 1, "size")
        k = b.add("Min", [b.ints([a["k"]], "k"), length], "k")
    b.add("TopK", [ins[0], k], outs, axis=d, largest=int(a["largest"]), sorted=1)


@emitter("take")
def _take(b, node, ins, outs):
    b.add("Gather", ins, outs, axis=0)


from . import detection_post  # noqa: E402,F401  (registers rpn_proposals, sample_rois, detect_postprocess)
from . import maxvit  # noqa: E402,F401  (window_partition, window_departition, RelativePositionalMultiHeadAttention)
from . import channels  # noqa: E402,F401  (ChannelShuffle, chunk, StochasticDepth, LayerNorm2d)
from . import swin  # noqa: E402,F401  (ShiftedWindowAttention, patch_merge)
