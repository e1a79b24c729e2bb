"""Bilinear resize and the 1 x 1 map's copy, emitted on the 4-D tensor itself where the graph has
no Transpose that onnxruntime's transpose optimiser could move (export._transposes_computed_value;
see emitters._linear_resize_merged): onnxruntime's NCHWc transformer then runs them as NCHWc
Upsample once their scales or sizes are constant. Where the graph has such a Transpose, the
resize keeps the [N * C, 1, H, W] form (Reshapes around it) and the 1 x 1 map an Expand."""
from __future__ import annotations

import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import netdsl

torch = pytest.importorskip("torch")
ort.set_default_logger_severity(3)

OPSETS = range(13, 22)
RESIZES = {
    "whole scale": "scale = 2, mode = 'bilinear', align_corners = false",
    "whole scale, corners": "scale = 3, mode = 'bilinear', align_corners = true",
    "size": "size = [9, 5], mode = 'bilinear', align_corners = false",
    "like": "like = x, mode = 'bilinear', align_corners = false",
    "like, corners": "like = x, mode = 'bilinear', align_corners = true",
}


def _spec(resize: str, dims: str, transposes: bool) -> str:
    # f is x at stride 2, so `like = x` is a resize back to x's size (whole when H, W are even)
    if transposes:      # the regression's pattern: permute -> resize -> transpose
        body = (f"    p = f -> permute(dims = [0, 2, 3, 1])\n"
                f"    output y = resize(p, {resize}) -> transpose(1, 2) -> ReLU\n")
    else:
        body = f"    output y = resize(f, {resize}) -> ReLU\n"
    return (f"network Net {{\n    input x: f32[{dims}]\n"
            f"    f = x -> Conv2d(4, 3, stride = 2, padding = 1)\n{body}}}")


def _ops(model) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _agrees(net, shapes, opsets=OPSETS, override=None):
    """torch against onnxruntime (ORT_ENABLE_ALL) for every input shape through one file per
    opset; `override`: fix these dim_params at session start (as `netdsl run` does)."""
    module = net.to_torch().eval()
    rng = np.random.default_rng(0)
    feeds = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    with torch.no_grad():
        wants = [module(torch.from_numpy(f)).numpy() for f in feeds]
    assert np.abs(wants[0]).max() > 0.1
    for opset in opsets:
        model = net.to_onnx(opset=opset)
        onnx.checker.check_model(model, full_check=True)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        for k, v in (override or {}).items():
            so.add_free_dimension_override_by_name(k, v)
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        for f, want in zip(feeds, wants):
            got = sess.run(None, {"x": f})[0]
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"opset {opset}")
    return model


@pytest.mark.parametrize("how", list(RESIZES))
@pytest.mark.parametrize("dims", ["N, 3, H, W", "2, 3, 8, 6"])
def test_resize_without_transposes_runs_on_the_4d_tensor(how, dims):
    net = netdsl.loads(_spec(RESIZES[how], dims, transposes=False))
    shapes = [(2, 3, 8, 6)] + ([(1, 3, 11, 4)] if dims.startswith("N") else [])
    model = _agrees(net, shapes)
    ops = _ops(model)
    assert ops.count("Resize") == 1 and "Reshape" not in ops
    resize = next(n for n in model.graph.node if n.op_type == "Resize")
    assert resize.input[0] == next(n for n in model.graph.node if n.op_type == "Conv").output[0]


@pytest.mark.parametrize("how", list(RESIZES))
@pytest.mark.parametrize("dims", ["N, 3, H, W", "2, 3, 8, 6"])
def test_resize_with_transposes_keeps_the_merged_form(how, dims):
    net = netdsl.loads(_spec(RESIZES[how], dims, transposes=True))
    shapes = [(2, 3, 8, 6)] + ([(1, 3, 11, 4)] if dims.startswith("N") else [])
    model = _agrees(net, shapes)
    ops = _ops(model)
    assert ops.count("Resize") == 1 and ops.count("Reshape") == 2 and "Transpose" in ops


def test_a_transpose_of_a_weight_does_not_count():
    # Linear's weight is transposed in the graph (a constant that onnxruntime folds); without a
    # bias, as a 4-D Linear with one is a Gemm on the rows, with no Transpose
    net = netdsl.loads("""network Net {
    input x: f32[N, 3, H, 6]
    f = x -> Linear(6, bias = false)
    output y = resize(f, scale = 2, mode = 'bilinear', align_corners = false)
}""")
    model = _agrees(net, [(2, 3, 5, 6), (1, 3, 7, 6)], opsets=[13, 17, 21])
    assert "Transpose" in _ops(model) and "Reshape" not in _ops(model)


POOLED = """network Net {{
    input x: f32[{dims}]
    f = x -> Conv2d(16, 3, stride = 2, padding = 1) -> ReLU
    p = f -> AdaptiveAvgPool2d(1) -> Conv2d(16, 1) -> ReLU
    b = resize(p, like = f, mode = 'bilinear', align_corners = false)
{tail}}}"""


@pytest.mark.parametrize("dims", ["N, 3, H, W", "2, 3, 8, 12"])
@pytest.mark.parametrize("transposes", [False, True])
def test_the_1x1_map_is_copied_by_nearest_resize_or_expand(dims, transposes):
    tail = ("    output y = concat(f, b) -> permute(dims = [0, 2, 3, 1]) -> transpose(1, 2)\n" if transposes
            else "    output y = concat(f, b) -> Conv2d(8, 1)\n")
    net = netdsl.loads(POOLED.format(dims=dims, tail=tail))
    shapes = [(2, 3, 8, 12)] + ([(1, 3, 13, 6)] if dims.startswith("N") else [])
    model = _agrees(net, shapes)
    ops = _ops(model)
    if transposes:
        assert "Expand" in ops and "Resize" not in ops
    else:
        assert "Expand" not in ops and ops.count("Resize") == 1
        resize = next(n for n in model.graph.node if n.op_type == "Resize")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in resize.attribute}
        assert attrs["mode"] == b"nearest" and attrs["coordinate_transformation_mode"] == b"asymmetric"


def _optimised_ops(model, override=None) -> list[str]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for k, v in (override or {}).items():
        so.add_free_dimension_override_by_name(k, v)
    with tempfile.TemporaryDirectory() as d:
        so.optimized_model_filepath = f"{d}/opt.onnx"
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return [n.op_type for n in onnx.load(f"{d}/opt.onnx").graph.node]


def test_onnxruntime_runs_both_in_nchwc_once_the_sizes_are_fixed():
    """The point of the direct form: a DeepLabV3-like head (pooled branch concatenated, scores
    resized back 4x) gets NCHWc Upsamples and no plain Resize, in a static file and in the
    symbolic file with its sizes fixed at session start; parity there too."""
    tail = ("    output y = concat(f, b) -> Conv2d(16, 1) -> resize(like = x, mode = 'bilinear', "
            "align_corners = false)\n")
    for dims, override in (("1, 3, 16, 24", None), ("N, 3, H, W", {"N": 1, "H": 16, "W": 24})):
        net = netdsl.loads(POOLED.format(dims=dims, tail=tail.replace("Conv2d(16, 1)", "Conv2d(16, 1, stride = 2)")))
        model = _agrees(net, [(1, 3, 16, 24)], opsets=[17], override=override)
        ops = _optimised_ops(model, override)
        assert ops.count("Upsample") == 2 and "Resize" not in ops, ops
