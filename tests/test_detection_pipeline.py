"""The detection pipeline's torch runtime (netdsl/backends/torch/detection_pipeline.py):
DetContext, det_transform, det_rpn_proposals, det_detect_postprocess, det_rescale_boxes and
det_results, loaded as a generated source has them (detection_ops, detection_losses and
detection_pipeline pasted into one namespace). These tests need only torch; the comparisons
with torchvision's own components are in test_detection_pipeline_torchvision.py."""
import ast
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

RUNTIME_DIR = Path(__file__).resolve().parents[1] / "netdsl" / "backends" / "torch"
RUNTIME = ("detection_ops", "detection_losses", "detection_pipeline")   # pasted in this order
PIPELINE = RUNTIME_DIR / "detection_pipeline.py"


def load_runtime(use_torchvision=True):
    """The three runtime files exec'd into one namespace, as in a generated source; with
    use_torchvision false, detection_ops takes its pure-torch paths."""
    paths = [RUNTIME_DIR / f"{n}.py" for n in RUNTIME]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"detection runtime not written yet: {', '.join(missing)}")
    ns = {"__name__": "netdsl_detection_runtime"}
    for p in paths:
        text = re.sub(r"^from __future__ import .*\n", "", p.read_text(encoding="utf-8"), flags=re.M)
        exec(compile(text, str(p), "exec"), ns)
    ns["DET_USE_TORCHVISION"] = use_torchvision
    return SimpleNamespace(**ns)


@pytest.fixture(scope="module")
def rt():
    return load_runtime()


def _image_sizes(rows):
    return torch.tensor(rows, dtype=torch.int64)


# ----------------------------------------------------------------------------- the file itself

def test_pipeline_file_is_pasteable():
    """Top level: only math / torch imports, every name det_ / Det prefixed."""
    tree = ast.parse(PIPELINE.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Import):
            assert all(a.name in ("math", "torch", "torch.nn.functional") for a in node.names), ast.dump(node)
        elif isinstance(node, ast.ImportFrom):
            assert node.module in ("torch", "torch.nn", "__future__"), ast.dump(node)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            assert node.name.startswith(("det_", "Det")), node.name
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                assert t.id.startswith(("det_", "Det")), t.id
        else:
            assert isinstance(node, ast.Expr), ast.dump(node)     # the docstring


# ----------------------------------------------------------------------------- DetContext

def _target(k=2, dtype=torch.float32):
    return {"boxes": torch.tensor([[1.0, 2.0, 10.0, 12.0]] * k, dtype=dtype),
            "labels": torch.ones(k, dtype=torch.int64)}


@pytest.mark.parametrize("bad, message", [
    ({"boxes": torch.zeros(4), "labels": torch.zeros(1, dtype=torch.int64)},
     r"targets\[1\]\['boxes'\] \(image 1\) must have shape \[K, 4\], got \[4\]"),
    ({"boxes": torch.zeros(2, 5), "labels": torch.zeros(2, dtype=torch.int64)},
     r"image 1\) must have shape \[K, 4\], got \[2, 5\]"),
    ({"boxes": torch.zeros(2, 4, dtype=torch.int64), "labels": torch.zeros(2, dtype=torch.int64)},
     r"targets\[1\]\['boxes'\] \(image 1\) must be a floating tensor"),
    ({"boxes": torch.zeros(2, 4), "labels": torch.zeros(2, 1, dtype=torch.int64)},
     r"targets\[1\]\['labels'\] \(image 1\) must have shape \[K\]"),
    ({"boxes": torch.zeros(2, 4), "labels": torch.zeros(2)},
     r"targets\[1\]\['labels'\] \(image 1\) must be int64, got torch.float32"),
    ({"boxes": torch.zeros(2, 4), "labels": torch.zeros(3, dtype=torch.int64)},
     r"image 1\) has 2 boxes but 3 labels"),
    ({"labels": torch.zeros(3, dtype=torch.int64)}, r"targets\[1\] \(image 1\) has no 'boxes'"),
    ({"boxes": [[0, 0, 1, 1]], "labels": torch.zeros(1, dtype=torch.int64)},
     r"targets\[1\]\['boxes'\] \(image 1\) must be a tensor, got list"),
    ([1, 2], r"targets\[1\] \(image 1\) must be a dict"),
])
def test_context_rejects_bad_targets(rt, bad, message):
    with pytest.raises(ValueError, match=message):
        rt.DetContext(True, [_target(), bad])


def test_context_keeps_a_copy_of_targets(rt):
    t = _target()
    det = rt.DetContext(True, [t])
    assert det.training and det.with_losses and det.losses == {}
    det.targets[0]["boxes"] = None
    assert isinstance(t["boxes"], torch.Tensor)
    assert not rt.DetContext(True, None).with_losses
    assert not rt.DetContext(False, [t]).with_losses
    with pytest.raises(ValueError, match="targets must be a list"):
        rt.DetContext(True, t)


# ----------------------------------------------------------------------------- det_transform

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _transform(rt, det, images, min_size=64, max_size=100, divisible=32):
    return rt.det_transform(det, images, min_size=min_size, max_size=max_size, mean=MEAN,
                            std=STD, size_divisible=divisible)


@pytest.mark.parametrize("images, message", [
    (torch.rand(3, 40, 50), r"tensor \[N, 3, H, W\] or a list of \[3, H, W\] tensors, got a "
                            r"tensor of shape \[3, 40, 50\]"),
    (torch.rand(2, 1, 40, 50), r"images have 1 channels, expected 3 \(shape \[2, 1, 40, 50\]\)"),
    ([torch.rand(3, 40, 50), torch.rand(4, 30, 30)], r"image 1 has 4 channels, expected 3"),
    ([torch.rand(3, 40, 50), torch.rand(1, 3, 30, 30)],
     r"image 1 must be a tensor \[3, H, W\], got shape \[1, 3, 30, 30\]"),
    (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), r"image 0 must be a floating tensor"),
    ([], r"no images"),
    ("img.png", r"got str"),
])
def test_transform_rejects_bad_images(rt, images, message):
    with pytest.raises(ValueError, match=message):
        _transform(rt, rt.DetContext(False), images)


def test_transform_sizes_padding_and_boxes(rt):
    """Scale from min/max size, pad to 32, image_sizes rows, boxes resized, padding zero."""
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 40, 50, generator=g), torch.rand(3, 30, 90, generator=g)]
    boxes = torch.tensor([[4.0, 5.0, 20.0, 30.0]])
    det = rt.DetContext(False, [{"boxes": boxes, "labels": torch.tensor([1])},
                                {"boxes": boxes, "labels": torch.tensor([2])}])
    x, sizes = _transform(rt, det, images)
    # image 0: scale min(64/40, 100/50) = 1.6 -> 64x80; image 1: min(64/30, 100/90) -> 33x100
    assert sizes.dtype == torch.int64
    assert sizes.tolist() == [[64, 80, 40, 50], [33, 100, 30, 90]]
    assert list(x.shape) == [2, 3, 64, 128]
    assert x[0, :, :, 80:].abs().sum() == 0 and x[1, :, 33:, :].abs().sum() == 0
    assert x[0, :, :64, :80].abs().sum() > 0
    assert torch.allclose(det.targets[0]["boxes"], boxes * 1.6)
    assert torch.allclose(det.targets[1]["boxes"],
                          boxes * torch.tensor([100 / 90, 33 / 30, 100 / 90, 33 / 30]))
    assert det.original_sizes == [(40, 50), (30, 90)] and det.n_images == 2
    assert torch.equal(det.image_sizes, sizes)


def test_transform_batch_tensor_equals_list(rt):
    images = torch.rand(2, 3, 37, 45, generator=torch.Generator().manual_seed(1))
    x1, s1 = _transform(rt, rt.DetContext(False), images)
    x2, s2 = _transform(rt, rt.DetContext(False), list(images))
    assert torch.equal(x1, x2) and torch.equal(s1, s2)


def test_transform_no_resize_when_min_size_zero(rt):
    img = torch.rand(1, 3, 20, 30, generator=torch.Generator().manual_seed(2))
    x, sizes = _transform(rt, rt.DetContext(False), img, min_size=0, divisible=16)
    assert sizes.tolist() == [[20, 30, 20, 30]] and list(x.shape) == [1, 3, 32, 32]
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    assert torch.equal(x[0, :, :20, :30], (img[0] - mean) / std)


def test_transform_draws_one_number_per_image_in_training(rt):
    """torchvision's training resize draws torch.empty(1).uniform_ per image, even with one
    min size: the transform must consume the same numbers."""
    images = [torch.rand(3, 20, 30), torch.rand(3, 25, 20)]
    torch.manual_seed(5)
    _transform(rt, rt.DetContext(True), images)
    after_train = torch.rand(1)
    torch.manual_seed(5)
    _transform(rt, rt.DetContext(False), images)
    after_eval = torch.rand(1)
    torch.manual_seed(5)
    torch.empty(1).uniform_(0.0, 1.0)
    torch.empty(1).uniform_(0.0, 1.0)
    expected = torch.rand(1)
    assert torch.equal(after_train, expected) and not torch.equal(after_eval, expected)


def test_transform_rejects_degenerate_and_miscounted_targets(rt):
    img = [torch.rand(3, 20, 30)]
    bad = {"boxes": torch.tensor([[5.0, 5.0, 5.0, 9.0]]), "labels": torch.tensor([1])}
    with pytest.raises(ValueError, match=r"positive height and width.*target at index 0"):
        _transform(rt, rt.DetContext(True, [bad]), img)
    with pytest.raises(ValueError, match="1 images but 2 targets"):
        _transform(rt, rt.DetContext(True, [_target(), _target()]), img)


# ----------------------------------------------------------------------------- proposals

def _grid_anchors(h, w, stride, size):
    """One square anchor per location, location-major."""
    ys, xs = torch.meshgrid(torch.arange(h) * stride, torch.arange(w) * stride, indexing="ij")
    c = torch.stack([xs, ys, xs, ys], dim=-1).reshape(-1, 4).float()
    return c + torch.tensor([-size / 2, -size / 2, size / 2, size / 2])


def _rpn_inputs(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(8, 10, 8), (4, 5, 16)]                 # (h, w, stride) per level, A = 1
    logits = [torch.randn(n, 1, h, w, generator=g) for h, w, _ in shapes]
    deltas = [0.1 * torch.randn(n, 4, h, w, generator=g) for h, w, _ in shapes]
    anchors = [_grid_anchors(h, w, s, 2.5 * s) for h, w, s in shapes]
    return logits, deltas, anchors, _image_sizes([[64, 80, 64, 80], [60, 70, 30, 35]][:n])


RPN_EVAL = dict(pre_nms_top_n=[60, 50], post_nms_top_n=[40, 30], nms_thresh=0.7)


def test_rpn_proposals_shape_order_and_clipping(rt):
    logits, deltas, anchors, sizes = _rpn_inputs()
    boxes, index = rt.det_rpn_proposals(rt.DetContext(False), logits, deltas, anchors, sizes,
                                        **RPN_EVAL)
    assert boxes.dtype == torch.float32 and index.dtype == torch.int64
    counts = torch.bincount(index, minlength=2).tolist()
    assert 20 <= counts[0] <= 30 and 20 <= counts[1] <= 30          # post_nms_top_n (test) = 30
    assert torch.equal(index, index.sort()[0])                       # image-major
    for i, (h, w) in enumerate([(64, 80), (60, 70)]):
        b = boxes[index == i]
        assert (b >= 0).all() and (b[:, 0::2] <= w).all() and (b[:, 1::2] <= h).all()
        assert (b[:, 2:] > b[:, :2]).all()
    train, _ = rt.det_rpn_proposals(rt.DetContext(True), logits, deltas, anchors, sizes,
                                    **RPN_EVAL)
    assert train.shape[0] > boxes.shape[0]                           # 40 per image in training


def test_rpn_proposals_softmax2_is_sigmoid_of_difference(rt):
    """"softmax2": A background then A foreground logits; the same boxes as sigmoid logits
    fg - bg. A wrong channel layout would pick other boxes."""
    logits, deltas, anchors, sizes = _rpn_inputs()
    g = torch.Generator().manual_seed(9)
    pairs = []
    for o in logits:
        bg = torch.randn(o.shape, generator=g)
        pairs.append(torch.cat([bg, bg + o], dim=1))
    ref = rt.det_rpn_proposals(rt.DetContext(False), logits, deltas, anchors, sizes, **RPN_EVAL)
    two = rt.det_rpn_proposals(rt.DetContext(False), pairs, deltas, anchors, sizes,
                               objectness="softmax2", **RPN_EVAL)
    assert torch.allclose(ref[0], two[0]) and torch.equal(ref[1], two[1])
    swapped = [torch.cat([p[:, 1:], p[:, :1]], dim=1) for p in pairs]
    other = rt.det_rpn_proposals(rt.DetContext(False), swapped, deltas, anchors, sizes,
                                 objectness="softmax2", **RPN_EVAL)
    assert other[0].shape != ref[0].shape or not torch.allclose(other[0], ref[0])
    with pytest.raises(ValueError, match="objectness must be"):
        rt.det_rpn_proposals(rt.DetContext(False), logits, deltas, anchors, sizes,
                             objectness="softmax", **RPN_EVAL)


# ----------------------------------------------------------------------------- postprocess

def _head_outputs(counts, classes=4, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    r = sum(counts)
    xy = torch.rand(r, 2, generator=g) * 40
    boxes = torch.cat([xy, xy + 5 + torch.rand(r, 2, generator=g) * 20], dim=1)
    index = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    logits = scale * torch.randn(r, classes, generator=g)
    regression = 0.2 * torch.randn(r, 4 * classes, generator=g)
    return logits, regression, boxes, index


def test_detect_postprocess(rt):
    logits, regression, boxes, index = _head_outputs([40, 30])
    sizes = _image_sizes([[50, 60, 100, 120], [48, 64, 48, 64]])
    b, s, l, i = rt.det_detect_postprocess(rt.DetContext(False), logits, regression, boxes, index,
                                           sizes, score_thresh=0.05, nms_thresh=0.5,
                                           detections_per_img=25)
    assert b.shape == (s.shape[0], 4) and l.dtype == torch.int64 and i.dtype == torch.int64
    counts = torch.bincount(i, minlength=2).tolist()
    assert counts[0] == 25 and 15 <= counts[1] <= 25                   # dozens pass 0.05
    assert (s > 0.05).all() and (l >= 1).all() and (l <= 3).all()
    for k in range(2):                                               # by decreasing score
        sk = s[i == k]
        assert torch.equal(sk, sk.sort(descending=True)[0])
    assert (b[i == 0][:, 0::2] <= 60).all() and (b[i == 0][:, 1::2] <= 50).all()


def test_detect_postprocess_training_with_targets_makes_losses(rt):
    logits, regression, boxes, index = _head_outputs([6, 4])
    det = rt.DetContext(True, [_target(1), _target(1)])
    det.roi_labels = torch.tensor([1, 0, 2, 0, 0, 3, 1, 0, 0, 2])
    det.roi_regression_targets = torch.randn(10, 4)
    out = rt.det_detect_postprocess(det, logits, regression, boxes, index, _image_sizes(
        [[50, 60, 50, 60]] * 2), score_thresh=0.05, nms_thresh=0.5, detections_per_img=100)
    assert [t.shape[0] for t in out] == [0, 0, 0, 0]
    assert set(det.losses) == {"loss_classifier", "loss_box_reg"}
    assert det.losses["loss_classifier"] > 0


# ----------------------------------------------------------------------------- rescale, results

def test_rescale_boxes(rt):
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0], [1.0, 2.0, 3.0, 4.0]])
    sizes = _image_sizes([[50, 60, 100, 120], [48, 64, 24, 16]])
    out = rt.det_rescale_boxes(boxes, torch.tensor([0, 1]), sizes)
    assert torch.allclose(out, torch.tensor([[20.0, 40.0, 60.0, 80.0], [0.25, 1.0, 0.75, 2.0]]))


def test_results(rt):
    boxes, scores = torch.rand(5, 4), torch.rand(5)
    labels, index = torch.tensor([1, 2, 3, 4, 5]), torch.tensor([0, 0, 2, 2, 2])
    out = rt.det_results(rt.DetContext(False), boxes, scores, labels, index, 4)
    assert [list(d) for d in out] == [["boxes", "labels", "scores"]] * 4
    assert [d["boxes"].shape[0] for d in out] == [2, 0, 3, 0]
    assert torch.equal(out[2]["labels"], torch.tensor([3, 4, 5]))
    assert torch.equal(out[0]["scores"], scores[:2])
    det = rt.DetContext(True, [_target()])
    det.losses.update(loss_rpn_box_reg=1, loss_objectness=2, loss_box_reg=3, loss_classifier=4)
    assert list(rt.det_results(det, boxes, scores, labels, index, 1)) == [
        "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"]
