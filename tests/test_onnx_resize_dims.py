"""resize in the ONNX target: where its run-time sizes are read, and the 1 x 1 map.

`resize(x, like = y)` takes y's H and W from the graph input's shape when y's dims are an
expression of the input's (OnnxBuilder.input_dim), not from Shape(y): onnxruntime keeps large
intermediate tensors in a blocked (NCHWc) layout and reorders one out of it just to read its
shape (DeepLabV3's pooled ASPP branch, resized like layer4's 2048-channel output). A 1 x 1 map
(that branch) is copied, not interpolated: by a nearest Resize with scales [1, 1, H', W'] (which
onnxruntime runs in NCHWc layout once the sizes are constant), or by Expand where the graph has
a Transpose (see emitters._linear_resize_merged)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import netdsl
from netdsl.backends.onnx.builder import OnnxBuilder
from netdsl.ir import dims as D

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

H, W = D.sym("H"), D.sym("W")
EXPRS = {                                   # dims of the forms dims.py keeps, some below zero
    "floor_neg": D.floordiv(D.sub(H, 7), 3),             # (H - 7) // 3: negative for H < 7
    "nested": D.add(D.floordiv(D.floordiv(D.add(H, 1), 2), 2), D.mul(W, 3)),
    "conv": D.add(D.floordiv(D.sub(D.add(H, 2), 5), 2), 1),   # (H + 2 - 5) // 2 + 1
    "prod": D.sub(D.mul(H, W), 9),
    "scaled": D.scaled_floor(W, 2.3),                   # floor(W * 2.3) in double: 50 -> 114
    "scaled_floor": D.floordiv(D.scaled_floor(D.sub(H, 3), 1.7), 2),
}


@pytest.mark.parametrize("opset", [13, 17])
def test_input_dim_is_exact_integer_arithmetic(opset):
    b = OnnxBuilder(opset, {})
    b.input_dims = {"H": ("x", 2), "W": ("x", 3)}
    outs = {name: b.input_dim(d, name) for name, d in EXPRS.items()}
    assert b.input_dim(EXPRS["nested"]) == outs["nested"]       # built once
    count = len(b.nodes)
    assert b.input_dim(D.sym("C")) is None                      # no input holds C
    assert b.input_dim(D.add(D.mul(H, 2), D.floordiv(D.sym("C"), 2))) is None
    assert len(b.nodes) == count                                # and nothing was built for it
    for name, t in outs.items():
        b.add("Identity", [t], [f"out_{name}"])
    g = helper.make_graph(b.nodes, "dims", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, "H", "W"])],
                          [helper.make_tensor_value_info(f"out_{n}", TensorProto.INT64, [1]) for n in outs],
                          initializer=list(b.initializers.values()))
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    seen = set()
    for h, w in [(1, 1), (2, 5), (5, 3), (6, 50), (7, 2), (8, 9), (13, 4), (64, 100)]:
        got = sess.run(None, {"x": np.zeros((1, 1, h, w), np.float32)})
        want = [D.evaluate(d, {"H": h, "W": w}) for d in EXPRS.values()]
        assert [int(v[0]) for v in got] == want, (h, w)
        seen.update(want)
    assert min(seen) < 0 and 114 in seen            # negative floors and torch's double rounding


def _shape_sources(model) -> set:
    return {n.input[0] for n in model.graph.node if n.op_type == "Shape"}


def _check(net, sizes, opset=17):
    """torch and onnxruntime agree at every size through one ONNX file; the outputs differ."""
    module = net.to_torch().eval()
    model = net.to_onnx(opset=opset)
    onnx.checker.check_model(model, full_check=True)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    outs = []
    for shape in sizes:
        x = rng.standard_normal(shape).astype(np.float32)
        with torch.no_grad():
            want = module(torch.from_numpy(x)).numpy()
        got = sess.run(None, {"x": x})[0]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        assert np.abs(want).max() > 0
        outs.append(want)
    assert outs[0].shape != outs[1].shape
    return model


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_resize_like_an_intermediate_reads_the_input_shape(opset):
    net = netdsl.loads("""
network Net {
    input x: f32[N, 3, H, W]
    big = x -> Conv2d(32, 3, stride = 2, padding = 1) -> ReLU
    small = big -> Conv2d(8, 3, stride = 2, padding = 2, dilation = 2) -> MaxPool2d(2, ceil_mode = true)
    output y = resize(small, like = big, mode = 'bilinear', align_corners = false)
}""")
    model = _check(net, [(1, 3, 17, 22), (2, 3, 40, 9)], opset)
    assert _shape_sources(model) <= {"x", "small"}       # never the big map's shape
    resize = [n for n in model.graph.node if n.op_type == "Resize"]
    assert len(resize) == 1


@pytest.mark.parametrize("mode", ["bilinear_false", "bilinear_true", "nearest"])
def test_resize_of_a_1x1_map_is_an_expand(mode):
    args = {"bilinear_false": "mode = 'bilinear', align_corners = false",
            "bilinear_true": "mode = 'bilinear', align_corners = true", "nearest": "mode = 'nearest'"}[mode]
    net = netdsl.loads(f"""
network Net {{
    input x: f32[N, 3, H, W]
    f = x -> Conv2d(16, 3, stride = 2)
    p = f -> AdaptiveAvgPool2d(1) -> Conv2d(4, 1)
    output y = resize(p, like = f, {args})
}}""")
    model = _check(net, [(1, 3, 9, 12), (2, 3, 21, 8)])
    assert _copies_1x1(model)
    assert _shape_sources(model) == {"x"}


def _copies_1x1(model) -> bool:
    """The 1 x 1 map is copied: by Expand or a nearest Resize, never an interpolating one."""
    resize = [n for n in model.graph.node if n.op_type == "Resize"]
    expand = [n for n in model.graph.node if n.op_type == "Expand"]
    return len(resize) + len(expand) == 1 and all(
        helper.get_attribute_value(a) == b"nearest" for n in resize for a in n.attribute if a.name == "mode")


def test_resize_of_a_1x1_map_by_scale():
    net = netdsl.loads("""
network Net {
    input x: f32[N, 3, H, W]
    output y = x -> AdaptiveMaxPool2d(1) -> resize(scale = [2.5, 3], mode = 'bilinear')
}""")
    module, model = net.to_torch().eval(), net.to_onnx()
    assert _copies_1x1(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 7)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    got = sess.run(None, {"x": x})[0]
    assert got.shape == want.shape == (2, 3, 2, 3)
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("transposes", [False, True])
def test_static_1x1_map_leaves_no_unused_initializer(transposes):
    # review of issue 7: the 1 x 1 branch built its [1] output-length constants before choosing the
    # nearest Resize by constant scales, which does not use them: two initializers no node read
    # (onnxruntime warns "Removing initializer ... It is not used by any node")
    tail = " -> permute(dims = [0, 1, 3, 2])" if transposes else ""
    net = netdsl.loads(f"""
network Net {{
    input x: f32[2, 3, 16, 12]
    f = x -> Conv2d(8, 3, stride = 2, padding = 1)
    p = f -> AdaptiveAvgPool2d(1)
    output y = resize(p, like = f, mode = 'bilinear'){tail}
}}""")
    model = net.to_onnx()
    assert _copies_1x1(model)
    used = {i for n in model.graph.node for i in n.input}
    assert [t.name for t in model.graph.initializer if t.name not in used] == []
    module = net.to_torch().eval()
    x = np.random.default_rng(2).standard_normal((2, 3, 16, 12)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_resize_like_a_provable_multiple_is_one_resize():
    """An FPN's top-down step, resize(m5, like = i4) with i4 provably twice m5's size, is one
    nearest Resize by scales 2 (an NCHWc Upsample in onnxruntime), not two Gathers of computed
    indices; an input-sized `like` of unknown ratio keeps the Gathers."""
    import onnx
    net = netdsl.loads("network R {\n input x: f32[N, 3, H, W]\n input t: f32[N, 3, P, Q]\n"
                       " output y = resize(x, like = x -> ConvTranspose2d(3, 2, stride = 2))\n"
                       " output z = resize(x, like = t)\n}\n")
    ops = [n.op_type for n in net.to_onnx().graph.node]
    assert ops.count("Resize") == 1 and ops.count("Gather") == 2, ops
