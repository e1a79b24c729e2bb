"""ONNX emitters of MaxViT's ops (netdsl/ir/ops/maxvit.py). Window (de)partitioning is a
Reshape, a Transpose and a Reshape; the attention gathers its relative position bias from the
table once ([heads, P, P], broadcast over every group), as torchvision computes it."""
from __future__ import annotations

import numpy as np

from ...ir import dims as D
from .builder import OnnxBuilder
from .emitters import emitter, project


def _windows_along(b: OnnxBuilder, ref: str, shape, axis: int, p: int):
    """shape[axis] // p: an int where static, else a [1] int64 computed at run time (from the
    graph inputs' shapes where it can)."""
    d = shape[axis]
    if D.is_static(d):
        return int(d) // p
    size = b.input_dim(d, "len") or b.shape_dims(ref, axis, axis + 1, "len")
    return b.add("Div", [size, b.ints([p])], "windows")


@emitter("window_partition")
def _partition(b, node, ins, outs):
    p = node.attrs["p"]
    shape = node.inputs[0].shape
    c = b.size(ins[0], shape, 1)
    hp, wp = (_windows_along(b, ins[0], shape, axis, p) for axis in (2, 3))
    x = b.add("Reshape", [ins[0], b.shape_of_parts([-1, c, hp, p, wp, p], "split_shape")], "split")
    x = b.add("Transpose", [x], "windows", perm=[0, 2, 4, 3, 5, 1])          # [B, hp, wp, p, p, C]
    # [-1, windows, p * p, C], not [0, -1, ...]: Reshape cannot infer a -1 beside a batch of 0 (nor
    # [0, ...] with one run-time dim, which onnxruntime's ReshapeFusion turns into such a -1)
    if isinstance(hp, int) and isinstance(wp, int):
        g = hp * wp
    else:
        g = b.add("Mul", [b.ints([n]) if isinstance(n, int) else n for n in (hp, wp)], "groups")
    b.add("Reshape", [x, b.shape_of_parts([-1, g, p * p, c], "windows_shape")], outs)


@emitter("window_departition")
def _departition(b, node, ins, outs):
    p = node.attrs["p"]
    like = node.inputs[1].shape
    c = b.size(ins[0], node.inputs[0].shape, 3)
    hp, wp = (_windows_along(b, ins[1], like, axis, p) for axis in (2, 3))
    x = b.add("Reshape", [ins[0], b.shape_of_parts([-1, hp, wp, p, p, c], "split_shape")], "split")
    x = b.add("Transpose", [x], "merged", perm=[0, 5, 1, 3, 2, 4])           # [B, C, hp, p, wp, p]
    h, w = (n * p if isinstance(n, int) else b.add("Mul", [n, b.ints([p])], "len") for n in (hp, wp))
    b.add("Reshape", [x, b.shape_of_parts([-1, c, h, w], "map_shape")], outs)


@emitter("RelativePositionalMultiHeadAttention")
def _rpmha(b, node, ins, outs):
    """qkv = x W^T + b, split into heads [B, G, H, P, dh]; softmax(q (k s)^T + bias) v with
    s = D^-1/2 and bias [H, P, P] gathered from the table by the index buffer; heads merged,
    then the merge projection."""
    a = node.attrs
    d, h, hd = a["feat_dim"], a["num_heads"], a["head_dim"]
    qkv = project(b, ins[0], b.weight(node, "to_qkv.weight"), b.weight(node, "to_qkv.bias"), "qkv")
    qkv = b.add("Reshape", [qkv, b.ints([0, 0, 0, 3, h, hd])], "qkv_heads")
    qkv = b.add("Transpose", [qkv], "qkv_t", perm=[3, 0, 1, 4, 2, 5])        # [3, B, G, H, P, dh]
    q, k, v = b.add("Split", [qkv, b.ints([1, 1, 1])], [b.fresh(t) for t in "qkv"], axis=0)
    q, v = (b.add("Squeeze", [t, b.ints([0])], n) for t, n in ((q, "q_h"), (v, "v_h")))
    k = b.add("Transpose", [b.add("Squeeze", [k, b.ints([0])], "k_h")], "k_t", perm=[0, 1, 2, 4, 3])
    k = b.add("Mul", [k, b.const(np.float32(d ** -0.5), "scale")], "k_scaled")
    bias = b.add("Gather", [b.weight(node, "relative_position_bias_table"),
                            b.weight(node, "relative_position_index")], "bias_ppH", axis=0)
    bias = b.add("Transpose", [bias], "bias", perm=[2, 0, 1])                 # [H, P, P]
    scores = b.add("Add", [b.add("MatMul", [q, k], "scores_qk"), bias], "scores")
    attn = b.add("Softmax", [scores], "attn", axis=-1)
    out = b.add("Transpose", [b.add("MatMul", [attn, v], "ctx")], "ctx_t", perm=[0, 1, 3, 2, 4])
    out = b.add("Reshape", [out, b.ints([0, 0, 0, d])], "merged")
    project(b, out, b.weight(node, "merge.weight"), b.weight(node, "merge.bias"), "merge", outs)
