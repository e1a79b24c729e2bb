"""Torch <-> ONNX parity for every op, over meaningful attribute combinations.

Each case is a small network. It is compiled once to a torch module (eval mode)
and once to an ONNX model with symbolic input dims, then run on random inputs of
two different sizes through the same ONNX session; outputs must agree with each
other and with the shape the IR inferred.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import pytest

import netdsl
from netdsl.errors import UsageError
from netdsl.ir import dims as D

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

TOL = 1e-4
IMG = ((2, 3, 9, 11), (1, 3, 16, 7))      # default input sizes for [N, 3, H, W]


@dataclass(frozen=True)
class Case:
    id: str
    spec: str             # network body: input declarations and outputs
    sizes: tuple          # one or more runs; each run gives the shape of every input


def chain(id, layers, decl="[N, 3, H, W]", sizes=IMG):
    """One input x, one output: x -> layers."""
    return Case(id, f"input x: f32{decl}\noutput y = x -> {layers}", tuple((s,) for s in sizes))


def one(id, expr, sizes, decl="[N, 3, H, W]"):
    """One input x, output y = expr."""
    return Case(id, f"input x: f32{decl}\noutput y = {expr}", tuple((s,) for s in sizes))


def fn(id, decls, expr, sizes):
    """Several inputs (name: decl), output y = expr."""
    head = "\n".join(f"input {n}: f32{d}" for n, d in decls.items())
    return Case(id, f"{head}\noutput y = {expr}", sizes)


SEQ = ((2, 5, 12), (1, 5, 7))             # [N, 5, L]
STATIC = "[N, 3, 17, 17]"
STATIC_SIZES = ((2, 3, 17, 17), (1, 3, 17, 17))
DIV, DIV_SIZES = "[N, 3, 12, 12]", ((2, 3, 12, 12), (1, 3, 12, 12))
MIXED_SIZES = ((2, 3, 12, 8), (1, 3, 12, 13))     # for [N, 3, 12, W]
TOKENS, TOKENS6 = ((2, 5, 8), (1, 3, 8)), ((2, 5, 6), (1, 3, 6))   # [N, L, E]

CASES = [
    # ---- convolutions
    chain("conv2d", "Conv2d(8, 3)"),
    chain("conv2d-s2p1", "Conv2d(8, 3, stride = 2, padding = 1, groups = 1)"),
    chain("conv2d-same-odd", "Conv2d(4, 3, padding = 'same')"),
    chain("conv2d-same-even", "Conv2d(4, 4, padding = 'same')"),
    chain("conv2d-same-dil", "Conv2d(4, [2, 3], padding = 'same', dilation = [3, 2])"),
    chain("conv2d-valid", "Conv2d(4, 2, padding = 'valid')"),
    chain("conv2d-dil2", "Conv2d(4, 3, padding = 2, dilation = 2)"),
    chain("conv2d-groups", "Conv2d(6, 3, groups = 3, padding = 1)"),
    chain("conv2d-depthwise", "Conv2d(12, 3, 1, 1) -> Conv2d(12, 3, groups = 12)"),
    chain("conv2d-nobias", "Conv2d(5, 1, bias = false)"),
    chain("conv2d-rect", "Conv2d(4, [3, 5], stride = [2, 1], padding = [1, 2])"),
    chain("conv2d-same-static", "Conv2d(4, 4, padding = 'same')", STATIC, STATIC_SIZES),
    chain("conv2d-static", "Conv2d(4, 5, stride = 3)", decl="[2, 3, 17, 17]", sizes=((2, 3, 17, 17),)),
    chain("conv1d", "Conv1d(4, 3)", "[N, 5, L]", SEQ),
    chain("conv1d-s2p1-nobias", "Conv1d(4, 3, stride = 2, padding = 1, bias = false)", "[N, 5, L]", SEQ),
    chain("conv1d-same-even", "Conv1d(4, 4, padding = 'same', dilation = 2)", "[N, 5, L]", SEQ),
    chain("conv1d-groups", "Conv1d(10, 3, groups = 5, padding = 'valid')", "[N, 5, L]", SEQ),
    chain("deconv", "ConvTranspose2d(4, 3)"),
    chain("deconv-s2p1op1", "ConvTranspose2d(4, 3, stride = 2, padding = 1, output_padding = 1)"),
    chain("deconv-dil", "ConvTranspose2d(4, 3, dilation = 2, padding = 1)"),
    chain("deconv-op-lt-dil", "ConvTranspose2d(4, 3, dilation = 2, output_padding = 1)"),
    chain("deconv-op-lt-dil-p1", "ConvTranspose2d(4, 3, dilation = 3, padding = 1, output_padding = 2)"),
    chain("deconv-op-lt-dil-nobias", "ConvTranspose2d(4, 3, dilation = 2, output_padding = 1, bias = false)"),
    chain("deconv-groups-nobias", "ConvTranspose2d(6, 2, stride = 2, groups = 3, bias = false)"),
    chain("deconv-rect", "ConvTranspose2d(2, [3, 4], stride = [2, 3], padding = [1, 0], "
                         "output_padding = [1, 2])"),
    # ---- linear, reshaping
    chain("linear-2d", "Linear(7)", "[N, 5]", ((3, 5), (1, 5))),
    chain("linear-3d", "Linear(7)", "[N, T, 5]", ((2, 3, 5), (1, 4, 5))),
    chain("linear-4d-nobias", "Linear(4, bias = false)", "[N, C, T, 5]", ((2, 3, 4, 5), (1, 1, 2, 5))),
    chain("linear-2d-nobias", "Linear(4, bias = false)", "[N, 6]", ((3, 6), (1, 6))),
    chain("flatten", "Flatten"),
    chain("flatten-all", "Flatten(0)"),
    chain("flatten-hw", "Flatten(2)"),
    chain("flatten-mid", "Flatten(1, 2)"),
    chain("flatten-neg", "Flatten(-3, -2)"),
    chain("flatten-noop", "Flatten(2, 2)"),
    chain("flatten-3d", "Flatten", "[N, 5, L]", SEQ),
    chain("flatten-linear", "Flatten -> Linear(6)", STATIC, STATIC_SIZES),
    # ---- normalisation, dropout
    chain("bn2d", "BatchNorm2d"),
    chain("bn2d-noaffine-eps", "BatchNorm2d(eps = 0.001, affine = false)"),
    chain("frozen-bn2d", "FrozenBatchNorm2d(eps = 0.001)"),
    chain("bn1d-2d", "BatchNorm1d", "[N, 6]", ((4, 6), (1, 6))),
    chain("bn1d-3d", "BatchNorm1d(momentum = 0.3)", "[N, 5, L]", SEQ),
    chain("conv-bn-relu", "Conv2d(8, 3, padding = 1, bias = false) -> BatchNorm2d -> ReLU"),
    chain("dropout", "Dropout(0.3)"),
    chain("lrn-1", "LocalResponseNorm(1)"),
    chain("lrn-2", "LocalResponseNorm(2, alpha = 0.5)", "[N, 6, H, W]", ((2, 6, 4, 5), (1, 6, 3, 3))),
    chain("lrn-3", "LocalResponseNorm(3, alpha = 0.1, beta = 0.5, k = 2.0)", "[N, 6, H, W]",
          ((2, 6, 4, 5), (1, 6, 3, 3))),
    chain("lrn-4", "LocalResponseNorm(4, alpha = 0.3)", "[N, 7, H, W]", ((2, 7, 4, 5), (1, 7, 3, 3))),
    chain("lrn-5-big", "LocalResponseNorm(5, alpha = 0.2)"),
    chain("lrn-8-wide", "LocalResponseNorm(8, alpha = 0.4)"),
    chain("lrn-3d", "LocalResponseNorm(2, alpha = 0.5)", "[N, 5, L]", SEQ),
    chain("lrn-5d", "LocalResponseNorm(3, alpha = 0.5)", "[N, 4, D, H, W]",
          ((2, 4, 2, 3, 3), (1, 4, 3, 2, 2))),
    # ---- activations
    chain("relu", "ReLU"),
    chain("identity", "Identity -> Conv2d(4, 1) -> Identity"),
    chain("leaky-relu", "LeakyReLU"),
    chain("leaky-relu-0.2", "LeakyReLU(0.2)"),
    chain("elu", "ELU"),
    chain("elu-0.5", "ELU(alpha = 0.5)"),
    chain("gelu", "GELU"),
    chain("gelu-tanh", "GELU(approximate = 'tanh')"),
    chain("silu", "SiLU"),
    chain("sigmoid", "Sigmoid"),
    chain("tanh", "Tanh"),
    chain("softmax", "Softmax"),
    chain("softmax-last", "Softmax(dim = -1)"),
    chain("softmax-0", "Softmax(0)"),
    chain("softmax-2", "Softmax(2)"),
    chain("softmax-2d", "Linear(4) -> Softmax(dim = -1)", "[N, 5]", ((3, 5), (1, 5))),
    chain("softmax-3d", "Softmax", "[N, 5, L]", SEQ),
    chain("log-softmax", "LogSoftmax"),
    chain("log-softmax-last", "LogSoftmax(-1)"),
    chain("log-softmax-0", "LogSoftmax(0)"),
    # (x * 4: the inputs reach past the kinks at -3, 0, 3 and 6)
    one("relu6", "(x * 4) -> ReLU6", IMG),
    one("hardswish", "(x * 4) -> Hardswish", IMG),
    one("hardsigmoid", "(x * 4) -> Hardsigmoid", IMG),
    one("mish", "(x * 12) -> Mish", IMG),
    chain("prelu", "PReLU"),
    chain("prelu-channels", "Conv2d(4, 1) -> PReLU(4, init = 0.1)", sizes=IMG),
    chain("prelu-2d", "PReLU(5, init = 0.5)", "[N, 5]", ((3, 5), (1, 5))),
    chain("prelu-3d", "PReLU(5)", "[N, 5, L]", SEQ),
    # ---- max / average pooling
    chain("maxpool-2", "MaxPool2d(2)"),
    chain("maxpool-3s2", "MaxPool2d(3, 2)"),
    chain("maxpool-3s2p1", "MaxPool2d(3, stride = 2, padding = 1)"),
    chain("maxpool-3s1p1", "MaxPool2d(3, 1, 1)"),
    chain("maxpool-rect", "MaxPool2d([3, 2], stride = [2, 1], padding = [1, 0])"),
    chain("maxpool-dil", "MaxPool2d(3, stride = 1, dilation = 2)"),
    chain("maxpool-dil-pad", "MaxPool2d(2, stride = 2, padding = 1, dilation = 3)"),
    chain("maxpool-k2s3", "MaxPool2d(2, stride = 3)"),
    chain("maxpool-ceil", "MaxPool2d(2, ceil_mode = true)"),
    chain("maxpool-3s2-ceil", "MaxPool2d(3, stride = 2, ceil_mode = true)"),
    chain("maxpool-3s2p1-ceil", "MaxPool2d(3, stride = 2, padding = 1, ceil_mode = true)"),
    chain("maxpool-dil-ceil", "MaxPool2d(2, stride = 2, padding = 1, dilation = 2, ceil_mode = true)"),
    # the smallest sizes with no window wholly in the padding (smaller ones are refused:
    # test_onnx_regressions.py)
    chain("maxpool-dil3-pad1", "MaxPool2d(2, stride = 1, padding = 1, dilation = 3)",
          sizes=((2, 3, 3, 5), (1, 3, 4, 3))),
    chain("maxpool-k2s3-ceil", "MaxPool2d(2, stride = 3, ceil_mode = true)"),
    chain("maxpool-k2s3-ceil-static", "MaxPool2d(2, stride = 3, ceil_mode = true)", STATIC, STATIC_SIZES),
    chain("maxpool-k3s4p1-ceil-static", "MaxPool2d(3, stride = 4, padding = 1, ceil_mode = true)",
          "[N, 3, 13, 14]", ((2, 3, 13, 14), (1, 3, 13, 14))),
    chain("avgpool-2", "AvgPool2d(2)"),
    chain("avgpool-3s2", "AvgPool2d(3, 2)"),
    chain("avgpool-3s2p1", "AvgPool2d(3, stride = 2, padding = 1)"),
    chain("avgpool-3s2p1-excl", "AvgPool2d(3, stride = 2, padding = 1, count_include_pad = false)"),
    chain("avgpool-3s1p1", "AvgPool2d(3, 1, 1)"),
    chain("avgpool-rect", "AvgPool2d([2, 3], stride = [1, 2], padding = [1, 1])"),
    chain("avgpool-ceil", "AvgPool2d(2, ceil_mode = true)"),
    chain("avgpool-3s2-ceil", "AvgPool2d(3, stride = 2, ceil_mode = true)"),
    chain("avgpool-3s2p1-ceil", "AvgPool2d(3, stride = 2, padding = 1, ceil_mode = true)"),
    chain("avgpool-3s2p1-ceil-excl", "AvgPool2d(3, stride = 2, padding = 1, ceil_mode = true, "
                                     "count_include_pad = false)"),
    chain("avgpool-4s3p2-ceil", "AvgPool2d(4, stride = 3, padding = 2, ceil_mode = true)"),
    chain("avgpool-k3s4p1-ceil", "AvgPool2d(3, stride = 4, padding = 1, ceil_mode = true)"),
    chain("avgpool-k2s3-ceil-static", "AvgPool2d(2, stride = 3, ceil_mode = true)", STATIC, STATIC_SIZES),
    chain("avgpool-k3s4p1-ceil-static", "AvgPool2d(3, stride = 4, padding = 1, ceil_mode = true)",
          "[N, 3, 13, 14]", ((2, 3, 13, 14), (1, 3, 13, 14))),
    # ---- adaptive / global pooling
    chain("adaptive-avg-1", "AdaptiveAvgPool2d(1)"),
    chain("adaptive-avg-sym", "AdaptiveAvgPool2d([2, 3])"),
    chain("adaptive-avg-sym-up", "AdaptiveAvgPool2d([5, 4])", sizes=((2, 3, 3, 11), (1, 3, 16, 2))),
    chain("adaptive-avg-div", "AdaptiveAvgPool2d([4, 3])", DIV, DIV_SIZES),
    chain("adaptive-avg-nondiv", "AdaptiveAvgPool2d([5, 3])", STATIC, STATIC_SIZES),
    chain("adaptive-avg-same", "AdaptiveAvgPool2d(17)", STATIC, STATIC_SIZES),
    chain("adaptive-avg-mixed", "AdaptiveAvgPool2d([3, 3])", "[N, 3, 12, W]", MIXED_SIZES),
    chain("adaptive-avg-row", "AdaptiveAvgPool2d([1, 3])"),
    chain("adaptive-max-1", "AdaptiveMaxPool2d(1)"),
    chain("adaptive-max-sym", "AdaptiveMaxPool2d([2, 3])"),
    chain("adaptive-max-sym-up", "AdaptiveMaxPool2d([5, 4])", sizes=((2, 3, 3, 11), (1, 3, 16, 2))),
    chain("adaptive-max-div", "AdaptiveMaxPool2d([4, 3])", DIV, DIV_SIZES),
    chain("adaptive-max-nondiv", "AdaptiveMaxPool2d([5, 3])", STATIC, STATIC_SIZES),
    chain("adaptive-max-mixed", "AdaptiveMaxPool2d([3, 3])", "[N, 3, 12, W]", MIXED_SIZES),
    chain("global-avg", "GlobalAvgPool2d"),
    chain("global-max", "GlobalMaxPool2d"),
    chain("global-max-static", "GlobalMaxPool2d", "[2, 3, 5, 4]", ((2, 3, 5, 4),)),
    chain("global-avg-static", "GlobalAvgPool2d -> Flatten -> Linear(4)", STATIC, STATIC_SIZES),
    # ---- spatial pyramid pooling (sizes that no level > 1 divides), power-average pooling
    chain("spp", "SpatialPyramidPool2d"),
    chain("spp-avg", "SpatialPyramidPool2d([3, 2, 1], mode = 'avg')"),
    chain("spp-linear", "Conv2d(4, 3) -> SpatialPyramidPool2d(levels = [2, 1]) -> Linear(5)"),
    chain("spp-static", "SpatialPyramidPool2d([5, 3, 2], mode = 'avg')", STATIC, STATIC_SIZES),
    chain("spp-paper", "SpatialPyramidPool2d([4, 2, 1], bins = 'paper')", sizes=((2, 3, 9, 13), (1, 3, 14, 10))),
    chain("spp-paper-avg", "SpatialPyramidPool2d([4, 3, 1], mode = 'avg', bins = 'paper')",
          sizes=((2, 3, 9, 13), (1, 3, 14, 10))),
    chain("spp-paper-static", "SpatialPyramidPool2d([4, 3, 1], bins = 'paper')", "[N, 3, 13, 9]",
          ((2, 3, 13, 9), (1, 3, 13, 9))),
    chain("spp-paper-avg-mixed", "SpatialPyramidPool2d([4, 3], mode = 'avg', bins = 'paper')", "[N, 3, 13, W]",
          ((2, 3, 13, 9), (1, 3, 13, 14))),
    chain("lppool-2", "LPPool2d(2, 3, stride = 2)"),
    chain("lppool-2-ceil", "LPPool2d(2, 3, stride = 2, ceil_mode = true)"),
    chain("lppool-1-rect-ceil", "LPPool2d(1, [2, 3], stride = [3, 2], ceil_mode = true)"),
    chain("lppool-3-ceil", "ReLU -> LPPool2d(3, 2, stride = 3, ceil_mode = true)"),
    chain("lppool-1.5", "ReLU -> LPPool2d(1.5, 2)"),
    chain("lppool-4-static-ceil", "LPPool2d(4.0, 4, stride = 3, ceil_mode = true)", STATIC, STATIC_SIZES),
    # stochastic pooling (eval form; non-negative inputs)
    chain("stochastic-2", "ReLU -> StochasticPool2d(2)"),
    chain("stochastic-conv-3s2p1",
          "Conv2d(4, 3, padding = 1) -> ReLU -> StochasticPool2d(3, stride = 2, padding = 1)"),
    chain("stochastic-rect", "ReLU -> StochasticPool2d([3, 2], stride = [1, 3], padding = [1, 0])"),
    # ---- tensor functions
    fn("add", {"a": "[N, 3, H, W]", "b": "[N, 3, H, W]"}, "a + b",
       (((2, 3, 4, 5), (2, 3, 4, 5)), ((1, 3, 2, 7), (1, 3, 2, 7)))),
    fn("add-bcast", {"a": "[N, 3, H, W]", "b": "[1, 3, 1, 1]"}, "a + b",
       (((2, 3, 4, 5), (1, 3, 1, 1)), ((1, 3, 2, 7), (1, 3, 1, 1)))),
    fn("add-bcast-rank", {"a": "[N, 3, H, W]", "b": "[W]"}, "a + b",
       (((2, 3, 4, 5), (5,)), ((1, 3, 2, 7), (7,)))),
    one("add-residual", "x + (x -> Conv2d(3, 3, padding = 1))", ((2, 3, 4, 5), (1, 3, 6, 3))),
    fn("mul", {"a": "[N, 3, H, W]", "b": "[N, 3, H, W]"}, "a * b",
       (((2, 3, 4, 5), (2, 3, 4, 5)), ((1, 3, 2, 7), (1, 3, 2, 7)))),
    fn("mul-bcast", {"a": "[N, 3, H, 1]", "b": "[N, 1, 1, W]"}, "a * b",
       (((2, 3, 4, 1), (2, 1, 1, 5)), ((1, 3, 2, 1), (1, 1, 1, 6)))),
    one("mul-gate", "x * (x -> GlobalAvgPool2d -> Sigmoid)", ((2, 3, 4, 5), (1, 3, 6, 3))),
    fn("sub", {"a": "[N, 3, H, W]", "b": "[N, 3, H, W]"}, "a - b",
       (((2, 3, 4, 5), (2, 3, 4, 5)), ((1, 3, 2, 7), (1, 3, 2, 7)))),
    fn("sub-bcast", {"a": "[N, 3, H, 1]", "b": "[W]"}, "b - a",
       (((2, 3, 4, 1), (5,)), ((1, 3, 2, 1), (6,)))),
    fn("div", {"a": "[N, 3, H, W]", "b": "[N, 3, H, W]"}, "a / (b -> Sigmoid)",
       (((2, 3, 4, 5), (2, 3, 4, 5)), ((1, 3, 2, 7), (1, 3, 2, 7)))),
    fn("div-bcast", {"a": "[N, 3, H, W]", "b": "[1, 3, 1, 1]"}, "a / (b -> Sigmoid)",
       (((2, 3, 4, 5), (1, 3, 1, 1)), ((1, 3, 2, 7), (1, 3, 1, 1)))),
    one("scalar-right", "((x * 2 + 3 - 0.5) / 6) -> Conv2d(3, 1) -> ReLU", IMG),
    one("scalar-left", "1 - (3 + (2.5 * x -> Conv2d(3, 1) -> ReLU)) / 2", IMG),
    one("scalar-div-left", "6 / (x -> Sigmoid)", IMG),
    one("neg", "-(x -> Conv2d(3, 1)) + -x.shape[1] * -x", IMG),
    one("scalar-residual-inplace", "(x -> Conv2d(3, 1)) + 1 -> ReLU", IMG),
    fn("concat", {"a": "[N, 3, H, W]", "b": "[N, 2, H, W]"}, "concat(a, b)",
       (((2, 3, 4, 5), (2, 2, 4, 5)), ((1, 3, 2, 7), (1, 2, 2, 7)))),
    fn("concat-3-dim2", {"a": "[N, 3, H, W]", "b": "[N, 3, P, W]", "c": "[N, 3, 2, W]"},
       "concat(a, b, c, dim = 2)",
       (((2, 3, 4, 5), (2, 3, 3, 5), (2, 3, 2, 5)), ((1, 3, 1, 2), (1, 3, 5, 2), (1, 3, 2, 2)))),
    fn("concat-last", {"a": "[N, 3, H, W]"}, "concat(a, a -> ReLU, dim = -1)",
       (((2, 3, 4, 5),), ((1, 3, 6, 3),))),
    fn("concat-one", {"a": "[N, 3, H, W]"}, "concat(a)", (((2, 3, 4, 5),), ((1, 3, 6, 3),))),
    one("crop-sym", "center_crop(x, like = x -> Conv2d(4, 5))", ((2, 3, 9, 11), (1, 3, 16, 7))),
    fn("crop-sym-2", {"x": "[N, 3, H, W]", "t": "[N, 2, P, Q]"}, "center_crop(x, like = t)",
       (((2, 3, 9, 11), (2, 2, 5, 3)), ((1, 3, 8, 6), (1, 2, 2, 6)))),
    fn("crop-static", {"x": "[N, 3, 17, 17]", "t": "[N, 5, 13, 11]"}, "center_crop(x, like = t)",
       (((2, 3, 17, 17), (2, 5, 13, 11)), ((1, 3, 17, 17), (1, 5, 13, 11)))),
    one("crop-3d", "center_crop(x, like = x -> Conv1d(2, 5))", ((2, 3, 9), (1, 3, 16)), "[N, 3, L]"),
    one("crop-offset", "crop(x, like = x -> Conv2d(4, 5), offset = [3, 1])", ((2, 3, 9, 11), (1, 3, 16, 7))),
    fn("crop-offset-sym", {"x": "[N, 3, H, W]", "t": "[N, 2, P, Q]"}, "crop(x, like = t, offset = 2)",
       (((2, 3, 9, 11), (2, 2, 5, 3)), ((1, 3, 8, 6), (1, 2, 2, 4)))),
    fn("crop-offset-static", {"x": "[N, 3, H, W]", "t": "[N, 5, 4, 3]"}, "crop(x, like = t)",
       (((2, 3, 9, 11), (2, 5, 4, 3)), ((1, 3, 4, 6), (1, 5, 4, 3)))),
    one("crop-offset-3d", "crop(x, like = x -> Conv1d(2, 5), offset = 4)", ((2, 3, 9), (1, 3, 16)), "[N, 3, L]"),
    # ---- learned tensors
    Case("param-normal", "input x: f32[N, 3, H, W]\nparam bias: f32[1, 3, 1, 1] = normal(0.5)\n"
                         "output y = x + bias", tuple((s,) for s in IMG)),
    Case("param-uniform", "input x: f32[N, 3, H, W]\nparam scale: f32[3, 1, 1] = uniform(2.0)\n"
                          "output y = x * scale", tuple((s,) for s in IMG)),
    # ---- resize
    one("resize-nearest-2", "resize(x, scale = 2)", ((2, 3, 4, 5), (1, 3, 3, 2))),
    one("resize-nearest-23", "resize(x, scale = [2, 3])", ((2, 3, 4, 5), (1, 3, 3, 2))),
    one("resize-nearest-half", "resize(x, scale = 0.5)", ((2, 3, 8, 6), (1, 3, 7, 9))),
    one("resize-nearest-1.5", "resize(x, scale = 1.5)", ((2, 3, 4, 6), (1, 3, 7, 5))),
    one("resize-nearest-0.6", "resize(x, scale = 0.6)", ((2, 3, 17, 5), (1, 3, 10, 6))),
    one("resize-nearest-1.05", "resize(x, scale = [1.05, 1.5])", ((2, 3, 20, 5), (1, 3, 30, 6))),
    one("resize-nearest-2.05", "resize(x, scale = [2.05, 3])", ((2, 3, 20, 5), (1, 3, 30, 6))),
    one("resize-nearest-static", "resize(x, scale = [1.5, 0.6])",
        ((2, 3, 7, 5), (1, 3, 7, 5)), "[N, 3, 7, 5]"),
    one("resize-nearest-size-static", "resize(x, size = [9, 14])",
        ((2, 3, 7, 5), (1, 3, 7, 5)), "[N, 3, 7, 5]"),
    one("resize-nearest-size", "resize(x, size = [5, 7])", ((2, 3, 4, 6), (1, 3, 9, 3))),
    one("resize-nearest-size-down", "resize(x, size = [3, 4])", ((2, 3, 9, 11), (1, 3, 7, 13))),
    # like= a tensor provably twice / four times as large (an FPN's top-down path): one Resize
    Case("resize-nearest-like-multiple", "input x: f32[N, 3, H, W]\n"
         "output y = resize(x, like = x -> ConvTranspose2d(2, 2, stride = 2))\n"
         "output z = resize(x, like = x -> ConvTranspose2d(2, 4, stride = 4))", tuple((s,) for s in IMG)),
    fn("resize-nearest-like", {"x": "[N, 3, H, W]", "t": "[N, 5, P, Q]"}, "resize(x, like = t)",
       (((2, 3, 4, 6), (2, 5, 9, 13)), ((1, 3, 8, 4), (1, 5, 3, 7)))),
    one("resize-bilinear-2", "resize(x, scale = 2, mode = 'bilinear')", ((2, 3, 4, 5), (1, 3, 3, 2))),
    one("resize-bilinear-2-ac", "resize(x, scale = 2, mode = 'bilinear', align_corners = true)",
        ((2, 3, 4, 5), (1, 3, 3, 2))),
    one("resize-bilinear-half", "resize(x, scale = 0.5, mode = 'bilinear')", ((2, 3, 8, 6), (1, 3, 7, 9))),
    one("resize-bilinear-1.5-ac", "resize(x, scale = [1.5, 2.5], mode = 'bilinear', align_corners = true)",
        ((2, 3, 4, 6), (1, 3, 7, 5))),
    one("resize-bilinear-size", "resize(x, size = [5, 7], mode = 'bilinear')", ((2, 3, 4, 6), (1, 3, 9, 3))),
    one("resize-bilinear-size-ac", "resize(x, size = [5, 7], mode = 'bilinear', align_corners = true)",
        ((2, 3, 4, 6), (1, 3, 9, 3))),
    one("resize-bilinear-size-1", "resize(x, size = [1, 4], mode = 'bilinear')",
        ((2, 3, 4, 6), (1, 3, 9, 3))),
    one("resize-bilinear-size-1-ac", "resize(x, size = [1, 4], mode = 'bilinear', align_corners = true)",
        ((2, 3, 4, 6), (1, 3, 9, 3))),
    fn("resize-bilinear-like", {"x": "[N, 3, H, W]", "t": "[N, 5, P, Q]"},
       "resize(x, like = t, mode = 'bilinear')",
       (((2, 3, 4, 6), (2, 5, 9, 13)), ((1, 3, 8, 4), (1, 5, 3, 7)))),
    fn("resize-bilinear-like-ac", {"x": "[N, 3, H, W]", "t": "[N, 5, P, Q]"},
       "resize(x, like = t, mode = 'bilinear', align_corners = true)",
       (((2, 3, 4, 6), (2, 5, 9, 13)), ((1, 3, 8, 4), (1, 5, 3, 7)))),
    one("resize-bilinear-mixed", "resize(x, scale = [0.7, 1.25], mode = 'bilinear')",
        ((2, 3, 10, 8), (1, 3, 7, 3))),
    one("resize-bilinear-copy-axis", "resize(x, scale = [1.5, 1.25], mode = 'bilinear')",
        ((2, 3, 1, 3), (1, 3, 4, 5))),
    one("resize-bilinear-copy-static", "resize(x, scale = [0.7, 1.25], mode = 'bilinear')",
        ((2, 3, 7, 3), (1, 3, 7, 3)), "[N, 3, 7, 3]"),
    one("resize-static", "resize(x, scale = 3, mode = 'bilinear')", ((2, 3, 5, 7),), "[2, 3, 5, 7]"),
    # ---- attention, shape functions, reductions
    chain("layernorm", "LayerNorm", "[N, L, 8]", TOKENS),
    chain("layernorm-2d-noaffine", "LayerNorm(eps = 0.001, elementwise_affine = false)", "[N, 6]",
          ((3, 6), (1, 6))),
    chain("layernorm-4d", "LayerNorm(eps = 1e-6)", "[N, 3, H, 8]", ((2, 3, 4, 8), (1, 3, 2, 8))),
    chain("mha-self", "MultiheadAttention(2)", "[N, L, 8]", TOKENS),
    chain("mha-self-nobias", "MultiheadAttention(4, dropout = 0.1, bias = false)", "[N, L, 8]", TOKENS),
    chain("mha-one-head", "LayerNorm -> MultiheadAttention(1)", "[N, L, 8]", TOKENS),
    fn("mha-qkv", {"q": "[N, L, 8]", "k": "[N, S, 8]", "v": "[N, S, 8]"}, "(q, k, v) -> MultiheadAttention(4)",
       (((2, 5, 8), (2, 3, 8), (2, 3, 8)), ((1, 2, 8), (1, 6, 8), (1, 6, 8)))),
    fn("mha-qkv-nobias", {"q": "[N, L, 8]", "k": "[N, S, 8]"}, "(q, k, k) -> MultiheadAttention(2, bias = false)",
       (((2, 5, 8), (2, 3, 8)), ((1, 2, 8), (1, 6, 8)))),
    fn("matmul", {"a": "[N, L, 4]", "b": "[N, 4, S]"}, "matmul(a, b)",
       (((2, 3, 4), (2, 4, 5)), ((1, 6, 4), (1, 4, 2)))),
    fn("matmul-bcast", {"a": "[N, 3, L, 4]", "b": "[4, 5]"}, "matmul(a, b)",
       (((2, 3, 2, 4), (4, 5)), ((1, 3, 6, 4), (4, 5)))),
    fn("matmul-bcast-batch", {"a": "[N, 1, L, 4]", "b": "[3, 4, S]"}, "matmul(a, b)",
       (((2, 1, 2, 4), (3, 4, 5)), ((1, 1, 6, 4), (3, 4, 1)))),
    fn("matmul-vec", {"a": "[N, L, 4]", "b": "[4]"}, "matmul(a, b)", (((2, 3, 4), (4,)), ((1, 6, 4), (4,)))),
    one("reshape-heads", "reshape(x, shape = [0, 0, 2, 3])", TOKENS6, "[N, L, 6]"),
    one("reshape-merge", "reshape(x, shape = [-1, 6])", TOKENS6, "[N, L, 6]"),
    chain("reshape-infer", "reshape(shape = [0, 3, -1])"),
    chain("reshape-split", "reshape(shape = [0, 0, 2, -1])", "[N, L, 6]", TOKENS6),
    chain("permute", "permute(dims = [0, 2, 3, 1])"),
    one("permute-fn", "permute(x, dims = [0, -1, 1])", TOKENS6, "[N, L, 6]"),
    chain("transpose", "transpose(1, 2)", "[N, L, 6]", TOKENS6),
    one("transpose-fn", "transpose(x, -1, -3)", IMG),
    Case("expand-cls", "input x: f32[N, L, 6]\nparam cls: f32[1, 1, 6] = normal(1.0)\n"
                       "output y = concat(expand(cls, like = x, dims = [0]), x, dim = 1)", tuple((s,) for s in TOKENS6)),
    fn("expand-two", {"t": "[1, 3, 1, 1]", "x": "[N, 3, H, W]"}, "t -> expand(like = x, dims = [0, -1])",
       (((1, 3, 1, 1), (2, 3, 4, 5)), ((1, 3, 1, 1), (1, 3, 2, 7)))),
    one("select-cls", "select(x, dim = 1, index = 0)", TOKENS6, "[N, L, 6]"),
    chain("select-last", "select(dim = -1, index = -1)"),
    one("select-static", "select(x, 2, 3)", ((2, 3, 4, 5), (1, 3, 4, 2)), "[N, 3, 4, W]"),
    chain("mean", "mean"),
    one("mean-hw", "mean(x, dims = [2, 3], keepdim = false)", IMG),
    chain("amax", "amax(dims = [1, -1])"),
    one("cbam-spatial", "x * (concat(mean(x), amax(x)) -> Conv2d(1, 7, padding = 3) -> Sigmoid)", IMG),
    one("reshape-like", "x -> Flatten(2) -> reshape(shape = [0, 0, 0, 0], like = x)", IMG),
    fn("reshape-like-2", {"x": "[N, 6, L]", "t": "[N, 3, H, W]"}, "reshape(x, shape = [0, 0, -1], like = t)",
       (((2, 6, 4), (2, 3, 2, 2)), ((1, 6, 5), (1, 3, 2, 2)))),
    Case("non-local", """input x: f32[N, 4, H, W]
theta = x -> Conv2d(2, 1) -> Flatten(2) -> transpose(1, 2)
phi = x -> Conv2d(2, 1) -> Flatten(2)
g = x -> Conv2d(2, 1) -> Flatten(2) -> transpose(1, 2)
f = matmul(theta, phi) -> Softmax(dim = -1)
y = matmul(f, g) -> permute(dims = [0, 2, 1]) -> reshape(shape = [0, 2, 0, 0], like = x) -> Conv2d(4, 1)
output z = x + y""", (((2, 4, 3, 5),), ((1, 4, 6, 2),))),
    one("vit-mini", "(x -> Conv2d(8, 3, stride = 3) -> Flatten(2) -> transpose(1, 2) -> LayerNorm "
        "-> MultiheadAttention(2) -> select(dim = 1, index = 0) -> Linear(4))", ((2, 3, 9, 12), (1, 3, 6, 3))),
    # ---- MaxViT: windows, grid (windows transposed), relative positional attention
    one("window-partition", "window_partition(x, 2) -> Linear(4)", ((2, 3, 4, 6), (1, 3, 6, 2))),
    one("window-roundtrip", "window_departition(window_partition(x, 3) -> Linear(5), 3, like = x)",
        ((2, 3, 6, 9), (1, 3, 3, 6))),
    chain("rel-pos-mha", "Conv2d(8, 1) -> window_partition(3) -> RelativePositionalMultiHeadAttention(4)",
          sizes=((2, 3, 6, 9), (1, 3, 3, 3))),
    one("rel-pos-mha-grid", "window_departition(window_partition(x, 3) -> transpose(1, 2) "
        "-> RelativePositionalMultiHeadAttention(8) -> transpose(1, 2), 3, like = x)",
        ((2, 8, 6, 6), (1, 8, 6, 6)), "[N, 8, 6, 6]"),
    # ---- Swin: (shifted) windows over sizes that are not window multiples (padded; 3 x 5 pads to
    # one window along H, where the shift is dropped), V2's cosine attention, patch merging
    chain("swin-attn", "ShiftedWindowAttention(2, window_size = 3)", "[N, H, W, 8]", ((2, 7, 8, 8), (1, 3, 5, 8))),
    chain("swin-attn-shift", "ShiftedWindowAttention(2, window_size = 3, shift_size = 1)", "[N, H, W, 8]",
          ((2, 7, 8, 8), (1, 3, 5, 8))),
    chain("swin-attn-v2-shift", "ShiftedWindowAttention(4, window_size = [3, 4], shift_size = [1, 2], version = 2)",
          "[N, H, W, 8]", ((2, 7, 9, 8), (1, 4, 3, 8))),
    chain("swin-attn-static-nobias", "ShiftedWindowAttention(2, window_size = 3, shift_size = [0, 1], "
          "qkv_bias = false, proj_bias = false, dropout = 0.1)", "[N, 7, 8, 8]", ((2, 7, 8, 8), (1, 7, 8, 8))),
    chain("swin-attn-v2-static", "ShiftedWindowAttention(2, window_size = 4, shift_size = 2, version = 2)",
          "[N, 6, 4, 8]", ((2, 6, 4, 8), (1, 6, 4, 8))),
    chain("swin-attn-v2-mixed", "ShiftedWindowAttention(2, window_size = 3, shift_size = 1, version = 2)",
          "[N, 7, W, 8]", ((2, 7, 8, 8), (1, 7, 3, 8))),
    chain("patch-merge", "patch_merge -> Linear(5)", "[N, H, W, 3]", ((2, 7, 8, 3), (1, 4, 5, 3))),
    chain("patch-merge-mixed", "patch_merge", "[N, 7, W, 3]", ((2, 7, 8, 3), (1, 7, 5, 3))),
    chain("patch-merge-sym-channels", "patch_merge", "[N, C, H, W]", ((2, 3, 4, 5), (1, 2, 5, 2))),
    one("patch-merge-static-odd", "patch_merge(x)", ((2, 5, 3, 4), (1, 5, 3, 4)), "[N, 5, 3, 4]"),
    # ---- selection: values and int64 indices; min(k, size) is data-dependent on a symbolic dim
    Case("topk-sym", "input x: f32[N, 3, H, W]\nv, i = topk(x, k = 5)\noutput y = v\noutput j = i",
         (((2, 3, 4, 9),), ((1, 3, 6, 3),))),
    Case("topk-static-smallest", "input x: f32[N, 3, H, W]\nv, i = topk(x, k = 2, dim = 1, largest = false)\n"
                                 "output y = v\noutput j = i", tuple((s,) for s in IMG)),
    Case("topk-k-over-static", "input x: f32[N, 4, L]\nv, i = topk(x, k = 9, dim = -2)\n"
                               "output y = v\noutput j = i", (((2, 4, 5),), ((1, 4, 2),))),
    Case("topk-of-dyn", "input x: f32[N, 3, H, W]\nv, i = topk(x, k = 5)\nw, j = topk(v, k = 2, largest = false)\n"
                        "output y = w\noutput m = j", (((2, 3, 4, 9),), ((1, 3, 2, 1),))),
    Case("topk-1-sym", "input x: f32[N, 3, H, W]\nv, i = topk(x, dim = 2)\noutput y = v\noutput j = i",
         tuple((s,) for s in IMG)),
    Case("take-rows", "input x: f32[N, 3, H, W]\ns, i = topk(amax(x, dims = [1, 2, 3], keepdim = false), k = 2)\n"
                      "output y = take(x, i)\noutput j = i", (((3, 3, 4, 5),), ((1, 3, 2, 6),))),
    # take of int64 rows, and by indices that went through select (int64 kept)
    Case("take-indices", "input x: f32[N, L]\nv, i = topk(x, k = 3, dim = 1, largest = false)\n"
                         "w, j = topk(x, k = 2, dim = 0)\noutput y = take(i, select(j, 1, 0))\n"
                         "output z = take(transpose(x, 0, 1), select(i, 0, 0))",
         (((5, 4),), ((1, 2),))),
    # ---- channel shuffle, chunk, stochastic depth (identity in eval), channels-first LayerNorm
    chain("channel-shuffle", "Conv2d(6, 1) -> ChannelShuffle(2)"),
    chain("channel-shuffle-3d", "ChannelShuffle(3)", "[N, 6, L]", ((2, 6, 12), (1, 6, 7))),
    Case("chunk-channels", "input x: f32[N, 3, H, W]\na, b = x -> Conv2d(8, 1) -> chunk(2)\n"
                           "output y = concat(b, a)\noutput z = b", tuple((s,) for s in IMG)),
    Case("chunk-sym", "input x: f32[N, 3, H, W]\na, b, c = chunk(x, 3, dim = 2)\noutput y = a\noutput z = c",
         (((2, 3, 7, 5),), ((1, 3, 9, 2),))),
    Case("chunk-uneven", "input x: f32[N, 7, L]\na, b, c = chunk(x, 3)\noutput y = a\noutput z = c",
         (((2, 7, 4),), ((1, 7, 3),))),
    Case("chunk-fewer", "input x: f32[N, 6, L]\na, b, c = chunk(x, 4, dim = -2)\noutput y = b\noutput z = c",
         (((2, 6, 4),), ((1, 6, 3),))),
    one("chunk-one", "chunk(x, 1) -> ReLU", IMG),
    chain("stochastic-depth", "Conv2d(4, 1) -> StochasticDepth(0.2)"),
    chain("stochastic-depth-batch", "StochasticDepth(p = 1.0, mode = 'batch')", "[N, 5, L]", SEQ),
    chain("layernorm2d", "Conv2d(6, 1) -> LayerNorm2d(eps = 1e-6)"),
    chain("layernorm2d-noaffine", "LayerNorm2d(elementwise_affine = false)"),
]

# ---- detection ops: every input is f32 standard normal, yet the boxes are valid (anchors decoded
# by deltas: positive sizes), as NMS needs (onnxruntime's NonMaxSuppression reorders flipped
# corners; torchvision does not)
DET_HEAD = """input x: f32[N, 3, H, W]
f = x -> Conv2d(12, 3, stride = 2, padding = 1)
a = anchors(f, x, sizes = [4], aspect_ratios = [0.5, 1.0, 2.0])
d = select(f, 0, 0) -> permute(dims = [1, 2, 0]) -> reshape(shape = [-1, 4])
boxes = box_decode(d, a)
s = x -> Conv2d(3, 3, stride = 2, padding = 1) -> select(0, 0) -> permute(dims = [1, 2, 0]) -> Flatten(0, 2)
g = x -> Conv2d(9, 3, stride = 2, padding = 1) -> select(0, 0) -> permute(dims = [1, 2, 0]) -> reshape(shape = [-1, 3])
_, gi = topk(g, k = 1, dim = 1)
groups = select(gi, 1, 0)
n = x -> Conv2d(3, 3, stride = 2, padding = 1) -> permute(dims = [2, 3, 1, 0]) -> Flatten(0, 2)
_, bi2 = topk(n, k = 1, dim = 1)
bi = select(bi2, 1, 0)
"""


def _det(id, outputs, head=DET_HEAD, sizes=IMG):
    return Case(id, head + outputs, tuple((s,) for s in sizes))


DET_CASES = [
    _det("det-anchors-decode", "output y = a\noutput z = boxes"),
    _det("det-encode", "output y = box_encode(boxes, a, weights = [10.0, 10.0, 5.0, 5.0])"),
    _det("det-nms", "output k = nms(boxes, s, iou_threshold = 0.3)\noutput kb = batched_nms(boxes, s, groups, "
                   "iou_threshold = 0.3)\noutput r = remove_small_boxes(boxes, min_size = 3.0)"),
    _det("det-clip-rescale", "x2, sizes = detection_transform(x, min_size = 8, max_size = 20)\n"
                            "output c = clip_boxes(boxes, bi, sizes)\noutput r = rescale_boxes(boxes, bi, sizes)\n"
                            "output t = x2"),
    _det("det-roi", "output ra = roi_align(f, boxes, bi, output_size = 3, spatial_scale = 0.5, sampling_ratio = 2)\n"
                   "output rp = roi_pool(f, boxes, bi, output_size = [2, 3], spatial_scale = 0.5)"),
    _det("det-msroi-rpnhead", "x2, sizes = detection_transform(x, min_size = 16, max_size = 32)\n"
                             "p2 = x2 -> Conv2d(4, 3, stride = 4, padding = 1)\n"
                             "p3 = p2 -> Conv2d(4, 3, stride = 2, padding = 1)\n"
                             "o2, o3, d2, d3 = RPNHead(p2, p3, num_anchors = 2)\n"
                             "output m = multiscale_roi_align(p2, p3, boxes, bi, sizes, output_size = 2)\n"
                             "output o = o3\noutput dd = d2"),
    # the composite ops: proposals of two levels, identity sampling (eval), detections
    Case("det-composite", """input images: f32[N, 3, H, W]
x, sizes = detection_transform(images, min_size = 0, size_divisible = 16)
f1 = x -> Conv2d(8, 3, stride = 4, padding = 1)
f2 = f1 -> Conv2d(8, 3, stride = 2, padding = 1)
o1, o2, d1, d2 = RPNHead(f1, f2, num_anchors = 3)
p, pi = rpn_proposals(o1, o2, d1, d2, anchors(f1, x, sizes = [16]), anchors(f2, x, sizes = [32]), sizes,
                      pre_nms_top_n = [50, 60], post_nms_top_n = [40, 30])
rois, ri = sample_rois(p, pi)
h = roi_align(f1, rois, ri, output_size = 2, spatial_scale = 0.25, sampling_ratio = 2) -> Flatten
b, s, l, bi = detect_postprocess(h -> Linear(5), h -> Linear(20), rois, ri, sizes, detections_per_img = 25)
output boxes = b
output scores = s
output labels = l
output batch_index = bi
output proposals = rois
output proposal_index = ri""", (((2, 3, 64, 80),), ((3, 3, 48, 100),))),
]

CASES += DET_CASES

# Cases whose emitters depend on the opset (reductions, Shape, Resize, Pad, Gelu...), re-run at others.
OPSET_CASES = ["adaptive-avg-sym", "adaptive-max-sym", "adaptive-max-nondiv", "global-max", "lrn-4", "lrn-3",
               "resize-nearest-1.05", "resize-bilinear-like", "resize-bilinear-size-1", "resize-nearest-like",
               "resize-bilinear-mixed",
               "crop-sym", "flatten-mid", "avgpool-3s2p1-ceil", "maxpool-dil-ceil", "gelu", "gelu-tanh",
               "deconv-op-lt-dil-p1", "linear-3d", "bn2d", "layernorm", "layernorm-2d-noaffine", "mha-self",
               "mha-qkv", "expand-cls", "mean-hw", "amax", "cbam-spatial",
               "reshape-like", "spp-paper", "spp-avg", "topk-sym", "topk-of-dyn", "take-rows",
               "chunk-sym", "chunk-uneven", "layernorm2d", "layernorm2d-noaffine",
               "hardswish", "mish", "swin-attn-v2-shift"]
OPSETS = (13, 18, 21)

# One network touching most opset-dependent emitters, built at every supported opset.
SWEEP = fn("sweep", {"x": "[N, 3, H, W]"}, """(x -> Conv2d(8, 3, padding = 1) -> BatchNorm2d -> GELU
        -> LocalResponseNorm(2) -> MaxPool2d(3, stride = 2, padding = 1, ceil_mode = true)
        -> ConvTranspose2d(4, 3, dilation = 2, output_padding = 1)
        -> AvgPool2d(3, stride = 2, padding = 1, ceil_mode = true) -> AdaptiveMaxPool2d([3, 2]))
    output z = resize(x, scale = 1.5) -> AdaptiveAvgPool2d([2, 3])
    output w = center_crop(x, like = x -> Conv2d(3, 3)) -> Flatten(1, 2) -> LogSoftmax(dim = 1)""",
           (((2, 3, 9, 11),), ((1, 3, 16, 7),)))

BY_ID = {c.id: c for c in CASES}
assert len(BY_ID) == len(CASES), "duplicate case ids"


def build(case: Case) -> netdsl.Network:
    return netdsl.loads("network parity_case {\n" + case.spec + "\n}")


def randomised_weights(net, seed=0) -> dict:
    """init_weights, plus random BatchNorm statistics and affine params."""
    w = net.init_weights(seed)
    rng = np.random.default_rng(seed + 1)
    for node in net.graph.nodes:
        if node.op.startswith("BatchNorm") or node.op == "FrozenBatchNorm2d":
            c = node.attrs["num_features"]
            w[f"{node.path}.running_mean"] = rng.normal(0, 1, c).astype(np.float32)
            w[f"{node.path}.running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
            if node.attrs.get("affine", True):
                w[f"{node.path}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
                w[f"{node.path}.bias"] = rng.normal(0, 1, c).astype(np.float32)
        if node.op == "PReLU":          # one slope per channel, not all 0.25: a wrong axis shows
            w[f"{node.path}.weight"] = rng.uniform(-0.5, 1.5, node.attrs["num_parameters"]).astype(np.float32)
        if node.op == "RelativePositionalMultiHeadAttention":   # N(0, 0.02) would hide a wrong index
            pname = f"{node.path}.relative_position_bias_table"
            w[pname] = rng.normal(0, 1, w[pname].shape).astype(np.float32)
        if node.op in ("LayerNorm", "MultiheadAttention", "LayerNorm2d"):   # their ones/zeros init hides mistakes
            for pname, spec in node.params.items():
                if spec.init in ("ones", "zeros"):
                    w[f"{node.path}.{pname}"] = rng.uniform(0.5, 1.5, spec.shape).astype(np.float32)
    return w


def expected_shape(net, in_shapes, out_shape) -> tuple:
    """The output shape the IR gives at these input sizes; a data-dependent dim (known at
    run time) is (None, its bound at these sizes, or None)."""
    env = {}
    for v, shape in zip(net.graph.inputs, in_shapes):
        for d, n in zip(v.shape, shape):
            if not D.is_static(d):
                env[D.fmt(d)] = n
    out = []
    for d in out_shape:
        if D.is_dynamic(d):
            bounds = [a.bound for a in D.dyn_atoms(d)]
            bound = int(D.evaluate(bounds[0], env)) if d.is_atom() and bounds[0] is not None else None
            out.append((None, bound))
        else:
            out.append(int(D.evaluate(d, env)))
    return tuple(out)


def fits(shape, want) -> bool:
    """Whether a run's shape is the expected one (a data-dependent dim: within its bound)."""
    return len(shape) == len(want) and all(
        s == w if not isinstance(w, tuple) else (w[1] is None or 0 <= s <= w[1])
        for s, w in zip(shape, want))


def close(ref, got, what):
    fin = np.isfinite(ref)          # a max pool window lying wholly in the padding gives -inf
    assert (np.isfinite(got) == fin).all() and (ref[~fin] == got[~fin]).all(), f"{what}: infinities differ"
    ref, got = ref[fin], got[fin]
    err = float(np.abs(ref - got).max()) if ref.size else 0.0
    scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
    assert err <= TOL * scale, f"{what}: max |diff| {err}"


def check(case: Case, opset: int = 17):
    net = build(case)
    weights = randomised_weights(net)
    module = net.to_torch(weights).eval()
    model = net.to_onnx(weights, opset=opset)
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [v.name for v in net.graph.inputs]
    rng = np.random.default_rng(42)
    for shapes in case.sizes:
        xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        with torch.no_grad():
            refs = module(*[torch.from_numpy(x) for x in xs])
        refs = [r.numpy() for r in (refs if isinstance(refs, tuple) else (refs,))]
        gots = sess.run(None, dict(zip(names, xs)))
        assert len(refs) == len(gots) == len(net.graph.outputs)
        for (name, v), ref, got in zip(net.graph.outputs, refs, gots):
            want = expected_shape(net, shapes, v.shape)
            what = f"output {name} for inputs {shapes}"
            assert fits(ref.shape, want), f"{what}: torch shape {ref.shape}, IR shape {want}"
            assert got.shape == ref.shape, f"{what}: onnx shape {got.shape}, torch shape {ref.shape}"
            assert got.dtype == ref.dtype == np.dtype(v.dtype), f"{what}: dtypes {got.dtype}, {ref.dtype}, {v.dtype}"
            close(ref, got, what)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_parity(case):
    check(case)


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("case_id", OPSET_CASES)
def test_parity_opsets(case_id, opset):
    check(BY_ID[case_id], opset)


@pytest.mark.parametrize("opset", range(13, 22))
def test_opset_sweep(opset):
    net = build(SWEEP)
    model = net.to_onnx(net.init_weights(), opset=opset)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    check(SWEEP, opset)


@pytest.mark.parametrize("opset", [12, 22, "17", True])
def test_unsupported_opsets_are_refused(opset):
    net = build(BY_ID["relu"])
    with pytest.raises(UsageError, match="opset"):
        net.to_onnx(opset=opset)


# ---- BatchNorm and Dropout in training mode (torch only; ONNX is always eval)
BN_TRAIN = [("[N, 4, H, W]", (3, 4, 5, 6), (0, 2, 3), "BatchNorm2d(momentum = 0.3)"),
            ("[N, 4]", (6, 4), (0,), "BatchNorm1d"),
            ("[N, 4, L]", (3, 4, 7), (0, 2), "BatchNorm1d(eps = 0.01, affine = false)")]


@pytest.mark.parametrize("decl,shape,axes,layer", BN_TRAIN, ids=[b[3] for b in BN_TRAIN])
def test_batchnorm_training(decl, shape, axes, layer):
    net = build(chain("bn", layer, decl))
    (node,) = net.graph.nodes
    eps, momentum = node.attrs["eps"], node.attrs["momentum"]
    weights = randomised_weights(net)
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32) * 2 + 1
    module = net.to_torch(weights).train()
    y = module(torch.from_numpy(x)).detach().numpy()

    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    want = (x - mean) / np.sqrt(var + eps)
    p = node.path
    bshape = [1, -1] + [1] * (len(shape) - 2)
    if node.attrs["affine"]:
        want = want * weights[f"{p}.weight"].reshape(bshape) + weights[f"{p}.bias"].reshape(bshape)
    np.testing.assert_allclose(y, want, atol=1e-4)

    n = x.size // shape[1]
    state = module.state_dict()
    np.testing.assert_allclose(state[f"{p}.running_mean"].numpy(),
                               (1 - momentum) * weights[f"{p}.running_mean"] + momentum * mean.ravel(),
                               atol=1e-5)
    unbiased = var.ravel() * n / (n - 1)
    np.testing.assert_allclose(state[f"{p}.running_var"].numpy(),
                               (1 - momentum) * weights[f"{p}.running_var"] + momentum * unbiased, atol=1e-5)
    assert int(state[f"{p}.num_batches_tracked"]) == 1

    # ONNX uses the running statistics: it matches the torch module in eval mode (with the
    # original statistics), not the training-mode output
    sess = ort.InferenceSession(net.to_onnx(weights).SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x})[0]
    with torch.no_grad():
        ref = net.to_torch(weights).eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert np.abs(got - y).max() > 1e-2


def test_dropout_training():
    net = build(chain("d", "Dropout(0.5)", "[N, 64]"))
    module = net.to_torch(net.init_weights())
    x = torch.ones(4, 64)
    y = module.train()(x)
    assert (y == 0).any() and torch.allclose(y[y != 0], torch.tensor(2.0))
    assert torch.equal(module.eval()(x), x)
