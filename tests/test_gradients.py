"""Gradients of the generated torch modules.

`torch.autograd.gradcheck` (float64) runs through the module that `netdsl.loads(...).to_torch()`
generates, converted with `.double()`, with respect to its inputs AND its parameters
(`torch.func.functional_call` with the parameters as extra gradcheck inputs): in eval mode, and
also in train mode where the train-mode forward differs and is deterministic (BatchNorm's batch
statistics; Dropout and attention dropout with the RNG reseeded before every call, i.e. a fixed
mask; StochasticPool2d's draw likewise). Inputs are random permutations of a grid with a fixed
seed, so that no two values tie and none is near 0 (max pooling, amax, ReLU): `_separated` checks
that. (Nearest resizing is a gather whatever the values: it has no such points.)

Where an op's gradient is defined by convention (ties in max pooling, SpatialPyramidPool2d and
amax, ReLU and the other piecewise activations at exactly 0, an all-zero LPPool2d window,
Dropout's mask, StochasticPool2d's drawn element), the convention torch applies in the generated
module is pinned below, so that a change would be caught. The detection ops are gradchecked where
torchvision defines a gradient (box coding, clipping, rescaling, RoIAlign w.r.t. the features, the
RPN head, the transform, post-processing's boxes and scores); what carries none (indices, anchors,
proposals, boxes through RoI pooling) and roi_pool's tie rule are pinned, as torchvision has them,
on the pure-torch path and, where it imports, torchvision's. `test_every_op_is_covered` makes every
registered op appear in a gradcheck case or in `CONVENTIONS`. `test_every_parity_case_runs_in_double`
runs every test_ops_parity network under `.double()`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import netdsl
from netdsl.ir.registry import all_ops

from test_ops_parity import CASES as PARITY_CASES  # tests/ is on sys.path (no package)
from test_ops_parity import build, chain, fn, one, randomised_weights

torch = pytest.importorskip("torch")
from torch.autograd.gradcheck import GradcheckError  # noqa: E402 (after importorskip)

GAP = 1e-3          # least distance between two input values, and from an input value to 0


@dataclass(frozen=True)
class GCase:
    id: str
    spec: str            # network body, as test_ops_parity.Case
    shapes: tuple        # the shape of every input, in declaration order
    train: bool = False  # also gradcheck in train mode
    seeded: bool = False  # reseed the RNG before every call (a fixed dropout mask)
    const: tuple = ()    # inputs read for their shape only (like=): not gradchecked
    kink_free: bool = False  # the last layer has a kink at 0 (ReLU): its inputs must be away from 0
    positive: bool = False   # inputs in [0.5, 3.5] rather than [-1.5, 1.5]


def g(case, train=False, seeded=False, const=(), kink_free=False, positive=False):
    """A GCase from a test_ops_parity case builder's Case with a single run of sizes."""
    (shapes,) = case.sizes
    return GCase(case.id, case.spec, tuple(shapes), train, seeded, const, kink_free, positive)


def c1(id, layers, decl, shape, **kw):
    return g(chain(id, layers, decl, (shape,)), **kw)


IMG = "[N, 2, H, W]"
S = (1, 2, 4, 5)            # default tiny image
SEQ = "[N, 2, L]"

CASES = [
    # ---- convolutions
    c1("conv2d", "Conv2d(3, 3)", IMG, S),
    c1("conv2d-s2p1", "Conv2d(2, 3, stride = 2, padding = 1)", IMG, (1, 2, 5, 4)),
    c1("conv2d-same-even-dil", "Conv2d(2, [2, 3], padding = 'same', dilation = [2, 1])", IMG, S),
    c1("conv2d-groups-nobias", "Conv2d(4, 3, groups = 2, padding = 1, bias = false)", IMG, (1, 2, 3, 3)),
    c1("conv1d", "Conv1d(3, 3, stride = 2, padding = 1)", SEQ, (1, 2, 7)),
    c1("conv1d-same-nobias", "Conv1d(2, 4, padding = 'same', dilation = 2, bias = false)", SEQ, (1, 2, 6)),
    c1("deconv", "ConvTranspose2d(2, 3)", IMG, (1, 2, 3, 4)),
    c1("deconv-s2p1op1", "ConvTranspose2d(2, 3, stride = 2, padding = 1, output_padding = 1)", IMG,
       (1, 2, 3, 2)),
    c1("deconv-op-lt-dil-groups", "ConvTranspose2d(2, 3, dilation = 2, output_padding = 1, groups = 2)",
       IMG, (1, 2, 2, 3)),
    c1("deconv-rect-nobias", "ConvTranspose2d(2, [2, 3], stride = [2, 1], padding = [1, 0], bias = false)",
       IMG, (1, 2, 3, 2)),
    # ---- linear, reshaping
    c1("linear-2d", "Linear(3)", "[N, 4]", (2, 4)),
    c1("linear-3d-nobias", "Linear(3, bias = false)", "[N, T, 4]", (1, 2, 4)),
    # initialisers and frozen = true change __init__ only: the gradients are the layers' own
    c1("init-frozen", "Conv2d(2, 3, init = kaiming_normal(), bias_init = constant(0.1), frozen = true) "
                      "-> ConvTranspose2d(2, 2, stride = 2, init = bilinear())", IMG, (1, 2, 3, 4)),
    c1("flatten-mid", "Flatten(1, 2)", IMG, (1, 2, 3, 2)),
    c1("flatten-linear", "Flatten -> Linear(2)", "[N, 2, 2, 3]", (2, 2, 2, 3)),
    # ---- normalisation, dropout
    c1("bn2d", "BatchNorm2d(momentum = 0.3)", IMG, (2, 2, 2, 3), train=True),
    c1("bn2d-noaffine", "BatchNorm2d(eps = 0.01, affine = false)", IMG, (2, 2, 2, 2), train=True),
    c1("bn1d-2d", "BatchNorm1d", "[N, 3]", (4, 3), train=True),
    c1("bn1d-3d", "BatchNorm1d", SEQ, (2, 2, 3), train=True),
    # BN's in-place ReLU: the pre-activations are checked to stay away from 0
    c1("conv-bn-relu", "Conv2d(3, 3, padding = 1, bias = false) -> BatchNorm2d -> ReLU", IMG,
       (2, 2, 3, 3), train=True, kink_free=True),
    c1("frozen-bn2d", "FrozenBatchNorm2d(eps = 0.001)", IMG, (1, 2, 2, 3)),
    c1("dropout", "Dropout(0.3)", "[N, 6]", (2, 6), train=True, seeded=True),
    c1("lrn-2", "LocalResponseNorm(2, alpha = 0.5)", "[N, 4, H, W]", (1, 4, 2, 2)),
    c1("lrn-3-3d", "LocalResponseNorm(3, alpha = 0.1, beta = 0.5, k = 2.0)", "[N, 3, L]", (1, 3, 4)),
    c1("lrn-5d", "LocalResponseNorm(2, alpha = 0.5)", "[N, 3, D, H, W]", (1, 3, 2, 2, 2)),
    # ---- activations (kinks at 0: the inputs are away from 0)
    c1("relu", "ReLU", IMG, (1, 2, 2, 3)),
    c1("identity", "Identity", IMG, (1, 2, 2, 3)),
    c1("leaky-relu", "LeakyReLU(0.2)", IMG, (1, 2, 2, 3)),
    c1("elu", "ELU(alpha = 0.5)", IMG, (1, 2, 2, 3)),
    c1("gelu", "GELU", IMG, (1, 2, 2, 3)),
    c1("gelu-tanh", "GELU(approximate = 'tanh')", IMG, (1, 2, 2, 3)),
    c1("silu", "SiLU", IMG, (1, 2, 2, 3)),
    c1("sigmoid", "Sigmoid", IMG, (1, 2, 2, 3)),
    c1("tanh", "Tanh", IMG, (1, 2, 2, 3)),
    c1("softmax", "Softmax", IMG, (1, 2, 2, 3)),
    c1("softmax-last", "Softmax(dim = -1)", IMG, (2, 2, 1, 3)),
    c1("softmax-0", "Softmax(0)", IMG, (2, 2, 1, 2)),
    c1("log-softmax", "LogSoftmax", IMG, (1, 2, 2, 3)),
    c1("log-softmax-0", "LogSoftmax(0)", IMG, (2, 2, 1, 2)),
    # (scaled past the kinks at -3, 3 and 6, which the inputs stay away from)
    g(one("relu6", "(x * 5) -> ReLU6", ((1, 2, 2, 3),), IMG)),
    g(one("hardswish", "(x * 4) -> Hardswish", ((1, 2, 2, 3),), IMG)),
    g(one("hardsigmoid", "(x * 4) -> Hardsigmoid", ((1, 2, 2, 3),), IMG)),
    g(one("mish", "(x * 3) -> Mish", ((1, 2, 2, 3),), IMG)),
    c1("prelu", "PReLU", IMG, (1, 2, 2, 3)),
    c1("prelu-channels", "PReLU(2, init = 0.1)", IMG, (1, 2, 2, 3)),
    # ---- pooling (no ties: the inputs are distinct)
    c1("maxpool-2", "MaxPool2d(2)", IMG, S),
    c1("maxpool-3s2p1-ceil", "MaxPool2d(3, stride = 2, padding = 1, ceil_mode = true)", IMG, S),
    c1("maxpool-dil", "MaxPool2d(2, stride = 1, dilation = 2)", IMG, S),
    c1("maxpool-rect", "MaxPool2d([3, 2], stride = [2, 1], padding = [1, 0])", IMG, S),
    c1("avgpool-2", "AvgPool2d(2)", IMG, S),
    c1("avgpool-3s2p1", "AvgPool2d(3, stride = 2, padding = 1)", IMG, S),
    c1("avgpool-3s2p1-ceil-excl", "AvgPool2d(3, stride = 2, padding = 1, ceil_mode = true, "
                                  "count_include_pad = false)", IMG, S),
    c1("avgpool-rect", "AvgPool2d([2, 3], stride = [1, 2], padding = [1, 1])", IMG, S),
    c1("adaptive-avg-nondiv", "AdaptiveAvgPool2d([2, 3])", IMG, (1, 2, 5, 4)),
    c1("adaptive-avg-up", "AdaptiveAvgPool2d([4, 3])", IMG, (1, 2, 3, 2)),
    c1("adaptive-max-nondiv", "AdaptiveMaxPool2d([2, 3])", IMG, (1, 2, 5, 4)),
    c1("adaptive-max-up", "AdaptiveMaxPool2d([4, 3])", IMG, (1, 2, 3, 2)),
    c1("global-avg", "GlobalAvgPool2d", IMG, (1, 2, 3, 2)),
    c1("global-max", "GlobalMaxPool2d", IMG, (2, 2, 3, 2)),
    c1("spp", "SpatialPyramidPool2d([3, 2, 1])", IMG, (1, 2, 5, 4)),
    c1("spp-avg", "SpatialPyramidPool2d([3, 1], mode = 'avg')", IMG, (1, 2, 4, 5)),
    c1("spp-paper", "SpatialPyramidPool2d([2, 1], bins = 'paper')", IMG, (1, 2, 5, 4)),
    c1("spp-paper-avg", "SpatialPyramidPool2d([3, 2], mode = 'avg', bins = 'paper')", IMG, (1, 2, 7, 6)),
    c1("lppool-2", "LPPool2d(2, 3, stride = 2)", IMG, S),
    c1("lppool-1-rect-ceil", "LPPool2d(1, [2, 3], stride = [3, 2], ceil_mode = true)", IMG, S),
    c1("lppool-3-ceil", "LPPool2d(3, 2, stride = 3, ceil_mode = true)", IMG, S, positive=True),
    c1("lppool-1.5", "LPPool2d(1.5, 2)", IMG, S, positive=True),
    # the expectation in eval; in training one drawn element (the RNG reseeded: a fixed draw)
    c1("stochastic", "StochasticPool2d(2)", IMG, (2, 2, 4, 4), positive=True, train=True, seeded=True),
    c1("stochastic-3s2p1", "StochasticPool2d(3, stride = 2, padding = 1)", IMG, S, positive=True,
       train=True, seeded=True),
    # ---- tensor functions
    g(fn("add", {"a": IMG, "b": IMG}, "a + b", (((1, 2, 2, 3), (1, 2, 2, 3)),))),
    g(fn("add-bcast", {"a": IMG, "b": "[1, 2, 1, 1]"}, "a + b", (((2, 2, 2, 3), (1, 2, 1, 1)),))),
    g(fn("add-bcast-rank", {"a": IMG, "b": "[W]"}, "a + b", (((1, 2, 2, 3), (3,)),))),
    g(fn("mul", {"a": IMG, "b": IMG}, "a * b", (((1, 2, 2, 3), (1, 2, 2, 3)),))),
    g(fn("mul-bcast", {"a": "[N, 2, H, 1]", "b": "[N, 1, 1, W]"}, "a * b", (((2, 2, 3, 1), (2, 1, 1, 2)),))),
    g(fn("sub", {"a": IMG, "b": IMG}, "a - b", (((1, 2, 2, 3), (1, 2, 2, 3)),))),
    g(fn("sub-bcast", {"a": "[N, 2, H, 1]", "b": "[W]"}, "b - a", (((2, 2, 3, 1), (2,)),))),
    g(fn("div", {"a": IMG, "b": IMG}, "a / b", (((1, 2, 2, 3), (1, 2, 2, 3)),)), positive=True),
    g(fn("div-bcast", {"a": IMG, "b": "[1, 2, 1, 1]"}, "b / a", (((1, 2, 2, 3), (1, 2, 1, 1)),)), positive=True),
    g(one("scalar-right", "(x * 2 + 3 - 0.5) / 6 -> Conv2d(2, 1)", ((1, 2, 2, 3),), IMG)),
    g(one("scalar-left", "1 - (3 + 2.5 * (x -> Conv2d(2, 1))) / 2", ((1, 2, 2, 3),), IMG)),
    g(one("scalar-div-left", "6 / x", ((1, 2, 2, 3),), IMG), positive=True),
    g(one("neg", "-(x -> Conv2d(2, 1))", ((1, 2, 2, 3),), IMG)),
    g(fn("concat", {"a": IMG, "b": "[N, 1, H, W]"}, "concat(a, b)", (((1, 2, 2, 3), (1, 1, 2, 3)),))),
    g(fn("concat-3-dim2", {"a": IMG, "b": "[N, 2, P, W]", "c": "[N, 2, 1, W]"}, "concat(a, b, c, dim = 2)",
         (((1, 2, 2, 2), (1, 2, 1, 2), (1, 2, 1, 2)),))),
    g(fn("concat-one", {"a": IMG}, "concat(a)", (((1, 2, 2, 3),),))),
    g(fn("crop", {"x": IMG, "t": "[N, 1, P, Q]"}, "center_crop(x, like = t)", (((1, 2, 5, 6), (1, 1, 3, 2)),)),
      const=("t",)),
    g(fn("crop-offset", {"x": IMG, "t": "[N, 1, P, Q]"}, "crop(x, like = t, offset = [2, 1])",
         (((1, 2, 5, 6), (1, 1, 3, 2)),)), const=("t",)),
    g(fn("crop-offset-3d", {"x": SEQ, "t": "[N, 1, P]"}, "crop(x, like = t, offset = 3)",
         (((1, 2, 7), (1, 1, 2)),)), const=("t",)),
    g(fn("crop-3d", {"x": SEQ, "t": "[N, 3, P]"}, "center_crop(x, like = t)", (((1, 2, 7), (1, 3, 3)),)),
      const=("t",)),
    g(one("add-residual", "x + (x -> Conv2d(2, 3, padding = 1))", ((1, 2, 3, 3),), IMG)),
    # in-place ReLUs (after add and Linear), their inputs checked to stay away from 0
    g(one("residual-relu", "(x + (x -> Conv2d(2, 3, padding = 1))) -> ReLU", ((1, 2, 3, 3),), IMG),
      kink_free=True),
    c1("linear-relu", "Linear(5) -> ReLU", "[N, 4]", (2, 4), kink_free=True),
    # ---- learned tensors
    GCase("param-normal", "input x: f32[N, 2, H, W]\nparam bias: f32[1, 2, 1, 1] = normal(0.5)\n"
                          "output y = x + bias", ((1, 2, 2, 3),)),
    GCase("param-uniform", "input x: f32[N, 2, H, W]\nparam scale: f32[2, 1, 1] = uniform(2.0)\n"
                           "output y = x * scale", ((1, 2, 2, 3),)),
    # ---- resize
    g(one("resize-nearest-2", "resize(x, scale = 2)", ((1, 2, 2, 3),), IMG)),
    g(one("resize-nearest-23", "resize(x, scale = [2, 3])", ((1, 1, 2, 3),), IMG)),
    g(one("resize-nearest-half", "resize(x, scale = 0.5)", ((1, 1, 4, 6),), IMG)),
    g(one("resize-nearest-1.5", "resize(x, scale = 1.5)", ((1, 1, 4, 3),), IMG)),
    g(one("resize-nearest-size", "resize(x, size = [3, 5])", ((1, 2, 4, 2),), IMG)),
    g(fn("resize-nearest-like", {"x": IMG, "t": "[N, 1, P, Q]"}, "resize(x, like = t)",
         (((1, 2, 2, 3), (1, 1, 5, 4)),)), const=("t",)),
    g(one("resize-bilinear-2", "resize(x, scale = 2, mode = 'bilinear')", ((1, 2, 2, 3),), IMG)),
    g(one("resize-bilinear-2-ac", "resize(x, scale = 2, mode = 'bilinear', align_corners = true)",
          ((1, 2, 2, 3),), IMG)),
    g(one("resize-bilinear-half", "resize(x, scale = 0.5, mode = 'bilinear')", ((1, 1, 4, 6),), IMG)),
    g(one("resize-bilinear-size-1", "resize(x, size = [1, 4], mode = 'bilinear')", ((1, 2, 3, 3),), IMG)),
    g(one("resize-bilinear-size-ac", "resize(x, size = [3, 5], mode = 'bilinear', align_corners = true)",
          ((1, 2, 4, 2),), IMG)),
    g(fn("resize-bilinear-like", {"x": IMG, "t": "[N, 1, P, Q]"}, "resize(x, like = t, mode = 'bilinear')",
         (((1, 2, 2, 3), (1, 1, 3, 5)),)), const=("t",)),
    # ---- attention, shape functions, reductions
    c1("layernorm", "LayerNorm", "[N, L, 4]", (1, 2, 4)),
    c1("layernorm-noaffine", "LayerNorm(eps = 0.001, elementwise_affine = false)", "[N, 4]", (2, 4)),
    c1("mha-self", "MultiheadAttention(2)", "[N, L, 4]", (1, 3, 4)),
    c1("mha-dropout-nobias", "MultiheadAttention(2, dropout = 0.3, bias = false)", "[N, L, 4]", (2, 3, 4),
       train=True, seeded=True),
    g(fn("mha-qkv", {"q": "[N, L, 4]", "k": "[N, S, 4]", "v": "[N, S, 4]"}, "(q, k, v) -> MultiheadAttention(2)",
         (((1, 2, 4), (1, 3, 4), (1, 3, 4)),))),
    g(fn("matmul", {"a": "[N, L, 3]", "b": "[N, 3, S]"}, "matmul(a, b)", (((1, 2, 3), (1, 3, 2)),))),
    g(fn("matmul-bcast", {"a": "[N, 2, L, 3]", "b": "[3, 2]"}, "matmul(a, b)", (((1, 2, 2, 3), (3, 2)),))),
    g(fn("matmul-vec", {"a": "[N, L, 3]", "b": "[3]"}, "matmul(a, b)", (((1, 2, 3), (3,)),))),
    g(one("reshape-heads", "reshape(x, shape = [0, 0, 2, 2])", ((1, 2, 4),), "[N, L, 4]")),
    c1("reshape-infer", "reshape(shape = [0, 2, -1])", IMG, (1, 2, 2, 3)),
    g(fn("reshape-like", {"x": "[N, 2, L]", "t": "[N, 2, H, W]"}, "reshape(x, shape = [0, 0, -1], like = t)",
         (((1, 2, 6), (1, 2, 3, 2)),)), const=("t",)),
    c1("permute", "permute(dims = [0, 2, 3, 1])", IMG, (1, 2, 2, 3)),
    c1("transpose", "transpose(1, 2)", "[N, L, 3]", (1, 2, 3)),
    GCase("expand-cls", "input x: f32[N, L, 3]\nparam cls: f32[1, 1, 3] = normal(1.0)\n"
                        "output y = concat(expand(cls, like = x, dims = [0]), x, dim = 1)", ((2, 2, 3),)),
    g(fn("expand-two", {"t": "[1, 2, 1, 1]", "x": IMG}, "t -> expand(like = x, dims = [0, -1])",
         (((1, 2, 1, 1), (2, 2, 3, 2)),)), const=("x",)),
    g(one("select", "select(x, dim = 1, index = 1)", ((1, 3, 2),), "[N, L, 2]")),
    c1("select-last", "select(dim = -1, index = -1)", IMG, (1, 2, 2, 3)),
    c1("mean", "mean", IMG, (1, 2, 2, 3)),
    g(one("mean-hw", "mean(x, dims = [2, 3], keepdim = false)", ((1, 2, 2, 3),), IMG)),
    c1("amax", "amax(dims = [1, -1])", IMG, (1, 2, 2, 3)),
    g(one("amax-flat", "amax(x, dims = [2, 3], keepdim = false)", ((1, 2, 3, 2),), IMG)),
    # ---- selection (the values; the indices have no gradient)
    GCase("topk", "input x: f32[N, 2, H, W]\nv, i = topk(x, k = 2)\noutput y = v", ((1, 2, 2, 3),)),
    GCase("topk-smallest-sym", "input x: f32[N, 2, H, W]\nv, i = topk(x, k = 5, dim = 2, largest = false)\n"
                               "output y = v", ((1, 2, 3, 2),)),
    GCase("take", "input x: f32[N, 2, H, W]\ns, i = topk(amax(x, dims = [1, 2, 3], keepdim = false), k = 2)\n"
                  "output y = take(x, i)", ((3, 2, 2, 2),)),
    # ---- channel shuffle, chunk, stochastic depth (train: a fixed mask, reseeded), LayerNorm2d
    c1("channel-shuffle", "ChannelShuffle(2)", "[N, 4, H, W]", (1, 4, 2, 2)),
    GCase("chunk", "input x: f32[N, 2, H, W]\na, b = chunk(x, 2, dim = 2)\noutput y = a\noutput z = b",
          ((1, 2, 4, 3),)),
    GCase("chunk-uneven", "input x: f32[N, 5, L]\na, b, c = x -> chunk(3)\noutput y = a\noutput z = c",
          ((1, 5, 2),)),
    c1("stochastic-depth", "StochasticDepth(0.5)", IMG, (4, 2, 2, 2), train=True, seeded=True),
    c1("stochastic-depth-batch", "StochasticDepth(0.2, mode = 'batch')", IMG, (2, 2, 2, 2), train=True,
       seeded=True),
    c1("layernorm2d", "LayerNorm2d", "[N, 3, H, W]", (1, 3, 2, 2)),
    c1("layernorm2d-noaffine", "LayerNorm2d(eps = 0.001, elementwise_affine = false)", "[N, 3, H, W]",
       (2, 3, 1, 2)),
    # ---- MaxViT: window partitioning, relative positional attention (w.r.t. its bias table too)
    c1("window-partition", "window_partition(2)", IMG, (1, 2, 4, 2)),
    g(one("window-roundtrip", "window_departition(window_partition(x, 2) -> Linear(3), 2, like = x)",
          ((1, 2, 2, 4),), IMG)),
    c1("rel-pos-mha", "window_partition(2) -> RelativePositionalMultiHeadAttention(2)", "[N, 4, H, W]",
       (1, 4, 2, 4)),
    # ---- Swin: shifted windows over a padded map (w.r.t. the bias table too), attention dropout and
    # dropout with a fixed mask in train mode; patch merging. (Version 2's 2,500 cpb_mlp parameters
    # make a full gradcheck slow: tests/test_swin.py checks its gradients by directional derivatives.)
    c1("swin-attn-shift", "ShiftedWindowAttention(2, window_size = 2, shift_size = 1)", "[N, H, W, 4]",
       (1, 3, 4, 4)),
    c1("swin-attn-dropout", "ShiftedWindowAttention(2, window_size = 2, shift_size = 1, "
       "attention_dropout = 0.3, dropout = 0.2)", "[N, H, W, 4]", (2, 3, 3, 4), train=True, seeded=True),
    c1("patch-merge", "patch_merge", "[N, H, W, 2]", (1, 3, 4, 2)),
    # ---- composites: the chain rule across ops
    g(one("cbam-spatial", "x * (concat(mean(x), amax(x)) -> Conv2d(1, 3, padding = 1) -> Sigmoid)",
          ((1, 2, 3, 3),), IMG)),
    GCase("non-local", """input x: f32[N, 2, H, W]
theta = x -> Conv2d(2, 1) -> Flatten(2) -> transpose(1, 2)
phi = x -> Conv2d(2, 1) -> Flatten(2)
g = x -> Conv2d(2, 1) -> Flatten(2) -> transpose(1, 2)
f = matmul(theta, phi) -> Softmax(dim = -1)
y = matmul(f, g) -> permute(dims = [0, 2, 1]) -> reshape(shape = [0, 2, 0, 0], like = x) -> Conv2d(2, 1)
output z = x + y""", ((1, 2, 2, 3),)),
]


# ---- detection: the differentiable ops, where torchvision defines a gradient. Boxes are valid
# as test_ops_parity's DET_CASES build them (anchors decoded by deltas: positive sizes), batch
# indices come from topk; inputs read only for boxes, indices or sizes are const. Deltas are
# inputs in [-1.5, 1.5], divided by weights >= 1: dw, dh stay below box_decode's clamp (4.14).
def _det_rows(t, k):
    """Image 0 of the map t [N, k·A, H, W] as rows [H·W·A, k] (anchor-major within a location)."""
    return f"(select({t}, 0, 0) -> permute(dims = [1, 2, 0]) -> reshape(shape = [-1, {k}]))"


def _det_index(n):
    """A batch index (int64, in [0, N)) per row of the map n [N, A, H, W]: argmax over images."""
    return (f"_, bi2 = topk({n} -> permute(dims = [2, 3, 1, 0]) -> Flatten(0, 2), k = 1, dim = 1)\n"
            "bi = select(bi2, 1, 0)\n")


_DET_ROI = ("input x: f32[N, 3, H, W]\ninput t: f32[N, 4, P, Q]\ninput n: f32[N, 1, P, Q]\n"
            "input f: f32[N, 2, P, Q]\na = anchors(f, x, sizes = [4], aspect_ratios = [1.0])\n"
            + _det_index("n") + f"boxes = box_decode({_det_rows('t', 4)}, a)\n")
_DET_ROI_SHAPES = ((2, 3, 6, 8), (2, 4, 3, 4), (2, 1, 3, 4), (2, 2, 3, 4))

CASES += [
    # box coding: with respect to the deltas and the boxes (both decoded from inputs)
    GCase("det-decode", "input x: f32[N, 3, H, W]\ninput u: f32[N, 4, H, W]\ninput d: f32[N, 8, H, W]\n"
                        "a = anchors(x, x, sizes = [4], aspect_ratios = [1.0])\n"
                        f"boxes = box_decode({_det_rows('u', 4)}, a)\n"
                        f"output y = box_decode({_det_rows('d', 8)}, boxes, weights = [10.0, 10.0, 5.0, 5.0])",
          ((1, 3, 3, 4), (1, 4, 3, 4), (1, 8, 3, 4)), const=("x",)),
    GCase("det-encode", "input x: f32[N, 3, H, W]\ninput u: f32[N, 4, H, W]\ninput v: f32[N, 4, H, W]\n"
                        "a = anchors(x, x, sizes = [4], aspect_ratios = [1.0])\n"
                        f"output y = box_encode(box_decode({_det_rows('u', 4)}, a), "
                        f"box_decode({_det_rows('v', 4)}, a), weights = [10.0, 10.0, 5.0, 5.0])",
          ((1, 3, 3, 4), (1, 4, 3, 4), (1, 4, 3, 4)), const=("x",)),
    # some boxes cross the resized 8x9 image's edges, none within GAP of them
    # (test_det_clip_case_crosses_the_edges_away_from_them)
    GCase("det-clip-rescale", "input images: f32[N, 3, H, W]\ninput n: f32[N, 1, H, W]\ninput u: f32[N, 4, H, W]\n"
                              "x, sizes = detection_transform(images, min_size = 8, max_size = 20, "
                              "size_divisible = 4)\n"
                              "a = anchors(u, images, sizes = [4], aspect_ratios = [1.0])\n" + _det_index("n")
                              + f"boxes = box_decode({_det_rows('u', 4)}, a)\n"
                              "output c = clip_boxes(boxes, bi, sizes)\noutput r = rescale_boxes(boxes, bi, sizes)\n"
                              "output b = boxes",
          ((2, 3, 5, 6), (2, 1, 5, 6), (2, 4, 5, 6)), const=("images", "n")),
    # RoI pooling: with respect to the features (torchvision gives the boxes no gradient)
    GCase("det-roi-align", _DET_ROI + "output y = roi_align(f, boxes, bi, output_size = 3, spatial_scale = 0.5, "
                                      "sampling_ratio = 2)", _DET_ROI_SHAPES, const=("x", "t", "n")),
    GCase("det-roi-align-adaptive-aligned", _DET_ROI + "output y = roi_align(f, boxes, bi, output_size = [2, 3], "
                                                       "spatial_scale = 0.5, aligned = true)",
          _DET_ROI_SHAPES, const=("x", "t", "n")),
    # scales 1/4 and 1/8; canonical_scale 16 sends the boxes to both levels (each gets a gradient)
    GCase("det-msroi", "input images: f32[N, 3, H, W]\ninput t: f32[N, 4, P, Q]\ninput n: f32[N, 1, P, Q]\n"
                       "input f2: f32[N, 2, P, Q]\ninput f3: f32[N, 2, S, T]\n"
                       "x, sizes = detection_transform(images, min_size = 0, size_divisible = 1)\n"
                       "a = anchors(f2, x, sizes = [8], aspect_ratios = [1.0])\n" + _det_index("n")
                       + f"boxes = box_decode({_det_rows('t', 4)}, a)\n"
                       "output y = multiscale_roi_align(f2, f3, boxes, bi, sizes, output_size = 2, "
                       "canonical_scale = 16)",
          ((2, 3, 16, 16), (2, 4, 4, 4), (2, 1, 4, 4), (2, 2, 4, 4), (2, 2, 2, 2)), const=("images", "t", "n")),
    # the head's ReLU inputs are away from 0 (test_det_rpn_head_cases_are_kink_free)
    GCase("det-rpnhead", "input p2: f32[N, 3, H, W]\ninput p3: f32[N, 3, P, Q]\n"
                         "o2, o3, d2, d3 = RPNHead(p2, p3, num_anchors = 2)\n"
                         "output a = o2\noutput b = o3\noutput c = d2\noutput d = d3", ((2, 3, 3, 4), (2, 3, 2, 2))),
    GCase("det-rpnhead-depth2", "input p: f32[N, 2, H, W]\no, d = RPNHead(p, num_anchors = 1, conv_depth = 2)\n"
                                "output a = o\noutput b = d", ((1, 2, 3, 3),)),
    # the transform: normalise, bilinear resize (up: 4x5 -> 6x7; down: 5x6 -> 3x3), zero padding
    GCase("det-transform-up", "input images: f32[N, 3, H, W]\n"
                              "x, sizes = detection_transform(images, min_size = 6, max_size = 10, "
                              "size_divisible = 4)\n"
                              "output y = x", ((2, 3, 4, 5),)),
    GCase("det-transform-down", "input images: f32[N, 3, H, W]\n"
                                "x, sizes = detection_transform(images, min_size = 3, max_size = 4)\noutput y = x",
          ((1, 3, 5, 6),)),
    # post-processing's boxes and scores, with respect to the class logits, the box regression and the
    # proposals (as torchvision's postprocess_detections: nothing detached); the selection is
    # piecewise constant and does not move within gradcheck's steps here
    GCase("det-postprocess", "input images: f32[N, 3, H, W]\ninput u: f32[N, 4, H, W]\ninput c: f32[N, 3, H, W]\n"
                             "input r: f32[N, 12, H, W]\n"
                             "x, sizes = detection_transform(images, min_size = 0, size_divisible = 1)\n"
                             "a = anchors(u, x, sizes = [4], aspect_ratios = [1.0])\n"
                             + _det_index("amax(u, dims = [1])")
                             + f"b, s, l, i = detect_postprocess({_det_rows('c', 3)}, {_det_rows('r', 12)}, "
                             f"box_decode({_det_rows('u', 4)}, a), bi, sizes, score_thresh = 0.2, "
                             "nms_thresh = 0.4)\n"
                             "output boxes = b\noutput scores = s",
          ((1, 3, 3, 4), (1, 4, 3, 4), (1, 3, 3, 4), (1, 12, 3, 4)), const=("images",)),
]

# Ops whose gradient is (also) a convention rather than a derivative: the test pinning it.
CONVENTIONS = {
    "MaxPool2d": "test_max_pool_ties_go_to_the_first_in_scan_order",
    "AdaptiveMaxPool2d": "test_adaptive_max_pool_ties_go_to_the_first_in_scan_order",
    "GlobalMaxPool2d": "test_global_max_pool_and_amax_split_ties_evenly",
    "amax": "test_global_max_pool_and_amax_split_ties_evenly",
    "ReLU": "test_relu_gradient_at_zero_is_zero",
    "LeakyReLU": "test_leaky_relu_and_elu_at_zero_take_the_negative_side",
    "ELU": "test_leaky_relu_and_elu_at_zero_take_the_negative_side",
    "Dropout": "test_dropout_gradient_is_the_mask_over_keep_probability",
    "SpatialPyramidPool2d": "test_adaptive_max_pool_ties_go_to_the_first_in_scan_order",
    "LPPool2d": "test_lp_pool_gradient_of_an_all_zero_window_is_zero",
    "StochasticPool2d": "test_stochastic_pool_training_gradient_reaches_the_drawn_element_only",
    # detection (the differentiable ones are gradchecked above; these pin what flows, as torchvision)
    "roi_pool": "test_det_roi_pool_ties_go_to_the_first_in_scan_order",
    "nms": "test_det_index_ops_and_anchors_carry_no_gradient",
    "batched_nms": "test_det_index_ops_and_anchors_carry_no_gradient",
    "remove_small_boxes": "test_det_index_ops_and_anchors_carry_no_gradient",
    "anchors": "test_det_index_ops_and_anchors_carry_no_gradient",
    "rpn_proposals": "test_det_rpn_proposals_are_detached_from_the_head",
    "sample_rois": "test_det_sample_rois_passes_its_inputs_gradient_through",
    "detect_postprocess": "test_det_postprocess_scores_and_boxes_carry_the_gradient",
}

BY_ID = {c.id: c for c in CASES}
assert len(BY_ID) == len(CASES), "duplicate case ids"


# ---- helpers --------------------------------------------------------------------------------
def _inputs(shapes, seed, positive=False):
    """A random permutation of a grid symmetric about 0 (positive: about 2), jittered by less than
    a quarter step, over about [-1.5, 1.5]: values at least GAP apart and at least GAP/2 from 0."""
    rng = np.random.default_rng(seed)
    xs = []
    for shape in shapes:
        n = int(np.prod(shape))
        step = 3.0 / n
        grid = (np.arange(n) + 0.5 - n / 2) * step + rng.uniform(-step / 4, step / 4, n) + 2.0 * positive
        xs.append(torch.from_numpy(rng.permutation(grid).reshape(shape)))
    return xs


def _separated(t, gap=GAP):
    v = np.sort(t.detach().reshape(-1).numpy())
    return bool(np.abs(v).min() >= gap / 2 and (v.size < 2 or np.diff(v).min() >= gap))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: threads only cost (they spin on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


_NETS = {}


def _net(case):
    """The case's network (test_ops_parity's wrapper) and random weights (random BatchNorm
    statistics and norm scales too)."""
    if case.id not in _NETS:
        net = build(case)
        weights = randomised_weights(net)
        rng = np.random.default_rng(2)
        for node in net.graph.nodes:
            if node.op == "RPNHead":    # normal(0.01) weights, zero biases: Jacobians below gradcheck's atol
                for pname, spec in node.params.items():
                    weights[f"{node.path}.{pname}"] = rng.normal(0, 0.5, spec.shape).astype(np.float32)
        _NETS[case.id] = (net, weights)
    return _NETS[case.id][0]


def _module(case):
    """A fresh generated module, float64."""
    net = _net(case)
    return net, net.to_torch(_NETS[case.id][1]).double()


def _function(module, names, const, seeded):
    """f(*grad_inputs, *params) -> outputs, the other inputs held constant."""
    def f(*args):
        args = list(args)
        xs = [const[n] if n in const else args.pop(0) for n in names]
        params = dict(zip(pnames, args))
        if seeded:
            with torch.random.fork_rng():
                torch.manual_seed(1234)
                return torch.func.functional_call(module, params, tuple(xs))
        return torch.func.functional_call(module, params, tuple(xs))
    pnames = [n for n, _ in module.named_parameters()]
    return f


def _gradcheck(case, mode):
    net, module = _module(case)
    module.train(mode == "train")
    names = [v.name for v in net.graph.inputs]
    xs = _inputs(case.shapes, seed=sum(map(ord, case.id)), positive=case.positive)
    for name, x in zip(names, xs):
        assert _separated(x), f"input {name} has values closer than {GAP} (or to 0)"
    const = {n: x for n, x in zip(names, xs) if n in case.const}
    assert set(const) == set(case.const), "const names an unknown input"
    grad_in = [x.clone().requires_grad_() for n, x in zip(names, xs) if n not in const]
    params = [p.detach().clone().requires_grad_() for _, p in module.named_parameters()]
    assert all(p.dtype == torch.float64 for p in params)
    f = _function(module, names, const, case.seeded)

    outs = f(*grad_in, *params)
    outs = outs if isinstance(outs, tuple) else (outs,)
    for o in outs:
        assert o.dtype == torch.float64, f"output is {o.dtype} after .double()"
        assert o.requires_grad
    if case.kink_free:      # the same network without its last layer, on the same weights
        pre = netdsl.loads("network pre {\n" + case.spec.rsplit("->", 1)[0] + "\n}").to_torch().double()
        pre.load_state_dict(module.state_dict())
        with torch.no_grad():
            assert float(pre.train(mode == "train")(*xs).abs().min()) > GAP, "an input of the kink is near 0"

    # not vacuous: every gradchecked tensor influences the outputs
    grads = torch.autograd.grad(outs, grad_in + params,
                                [torch.randn(o.shape, dtype=o.dtype, generator=torch.Generator().manual_seed(0))
                                 for o in outs], allow_unused=True)
    what = [f"input {n}" for n in names if n not in const] + [f"parameter {n}" for n, _ in module.named_parameters()]
    for w, gr in zip(what, grads):
        assert gr is not None and float(gr.abs().max()) > 0, f"{case.id} ({mode}): {w} gets no gradient"

    assert torch.autograd.gradcheck(f, tuple(grad_in + params), eps=1e-6, atol=1e-6, rtol=1e-4)
    if mode == "train" and case.seeded:
        # the mask really is random (else the seeded case would test nothing of dropout)
        unseeded = _function(module, names, const, False)
        torch.manual_seed(0)
        a = unseeded(*grad_in, *params)
        b = unseeded(*grad_in, *params)
        assert not torch.equal(a, b)


# ---- gradcheck ------------------------------------------------------------------------------
RUNS = [(c, "eval") for c in CASES] + [(c, "train") for c in CASES if c.train]


@pytest.mark.parametrize("case,mode", RUNS, ids=[f"{c.id}-{m}" for c, m in RUNS])
def test_gradcheck(case, mode):
    _gradcheck(case, mode)


def test_train_mode_cases_differ_from_eval():
    """The train-mode runs test something eval mode does not: the outputs differ."""
    for case in CASES:
        if not case.train:
            continue
        net, module = _module(case)
        names = [v.name for v in net.graph.inputs]
        xs = _inputs(case.shapes, seed=1, positive=case.positive)
        f = _function(module, names, {}, case.seeded)
        params = [p.detach() for _, p in module.named_parameters()]
        with torch.no_grad():
            module.eval()
            ev = f(*xs, *params)
            module.train()
            tr = f(*xs, *params)
        assert float((ev - tr).abs().max()) > 1e-3, case.id


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
def test_every_parity_case_runs_in_double():
    """Every test_ops_parity network (all attribute variants, at their own sizes) converted with
    .double(): float64 outputs in eval and in train mode, and in eval the float32 module's values
    (a float32-specific constant or a float32 tensor made in forward() would show here)."""
    rng = np.random.default_rng(0)
    for case in PARITY_CASES:
        net = build(case)
        weights = randomised_weights(net)
        single = net.to_torch(weights).eval()
        double = net.to_torch(weights).double().eval()
        xs = [rng.standard_normal(s) for s in case.sizes[0]]
        with torch.no_grad():
            want = single(*[torch.from_numpy(x).float() for x in xs])
            got = double(*[torch.from_numpy(x) for x in xs])
            want, got = (t if isinstance(t, tuple) else (t,) for t in (want, got))
            for w, o in zip(want, got, strict=True):
                if not w.is_floating_point():       # int64 indices (topk): the same ones
                    assert o.dtype == w.dtype and torch.equal(w, o), case.id
                    continue
                assert o.dtype == torch.float64, case.id
                fin = torch.isfinite(w)
                assert torch.equal(fin, torch.isfinite(o)), case.id
                assert fin.any(), case.id
                scale = max(1.0, float(w[fin].abs().max()))
                assert float((w[fin].double() - o[fin]).abs().max()) <= 1e-4 * scale, case.id
            outs = double.train()(*[torch.from_numpy(x).abs() for x in xs])   # >= 0: StochasticPool2d
            assert all(o.dtype in (torch.float64, torch.int64)
                       for o in (outs if isinstance(outs, tuple) else (outs,))), case.id


def test_gradcheck_catches_a_wrong_gradient(monkeypatch):
    """The harness really compares gradients through the generated module: a torch.tanh whose
    backward is off by a factor fails it (and the right one passes)."""
    real = torch.tanh

    class WrongTanh(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = real(x)
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, gy):
            (y,) = ctx.saved_tensors
            return gy * (1 - y * y) * 1.01

    case = BY_ID["tanh"]
    assert "torch.tanh(" in _net(case).torch_source()
    monkeypatch.setattr(torch, "tanh", WrongTanh.apply)
    with pytest.raises(GradcheckError, match="Jacobian mismatch"):
        _gradcheck(case, "eval")
    monkeypatch.setattr(torch, "tanh", real)
    _gradcheck(case, "eval")


def test_every_op_is_covered():
    """Every registered op has a gradcheck case or a convention test (see CONVENTIONS)."""
    checked = {node.op for case in CASES for node in _net(case).graph.nodes}
    missing = sorted(set(all_ops()) - checked - set(CONVENTIONS))
    assert missing == [], f"ops with neither a gradcheck case nor a convention test: {missing}"
    assert sorted(set(CONVENTIONS) - set(all_ops())) == []
    for op, test in CONVENTIONS.items():
        assert callable(globals().get(test)), f"{op}: no test {test}"


def test_inputs_are_tie_free_and_checked():
    """The input generator and the separation check it is held to."""
    (x,) = _inputs([(1, 2, 5, 6)], seed=3)
    assert x.dtype == torch.float64 and _separated(x)
    assert not _separated(torch.tensor([0.5, 0.5 + GAP / 2]))
    assert not _separated(torch.tensor([0.5, GAP / 4]))
    (y,) = _inputs([(1, 2, 5, 6)], seed=4)
    assert not torch.equal(x, y)
    (z,) = _inputs([(1, 2, 5, 6)], seed=3, positive=True)
    assert float(z.min()) > 0.4 and _separated(z)


# ---- conventions ----------------------------------------------------------------------------
def _module_of(body, weights=None):
    net = netdsl.loads("network conv_case {\n" + body + "\n}")
    return net.to_torch(weights).double()


def _grad(module, x, gout=None):
    x = x.clone().requires_grad_()
    y = module(x)
    y.backward(torch.ones_like(y) if gout is None else gout)
    return y.detach(), x.grad


def _ties(shape, seed, levels=3):
    """Small integers: most windows hold ties."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, levels, shape).astype(np.float64))


def _first_max_grad(x, windows):
    """The gradient of sum(outputs) when each window's whole gradient goes to the first of its
    maxima in row-major scan order. windows: for each output position, its input (h, w) list."""
    want = np.zeros_like(x)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for cells in windows:
                vals = [x[n, c, h, w] for h, w in cells]
                h, w = cells[int(np.argmax(vals))]     # np.argmax: the first maximum
                want[n, c, h, w] += 1
    return want


def _pool_windows(size, k, s, p, d, ceil):
    """For MaxPool2d: the in-bounds cells of every window (rows, then columns), torch's sizes."""
    axes = []
    for L, kk, ss, pp, dd in zip(size, k, s, p, d):
        span = dd * (kk - 1) + 1
        num = L + 2 * pp - span
        out = (-(-num // ss) if ceil else num // ss) + 1
        if ceil and (out - 1) * ss >= L + pp:
            out -= 1
        axes.append([[o * ss - pp + j * dd for j in range(kk) if 0 <= o * ss - pp + j * dd < L]
                     for o in range(out)])
    return [[(h, w) for h in rows for w in cols] for rows in axes[0] for cols in axes[1]]


MAX_TIES = [("MaxPool2d(2)", (2, 2), (2, 2), (0, 0), (1, 1), False),
            ("MaxPool2d(3, stride = 1)", (3, 3), (1, 1), (0, 0), (1, 1), False),
            ("MaxPool2d(3, stride = 2, padding = 1, ceil_mode = true)", (3, 3), (2, 2), (1, 1), (1, 1), True),
            ("MaxPool2d([3, 2], stride = [2, 1], padding = [1, 0], dilation = [1, 2])",
             (3, 2), (2, 1), (1, 0), (1, 2), False)]


@pytest.mark.parametrize("layer,k,s,p,d,ceil", MAX_TIES, ids=[m[0] for m in MAX_TIES])
def test_max_pool_ties_go_to_the_first_in_scan_order(layer, k, s, p, d, ceil):
    """torch's max_pool2d sends a window's whole gradient to its first maximum (row-major),
    overlapping windows adding up; the output itself is the maximum either way."""
    module = _module_of(f"input x: f32[N, 3, H, W]\noutput y = x -> {layer}")
    x = _ties((2, 3, 6, 7), seed=5)
    y, got = _grad(module, x)
    windows = _pool_windows((6, 7), k, s, p, d, ceil)
    assert y.shape[2] * y.shape[3] == len(windows)
    want = _first_max_grad(x.numpy(), windows)
    xn = x.numpy()
    tied = sum(1 for cells in windows for n in range(2) for c in range(3)
               if sum(xn[n, c, h, w] == max(xn[n, c, i, j] for i, j in cells) for h, w in cells) > 1)
    assert tied > 10, "too few windows hold a tied maximum"
    np.testing.assert_array_equal(got.numpy(), want)
    # a constant input: every window's gradient lands on its top-left in-bounds cell
    _, got = _grad(module, torch.zeros(1, 3, 6, 7, dtype=torch.float64))
    np.testing.assert_array_equal(got.numpy(), _first_max_grad(np.zeros((1, 3, 6, 7)), windows))


def bins_of(L, n):
    """Adaptive pooling's bins along an axis of size L: [floor(i L / n), ceil((i + 1) L / n))."""
    return [list(range(i * L // n, -(-(i + 1) * L // n))) for i in range(n)]


def test_adaptive_max_pool_ties_go_to_the_first_in_scan_order():
    module = _module_of("input x: f32[N, 3, H, W]\noutput y = x -> AdaptiveMaxPool2d([2, 3])")
    x = _ties((2, 3, 5, 7), seed=6)
    y, got = _grad(module, x)
    windows = [[(h, w) for h in rows for w in cols] for rows in bins_of(5, 2) for cols in bins_of(7, 3)]
    np.testing.assert_array_equal(got.numpy(), _first_max_grad(x.numpy(), windows))
    assert int((got > 0).sum()) < 2 * 3 * 6            # overlapping bins may share a cell
    # AdaptiveMaxPool2d(1) takes one element; GlobalMaxPool2d splits (next test)
    one = _module_of("input x: f32[N, 3, H, W]\noutput y = x -> AdaptiveMaxPool2d(1)")
    _, got = _grad(one, torch.zeros(1, 3, 2, 2, dtype=torch.float64))
    assert got[0, :, 0, 0].tolist() == [1.0] * 3 and float(got.sum()) == 3
    # SpatialPyramidPool2d's max levels: the same (bins 'adaptive' and 'paper' alike)
    x = _ties((2, 3, 5, 5), seed=7)
    for bins in ("adaptive", "paper"):
        spp = _module_of(f"input x: f32[N, 3, H, W]\noutput y = x -> SpatialPyramidPool2d([2, 1], bins = '{bins}')")
        _, got = _grad(spp, x)
        whole = [[(h, w) for h in range(5) for w in range(5)]]
        if bins == "adaptive":
            quads = [[(h, w) for h in rows for w in cols] for rows in bins_of(5, 2) for cols in bins_of(5, 2)]
        else:                           # window ceil(5 / 2) = 3, stride floor(5 / 2) = 2
            quads = _pool_windows((5, 5), (3, 3), (2, 2), (0, 0), (1, 1), False)
        np.testing.assert_array_equal(got.numpy(), _first_max_grad(x.numpy(), quads + whole))


def test_global_max_pool_and_amax_split_ties_evenly():
    """GlobalMaxPool2d (emitted as amax) and amax share a tied maximum's gradient evenly among
    the tied elements."""
    for body in ("x -> GlobalMaxPool2d", "amax(x, dims = [2, 3])", "amax(x, dims = [1, -1], keepdim = false)"):
        module = _module_of(f"input x: f32[N, 3, H, W]\noutput y = {body}")
        x = _ties((2, 3, 4, 5), seed=7)
        gout = torch.arange(1.0, 1 + module(x).numel(), dtype=torch.float64)
        y, got = _grad(module, x, gout.reshape(module(x).shape))
        dims = (2, 3) if "Global" in body or "[2, 3]" in body else (1, 3)
        ymax = x.amax(dims, keepdim=True)
        tied = (x == ymax).double()
        count = tied.sum(dims, keepdim=True)
        assert float(count.max()) >= 2, "no tie"
        want = tied / count * gout.reshape(ymax.shape)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


def test_relu_gradient_at_zero_is_zero():
    """Both emitted forms: F.relu, and the in-place one after a conv/BatchNorm."""
    plain = _module_of("input x: f32[N, 3, H, W]\noutput y = x -> ReLU")
    x = torch.tensor([-1.0, 0.0, 2.0, 0.0, -0.0], dtype=torch.float64).reshape(1, 1, 1, 5).expand(1, 3, 1, 5)
    _, got = _grad(plain, x.contiguous())
    assert got[0, 0, 0].tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]

    net = netdsl.loads("network inplace_relu {\ninput x: f32[N, 3, H, W]\n"
                       "output y = x -> Conv2d(3, 1, bias = false) -> ReLU\n}")
    assert "inplace=True" in net.torch_source()
    eye = np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1)
    module = net.to_torch({"conv2d.weight": eye}).double()
    _, got = _grad(module, x.contiguous())
    assert got[0, :, 0].tolist() == [[0.0, 0.0, 1.0, 0.0, 0.0]] * 3


def test_leaky_relu_and_elu_at_zero_take_the_negative_side():
    """At exactly 0 torch uses the slope of the negative side: negative_slope, and alpha."""
    x = torch.tensor([[-1.0, 0.0, 1.0]], dtype=torch.float64)
    _, got = _grad(_module_of("input x: f32[N, 3]\noutput y = x -> LeakyReLU(0.2)"), x)
    torch.testing.assert_close(got, torch.tensor([[0.2, 0.2, 1.0]], dtype=torch.float64))
    _, got = _grad(_module_of("input x: f32[N, 3]\noutput y = x -> ELU(alpha = 0.5)"), x)
    torch.testing.assert_close(got, torch.tensor([[0.5 * np.exp(-1.0), 0.5, 1.0]], dtype=torch.float64))


def test_dropout_gradient_is_the_mask_over_keep_probability():
    module = _module_of("input x: f32[N, 64]\noutput y = x -> Dropout(0.25)")
    x = torch.from_numpy(np.random.default_rng(8).uniform(0.5, 1.5, (4, 64)))
    gout = torch.from_numpy(np.random.default_rng(9).normal(size=(4, 64)))
    torch.manual_seed(0)
    y, got = _grad(module.train(), x, gout)
    mask = (y != 0).double()
    assert 0 < float(mask.mean()) < 1
    torch.testing.assert_close(y, x * mask / 0.75, rtol=1e-12, atol=0)
    torch.testing.assert_close(got, gout * mask / 0.75, rtol=1e-12, atol=0)
    # eval: the identity
    _, got = _grad(module.eval(), x, gout)
    assert torch.equal(got, gout)


def test_lp_pool_gradient_of_an_all_zero_window_is_zero():
    """(sum x^p)^(1/p) has no derivative where a whole window is 0 (common after a ReLU); torch's
    lp_pool2d gives 0 there (its relu(|.|) cuts the infinite pow gradient), not NaN, and so even for
    p = 1, a sum whose derivative is 1. Elsewhere a zero element of a window gets 0 for p > 1."""
    for p in (2, 3, 1.5, 1):
        module = _module_of(f"input x: f32[N, 1, H, W]\noutput y = x -> LPPool2d({p}, 2)")
        x = torch.zeros(1, 1, 2, 4, dtype=torch.float64)
        x[0, 0, 0, 2], x[0, 0, 1, 3] = 0.6, 0.8             # the second window: norm_2 = 1
        y, got = _grad(module, x)
        assert float(y[0, 0, 0, 0]) == 0 and float(y[0, 0, 0, 1]) > 0
        assert bool(torch.isfinite(got).all())
        assert float(got[0, 0, :, :2].abs().sum()) == 0
        want = (x[0, 0, :, 2:] / y[0, 0, 0, 1]) ** (p - 1)      # d/dx_i (sum x^p)^(1/p)
        torch.testing.assert_close(got[0, 0, :, 2:], want, rtol=1e-12, atol=0)


def test_stochastic_pool_training_gradient_reaches_the_drawn_element_only():
    """Training: each window's gradient goes to the one element it output (StochasticPool2d's
    own tests check the draw itself)."""
    module = _module_of("input x: f32[N, 3, H, W]\noutput y = x -> StochasticPool2d(2)").train()
    (x,) = _inputs([(2, 3, 6, 8)], seed=10, positive=True)
    gout = torch.from_numpy(np.random.default_rng(11).uniform(1, 2, (2, 3, 3, 4)))
    torch.manual_seed(0)
    y, got = _grad(module, x, gout)
    win = got.reshape(2, 3, 3, 2, 4, 2).permute(0, 1, 2, 4, 3, 5).reshape(2, 3, 3, 4, 4)
    xs = x.reshape(2, 3, 3, 2, 4, 2).permute(0, 1, 2, 4, 3, 5).reshape(2, 3, 3, 4, 4)
    assert ((win != 0).sum(-1) == 1).all()                   # one element per window
    torch.testing.assert_close(win.sum(-1), gout, rtol=0, atol=0)
    drawn = win.argmax(-1, keepdim=True)
    torch.testing.assert_close(xs.gather(-1, drawn)[..., 0], y, rtol=0, atol=0)
    assert len(set(drawn.reshape(-1).tolist())) > 1          # not always the same position


# ---- detection ------------------------------------------------------------------------------
def test_det_clip_case_crosses_the_edges_away_from_them():
    """det-clip-rescale's boxes: some coordinates are clipped at each edge of the resized 8x9 image
    and some are not (both sides of clip_boxes' clamp are gradchecked), none within GAP of an edge."""
    case = BY_ID["det-clip-rescale"]
    _, module = _module(case)
    with torch.no_grad():
        clipped, _, boxes = module(*_inputs(case.shapes, seed=sum(map(ord, case.id))))
    for cols, edge in (((0, 2), 9.0), ((1, 3), 8.0)):     # x: width 9, y: height 8
        v = boxes[:, cols]
        assert float((v.abs()).min()) > GAP and float((v - edge).abs().min()) > GAP
        assert bool((v < 0).any()) and bool((v > edge).any()) and bool(((v > 0) & (v < edge)).any())
        torch.testing.assert_close(clipped[:, cols], v.clamp(0, edge), rtol=0, atol=0)


def test_det_rpn_head_cases_are_kink_free():
    """The RPNHead cases' ReLU inputs (each shared conv's outputs) are at least GAP from 0."""
    for cid in ("det-rpnhead", "det-rpnhead-depth2"):
        case = BY_ID[cid]
        _, module = _module(case)
        pre = []
        for name, layer in module.named_modules():
            if isinstance(layer, torch.nn.Conv2d) and ".conv." in f".{name}.":
                layer.register_forward_hook(lambda _m, _i, out: pre.append(out.detach().clone()))
        with torch.no_grad():
            module(*_inputs(case.shapes, seed=sum(map(ord, case.id))))
        assert len(pre) == 2, cid                          # two levels / two convs
        assert min(float(p.abs().min()) for p in pre) > GAP, cid
        assert all(bool((p < 0).any()) and bool((p > 0).any()) for p in pre), cid   # the ReLU cuts


DET_PATHS = ("pure", "torchvision")


def _det_module(body, path="pure"):
    """A float64 module and its generated source's globals, the RoI / NMS kernels forced to the
    pure-torch path or to torchvision's (skipped where torchvision's compiled ops do not import)."""
    net = netdsl.loads("network det_case {\n" + body + "\n}")
    module = net.to_torch(net.init_weights(0)).double()
    ns = type(module).forward.__globals__
    ns["DET_USE_TORCHVISION"] = path == "torchvision"
    if path == "torchvision" and ns["det_torchvision_ops"]() is None:
        pytest.skip("torchvision's compiled ops are not available")
    return net, module, ns


def _c_round(v):
    """C's round(): halves away from zero."""
    return int(np.sign(v) * np.floor(abs(v) + 0.5))


def _roi_pool_bins(box, scale, out, size):
    """torchvision's roi_pool kernel: the cells (rows, then columns) of every bin of a box."""
    (oh, ow), (H, W) = out, size
    x1, y1, x2, y2 = (_c_round(v * scale) for v in box)
    bh, bw = max(y2 - y1 + 1, 1) / oh, max(x2 - x1 + 1, 1) / ow
    rows = [range(min(max(int(np.floor(p * bh)) + y1, 0), H), min(max(int(np.ceil((p + 1) * bh)) + y1, 0), H))
            for p in range(oh)]
    cols = [range(min(max(int(np.floor(p * bw)) + x1, 0), W), min(max(int(np.ceil((p + 1) * bw)) + x1, 0), W))
            for p in range(ow)]
    return [[(h, w) for h in r for w in c] for r in rows for c in cols]


@pytest.mark.parametrize("path", DET_PATHS)
def test_det_roi_pool_ties_go_to_the_first_in_scan_order(path):
    """roi_pool (max): each bin's whole gradient goes to its first maximum in row-major scan order
    (torchvision's kernel keeps a value only if it is strictly greater), overlapping bins adding
    up; an empty bin (a box outside the map) outputs 0 and passes no gradient."""
    _, module, _ = _det_module("input f: f32[N, 3, H, W]\ninput b: f32[R, 4]\ninput s: f32[R, N]\n"
                               "_, i = topk(s, k = 1, dim = 1)\n"
                               "output y = roi_pool(f, b, select(i, 1, 0), output_size = [3, 2], "
                               "spatial_scale = 0.5)",
                               path)
    boxes = [[1.0, 2.0, 12.0, 11.0], [-3.0, 5.0, 20.0, 18.0], [4.0, 4.0, 4.4, 4.2], [30.0, 30.0, 40.0, 40.0],
             [2.0, 1.0, 9.0, 7.0]]
    images = [0, 1, 1, 0, 1]
    b = torch.tensor(boxes, dtype=torch.float64)
    s = torch.nn.functional.one_hot(torch.tensor(images), 2).double()
    for x in (_ties((2, 3, 7, 8), seed=12), torch.zeros(2, 3, 7, 8, dtype=torch.float64)):
        f = x.clone().requires_grad_()
        y = module(f, b, s)
        y.sum().backward()
        xn, want, tied, empty = x.numpy(), np.zeros(x.shape), 0, 0
        for r, (box, n) in enumerate(zip(boxes, images)):
            for k, cells in enumerate(_roi_pool_bins(box, 0.5, (3, 2), (7, 8))):
                got_y = y[r, :, k // 2, k % 2].detach().numpy()
                if not cells:
                    empty += 1
                    assert (got_y == 0).all()
                    continue
                for c in range(3):
                    vals = [xn[n, c, h, w] for h, w in cells]
                    assert got_y[c] == max(vals)
                    tied += vals.count(max(vals)) > 1
                    h, w = cells[int(np.argmax(vals))]           # the first maximum
                    want[n, c, h, w] += 1
        np.testing.assert_array_equal(f.grad.numpy(), want)
        assert empty == 8 and tied > 20                          # the box outside, a clamped row
        assert want.max() > 1                                    # bins overlap (the tiny box: one cell)



@pytest.mark.parametrize("path", DET_PATHS)
def test_det_roi_ops_give_the_boxes_no_gradient(path):
    """roi_align, roi_pool and multiscale_roi_align pass no gradient to the boxes (torchvision's
    kernels return none for the rois; the det-roi-* and det-msroi gradchecks hold them constant)."""
    _, module, _ = _det_module("""input images: f32[N, 3, H, W]
input t: f32[N, 4, P, Q]
input f: f32[N, 2, P, Q]
input f2: f32[N, 2, S, T]
x, sizes = detection_transform(images, min_size = 0, size_divisible = 1)
a = anchors(f, x, sizes = [8], aspect_ratios = [1.0])
""" + _det_index("amax(t, dims = [1])") + f"""boxes = box_decode({_det_rows("t", 4)}, a)
output ra = roi_align(f, boxes, bi, output_size = 2, spatial_scale = 0.25, sampling_ratio = 2)
output rp = roi_pool(f, boxes, bi, output_size = 2, spatial_scale = 0.25)
output ms = multiscale_roi_align(f, f2, boxes, bi, sizes, output_size = 2, canonical_scale = 16)
output b = boxes""", path)
    images = torch.zeros(2, 3, 16, 16, dtype=torch.float64)
    t, f, f2 = _inputs([(2, 4, 4, 4), (2, 2, 4, 4), (2, 2, 2, 2)], seed=19)
    *pooled, b = module(images, t.requires_grad_(), f, f2)
    assert b.requires_grad
    for out in pooled:
        assert float(out.detach().abs().max()) > 0
        if out.requires_grad:                     # torchvision's autograd function: no rois gradient
            (grad,) = torch.autograd.grad(out.sum(), t, allow_unused=True, retain_graph=True)
            assert grad is None or float(grad.abs().max()) == 0

def test_det_index_ops_and_anchors_carry_no_gradient():
    """nms, batched_nms and remove_small_boxes give int64 indices; anchors depend on the sizes
    only: none of them carries a gradient, although the boxes and scores they read do."""
    from test_ops_parity import DET_HEAD
    net, module, _ = _det_module(DET_HEAD + "output k = nms(boxes, s, iou_threshold = 0.3)\n"
                                 "output kb = batched_nms(boxes, s, groups, iou_threshold = 0.3)\n"
                                 "output r = remove_small_boxes(boxes, min_size = 3.0)\n"
                                 "output anc = a\noutput bx = boxes\noutput sc = s")
    (x,) = _inputs([(2, 3, 9, 11)], seed=13)
    k, kb, r, anc, bx, sc = module(x.requires_grad_())
    assert bx.requires_grad and sc.requires_grad
    for idx in (k, kb, r):
        assert idx.dtype == torch.int64 and not idx.requires_grad and idx.numel() > 0
    assert r.numel() < bx.shape[0] and k.numel() < bx.shape[0]          # they select
    assert anc.dtype == torch.float64 and not anc.requires_grad and anc.shape == bx.shape


_DET_RPN = """input images: f32[N, 3, H, W]
x, sizes = detection_transform(images, min_size = 0, size_divisible = 16)
f = x -> Conv2d(4, 3, stride = 4, padding = 1)
o, d = RPNHead(f, num_anchors = 3)
p, pi = rpn_proposals(o, d, anchors(f, x, sizes = [16]), sizes, pre_nms_top_n = [50, 50], post_nms_top_n = [20, 20])
output y = roi_align(f, p, pi, output_size = 2, spatial_scale = 0.25, sampling_ratio = 2)
output props = p
output logits = o"""


def test_det_rpn_proposals_are_detached_from_the_head():
    """rpn_proposals' boxes are decoded from detached deltas and chosen on detached objectness, as
    torchvision's RegionProposalNetwork does: in eval and in training (with targets, where the RPN
    losses do reach the head), no gradient reaches the head through them; the features they pool
    still get theirs."""
    net, module, ns = _det_module(_DET_RPN)
    head = next(n.path for n in net.graph.nodes if n.op == "RPNHead") + "."
    images = torch.from_numpy(np.random.default_rng(14).uniform(0, 1, (2, 3, 48, 64)))
    for mode in ("eval", "train"):
        module.train(mode == "train")
        module.zero_grad()
        y, props, logits = module(images)
        assert props.numel() > 0 and logits.requires_grad and y.requires_grad
        assert not props.requires_grad
        y.sum().backward()
        for name, p in module.named_parameters():
            if name.startswith(head):
                assert p.grad is None, (mode, name)
            else:
                assert p.grad is not None and float(p.grad.abs().max()) > 0, (mode, name)
    seen, real = [], ns["det_rpn_proposals"]
    ns["det_rpn_proposals"] = lambda *a, **k: seen.append(real(*a, **k)) or seen[-1]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([1])}] * 2
    torch.manual_seed(0)
    losses = module.train()(images, targets)
    assert losses["loss_objectness"].requires_grad and losses["loss_rpn_box_reg"].requires_grad
    (props, _), = seen
    assert props.numel() > 0 and not props.requires_grad


_DET_SAMPLE = f"""input images: f32[N, 3, H, W]
input u: f32[N, 4, H, W]
x, sizes = detection_transform(images, min_size = 0, size_divisible = 1)
a = anchors(u, x, sizes = [4], aspect_ratios = [1.0])
{_det_index("amax(u, dims = [1])")}boxes = box_decode({_det_rows("u", 4)}, a)
rois, ri = sample_rois(boxes, bi, batch_size_per_image = 8, positive_fraction = 0.5)
output r = rois
output b = boxes"""


def test_det_sample_rois_passes_its_inputs_gradient_through():
    """sample_rois detaches nothing, as torchvision's select_training_samples: in eval it is the
    identity; in training with targets each sampled proposal row carries its input row's
    gradient (the added target boxes none), and the regression targets kept for the box loss
    depend on the proposals too (torchvision's do: its proposals come detached from the RPN)."""
    net, module, ns = _det_module(_DET_SAMPLE)
    images = torch.from_numpy(np.random.default_rng(15).uniform(0, 1, (1, 3, 4, 5)))
    (u,) = _inputs([(1, 4, 4, 5)], seed=16)
    u.requires_grad_()
    r, b = module.eval()(images, u)
    assert r is b

    seen, real = [], ns["det_sample_rois"]
    ns["det_sample_rois"] = lambda det, *a, **k: seen.append(det) or real(det, *a, **k)
    gt = torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 6.0, 5.0]])
    torch.manual_seed(0)
    r, b = module.train()(images, u, [{"boxes": gt, "labels": torch.tensor([1, 2])}])
    assert r.requires_grad and seen[0].roi_regression_targets.requires_grad
    src = []                # each sampled row: the proposal row it copies, or None for a target box
    for row in r.detach():
        hit = torch.where((b.detach() == row).all(1))[0]
        if hit.numel():
            src.append(int(hit[0]))
        else:
            assert bool((gt.double() == row).all(1).any())
            src.append(None)
    assert None in src and sum(s is not None for s in src) >= 2
    g = torch.randn(r.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (got,) = torch.autograd.grad((r * g).sum(), u, retain_graph=True)
    gb = torch.zeros_like(b)
    for i, s in enumerate(src):
        if s is not None:
            gb[s] += g[i]
    (want,) = torch.autograd.grad((b * gb).sum(), u)
    assert float(want.abs().max()) > 0
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_det_postprocess_scores_and_boxes_carry_the_gradient():
    """detect_postprocess detaches nothing, as torchvision's postprocess_detections (its eval
    scores and boxes require grad): a score's gradient is its softmax entry's, with respect to its
    proposal's class logits (det-postprocess gradchecks the boxes and scores); labels and
    batch_index are int64 without gradient."""
    net, module, _ = _det_module("""input images: f32[N, 3, H, W]
input c: f32[N, 3, H, W]
input r: f32[N, 12, H, W]
x, sizes = detection_transform(images, min_size = 0, size_divisible = 1)
a = anchors(c, x, sizes = [4], aspect_ratios = [1.0])
""" + _det_index("amax(c, dims = [1])") + f"""logits = {_det_rows("c", 3)}
b, s, l, i = detect_postprocess(logits, {_det_rows("r", 12)}, a, bi, sizes, score_thresh = 0.2, nms_thresh = 0.4)
output bx = b
output sc = s
output lb = l
output ix = i
output lg = logits""")
    images = torch.from_numpy(np.random.default_rng(17).uniform(0, 1, (1, 3, 3, 4)))
    c, r = _inputs([(1, 3, 3, 4), (1, 12, 3, 4)], seed=18)
    bx, sc, lb, ix, lg = module(images, c.requires_grad_(), r.requires_grad_())
    assert bx.requires_grad and sc.requires_grad and sc.numel() > 1
    assert lb.dtype == ix.dtype == torch.int64 and not lb.requires_grad and not ix.requires_grad
    (got,) = torch.autograd.grad(sc.sum(), lg)
    prob = torch.softmax(lg.detach(), -1)
    want = torch.zeros_like(prob)
    for score, label in zip(sc.detach(), lb):
        (row,) = torch.where(prob[:, label] == score)[0].tolist()
        e = torch.zeros(3, dtype=torch.float64)
        e[label] = 1
        want[row] += score * (e - prob[row])              # d softmax_l / d logits
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
    assert int((got.abs().sum(1) > 0).sum()) < got.shape[0]    # rows never kept get nothing
