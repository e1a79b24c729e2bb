"""rpn_proposals and detect_postprocess run torchvision's batched_nms per image, which (up to
4000 box coordinates on CPU) offsets each group's boxes by group * (max coordinate + 1) and
runs one NMS: the IoU is then computed on shifted float32 coordinates, and an IoU within
rounding of the threshold can fall on either side of it. The ONNX emitters must shift the same
way, or they keep a box that the torch module (and torchvision) drops, or the reverse. Found by
the differential fuzzer (tests/fuzz/diff_fuzz.py): two boxes of one class at IoU 0.49999997
unshifted, 0.50000012 shifted."""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

import netdsl  # noqa: E402
from netdsl.backends.torch import detection_ops as ops  # noqa: E402


def _decoded(props, weights):
    p = torch.from_numpy(props)
    return ops.det_box_decode(torch.zeros_like(p), p, weights=weights, clamp=math.log(1000 / 16))


def _both(text, feeds):
    net = netdsl.loads(text)
    weights = net.init_weights(0)
    module = net.to_torch(weights).eval()
    sess = ort.InferenceSession(net.to_onnx(weights, opset=17).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    names = [v.name for v in net.graph.inputs]
    with torch.no_grad():
        refs = module(*[torch.from_numpy(feeds[n]) for n in names])
    gots = sess.run(None, {n: feeds[n] for n in names})
    return [r.numpy() for r in refs], gots


# detect_postprocess: one image, one foreground class; A scores above B; plain NMS keeps both,
# the shifted one (label 1: + max + 1) drops B
POST = """network T {
    input x: f32[1, 3, 48, 48]
    input props: f32[2, 4]
    input logits: f32[2, 2]
    input reg: f32[2, 8]
    input pick: f32[2, 1]
    _, sizes = detection_transform(x, min_size = 0, max_size = 100, size_divisible = 1)
    _, bi2 = topk(pick, k = 1, dim = 1)
    bi = select(bi2, 1, 0)
    b, s, l, i = detect_postprocess(logits, reg, props, bi, sizes, score_thresh = 0.0, nms_thresh = 0.5,
                                    min_size = 0.0)
    output y = b
    output sc = s
    output lab = l
    output img = i
}
"""
POST_PROPS = np.array([[14.485041, 6.951046, 38.24797, 18.563187],
                       [14.485041, 6.951046, 38.24797, 12.757116]], np.float32)


def test_detect_postprocess_shifts_classes_as_torchvision():
    boxes = _decoded(POST_PROPS, [10.0, 10.0, 5.0, 5.0])
    scores = torch.tensor([0.9, 0.8])
    # the case discriminates: unshifted NMS keeps both boxes, the coordinate trick one
    assert ops.det_nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert ops.det_batched_nms(boxes, scores, torch.tensor([1, 1]), 0.5).tolist() == [0]
    feeds = {"x": np.zeros((1, 3, 48, 48), np.float32), "props": POST_PROPS,
             "logits": np.array([[0.0, 2.0], [0.0, 1.0]], np.float32), "reg": np.zeros((2, 8), np.float32),
             "pick": np.ones((2, 1), np.float32)}
    refs, gots = _both(POST, feeds)
    assert refs[0].shape == (1, 4)              # torchvision's answer: B suppressed
    for ref, got in zip(refs, gots):
        assert ref.shape == got.shape
        np.testing.assert_allclose(ref, got, atol=1e-5)


# rpn_proposals: level 0 holds a small box, level 1 the pair (offset 1 * (max + 1)); plain NMS
# drops B, the shifted one keeps it
RPN = """network T {
    input x: f32[1, 3, 48, 48]
    input o1: f32[1, 1, 1, 1]
    input o2: f32[1, 1, 1, 2]
    input d1: f32[1, 4, 1, 1]
    input d2: f32[1, 4, 1, 2]
    input a1: f32[1, 4]
    input a2: f32[2, 4]
    _, sizes = detection_transform(x, min_size = 0, max_size = 100, size_divisible = 1)
    p, pi = rpn_proposals(o1, o2, d1, d2, a1, a2, sizes, pre_nms_top_n = [10, 10], post_nms_top_n = [10, 10],
                          nms_thresh = 0.5)
    output y = p
    output yi = pi
}
"""
RPN_ANCHORS = np.array([[14.39017, 14.266268, 24.77789, 21.98797],
                        [14.39017, 14.266268, 24.77789, 18.127121]], np.float32)


def test_rpn_proposals_shifts_levels_as_torchvision():
    small = np.array([[1.0, 1.0, 2.0, 2.0]], np.float32)
    boxes = _decoded(np.concatenate([small, RPN_ANCHORS]), [1.0, 1.0, 1.0, 1.0])
    scores = torch.tensor([0.95, 0.9, 0.8])
    assert ops.det_nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert ops.det_batched_nms(boxes, scores, torch.tensor([0, 1, 1]), 0.5).tolist() == [0, 1, 2]
    feeds = {"x": np.zeros((1, 3, 48, 48), np.float32),
             "o1": np.full((1, 1, 1, 1), 3.0, np.float32), "o2": np.array([[[[2.0, 1.0]]]], np.float32),
             "d1": np.zeros((1, 4, 1, 1), np.float32), "d2": np.zeros((1, 4, 1, 2), np.float32),
             "a1": small, "a2": RPN_ANCHORS}
    refs, gots = _both(RPN, feeds)
    assert refs[0].shape == (3, 4)              # torchvision's answer: B kept
    for ref, got in zip(refs, gots):
        assert ref.shape == got.shape
        np.testing.assert_allclose(ref, got, atol=1e-5)
