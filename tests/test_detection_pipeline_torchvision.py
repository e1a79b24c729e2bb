"""The detection pipeline's torch runtime against torchvision's own components on the same
inputs: det_transform vs GeneralizedRCNNTransform (a batch, a list of two different-sized
images with targets, training's random draw), det_rpn_proposals vs RegionProposalNetwork
(eval and training, incl. its losses with the same seed), det_detect_postprocess vs
RoIHeads.postprocess_detections, det_rescale_boxes vs transform.postprocess. Skipped where
torchvision is not installed (run it in a virtualenv with torchvision, see the README)."""
from collections import OrderedDict

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from torchvision.models.detection.anchor_utils import AnchorGenerator  # noqa: E402
from torchvision.models.detection.image_list import ImageList  # noqa: E402
from torchvision.models.detection.roi_heads import RoIHeads  # noqa: E402
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead  # noqa: E402
from torchvision.models.detection.transform import GeneralizedRCNNTransform  # noqa: E402

from test_detection_pipeline import load_runtime  # noqa: E402  (tests/ is on sys.path)

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.fixture(scope="module", params=[True, False], ids=["tv-ops", "pure-torch"])
def rt(request):
    """The runtime twice: NMS through torchvision.ops, and through detection_ops' pure
    torch (what a machine without torchvision runs)."""
    return load_runtime(use_torchvision=request.param)


def _sizes(image_sizes, original):
    return torch.tensor([[h, w, oh, ow] for (h, w), (oh, ow) in zip(image_sizes, original)],
                        dtype=torch.int64)


def _boxes(n, h, w, gen):
    xy = torch.rand(n, 2, generator=gen) * torch.tensor([w * 0.7, h * 0.7])
    wh = 3 + torch.rand(n, 2, generator=gen) * torch.tensor([w * 0.3, h * 0.3])
    return torch.cat([xy, xy + wh], dim=1)


# ----------------------------------------------------------------------------- transform

@pytest.mark.parametrize("min_size, max_size, divisible", [(64, 100, 32), (50, 1333, 16)])
def test_transform_list_with_targets(rt, min_size, max_size, divisible):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 40, 55, generator=g), torch.rand(3, 31, 90, generator=g)]
    targets = [{"boxes": _boxes(3, 40, 55, g), "labels": torch.tensor([1, 2, 3])},
               {"boxes": _boxes(2, 31, 90, g), "labels": torch.tensor([4, 5])}]
    tv = GeneralizedRCNNTransform(min_size, max_size, MEAN, STD, size_divisible=divisible).eval()
    ref, ref_targets = tv(images, targets)
    det = rt.DetContext(False, targets)
    x, sizes = rt.det_transform(det, images, min_size=min_size, max_size=max_size, mean=MEAN,
                                std=STD, size_divisible=divisible)
    assert x.shape == ref.tensors.shape and torch.equal(x, ref.tensors)
    assert torch.equal(sizes, _sizes(ref.image_sizes, [(40, 55), (31, 90)]))
    assert not torch.equal(sizes[0, :2], sizes[1, :2])                  # really two sizes
    for mine, theirs, given in zip(det.targets, ref_targets, targets):
        assert torch.equal(mine["boxes"], theirs["boxes"])
        assert not torch.equal(mine["boxes"], given["boxes"])         # resized, copy
        assert torch.equal(mine["labels"], theirs["labels"])


def test_transform_batch_tensor(rt):
    images = torch.rand(2, 3, 45, 37, generator=torch.Generator().manual_seed(1))
    tv = GeneralizedRCNNTransform(80, 120, MEAN, STD).eval()
    ref, _ = tv(images)
    x, sizes = rt.det_transform(rt.DetContext(False), images, min_size=80, max_size=120,
                                mean=MEAN, std=STD, size_divisible=32)
    assert torch.equal(x, ref.tensors)
    assert torch.equal(sizes, _sizes(ref.image_sizes, [(45, 37)] * 2))


def test_transform_training_keeps_the_random_stream(rt):
    """In training torchvision draws one number per image to pick the size: the same
    numbers must be drawn, so that later sampling sees the same stream."""
    g = torch.Generator().manual_seed(2)
    images = [torch.rand(3, 40, 55, generator=g), torch.rand(3, 31, 90, generator=g)]
    tv = GeneralizedRCNNTransform(64, 100, MEAN, STD).train()
    torch.manual_seed(7)
    ref, _ = tv(images)
    ref_next = torch.rand(3)
    torch.manual_seed(7)
    x, _ = rt.det_transform(rt.DetContext(True), images, min_size=64, max_size=100, mean=MEAN,
                            std=STD, size_divisible=32)
    assert torch.equal(x, ref.tensors) and torch.equal(torch.rand(3), ref_next)


# ----------------------------------------------------------------------------- RPN

IMAGE = (128, 160)                        # padded batch size (h, w)
RESIZED = [(128, 160), (112, 150)]
ORIGINAL = [(64, 80), (56, 75)]
LEVELS = [(32, 40), (16, 20), (8, 10)]    # strides 4, 8, 16


@pytest.fixture(scope="module")
def rpn_setup():
    torch.manual_seed(0)
    head = RPNHead(16, 3)
    for p in head.parameters():                        # varied objectness, real deltas
        torch.nn.init.normal_(p, std=0.3)
    gen = AnchorGenerator(((16,), (32,), (64,)), ((0.5, 1.0, 2.0),) * 3)
    g = torch.Generator().manual_seed(1)
    features = OrderedDict((str(i), torch.randn(2, 16, h, w, generator=g))
                           for i, (h, w) in enumerate(LEVELS))
    images = ImageList(torch.zeros(2, 3, *IMAGE), RESIZED)
    rpn = RegionProposalNetwork(gen, head, 0.7, 0.3, 64, 0.5, dict(training=300, testing=200),
                                dict(training=150, testing=100), 0.7)
    with torch.no_grad():
        logits, deltas = head(list(features.values()))
    anchors = gen(images, list(features.values()))[0]       # the same for every image
    counts = [h * w * 3 for h, w in LEVELS]
    return rpn, images, features, logits, deltas, list(anchors.split(counts, 0))


RPN_ATTRS = dict(pre_nms_top_n=[300, 200], post_nms_top_n=[150, 100], nms_thresh=0.7,
                 score_thresh=0.0, min_size=0.001, fg_iou_thresh=0.7, bg_iou_thresh=0.3,
                 batch_size_per_image=64, positive_fraction=0.5)


def test_rpn_proposals_eval(rt, rpn_setup):
    rpn, images, features, logits, deltas, anchors = rpn_setup
    rpn.eval()
    with torch.no_grad():
        ref, _ = rpn(images, features)
    boxes, index = rt.det_rpn_proposals(rt.DetContext(False), logits, deltas, anchors,
                                        _sizes(RESIZED, ORIGINAL), **RPN_ATTRS)
    counts = torch.bincount(index, minlength=2).tolist()
    assert counts == [len(r) for r in ref]
    assert min(counts) >= 80                           # enough survive nms (100 at most)
    for i, r in enumerate(ref):
        torch.testing.assert_close(boxes[index == i], r, rtol=0, atol=1e-4)
    assert not torch.allclose(ref[0][:10], ref[1][:10])


def test_rpn_proposals_training_and_losses(rt, rpn_setup):
    """Training counts (pre 300 / post 150 per level / image) and the RPN losses with the
    same seed (the sampler draws torch.randperm)."""
    rpn, images, features, logits, deltas, anchors = rpn_setup
    g = torch.Generator().manual_seed(4)
    targets = [{"boxes": _boxes(3, h, w, g), "labels": torch.tensor([1, 2, 1])}
               for h, w in RESIZED]
    rpn.train()
    torch.manual_seed(11)
    with torch.no_grad():
        ref, ref_losses = rpn(images, features, targets)
    det = rt.DetContext(True, targets)
    torch.manual_seed(11)
    boxes, index = rt.det_rpn_proposals(det, logits, deltas, anchors, _sizes(RESIZED, ORIGINAL),
                                        **RPN_ATTRS)
    assert torch.bincount(index, minlength=2).tolist() == [len(r) for r in ref]
    assert len(ref[0]) > 100
    for i, r in enumerate(ref):
        torch.testing.assert_close(boxes[index == i], r, rtol=0, atol=1e-4)
    assert set(det.losses) == set(ref_losses)
    for k, v in ref_losses.items():
        assert v > 0
        torch.testing.assert_close(det.losses[k], v, rtol=1e-6, atol=1e-7)
    rpn.eval()


# ----------------------------------------------------------------------------- RoI heads

@pytest.mark.parametrize("counts, classes, scale, per_image", [
    ([60, 45], 6, 2.0, 1000),         # the coordinate-trick NMS; the score threshold binds
    ([60, 45], 6, 2.0, 100),          # ... and detections_per_img binds
    ([300, 200], 12, 0.3, 150),       # > 1000 candidates per image: per-class NMS
])
def test_detect_postprocess(rt, counts, classes, scale, per_image):
    g = torch.Generator().manual_seed(3)
    proposals = [_boxes(n, h, w, g) for n, (h, w) in zip(counts, RESIZED)]
    r = sum(counts)
    logits = scale * torch.randn(r, classes, generator=g)
    regression = 0.3 * torch.randn(r, 4 * classes, generator=g)
    heads = RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, None, 0.05, 0.5, per_image).eval()
    rb, rs, rl = heads.postprocess_detections(logits, regression, proposals, RESIZED)
    index = torch.repeat_interleave(torch.arange(2), torch.tensor(counts))
    b, s, l, i = rt.det_detect_postprocess(rt.DetContext(False), logits, regression,
                                           torch.cat(proposals), index, _sizes(RESIZED, ORIGINAL),
                                           score_thresh=0.05, nms_thresh=0.5,
                                           detections_per_img=per_image,
                                           weights=[10.0, 10.0, 5.0, 5.0], min_size=0.01)
    got = torch.bincount(i, minlength=2).tolist()
    assert got == [len(x) for x in rb]
    assert min(got) >= 30                             # dozens of detections per image
    for k in range(2):
        torch.testing.assert_close(b[i == k], rb[k], rtol=0, atol=1e-4)
        torch.testing.assert_close(s[i == k], rs[k], rtol=0, atol=1e-6)
        assert torch.equal(l[i == k], rl[k])
    assert len(set(l.tolist())) > 3


def test_rescale_and_results(rt):
    g = torch.Generator().manual_seed(5)
    boxes = [_boxes(7, h, w, g) for h, w in RESIZED]
    scores = [torch.rand(7, generator=g) for _ in RESIZED]
    labels = [torch.randint(1, 9, (7,), generator=g) for _ in RESIZED]
    result = [{"boxes": b, "labels": lab, "scores": s} for b, lab, s in zip(boxes, labels, scores)]
    tv = GeneralizedRCNNTransform(64, 100, MEAN, STD).eval()
    ref = tv.postprocess([dict(d) for d in result], RESIZED, ORIGINAL)
    index = torch.repeat_interleave(torch.arange(2), 7)
    flat = rt.det_rescale_boxes(torch.cat(boxes), index, _sizes(RESIZED, ORIGINAL))
    out = rt.det_results(rt.DetContext(False), flat, torch.cat(scores), torch.cat(labels), index,
                         2)
    assert [list(d) for d in out] == [list(d) for d in ref]
    for mine, theirs in zip(out, ref):
        for k in theirs:
            assert torch.equal(mine[k], theirs[k]), k
    assert not torch.equal(out[1]["boxes"], boxes[1])
