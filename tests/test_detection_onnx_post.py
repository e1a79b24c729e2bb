"""ONNX emitters of the composite detection ops (rpn_proposals, detect_postprocess, sample_rois)
against torchvision's RegionProposalNetwork.filter_proposals and RoIHeads.postprocess_detections
on the same head outputs. One ONNX file per op runs at two sizes (N, H, W, R symbolic).

Run in a virtualenv with torchvision (see the README): python -m pytest tests/test_detection_onnx_post.py
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
try:
    import torchvision  # noqa: F401
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList
    from torchvision.models.detection.roi_heads import RoIHeads
    from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers
except ImportError:
    torchvision = None

from onnx import TensorProto, helper  # noqa: E402

import netdsl  # noqa: E402
from netdsl.backends.onnx.builder import OnnxBuilder  # noqa: E402
from netdsl.backends.onnx.emitters import EMITTERS  # noqa: E402

needs_tv = pytest.mark.skipif(torchvision is None, reason="torchvision is not installed (run in a virtualenv with torchvision)")

F32, I64 = TensorProto.FLOAT, TensorProto.INT64
SIZES = ((128, 160), (96, 192))         # padded batch sizes: two, one ONNX file
N_IMAGES = (2, 3)
STRIDES, ANCHOR_SIZES, RATIOS = (4, 8), ((32,), (64,)), (0.5, 1.0, 2.0)
A = len(RATIOS)


def _session(op, attrs, inputs, outputs, shapes):
    """An ONNX model of one op built by its emitter: inputs [(name, type, dims)] with dims as
    strings where symbolic; `shapes` the IR input shapes the emitter may read (static channels)."""
    b = OnnxBuilder(17, {})
    for name in [n for n, _, _ in inputs] + [n for n, _ in outputs]:     # as export reserves them
        b.reserve(name)
    node = SimpleNamespace(op=op, attrs=attrs, path=(), inputs=[SimpleNamespace(shape=s, rank=len(s)) for s in shapes])
    EMITTERS[op](b, node, [n for n, _, _ in inputs], [n for n, _ in outputs])
    g = helper.make_graph(b.nodes, op, [helper.make_tensor_value_info(n, t, d) for n, t, d in inputs],
                          [helper.make_tensor_value_info(n, t, ["D", 4] if i == 0 else ["D"])
                           for i, (n, t) in enumerate(outputs)],
                          initializer=list(b.initializers.values()))
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    assert not any(n.op_type.startswith("If") or n.op_type == "Loop" for n in model.graph.node)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _image_sizes(hw, n, rng):
    """i64[N, 4]: image 0 fills the padded batch; the others are smaller (clipping differs)."""
    rows = [(hw[0], hw[1], hw[0] * 2, hw[1] * 2)]
    for _ in range(1, n):
        rows.append((int(rng.integers(hw[0] // 2, hw[0])), int(rng.integers(hw[1] // 2, hw[1])), 7, 9))
    return np.array(rows, np.int64)


# ---- rpn_proposals ----------------------------------------------------------------------------
RPN_ATTRS = dict(pre_nms_top_n=[2000, 1000], post_nms_top_n=[2000, 300], nms_thresh=0.7, score_thresh=0.0,
                 min_size=0.001, fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=256,
                 positive_fraction=0.5, objectness="sigmoid")


def _rpn_case(hw, n, seed):
    rng = np.random.default_rng(seed)
    feats = [(hw[0] // s, hw[1] // s) for s in STRIDES]
    # objectness: each image's logits a shuffled linspace over all levels: no two scores are equal
    # (sigmoid of random normals ties in float32 among thousands), so the order is well defined
    per_level = [h * w * A for h, w in feats]
    flat = np.stack([rng.permutation(np.linspace(-4, 4, sum(per_level))) for _ in range(n)]).astype(np.float32)
    obj = [x.reshape(n, h, w, A).transpose(0, 3, 1, 2).copy()
           for x, (h, w) in zip(np.split(flat, np.cumsum(per_level)[:-1], axis=1), feats)]
    dlt = [rng.normal(0, 0.6, (n, 4 * A, h, w)).astype(np.float32) for h, w in feats]
    gen = AnchorGenerator(ANCHOR_SIZES, (RATIOS,) * len(STRIDES))
    images = ImageList(torch.zeros(n, 3, *hw), [tuple(hw)] * n)
    anchors = gen(images, [torch.zeros(n, 1, h, w) for h, w in feats])
    anc = [a.numpy() for a in anchors[0].split(per_level)]
    return obj, dlt, anc, _image_sizes(hw, n, rng), anchors


def _rpn_torchvision(obj, dlt, anchors, image_sizes, attrs):
    rpn = RegionProposalNetwork(AnchorGenerator(), None, 0.7, 0.3, 256, 0.5,
                                dict(training=2000, testing=attrs["pre_nms_top_n"][1]),
                                dict(training=2000, testing=attrs["post_nms_top_n"][1]),
                                attrs["nms_thresh"], score_thresh=attrs["score_thresh"]).eval()
    rpn.min_size = attrs["min_size"]
    o, d = concat_box_prediction_layers([torch.from_numpy(x) for x in obj], [torch.from_numpy(x) for x in dlt])
    n = obj[0].shape[0]
    proposals = rpn.box_coder.decode(d, anchors).view(n, -1, 4)
    shapes = [(int(h), int(w)) for h, w in image_sizes[:, :2]]
    counts = [x.shape[1] * x.shape[2] * x.shape[3] for x in obj]
    boxes, scores = rpn.filter_proposals(proposals, o, shapes, counts)
    return boxes, scores


def _rpn_session(attrs, levels=2):
    ins = ([(f"o{l}", F32, ["N", A * (2 if attrs["objectness"] == "softmax2" else 1), f"H{l}", f"W{l}"])
            for l in range(levels)]
           + [(f"d{l}", F32, ["N", 4 * A, f"H{l}", f"W{l}"]) for l in range(levels)]
           + [(f"a{l}", F32, [f"M{l}", 4]) for l in range(levels)] + [("image_sizes", I64, ["N", 4])])
    per = 2 if attrs["objectness"] == "softmax2" else 1
    shapes = [(1, per * A, 1, 1)] * levels + [(1, 4 * A, 1, 1)] * levels + [(1, 4)] * levels + [(1, 4)]
    return _session("rpn_proposals", attrs, ins, [("boxes", F32), ("batch_index", I64)], shapes)


@pytest.fixture(scope="module")
def rpn_sigmoid():
    return _rpn_session(RPN_ATTRS)


@pytest.fixture(scope="module")
def rpn_uncapped():
    return _rpn_session({**RPN_ATTRS, "post_nms_top_n": [2000, 5000]})


def _check_rpn(got_boxes, got_index, tv_boxes, tv_scores, n):
    counts = [len(x) for x in tv_boxes]
    assert all(c >= 50 for c in counts), counts         # dozens per image: the comparison tests something
    for s in tv_scores:                                 # no ties: the order is well defined
        assert len(torch.unique(s)) == len(s)
    np.testing.assert_array_equal(got_index, np.repeat(np.arange(n), counts))
    np.testing.assert_allclose(got_boxes, torch.cat(tv_boxes).numpy(), atol=1e-4, rtol=0)


@needs_tv
@pytest.mark.parametrize("size", range(2))
def test_rpn_proposals_match_torchvision(rpn_sigmoid, rpn_uncapped, size):
    hw, n = SIZES[size], N_IMAGES[size]
    obj, dlt, anc, image_sizes, anchors = _rpn_case(hw, n, seed=size)
    feed = {**{f"o{l}": x for l, x in enumerate(obj)}, **{f"d{l}": x for l, x in enumerate(dlt)},
            **{f"a{l}": x for l, x in enumerate(anc)}, "image_sizes": image_sizes}
    boxes, index = rpn_sigmoid.run(None, feed)
    tv_boxes, tv_scores = _rpn_torchvision(obj, dlt, anchors, image_sizes, RPN_ATTRS)
    assert [len(x) for x in tv_boxes] == [300] * n      # post_nms_top_n caps every image
    _check_rpn(boxes, index, tv_boxes, tv_scores, n)
    # uncapped: the counts are NMS's own (hundreds, each image its own)
    got = rpn_uncapped.run(None, feed)
    tv = _rpn_torchvision(obj, dlt, anchors, image_sizes, {**RPN_ATTRS, "post_nms_top_n": [2000, 5000]})
    assert all(300 < len(x) < 1960 for x in tv[0]) and len({len(x) for x in tv[0]}) > 1
    _check_rpn(*got, *tv, n)
    # level 0 has more anchors than pre_nms_top_n, level 1 fewer: both branches of min(k, count)
    assert obj[0][0].size > RPN_ATTRS["pre_nms_top_n"][1] > obj[1][0].size
    # a different input gives different proposals
    boxes2, _ = rpn_sigmoid.run(None, {**feed, "o0": obj[0][::-1].copy()})
    assert not np.array_equal(boxes[:50], boxes2[:50])


@needs_tv
def test_rpn_proposals_thresholds_and_softmax2():
    """score_thresh masks (>=), post_nms_top_n caps each image, and "softmax2" objectness
    (Caffe: A background then A foreground logits) scores sigmoid(fg - bg)."""
    attrs = {**RPN_ATTRS, "score_thresh": 0.6, "post_nms_top_n": [2000, 80], "objectness": "softmax2",
             "min_size": 6.0}
    sess = _rpn_session(attrs)
    hw, n = SIZES[1], N_IMAGES[1]
    obj, dlt, anc, image_sizes, anchors = _rpn_case(hw, n, seed=5)
    rng = np.random.default_rng(6)
    bg = [rng.normal(0, 1, x.shape).astype(np.float32) for x in obj]
    pairs = [np.concatenate([b, b + x], axis=1) for b, x in zip(bg, obj)]
    diff = [(p[:, A:] - p[:, :A]) for p in pairs]        # the fg - bg logits, as ONNX computes them
    feed = {**{f"o{l}": x for l, x in enumerate(pairs)}, **{f"d{l}": x for l, x in enumerate(dlt)},
            **{f"a{l}": x for l, x in enumerate(anc)}, "image_sizes": image_sizes}
    boxes, index = sess.run(None, feed)
    tv_boxes, tv_scores = _rpn_torchvision(diff, dlt, anchors, image_sizes, attrs)
    assert [len(x) for x in tv_boxes] == [80] * n
    assert all(float(s.min()) >= 0.6 for s in tv_scores)
    _check_rpn(boxes, index, tv_boxes, tv_scores, n)


@needs_tv
def test_rpn_proposals_nothing_survives():
    hw, n = SIZES[0], 2
    obj, dlt, anc, image_sizes, _ = _rpn_case(hw, n, seed=3)
    sess = _rpn_session({**RPN_ATTRS, "score_thresh": 1.5})
    feed = {**{f"o{l}": x for l, x in enumerate(obj)}, **{f"d{l}": x for l, x in enumerate(dlt)},
            **{f"a{l}": x for l, x in enumerate(anc)}, "image_sizes": image_sizes}
    boxes, index = sess.run(None, feed)
    assert boxes.shape == (0, 4) and index.shape == (0,)


# ---- detect_postprocess -----------------------------------------------------------------------
POST_ATTRS = dict(score_thresh=0.05, nms_thresh=0.5, detections_per_img=100, weights=[10.0, 10.0, 5.0, 5.0],
                  min_size=0.01)
N_CLASSES = 11


def _post_case(hw, n, seed, per_image=(150, 90, 120)):
    rng = np.random.default_rng(seed)
    image_sizes = _image_sizes(hw, n, rng)
    props, index = [], []
    for i in range(n):
        h, w = image_sizes[i, :2]
        k = per_image[i]
        xy = rng.uniform(0, 1, (k, 2)) * (w, h)
        wh = rng.uniform(4, 0.6 * min(h, w), (k, 2))
        props.append(np.concatenate([xy - wh / 2, xy + wh / 2], 1).astype(np.float32))
        index.append(np.full(k, i))
    r = sum(per_image[:n])
    logits = (rng.normal(0, 1.2, (r, N_CLASSES))).astype(np.float32)     # scaled: dozens survive 0.05
    reg = rng.normal(0, 1.0, (r, 4 * N_CLASSES)).astype(np.float32)
    return logits, reg, props, np.concatenate(index).astype(np.int64), image_sizes


def _post_torchvision(logits, reg, props, image_sizes, attrs):
    heads = RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, tuple(attrs["weights"]), attrs["score_thresh"],
                     attrs["nms_thresh"], attrs["detections_per_img"]).eval()
    shapes = [(int(h), int(w)) for h, w in image_sizes[:, :2]]
    return heads.postprocess_detections(torch.from_numpy(logits), torch.from_numpy(reg),
                                        [torch.from_numpy(p) for p in props], shapes)


def _post_session(attrs):
    ins = [("class_logits", F32, ["R", N_CLASSES]), ("box_regression", F32, ["R", 4 * N_CLASSES]),
           ("proposals", F32, ["R", 4]), ("batch_index", I64, ["R"]), ("image_sizes", I64, ["N", 4])]
    outs = [("boxes", F32), ("scores", F32), ("labels", I64), ("det_index", I64)]
    return _session("detect_postprocess", attrs, ins, outs, [(1, N_CLASSES), (1, 4 * N_CLASSES), (1, 4), (1,), (1, 4)])


@pytest.fixture(scope="module")
def post_default():
    return _post_session(POST_ATTRS)


@pytest.fixture(scope="module")
def post_uncapped():
    return _post_session({**POST_ATTRS, "detections_per_img": 1000})


def _check_post(got, tv, n, at_least):
    boxes, scores, labels, index = got
    tv_boxes, tv_scores, tv_labels = tv
    counts = [len(x) for x in tv_boxes]
    assert all(c >= at_least for c in counts), counts
    for s in tv_scores:                                 # no ties: the order is well defined
        assert len(torch.unique(s)) == len(s)
    assert labels.dtype == np.int64 and index.dtype == np.int64
    np.testing.assert_array_equal(index, np.repeat(np.arange(n), counts))
    np.testing.assert_array_equal(labels, torch.cat(tv_labels).numpy())
    np.testing.assert_allclose(scores, torch.cat(tv_scores).numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(boxes, torch.cat(tv_boxes).numpy(), atol=1e-4, rtol=0)


@needs_tv
@pytest.mark.parametrize("size", range(2))
def test_detect_postprocess_matches_torchvision(post_default, post_uncapped, size):
    hw, n = SIZES[size], N_IMAGES[size]
    logits, reg, props, index, image_sizes = _post_case(hw, n, seed=10 + size)
    feed = {"class_logits": logits, "box_regression": reg, "proposals": np.concatenate(props),
            "batch_index": index, "image_sizes": image_sizes}
    # detections_per_img 100 caps every image here; 1000 leaves torchvision's own counts (dozens)
    got = post_default.run(None, feed)
    _check_post(got, _post_torchvision(logits, reg, props, image_sizes, POST_ATTRS), n, at_least=100)
    assert len(got[0]) == 100 * n
    got = post_uncapped.run(None, feed)
    tv = _post_torchvision(logits, reg, props, image_sizes, {**POST_ATTRS, "detections_per_img": 1000})
    assert all(100 < len(x) < 1000 for x in tv[0])
    _check_post(got, tv, n, at_least=100)
    assert len(np.unique(got[2])) > 5                   # many classes take part
    got2 = post_uncapped.run(None, {**feed, "class_logits": logits[::-1].copy()})
    assert not np.array_equal(got[1][:20], got2[1][:20])


def _post_torchvision_min_size(logits, reg, props, image_sizes, attrs):
    """postprocess_detections with remove_small_boxes(attrs["min_size"]) instead of its fixed 1e-2."""
    import torchvision.models.detection.roi_heads as rh
    orig = rh.box_ops.remove_small_boxes
    rh.box_ops.remove_small_boxes = lambda b, min_size: orig(b, attrs["min_size"])
    try:
        return _post_torchvision(logits, reg, props, image_sizes, attrs)
    finally:
        rh.box_ops.remove_small_boxes = orig


@needs_tv
def test_detect_postprocess_thresholds(post_default):
    """A higher score threshold, min_size and NMS threshold; nothing at all when no score passes."""
    attrs = {**POST_ATTRS, "score_thresh": 0.3, "min_size": 12.0, "nms_thresh": 0.3}
    logits, reg, props, index, image_sizes = _post_case(SIZES[0], 2, seed=21)
    feed = {"class_logits": logits, "box_regression": reg, "proposals": np.concatenate(props),
            "batch_index": index, "image_sizes": image_sizes}
    tv = _post_torchvision_min_size(logits, reg, props, image_sizes, attrs)
    plain = _post_torchvision(logits, reg, props, image_sizes, attrs)
    assert [len(x) for x in tv[0]] != [len(x) for x in plain[0]]      # min_size removes some
    _check_post(_post_session(attrs).run(None, feed), tv, 2, at_least=12)
    none = _post_session({**POST_ATTRS, "score_thresh": 0.999}).run(None, feed)
    assert [x.shape for x in none] == [(0, 4), (0,), (0,), (0,)]


def test_detect_postprocess_tie_order(post_default):
    """Equal scores come in candidate order (proposal, then class), as torchvision's per-image list
    has them (its own sort is not stable, see detection_post.py). Six disjoint proposals, each with
    classes 2 and 7 tied on top (the other classes fall under 0.05)."""
    r = 6
    logits = np.zeros((r, N_CLASSES), np.float32)
    logits[:, [2, 7]] = 3.0
    props = np.array([[20 * i, 0, 20 * i + 10, 10] for i in range(r)], np.float32)
    feed = {"class_logits": logits, "box_regression": np.zeros((r, 4 * N_CLASSES), np.float32),
            "proposals": props, "batch_index": np.zeros(r, np.int64),
            "image_sizes": np.array([[64, 128, 64, 128]], np.int64)}
    boxes, scores, labels, index = post_default.run(None, feed)
    assert len(np.unique(scores)) == 1
    np.testing.assert_array_equal(labels, [2, 7] * r)
    np.testing.assert_allclose(boxes, np.repeat(props, 2, axis=0), atol=1e-5)


@needs_tv
def test_detect_postprocess_iou_at_threshold():
    """IoU float32(0.3) against nms_thresh 0.3, compared as torchvision does (the float32 IoU against
    the double threshold: 0.30000001 > 0.3, suppressed; ONNX compares in float32 and would keep it)."""
    props = np.array([[0, 0, 10, 10], [0, 0, 10, 3], [0, 0, 10, 3.01], [40, 0, 50, 10]], np.float32)
    logits = np.zeros((4, N_CLASSES), np.float32)
    logits[:, 1] = [6.0, 5.5, 5.8, 5.2]
    reg = np.zeros((4, 4 * N_CLASSES), np.float32)
    image_sizes = np.array([[64, 64, 64, 64]], np.int64)
    attrs = {**POST_ATTRS, "nms_thresh": 0.3}
    got = _post_session(attrs).run(None, {"class_logits": logits, "box_regression": reg, "proposals": props,
                                          "batch_index": np.zeros(4, np.int64), "image_sizes": image_sizes})
    tv = _post_torchvision(logits, reg, [props], image_sizes, attrs)
    assert len(tv[0][0]) == 2 and len(got[0]) == 2
    _check_post(got, tv, 1, at_least=2)


def test_detect_postprocess_no_proposals(post_default):
    """No proposals at all (the RPN kept none): empty outputs, no error (a Reshape with -1 fails
    on an empty tensor in onnxruntime)."""
    feed = {"class_logits": np.zeros((0, N_CLASSES), np.float32),
            "box_regression": np.zeros((0, 4 * N_CLASSES), np.float32), "proposals": np.zeros((0, 4), np.float32),
            "batch_index": np.zeros(0, np.int64), "image_sizes": np.array([[64, 64, 64, 64]] * 2, np.int64)}
    got = post_default.run(None, feed)
    assert [x.shape for x in got] == [(0, 4), (0,), (0,), (0,)]


def test_sample_rois_is_identity_in_onnx():
    sess = _session("sample_rois", dict(fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=512,
                                        positive_fraction=0.25, weights=[10.0, 10.0, 5.0, 5.0]),
                    [("boxes", F32, ["R", 4]), ("batch_index", I64, ["R"])],
                    [("out_boxes", F32), ("out_index", I64)], [(1, 4), (1,)])
    x = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    i = np.arange(7, dtype=np.int64) // 4
    out = sess.run(None, {"boxes": x, "batch_index": i})
    np.testing.assert_array_equal(out[0], x)
    np.testing.assert_array_equal(out[1], i)


# ---- through the compiler: netdsl's torch module against its ONNX file --------------------------
E2E_SPEC = """
network Mini {
    input images: f32[N, 3, H, W]
    x, sizes = detection_transform(images, min_size = 0, size_divisible = 16)
    f1 = x -> Conv2d(8, 3, stride = 4, padding = 1)
    f2 = f1 -> Conv2d(8, 3, stride = 2, padding = 1)
    m = (f1, f2) -> RPNHead(3)
    proposals, index = rpn_proposals(m[0], m[1], m[2], m[3], anchors(f1, x, sizes = [16]),
                                     anchors(f2, x, sizes = [32]), sizes, pre_nms_top_n = [50, 60],
                                     post_nms_top_n = [40, 30])
    rois, rois_index = sample_rois(proposals, index)
    h = roi_align(f1, rois, rois_index, output_size = 2, spatial_scale = 0.25, sampling_ratio = 2) -> Flatten
    boxes, scores, labels, batch_index = detect_postprocess(h -> Linear(5), h -> Linear(20), rois, rois_index,
                                                            sizes, detections_per_img = 25)
    output boxes = boxes
    output scores = scores
    output labels = labels
    output batch_index = batch_index
    output proposals = rois
    output proposal_index = rois_index
}
"""


def test_compiled_network_matches_torch_module():
    """rpn_proposals, sample_rois and detect_postprocess in a network compiled by netdsl: its torch
    module (eval) and its ONNX file agree at two batch and image sizes through one file."""
    net = netdsl.loads(E2E_SPEC)
    weights = {k: v.detach().numpy() for k, v in net.to_torch(seed=3).state_dict().items()}
    module = net.to_torch(weights).eval()
    model = net.to_onnx(weights)
    dims = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    assert dims["boxes"][0] == dims["labels"][0] and isinstance(dims["boxes"][0], str)    # data-dependent
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    counts = []
    for seed, shape in enumerate(((2, 3, 64, 80), (3, 3, 48, 100))):
        x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
        with torch.no_grad():
            ref = [r.numpy() for r in module(torch.from_numpy(x))]
        got = sess.run(None, {"images": x})
        for name, r, g in zip([n for n, _ in net.graph.outputs], ref, got):
            assert r.shape == g.shape and r.dtype == g.dtype, (name, r.shape, g.shape, r.dtype, g.dtype)
            np.testing.assert_allclose(g, r, atol=1e-4 * max(1.0, float(np.abs(r).max())), rtol=0, err_msg=name)
        counts.append((len(got[0]), len(got[4])))
        assert set(got[3]) == set(range(shape[0])) == set(got[5])      # every image has detections
        assert len(np.unique(got[2])) > 1
    assert counts == [(2 * 25, 2 * 30), (3 * 25, 3 * 30)], counts


def test_no_torch_import_in_onnx_detection_post():
    import ast
    import pathlib
    src = pathlib.Path(__file__).parents[1] / "netdsl/backends/onnx/detection_post.py"
    mods = {a.name for n in ast.walk(ast.parse(src.read_text())) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module for n in ast.walk(ast.parse(src.read_text())) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(m.split(".")[0] in ("torch", "torchvision") for m in mods)

