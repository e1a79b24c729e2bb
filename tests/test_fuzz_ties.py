"""The differential fuzzer (tests/fuzz/diff_fuzz.py) forgives torch and onnxruntime ordering
boxes whose scores tie within float32 rounding differently (docs/language.md, "Object
detection"), and nothing more: the two failures of the issue-9 run (seed 1909) were such ties,
an NMS's kept indices and a detector's boxes, two ranks apart; a reorder at untied scores,
or rows that are not the same rows reordered, still fail."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
sys.path.insert(0, str(Path(__file__).parent / "fuzz"))

import diff_fuzz  # noqa: E402

# /tmp/fuzz9/min_00_values_int.net: kept indices 49 and 181 (scores 1.2e-7 apart) swap ranks
NMS_SPEC = """network Det {
    input x: f32[N, 2, H, W]
    fb = x -> Conv2d(16, 5, stride = 3, padding = 2)
    ab = anchors(fb, x, sizes = [6, 12], aspect_ratios = [0.25, 1.0])
    db0 = select(fb, 0, 0) -> permute(dims = [1, 2, 0]) -> reshape(shape = [-1, 4])
    bx = box_decode(db0, ab)
    sc = x -> Conv2d(4, 5, stride = 3, padding = 2) -> select(0, 0) -> permute(dims = [1, 2, 0]) -> Flatten(0, 2)
    kn = nms(bx, sc, iou_threshold = 0.5)
    output y = kn
}
"""
NMS_SYMBOLS, NMS_SEED = {"H": 24, "W": 21, "N": 2}, 1915044

# /tmp/fuzz9/min_01_values.net: detections 24 and 25 of image 1 (scores 3e-8 apart in torch,
# equal in onnxruntime) swap ranks, so their boxes differ by 8.76
DET_SPEC = """network Det {
    input x: f32[2, 3, H, W]
    xt, sizes = detection_transform(x, min_size = 0, max_size = 30, size_divisible = 1, mean = [0.381, 0.417, -0.118], std = [1.265, 0.79, 1.647])
    f1 = xt -> Conv2d(12, 5, stride = 4, padding = 2) -> ReLU
    f2 = f1 -> Conv2d(12, 3, stride = 2, padding = 1) -> ReLU
    f3 = f2 -> Conv2d(12, 3, stride = 2, padding = 1)
    o1, o2, o3, d1, d2, d3 = (f1, f2, f3) -> rpn: RPNHead(6)
    a1 = anchors(f1, xt, sizes = [8, 24], aspect_ratios = [1.5, 0.5, 2.0])
    a2 = anchors(f2, xt, sizes = [16, 48], aspect_ratios = [1.5, 0.5, 2.0])
    a3 = anchors(f3, xt, sizes = [32, 96], aspect_ratios = [1.5, 0.5, 2.0])
    props, pidx = rpn_proposals(o1, o2, o3, d1, d2, d3, a1, a2, a3, sizes, pre_nms_top_n = [104, 76], post_nms_top_n = [43, 39], nms_thresh = 0.5, min_size = 3.0)
    rois, ridx = sample_rois(props, pidx, fg_iou_thresh = 0.4, bg_iou_thresh = 0.3, batch_size_per_image = 32, positive_fraction = 0.5)
    pooled = roi_align(f2, rois, ridx, output_size = 2, spatial_scale = 0.125, sampling_ratio = 1, aligned = true)
    hh = pooled -> Flatten -> fc: Linear(16) -> ReLU
    cls = hh -> cls_score: Linear(4)
    reg = hh -> bbox_pred: Linear(16)
    db, ds, dl, di = detect_postprocess(cls, reg, rois, ridx, sizes, score_thresh = 0.2, nms_thresh = 0.5, detections_per_img = 28)
    dbo = rescale_boxes(db, di, sizes)
    output y = dbo
}
"""
DET_SYMBOLS, DET_SEED = {"H": 15, "W": 18}, 1915215


@pytest.mark.parametrize("text, symbols, seed, ranks", [
    (NMS_SPEC, NMS_SYMBOLS, NMS_SEED, "ranks 136..137"),
    (DET_SPEC, DET_SYMBOLS, DET_SEED, "ranks 24..25")], ids=["nms", "detect_postprocess"])
def test_the_issue9_failures_are_forgiven_as_tied_scores(text, symbols, seed, ranks):
    """Both failures of the 30-minute run now agree, forgiven with the tied scores shown (the
    old harness reported `values:int` and `values`)."""
    r = diff_fuzz.check_spec(text, symbols, seed)
    assert r["status"] == "agreed", r
    assert r["detail"].startswith("forgiven (tied scores: ") and ranks in r["detail"], r["detail"]


@pytest.fixture(scope="module")
def nms_run():
    """The harness's own weights, ONNX model and input for NMS_SPEC; torch's and onnxruntime's
    kept indices at the generator's size."""
    import netdsl
    import numpy as np
    import onnxruntime as ort
    import torch
    net = netdsl.loads(NMS_SPEC, name="fuzz.net")
    weights = diff_fuzz._randomised_weights(net, NMS_SEED)
    model = net.to_torch(weights).eval()
    proto = diff_fuzz._to_onnx(net, weights, random.Random(NMS_SEED).choice([13, 17, 17, 17, 18, 21]), NMS_SEED)
    xs = [np.random.default_rng(NMS_SEED).standard_normal((2, 2, 24, 21)).astype(np.float32)]
    with torch.no_grad():
        ref = model(torch.from_numpy(xs[0])).numpy()
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": xs[0]})[0]
    return net, weights, proto, xs, ref, got


def test_only_a_reorder_at_tied_ranks_is_forgiven(nms_run):
    import numpy as np
    net, weights, proto, xs, ref, got = nms_run
    bad = np.flatnonzero(ref != got)
    assert bad.tolist() == [136, 137] and sorted(ref[bad]) == sorted(got[bad])   # not vacuous
    why = diff_fuzz._tied_reorder(net, weights, proto, xs, 0, ref, got)
    assert why and "ranks 136..137" in why and why.startswith("nms nms "), why
    swapped = ref.copy()                    # the two best boxes, scores far apart, swapped
    swapped[[0, 1]] = swapped[[1, 0]]
    assert diff_fuzz._tied_reorder(net, weights, proto, xs, 0, ref, swapped) is None
    other = got.copy()                      # a tied rank holding a box that torch did not keep
    other[136] = next(i for i in range(1000) if i not in set(ref.tolist()))
    assert diff_fuzz._tied_reorder(net, weights, proto, xs, 0, ref, other) is None
    assert diff_fuzz._tied_reorder(net, weights, proto, xs, 0, ref, got[::-1].copy()) is None


def test_ranked_scores_are_each_backends_own_order(nms_run):
    """The scores that `_tied_reorder` judges are torch's and onnxruntime's scores of the boxes
    each kept, in its own order: decreasing, and apart only by rounding."""
    import numpy as np
    net, weights, proto, xs, ref, got = nms_run
    node = diff_fuzz._ranking_node(net.graph, net.graph.outputs[0][1])
    assert node is not None and node.op == "nms"
    st, so, noise = diff_fuzz._ranked_scores(net, node, weights, proto, xs)
    assert st.shape == so.shape == ref.shape
    assert (np.diff(st) <= 0).all() and (np.diff(so) <= 0).all() and np.ptp(st) > 1
    assert 0 < noise < 1e-5
    assert st[136] > st[137] and so[136] > so[137] and abs(st[136] - st[137]) <= 2 * noise


def test_outputs_not_ranked_by_a_score_are_never_forgiven():
    """A plain output (no data-dependent rows ranked by an NMS or detection op) has no ranking
    op, so `_tied_reorder` gives no excuse for it."""
    import netdsl
    net = netdsl.loads("network T {\n input x: f32[N, 3, H, W]\n output y = x -> Conv2d(4, 3)\n}\n")
    assert diff_fuzz._ranking_node(net.graph, net.graph.outputs[0][1]) is None
    import numpy as np
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert diff_fuzz._tied_reorder(net, {}, None, [], 0, a, a[::-1].copy()) is None
