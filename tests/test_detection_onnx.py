"""ONNX emitters of the detection primitives (netdsl/backends/onnx/detection.py).

Each spec is compiled once to ONE ONNX file with symbolic dims (N, H, W, R) and run by
onnxruntime at two sizes; it is compared with netdsl's generated torch module and, where
torchvision imports (in a virtualenv with torchvision), with torchvision's own functions. Comparisons are made
non-vacuous: NMS suppresses some boxes but not all, clipping moves some boxes, RoI outputs are
not all zero, and two inputs give different outputs.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

import onnx

import netdsl
from netdsl.errors import BackendError

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
try:
    import torchvision
    from torchvision.ops import boxes as tv_boxes
except Exception:       # noqa: BLE001 - any failure to import means: no torchvision tests
    torchvision = None
needs_tv = pytest.mark.skipif(torchvision is None, reason="torchvision is not installed")

# a batch_index [R] (int64, values in [0, N)) from a float input g [R, N]: the argmax per row
BATCH_INDEX = "_, bi2 = topk(g, k = 1, dim = 1)\nbi = select(bi2, 1, 0)"

SPECS = {
    "boxes": """
input deltas: f32[R, 8]
input boxes: f32[R, 4]
input ref: f32[R, 4]
input g: f32[R, N]
input images: f32[N, 3, H, W]
{bi}
_, sizes = detection_transform(images, min_size = 24, max_size = 60)
output sizes = sizes
output dec = box_decode(deltas, boxes, weights = [10.0, 10.0, 5.0, 5.0])
output dec1 = box_decode(select(reshape(deltas, shape = [0, 2, 4]), 1, 0), boxes)
output enc = box_encode(boxes, ref, weights = [10.0, 10.0, 5.0, 5.0])
output clipped = clip_boxes(boxes, bi, sizes)
output rescaled = rescale_boxes(boxes, bi, sizes)
output small = remove_small_boxes(boxes, min_size = 20.0)""",
    "nms": """
input boxes: f32[R, 4]
input scores: f32[R]
input g: f32[R, G]
_, gi = topk(g, k = 1, dim = 1)
output keep = nms(boxes, scores, iou_threshold = 0.3)
output bkeep = batched_nms(boxes, scores, select(gi, 1, 0), iou_threshold = 0.3)""",
    "roi": """
input f: f32[N, 5, H, W]
input boxes: f32[R, 4]
input g: f32[R, N]
{bi}
output a = roi_align(f, boxes, bi, output_size = 7, spatial_scale = 0.25)
output b = roi_align(f, boxes, bi, output_size = [3, 4], spatial_scale = 0.5, sampling_ratio = 2, aligned = true)
output c = roi_align(f, boxes, bi, output_size = 2, sampling_ratio = 0)
output p = roi_pool(f, boxes, bi, output_size = [5, 3], spatial_scale = 0.125)""",
    "levels": """
input images: f32[N, 3, H, W]
input boxes: f32[R, 4]
input g: f32[R, N]
{bi}
x, sizes = detection_transform(images, min_size = 64, max_size = 128)
p2 = x -> Conv2d(4, 3, stride = 4, padding = 1)
p3 = p2 -> Conv2d(4, 3, stride = 2, padding = 1)
p4 = p3 -> Conv2d(4, 3, stride = 2, padding = 1)
o2, o3, d2, d3 = RPNHead(p2, p3, num_anchors = 6, conv_depth = 2)
output pooled = multiscale_roi_align(p2, p3, p4, boxes, bi, sizes, output_size = 7, sampling_ratio = 2)
output pooled1 = multiscale_roi_align(p3, boxes, bi, sizes, output_size = 3, sampling_ratio = -1)
output anchors2 = anchors(p2, x, sizes = [32, 64], aspect_ratios = [0.5, 1.0, 2.0])
output anchors3 = anchors(p3, x, sizes = [24], aspect_ratios = [0.7, 1.3])
output o2 = o2
output d3 = d3
output x = x
output sizes = sizes""",
}


def used_names(graph) -> set:
    """Every value name a node of `graph` or of its subgraphs (If branches) reads."""
    out = set()
    for node in graph.node:
        out.update(node.input)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                out |= used_names(attr.g)
    return out


@functools.lru_cache(maxsize=None)
def compiled(key: str, opset: int = 17):
    """(net, torch module (eval), onnxruntime session, weights) of SPECS[key]."""
    net = netdsl.loads("network t {\n" + SPECS[key].format(bi=BATCH_INDEX) + "\n}")
    rng = np.random.default_rng(5)
    weights = {k: (rng.standard_normal(v.shape) * 0.3).astype(np.float32)
               for k, v in net.init_weights(0).items()}
    proto = net.to_onnx(weights, opset=opset)
    onnx.checker.check_model(proto, full_check=True)
    assert set(init.name for init in proto.graph.initializer) <= used_names(proto.graph), "unused initializers"
    for v in proto.graph.input:         # one file for every size: the dims stay symbolic
        assert all(d.dim_param for d in v.type.tensor_type.shape.dim[:1]), v
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    module = net.to_torch(weights).eval()
    return net, module, sess, weights


def run_onnx(key, inputs: dict) -> dict:
    net, _, sess, _ = compiled(key)
    outs = sess.run(None, {v.name: inputs[v.name] for v in net.graph.inputs})
    return dict(zip([name for name, _ in net.graph.outputs], outs))


def run_torch(key, inputs: dict) -> dict:
    net, module, _, _ = compiled(key)
    with torch.no_grad():
        outs = module(*[torch.from_numpy(inputs[v.name]) for v in net.graph.inputs])
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    return dict(zip([name for name, _ in net.graph.outputs], [o.numpy() for o in outs]))


def random_boxes(rng, n, extent, lo=-10.0, max_side=60.0):
    xy = rng.uniform(lo, extent, (n, 2)).astype(np.float32)
    return np.concatenate([xy, xy + rng.uniform(0.5, max_side, (n, 2)).astype(np.float32)], 1)


def assert_close(got, want, what, tol=1e-5):
    assert got.shape == want.shape and got.dtype == want.dtype, f"{what}: {got.shape} {got.dtype} vs " \
                                                                 f"{want.shape} {want.dtype}"
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    err = float(np.abs(got.astype(np.float64) - want).max()) if want.size else 0.0
    assert err <= tol * scale, f"{what}: max |diff| {err} (scale {scale})"


# ---- inputs at two sizes -------------------------------------------------------------------
def box_inputs(r, n, h, w, seed):
    rng = np.random.default_rng(seed)
    return {"deltas": rng.standard_normal((r, 8)).astype(np.float32) * 2,
            "boxes": random_boxes(rng, r, max(h, w)),
            "ref": random_boxes(rng, r, max(h, w)),
            "g": rng.standard_normal((r, n)).astype(np.float32),
            "images": rng.random((n, 3, h, w)).astype(np.float32)}


def nms_inputs(r, groups, seed):
    rng = np.random.default_rng(seed)
    side = 12 * np.sqrt(r) + 40         # about the same overlap at every count
    return {"boxes": random_boxes(rng, r, side, 0.0, 50.0), "scores": rng.random(r).astype(np.float32),
            "g": rng.standard_normal((r, groups)).astype(np.float32)}


def roi_inputs(r, n, h, w, seed):
    rng = np.random.default_rng(seed)
    return {"f": rng.standard_normal((n, 5, h, w)).astype(np.float32),
            # at every spatial scale (1 to 1/8) some boxes on the map, some partly outside
            "boxes": np.concatenate([random_boxes(rng, r - r // 2, max(h, w), -4.0, max(h, w)),
                                     random_boxes(rng, r // 2, 6 * max(h, w), -20.0, 4 * max(h, w))]),
            "g": rng.standard_normal((r, n)).astype(np.float32)}


def level_inputs(r, n, h, w, seed):
    rng = np.random.default_rng(seed)
    return {"images": rng.random((n, 3, h, w)).astype(np.float32),
            "boxes": random_boxes(rng, r, 128, -10.0, 140.0),
            "g": rng.standard_normal((r, n)).astype(np.float32)}


BOX_SIZES = [(40, 2, 50, 70), (7, 1, 33, 20)]
NMS_SIZES = [(60, 3), (1300, 4), (1, 2), (0, 2)]        # 1300 boxes: torchvision's per-group path
ROI_SIZES = [(30, 2, 13, 17), (5, 1, 8, 6)]
LEVEL_SIZES = [(40, 2, 50, 70), (9, 1, 61, 33)]


# ---- ONNX vs netdsl's torch module ------------------------------------------------------------
@pytest.mark.parametrize("size", BOX_SIZES)
def test_box_ops_match_torch(size):
    inputs = box_inputs(*size, seed=1)
    got, want = run_onnx("boxes", inputs), run_torch("boxes", inputs)
    for name in ("dec", "dec1", "enc", "clipped", "rescaled"):
        assert_close(got[name], want[name], name)
    assert np.array_equal(got["sizes"], want["sizes"])
    assert (got["sizes"][:, :2] != got["sizes"][:, 2:]).all()           # the rescale is not the identity
    assert np.array_equal(got["small"], want["small"])
    assert 0 < len(got["small"]) < size[0] or size[0] < 10
    assert not np.array_equal(got["clipped"], inputs["boxes"])      # some boxes were clipped


@pytest.mark.parametrize("size", NMS_SIZES)
def test_nms_match_torch(size):
    inputs = nms_inputs(*size, seed=2)
    got, want = run_onnx("nms", inputs), run_torch("nms", inputs)
    for name in ("keep", "bkeep"):
        assert got[name].dtype == np.int64 and np.array_equal(got[name], want[name]), name
    r = size[0]
    if r > 10:      # something suppressed, not everything; groups keep more
        assert 0 < len(got["keep"]) < len(got["bkeep"]) < r


@pytest.mark.parametrize("size", ROI_SIZES)
def test_roi_ops_match_torch(size):
    inputs = roi_inputs(*size, seed=3)
    got, want = run_onnx("roi", inputs), run_torch("roi", inputs)
    for name in "abcp":
        assert_close(got[name], want[name], name)
        assert np.abs(got[name]).max() > 0.1, name


@pytest.mark.parametrize("size", LEVEL_SIZES)
def test_levels_match_torch(size):
    """detection_transform (resize and pad), anchors, RPNHead, multiscale_roi_align."""
    inputs = level_inputs(*size, seed=4)
    got, want = run_onnx("levels", inputs), run_torch("levels", inputs)
    # the resize to ~1 ulp (ONNX Resize would be 1e-5 off); after convs, 1e-4
    tols = {"x": 2e-6, "anchors2": 0, "anchors3": 0}
    for name in ("x", "o2", "d3", "pooled", "pooled1", "anchors2", "anchors3"):
        assert_close(got[name], want[name], name, tol=tols.get(name, 1e-4))
    assert np.array_equal(got["sizes"], want["sizes"]) and got["sizes"].dtype == np.int64
    assert np.abs(got["pooled"]).max() > 1e-3


@pytest.mark.parametrize("key,make", [("boxes", lambda: box_inputs(0, 2, 30, 40, 1)),
                                      ("roi", lambda: roi_inputs(0, 2, 13, 17, 1)),
                                      ("levels", lambda: level_inputs(0, 1, 40, 40, 1)),
                                      ("nms", lambda: nms_inputs(0, 3, 1))])
def test_no_boxes(key, make):
    """Zero boxes (an image where nothing survived) run, with the torch module's shapes."""
    inputs = make()
    got, want = run_onnx(key, inputs), run_torch(key, inputs)
    for name, value in want.items():
        assert got[name].shape == value.shape and got[name].dtype == value.dtype, name
        assert_close(got[name], value, name)


def nms_case(boxes, scores, groups):
    return {"boxes": np.asarray(boxes, np.float32), "scores": np.asarray(scores, np.float32),
            "g": np.eye(3, dtype=np.float32)[groups]}


# IoU exactly 0.3 is kept (torchvision drops IoU > threshold); equal scores: lower index first
NMS_EDGE = [nms_case([[0, 0, 10, 10], [0, 0, 10, 3], [0, 0, 10, 3.01], [20, 20, 30, 30], [20, 20, 30, 30]],
                     [0.9, 0.8, 0.7, 0.5, 0.5], [0, 0, 1, 2, 2]),
            nms_case([[0, 0, 4, 4]] * 4, [0.5, 0.5, 0.7, 0.5], [1, 0, 1, 0])]


@pytest.mark.parametrize("inputs", NMS_EDGE)
def test_nms_threshold_and_ties(inputs):
    got, want = run_onnx("nms", inputs), run_torch("nms", inputs)
    for name in ("keep", "bkeep"):
        assert np.array_equal(got[name], want[name]), name
    if torchvision is not None:
        b, s = torch.from_numpy(inputs["boxes"]), torch.from_numpy(inputs["scores"])
        assert np.array_equal(got["keep"], tv_boxes.nms(b, s, 0.3).numpy())
        g = torch.from_numpy(inputs["g"].argmax(1))
        assert np.array_equal(got["bkeep"], tv_boxes.batched_nms(b, s, g, 0.3).numpy())


def test_one_file_two_sizes_differ():
    """The same file at two sizes gives outputs of different shapes (nothing fixed at export)."""
    a = run_onnx("levels", level_inputs(*LEVEL_SIZES[0], seed=4))
    b = run_onnx("levels", level_inputs(*LEVEL_SIZES[1], seed=4))
    assert a["x"].shape != b["x"].shape and a["anchors2"].shape != b["anchors2"].shape
    assert a["sizes"].tolist() != b["sizes"].tolist()


def test_opset_below_16_is_refused():
    net = compiled("roi")[0]
    with pytest.raises(BackendError, match="roi_align needs ONNX opset 16") as err:
        net.to_onnx(net.init_weights(0), opset=15)
    assert err.value.span is not None and err.value.span.line > 0     # located at the op


OPSET_INPUTS = {"boxes": lambda: box_inputs(*BOX_SIZES[0], seed=1),
                "nms": lambda: nms_inputs(1300, 3, seed=2),
                "roi": lambda: roi_inputs(*ROI_SIZES[0], seed=3),
                "levels": lambda: level_inputs(*LEVEL_SIZES[1], seed=4)}


@pytest.mark.parametrize("opset", [16, 21])
@pytest.mark.parametrize("key", sorted(OPSET_INPUTS))
def test_other_opsets(key, opset):
    """The lowest opset the detection ops allow and the highest netdsl writes (reductions take
    their axes as inputs from 18 on) give the same results as the default."""
    net, _, _, weights = compiled(key)
    proto = net.to_onnx(weights, opset=opset)
    assert set(init.name for init in proto.graph.initializer) <= used_names(proto.graph)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = OPSET_INPUTS[key]()
    got = sess.run(None, {v.name: inputs[v.name] for v in net.graph.inputs})
    for (name, _), value in zip(net.graph.outputs, got):
        assert np.array_equal(value, run_onnx(key, inputs)[name]), name


def test_no_torch_on_the_onnx_path():
    import subprocess
    import sys
    code = ("import sys, netdsl.backends.onnx.detection, netdsl.backends.onnx.export; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- ONNX vs torchvision itself -------------------------------------------------------------------
@needs_tv
@pytest.mark.parametrize("size", BOX_SIZES)
def test_box_ops_match_torchvision(size):
    from torchvision.models.detection._utils import BoxCoder
    from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
    inputs = box_inputs(*size, seed=1)
    got = run_onnx("boxes", inputs)
    t = {k: torch.from_numpy(v) for k, v in inputs.items()}
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    assert_close(got["dec"], coder.decode_single(t["deltas"], t["boxes"]).numpy(), "decode")
    assert_close(got["dec1"], BoxCoder((1.0,) * 4).decode_single(t["deltas"][:, :4], t["boxes"]).numpy(), "decode1")
    assert_close(got["enc"], coder.encode_single(t["boxes"], t["ref"]).numpy(), "encode")
    bi = inputs["g"].argmax(1)
    transform = GeneralizedRCNNTransform(24, 60, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).eval()
    h, w = inputs["images"].shape[2:]
    resized = transform(list(torch.from_numpy(inputs["images"])))[0].image_sizes
    assert got["sizes"].tolist() == [[*s, h, w] for s in resized]
    for i, (box, image) in enumerate(zip(t["boxes"], bi)):
        assert_close(got["clipped"][i], tv_boxes.clip_boxes_to_image(box, resized[image]).numpy(), "clip")
        assert_close(got["rescaled"][i], resize_boxes(box[None], resized[image], (h, w))[0].numpy(), "rescale")
    assert np.array_equal(got["small"], tv_boxes.remove_small_boxes(t["boxes"], 20.0).numpy())
    assert set(bi.tolist()) <= set(range(size[1]))


@needs_tv
@pytest.mark.parametrize("size", NMS_SIZES)
def test_nms_matches_torchvision(size):
    inputs = nms_inputs(*size, seed=2)
    got = run_onnx("nms", inputs)
    b, s = torch.from_numpy(inputs["boxes"]), torch.from_numpy(inputs["scores"])
    assert np.array_equal(got["keep"], tv_boxes.nms(b, s, 0.3).numpy())
    groups = torch.from_numpy(inputs["g"].argmax(1))
    assert np.array_equal(got["bkeep"], tv_boxes.batched_nms(b, s, groups, 0.3).numpy())


@needs_tv
@pytest.mark.parametrize("size", ROI_SIZES)
def test_roi_ops_match_torchvision(size):
    from torchvision.ops import roi_align, roi_pool
    inputs = roi_inputs(*size, seed=3)
    got = run_onnx("roi", inputs)
    f = torch.from_numpy(inputs["f"])
    rois = torch.cat([torch.from_numpy(inputs["g"].argmax(1)).float()[:, None], torch.from_numpy(inputs["boxes"])], 1)
    assert_close(got["a"], roi_align(f, rois, 7, 0.25).numpy(), "roi_align")
    assert_close(got["b"], roi_align(f, rois, (3, 4), 0.5, 2, True).numpy(), "roi_align aligned")
    assert_close(got["c"], roi_align(f, rois, 2, 1.0, 0).numpy(), "roi_align adaptive")
    assert_close(got["p"], roi_pool(f, rois, (5, 3), 0.125).numpy(), "roi_pool")


@needs_tv
@pytest.mark.parametrize("size", LEVEL_SIZES)
def test_levels_match_torchvision(size):
    from collections import OrderedDict

    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList
    from torchvision.models.detection.rpn import RPNHead
    from torchvision.models.detection.transform import GeneralizedRCNNTransform
    from torchvision.ops import MultiScaleRoIAlign
    inputs = level_inputs(*size, seed=4)
    got = run_onnx("levels", inputs)
    weights = compiled("levels")[3]
    transform = GeneralizedRCNNTransform(64, 128, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).eval()
    images, _ = transform(list(torch.from_numpy(inputs["images"])))
    assert_close(got["x"], images.tensors.numpy(), "transform", 2e-6)
    n, _, h, w = inputs["images"].shape
    assert got["sizes"].tolist() == [[*s, h, w] for s in images.image_sizes]
    t = {k: torch.from_numpy(v) for k, v in weights.items()}
    with torch.no_grad():       # the spec's strided convs, as torch computes them
        feats, x = [], images.tensors
        for path in ("conv2d", "conv2d_1", "conv2d_2"):
            x = torch.nn.functional.conv2d(x, t[f"{path}.weight"], t[f"{path}.bias"], stride=2 if feats else 4,
                                           padding=1)
            feats.append(x)
    head = RPNHead(4, 6, conv_depth=2)
    head.load_state_dict({k.split(".", 1)[1]: v for k, v in t.items() if k.startswith("rpnhead.")})
    o, d = head(feats[:2])
    assert_close(got["o2"], o[0].detach().numpy(), "objectness", 1e-4)
    assert_close(got["d3"], d[1].detach().numpy(), "deltas", 1e-4)
    image_list = ImageList(images.tensors, images.image_sizes)
    for name, fm, s, r in (("anchors2", feats[0], (32, 64), (0.5, 1.0, 2.0)),
                           ("anchors3", feats[1], (24,), (0.7, 1.3))):
        want = AnchorGenerator((s,), (r,))(image_list, [fm])[0].numpy()
        assert np.array_equal(got[name], want), name
    bi = inputs["g"].argmax(1)
    order = np.argsort(bi, kind="stable")       # torchvision takes per-image lists: image-major rows
    boxes = torch.from_numpy(inputs["boxes"])
    per_image = [boxes[torch.from_numpy(order[bi[order] == i])] for i in range(n)]
    pooler = MultiScaleRoIAlign(["0", "1", "2"], 7, 2)
    want = pooler(OrderedDict((str(i), f) for i, f in enumerate(feats)), per_image, images.image_sizes)
    assert_close(got["pooled"][order], want.detach().numpy(), "multiscale_roi_align", 1e-4)
