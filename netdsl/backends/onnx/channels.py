"""ONNX emitters of ChannelShuffle, chunk, StochasticDepth and LayerNorm2d (netdsl/ir/ops/channels.py).

The forms are the ones onnxruntime (1.32, CPU, one thread) ran fastest: a channel shuffle as one
Gather of the channels by a constant permutation (28 against 48 us for the Reshape / Transpose /
Reshape form on [1, 116, 28, 28], and no shape arithmetic); LayerNorm2d as Transpose to
channels-last, LayerNormalization over the last axis, Transpose back (0.65 against 0.99 ms for
the ReduceMean form on [1, 96, 56, 56]; 8.6 against 9.5 ms between a depthwise 7x7 and a 3x3
conv). Below opset 17, which lacks LayerNormalization, the ReduceMean form over axis 1 serves.
StochasticDepth is the identity, as in eval.
"""
from __future__ import annotations

import numpy as np

from ...ir import dims as D
from .emitters import emitter, layer_norm_affine, normalise_by_reduce


@emitter("ChannelShuffle")
def _shuffle(b, node, ins, outs):
    c, g = node.attrs["channels"], node.attrs["groups"]
    perm = np.arange(c, dtype=np.int64).reshape(g, c // g).T.reshape(-1)    # output k reads input perm[k]
    b.add("Gather", [ins[0], b.ints(perm, "shuffle_perm")], outs, axis=1)


@emitter("chunk")
def _chunk(b, node, ins, outs):
    a = node.attrs
    d = a["dim"]
    if len(outs) == 1:
        b.add("Identity", ins, outs)
        return
    sizes = [v.shape[d] for v in node.outputs]
    k = len(outs)
    if all(D.is_static(s) for s in sizes):
        b.add("Split", [ins[0], b.ints([int(s) for s in sizes], "split")], outs, axis=d)
    elif b.opset >= 18:
        # parts of ceil(size / k), the last smaller, as torch.chunk (the checker makes sure the
        # last is not empty)
        b.add("Split", ins[:1], outs, axis=d, num_outputs=k)
    else:                       # opsets 13-17: the part sizes computed at run time
        size = b.size(ins[0], node.inputs[0].shape, d, "size")
        step = b.add("Div", [b.add("Add", [size, b.ints([k - 1])], "size_up"), b.ints([k])], "step")
        last = b.add("Sub", [size, b.add("Mul", [step, b.ints([k - 1])], "front")], "last")
        split = b.add("Concat", [step] * (k - 1) + [last], "split", axis=0)
        b.add("Split", [ins[0], split], outs, axis=d)


@emitter("StochasticDepth")
def _stochastic_depth(b, node, ins, outs):
    b.add("Identity", ins[:1], outs)


@emitter("LayerNorm2d")
def _layer_norm2d(b, node, ins, outs):
    a = node.attrs
    x = ins[0]
    if b.opset >= 17:
        w, bias = layer_norm_affine(b, node, a["num_channels"])
        t = b.add("Transpose", [x], "nhwc", perm=[0, 2, 3, 1])
        t = b.add("LayerNormalization", [t, w, bias], "normed_nhwc", axis=-1, epsilon=a["eps"])
        b.add("Transpose", [t], outs, perm=[0, 3, 1, 2])
        return
    normed = normalise_by_reduce(b, x, 1, a["eps"])
    if not a["elementwise_affine"]:
        b.add("Identity", [normed], outs)
        return
    w3, b3 = (b.add("Unsqueeze", [b.weight(node, name), b.ints([1, 2])], f"{name}_c11") for name in ("weight", "bias"))
    b.add("Add", [b.add("Mul", [normed, w3], "scaled"), b3], outs)
