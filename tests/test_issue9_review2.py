"""Review 2 of issue 9 (Swin, the examples, the late backend changes): regression tests.

- ONNX `Linear` on a channels-last [N, H, W, C] map with a bias is Reshape -> Gemm -> Reshape;
  its run-time output shape [N, H, W, out] may hold a 0 (an empty H or W), which Reshape
  reads as "copy the input's dim" unless allowzero: the file failed in onnxruntime (or, with
  H = 0, asked for the wrong shape) where torch returns an empty map.
"""
from __future__ import annotations

import numpy as np
import pytest

import netdsl

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

LINEAR4 = "network t {{ input x: f32[{dims}]\n output y = x -> fc: Linear(5, bias = {bias}) }}"


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("bias", ["true", "false"])
def test_channels_last_linear_handles_empty_maps_in_onnx(opset, bias):
    net = netdsl.loads(LINEAR4.format(dims="N, H, W, 6", bias=bias))
    w = net.init_weights(0)
    model = net.to_torch(w).eval()
    sess = ort.InferenceSession(net.to_onnx(w, opset=opset).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    outs = []
    for shape in [(2, 3, 4, 6), (1, 2, 5, 6), (0, 3, 4, 6), (2, 0, 4, 6), (2, 3, 0, 6)]:
        x = rng.standard_normal(shape).astype(np.float32)
        got = sess.run(None, {"x": x})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        assert got.shape == want.shape == (*shape[:3], 5), shape
        assert np.allclose(got, want, atol=1e-5), shape
        outs.append(want)
    assert float(np.abs(outs[0]).max()) > 1e-3                 # not vacuous


# - ShiftedWindowAttention and patch_merge in ONNX reshaped with a 0 (copy the batch) beside a
#   -1, which Reshape cannot infer when the batch is 0: an empty batch failed in onnxruntime
#   (torch, and the convolutional networks' files, return an empty result).
SWIN_OPS = ["x -> attn: ShiftedWindowAttention(2, window_size = 3, shift_size = 1)",
            "x -> attn: ShiftedWindowAttention(2, window_size = 3, shift_size = 1, version = 2)",
            "patch_merge(x)"]


@pytest.mark.parametrize("dims", ["N, H, W, 8", "N, 6, 5, 8", "N, H, W, C", "N, 6, 5, C"])
@pytest.mark.parametrize("body", SWIN_OPS)
def test_swin_ops_take_an_empty_batch_in_onnx(body, dims):
    if dims.endswith("C") and "Attention" in body:
        pytest.skip("the attention needs a static embedding size")
    net = netdsl.loads(f"network t {{ input x: f32[{dims}]\n output y = {body} }}")
    w = net.init_weights(0)
    model = net.to_torch(w).eval()
    sess = ort.InferenceSession(net.to_onnx(w, opset=13).SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for shape in [(2, 6, 5, 8), (0, 6, 5, 8), (1, 6, 5, 8)]:
        x = rng.standard_normal(shape).astype(np.float32)
        got = sess.run(None, {"x": x})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        assert got.shape == want.shape and want.shape[0] == shape[0], shape
        assert np.allclose(got, want, atol=1e-4), shape
        if shape[0] == 2:
            assert float(np.abs(want[0] - want[1]).max()) > 1e-3       # not vacuous


# - window_partition (MaxViT) likewise reshaped to [0, -1, p * p, C].
@pytest.mark.parametrize("dims", ["N, 8, H, W", "N, 8, 14, 14", "N, C, 14, 14", "N, 8, 14, W"])
def test_window_partition_takes_an_empty_batch_in_onnx(dims):
    net = netdsl.loads(f"network t {{ input x: f32[{dims}]\n t = window_partition(x, 7)\n"
                       " output y = window_departition(t -> Tanh, 7, like = x) }")
    model = net.to_torch().eval()
    sess = ort.InferenceSession(net.to_onnx(opset=13).SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for shape in [(2, 8, 14, 14), (0, 8, 14, 14)]:
        x = rng.standard_normal(shape).astype(np.float32)
        got = sess.run(None, {"x": x})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        assert got.shape == want.shape == shape and np.allclose(got, want, atol=1e-6), shape
        assert shape[0] == 0 or float(np.abs(want).max()) > 0.1
