"""netdsl's Faster R-CNN training code (netdsl/backends/torch/detection_losses.py) against
torchvision's own Matcher, BalancedPositiveNegativeSampler, RegionProposalNetwork losses,
RoIHeads.select_training_samples and fastrcnn_loss: on the same inputs and the same seed,
the same anchors / proposals are sampled and the losses are equal. Skipped where torchvision
is not installed (run it in a virtualenv with torchvision, see the README)."""
from collections import OrderedDict
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from torchvision.models.detection import _utils as tv_utils  # noqa: E402
from torchvision.models.detection import roi_heads as tv_roi  # noqa: E402
from torchvision.models.detection.anchor_utils import AnchorGenerator  # noqa: E402
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead  # noqa: E402
from torchvision.models.detection.image_list import ImageList  # noqa: E402
from torchvision.models.detection.rpn import (RegionProposalNetwork, RPNHead,  # noqa: E402
                                              concat_box_prediction_layers)
from torchvision.ops import MultiScaleRoIAlign, box_iou  # noqa: E402

from test_detection_losses import load_runtime  # noqa: E402  (tests/ is on sys.path)

L = load_runtime()      # detection_ops then detection_losses, in one namespace

IMAGE_SIZES = [(96, 128), (80, 112)]          # resized (h, w) of the two images; padded to 96x128
N_CLASSES = 5


def _context(targets, training=True):
    return SimpleNamespace(training=training, targets=targets, losses={})


def _jitter(boxes, n, scale, gen):
    """n boxes around the given ones (each corner moved by up to scale * size)."""
    pick = boxes[torch.randint(len(boxes), (n,), generator=gen)]
    wh = (pick[:, 2:] - pick[:, :2]).repeat(1, 2)
    out = pick + (torch.rand(n, 4, generator=gen) - 0.5) * 2 * scale * wh
    out[:, 2:] = torch.maximum(out[:, 2:], out[:, :2] + 1.0)
    return out


def _random_boxes(n, h, w, gen):
    xy = torch.rand(n, 2, generator=gen) * torch.tensor([w * 0.8, h * 0.8])
    wh = 4 + torch.rand(n, 2, generator=gen) * torch.tensor([w * 0.5, h * 0.5])
    return torch.cat([xy, xy + wh], dim=1)


@pytest.fixture(scope="module")
def targets():
    """Three and four ground-truth boxes, labels in 1..N_CLASSES-1."""
    gen = torch.Generator().manual_seed(3)
    out = []
    for (h, w), k in zip(IMAGE_SIZES, (3, 4)):
        out.append({"boxes": _random_boxes(k, h, w, gen) + 2.0,
                    "labels": torch.randint(1, N_CLASSES, (k,), generator=gen)})
    return out


@pytest.fixture(scope="module")
def rpn_targets():
    """Four and five boxes of 24 to 64 px, so that dozens of anchors match at IoU >= 0.7."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for (h, w), k in zip(IMAGE_SIZES, (4, 5)):
        wh = 24 + torch.rand(k, 2, generator=gen) * 40
        xy = torch.rand(k, 2, generator=gen) * (torch.tensor([w, h]) - wh)
        out.append({"boxes": torch.cat([xy, xy + wh], dim=1),
                    "labels": torch.randint(1, N_CLASSES, (k,), generator=gen)})
    return out


@pytest.fixture(scope="module")
def rpn_setup():
    torch.manual_seed(0)
    anchor_gen = AnchorGenerator(sizes=((24, 32, 40, 48), (48, 56, 64, 72)),
                                 aspect_ratios=((0.5, 0.7, 1.0, 1.4, 2.0),) * 2)
    head = RPNHead(8, 20)
    for p in head.parameters():                       # logits and deltas well away from 0
        torch.nn.init.normal_(p, std=0.3)
    images = ImageList(torch.zeros(2, 3, 96, 128), IMAGE_SIZES)
    gen = torch.Generator().manual_seed(1)
    features = OrderedDict([("0", torch.randn(2, 8, 12, 16, generator=gen)),
                            ("1", torch.randn(2, 8, 6, 8, generator=gen))])
    return anchor_gen, head, images, features


def _rpn(anchor_gen, head, batch_size, fraction):
    return RegionProposalNetwork(anchor_gen, head, 0.7, 0.3, batch_size, fraction,
                                 dict(training=300, testing=300), dict(training=100, testing=100), 0.7)


def test_box_iou_and_matcher_equal_torchvision(targets):
    gen = torch.Generator().manual_seed(5)
    gt = targets[1]["boxes"]
    preds = torch.cat([_jitter(gt, 100, 0.05, gen), _jitter(gt, 100, 0.3, gen), _random_boxes(200, 80, 112, gen), gt[:2]])
    q = L.det_box_iou(gt, preds)
    assert torch.equal(q, box_iou(gt, preds))
    for high, low, allow in [(0.7, 0.3, True), (0.5, 0.5, False), (0.6, 0.2, False)]:
        ours = L.det_match(q.clone(), high, low, allow_low_quality_matches=allow)
        theirs = tv_utils.Matcher(high, low, allow_low_quality_matches=allow)(q.clone())
        assert torch.equal(ours, theirs)
        # not vacuous: matches, ignored and background all present
        assert (ours >= 0).sum() > 20 and (ours == -1).sum() > 20
        if high > low:
            assert (ours == -2).sum() > 5


@pytest.mark.parametrize("batch_size,fraction", [(32, 0.5), (256, 0.5), (512, 0.25)])
def test_sampler_draws_as_torchvision(batch_size, fraction):
    gen = torch.Generator().manual_seed(7)
    labels = [torch.randint(-1, 4, (700,), generator=gen), torch.randint(-1, 2, (300,), generator=gen).float()]
    torch.manual_seed(11)
    theirs_pos, theirs_neg = tv_utils.BalancedPositiveNegativeSampler(batch_size, fraction)(labels)
    after_theirs = torch.rand(3)
    torch.manual_seed(11)
    ours_pos, ours_neg = L.det_sample_pos_neg(labels, batch_size, fraction)
    assert torch.equal(torch.rand(3), after_theirs)   # the RNG stream is left where torchvision leaves it
    for a, b, c, d in zip(ours_pos, theirs_pos, ours_neg, theirs_neg):
        assert torch.equal(a, b.bool()) and torch.equal(c, d.bool())
        assert 0 < int(a.sum()) and 0 < int(c.sum())
    # a different seed samples differently (the comparison above can fail)
    torch.manual_seed(12)
    other_pos, other_neg = L.det_sample_pos_neg(labels, batch_size, fraction)
    assert any(not torch.equal(a, b) for a, b in zip(other_pos + other_neg, ours_pos + ours_neg))


@pytest.mark.parametrize("batch_size,fraction", [(32, 0.5), (256, 0.5)])
def test_rpn_losses_equal_torchvision(rpn_setup, rpn_targets, batch_size, fraction):
    targets = rpn_targets
    anchor_gen, head, images, features = rpn_setup
    rpn = _rpn(anchor_gen, head, batch_size, fraction).train()
    torch.manual_seed(21)
    _, tv_losses = rpn(images, features, targets)

    feats = list(features.values())
    objectness, deltas = concat_box_prediction_layers(*head(feats))
    anchors = anchor_gen(images, feats)
    labels, _ = rpn.assign_targets_to_anchors(anchors, targets)
    n_pos = [int((lab == 1).sum()) for lab in labels]
    assert min(n_pos) >= 8 and all(int((lab == 0).sum()) > batch_size for lab in labels)
    if batch_size == 32:
        assert min(n_pos) > 16                       # positives are subsampled too

    det = _context(targets)
    torch.manual_seed(21)
    out = L.det_rpn_losses(det, objectness, deltas, anchors, fg_iou_thresh=0.7, bg_iou_thresh=0.3,
                           batch_size_per_image=batch_size, positive_fraction=fraction)
    for key in ("loss_objectness", "loss_rpn_box_reg"):
        assert float(tv_losses[key].detach()) > 1e-3
        torch.testing.assert_close(det.losses[key], tv_losses[key], rtol=0, atol=1e-6)
    assert out == (det.losses["loss_objectness"], det.losses["loss_rpn_box_reg"])

    # the same seed matters: another seed samples other anchors, so other losses
    torch.manual_seed(22)
    L.det_rpn_losses(det, objectness, deltas, anchors, fg_iou_thresh=0.7, bg_iou_thresh=0.3,
                     batch_size_per_image=batch_size, positive_fraction=fraction)
    assert abs(float(det.losses["loss_objectness"].detach()) - float(tv_losses["loss_objectness"].detach())) > 1e-5

    # gradients equal torchvision's
    head.zero_grad()
    torch.manual_seed(21)
    _, tv_losses = rpn(images, features, targets)
    sum(tv_losses.values()).backward()
    tv_grads = [p.grad.clone() for p in head.parameters()]
    head.zero_grad()
    objectness, deltas = concat_box_prediction_layers(*head(feats))
    torch.manual_seed(21)
    sum(L.det_rpn_losses(det, objectness, deltas, anchors, batch_size_per_image=batch_size,
                         positive_fraction=fraction)).backward()
    for g, p in zip(tv_grads, head.parameters()):
        assert float(g.abs().max()) > 0
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)


def test_rpn_losses_background_image(rpn_setup, rpn_targets):
    anchor_gen, head, images, features = rpn_setup
    tgts = [rpn_targets[0], {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    rpn = _rpn(anchor_gen, head, 64, 0.5).train()
    torch.manual_seed(4)
    _, tv_losses = rpn(images, features, tgts)
    feats = list(features.values())
    objectness, deltas = concat_box_prediction_layers(*head(feats))
    det = _context(tgts)
    torch.manual_seed(4)
    L.det_rpn_losses(det, objectness, deltas, anchor_gen(images, feats), batch_size_per_image=64,
                     positive_fraction=0.5)
    for key in tv_losses:
        torch.testing.assert_close(det.losses[key], tv_losses[key], rtol=0, atol=1e-6)


def _proposals(targets, gen):
    """Per image: 260 proposals around the ground truth (many positives, more than 128) and
    500 anywhere (negatives), shuffled."""
    out = []
    for (h, w), t in zip(IMAGE_SIZES, targets):
        p = torch.cat([_jitter(t["boxes"], 260, 0.12, gen), _random_boxes(500, h, w, gen)])
        out.append(p[torch.randperm(len(p), generator=gen)])
    return out


def _roi_heads(batch_size=512, fraction=0.25):
    torch.manual_seed(0)
    pool = MultiScaleRoIAlign(["0", "1"], 7, 2)
    box_head = TwoMLPHead(8 * 7 * 7, 32)
    predictor = FastRCNNPredictor(32, N_CLASSES)
    for p in predictor.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return tv_roi.RoIHeads(pool, box_head, predictor, 0.5, 0.5, batch_size, fraction, None, 0.05, 0.5, 100)


@pytest.mark.parametrize("batch_size,fraction", [(512, 0.25), (64, 0.5)])
def test_sample_rois_equal_select_training_samples(targets, batch_size, fraction):
    gen = torch.Generator().manual_seed(9)
    proposals = _proposals(targets, gen)
    heads = _roi_heads(batch_size, fraction)
    torch.manual_seed(31)
    tv_props, _, tv_labels, tv_targets = heads.select_training_samples([p.clone() for p in proposals], targets)
    assert all(int((lab > 0).sum()) >= int(batch_size * fraction) for lab in tv_labels)   # positives subsampled

    det = _context(targets)
    flat = torch.cat(proposals)
    bidx = torch.cat([torch.full((len(p),), i, dtype=torch.int64) for i, p in enumerate(proposals)])
    torch.manual_seed(31)
    boxes, batch_index = L.det_sample_rois(det, flat, bidx, fg_iou_thresh=0.5, bg_iou_thresh=0.5,
                                           batch_size_per_image=batch_size, positive_fraction=fraction,
                                           weights=(10.0, 10.0, 5.0, 5.0))
    assert torch.equal(boxes, torch.cat(tv_props))
    assert torch.equal(batch_index, torch.cat([torch.full((len(p),), i) for i, p in enumerate(tv_props)]))
    assert torch.equal(det.roi_labels, torch.cat(tv_labels))
    torch.testing.assert_close(det.roi_regression_targets, torch.cat(tv_targets), rtol=0, atol=1e-6)
    assert float(det.roi_regression_targets.abs().max()) > 0.1

    # fastrcnn_loss on random head outputs
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(len(boxes), N_CLASSES, generator=g) * 2
    regression = torch.randn(len(boxes), 4 * N_CLASSES, generator=g)
    tv_cls, tv_box = tv_roi.fastrcnn_loss(logits, regression, tv_labels, tv_targets)
    cls, box = L.det_fastrcnn_loss(det, logits, regression)
    assert float(tv_cls.detach()) > 0.1 and float(tv_box.detach()) > 1e-3
    torch.testing.assert_close(cls, tv_cls, rtol=0, atol=1e-6)
    torch.testing.assert_close(box, tv_box, rtol=0, atol=1e-6)
    assert det.losses == {"loss_classifier": cls, "loss_box_reg": box}


def test_roi_heads_training_forward_equal(targets):
    """RoIHeads.forward in training (sample, pool, head, loss) against det_sample_rois then the
    same pooler / head / predictor then det_fastrcnn_loss: equal losses and gradients."""
    gen = torch.Generator().manual_seed(13)
    proposals = _proposals(targets, gen)
    features = OrderedDict([("0", torch.randn(2, 8, 24, 32, generator=gen)),
                            ("1", torch.randn(2, 8, 12, 16, generator=gen))])
    heads = _roi_heads().train()
    torch.manual_seed(41)
    _, tv_losses = heads(features, [p.clone() for p in proposals], IMAGE_SIZES, targets)
    sum(tv_losses.values()).backward()
    tv_grads = [p.grad.clone() for p in heads.parameters()]
    heads.zero_grad()

    det = _context(targets)
    flat = torch.cat(proposals)
    bidx = torch.cat([torch.full((len(p),), i, dtype=torch.int64) for i, p in enumerate(proposals)])
    torch.manual_seed(41)
    boxes, batch_index = L.det_sample_rois(det, flat, bidx)
    per_image = [boxes[batch_index == i] for i in range(2)]
    x = heads.box_head(heads.box_roi_pool(features, per_image, IMAGE_SIZES))
    L.det_fastrcnn_loss(det, *heads.box_predictor(x))
    for key in tv_losses:
        assert float(tv_losses[key].detach()) > 1e-3
        torch.testing.assert_close(det.losses[key], tv_losses[key], rtol=0, atol=1e-6)
    sum(det.losses.values()).backward()
    for g, p in zip(tv_grads, heads.parameters()):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)


def test_sample_rois_background_image(targets):
    gen = torch.Generator().manual_seed(17)
    tgts = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}, targets[1]]
    proposals = _proposals(targets, gen)
    heads = _roi_heads(128, 0.25)
    torch.manual_seed(5)
    tv_props, _, tv_labels, tv_targets = heads.select_training_samples([p.clone() for p in proposals], tgts)
    det = _context(tgts)
    flat = torch.cat(proposals)
    bidx = torch.cat([torch.full((len(p),), i, dtype=torch.int64) for i, p in enumerate(proposals)])
    torch.manual_seed(5)
    boxes, _ = L.det_sample_rois(det, flat, bidx, batch_size_per_image=128)
    assert torch.equal(boxes, torch.cat(tv_props))
    assert torch.equal(det.roi_labels, torch.cat(tv_labels))
    torch.testing.assert_close(det.roi_regression_targets, torch.cat(tv_targets), rtol=0, atol=1e-6)


def test_training_chain_through_the_pipeline_equals_torchvision(rpn_setup, rpn_targets):
    """RegionProposalNetwork + RoIHeads in training against the generated modules' runtime:
    DetContext, det_rpn_proposals (which calls det_rpn_losses), det_sample_rois,
    det_detect_postprocess (which calls det_fastrcnn_loss): the same four losses, and the same
    sampled RoIs, from the same seed."""
    rt = load_runtime(("detection_ops", "detection_losses", "detection_pipeline"))
    anchor_gen, head, images, features = rpn_setup
    rpn = _rpn(anchor_gen, head, 64, 0.5).train()
    heads = _roi_heads(32, 0.25).train()
    feats = list(features.values())
    torch.manual_seed(51)
    proposals, tv_losses = rpn(images, features, rpn_targets)
    _, roi_losses = heads(features, proposals, IMAGE_SIZES, rpn_targets)
    tv_losses.update(roi_losses)
    torch.manual_seed(51)
    rpn(images, features, rpn_targets)               # the RPN's draws, then the RoI heads'
    tv_rois = heads.select_training_samples([p.clone() for p in proposals], rpn_targets)[0]

    det = rt.DetContext(True, rpn_targets)
    objectness, deltas = head(feats)
    anchors = anchor_gen(images, feats)[0]
    per_level = [o.shape[1] * o.shape[2] * o.shape[3] for o in objectness]
    image_sizes = torch.tensor([[h, w, h, w] for h, w in IMAGE_SIZES])
    torch.manual_seed(51)
    boxes, bidx = rt.det_rpn_proposals(det, objectness, deltas, list(anchors.split(per_level)), image_sizes,
                                       pre_nms_top_n=[300, 300], post_nms_top_n=[100, 100], nms_thresh=0.7,
                                       fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=64,
                                       positive_fraction=0.5)
    assert torch.equal(boxes, torch.cat(proposals))
    rng = torch.get_rng_state()
    boxes, bidx = rt.det_sample_rois(det, boxes, bidx, fg_iou_thresh=0.5, bg_iou_thresh=0.5,
                                     batch_size_per_image=32, positive_fraction=0.25,
                                     weights=[10.0, 10.0, 5.0, 5.0])
    assert torch.equal(boxes, torch.cat(tv_rois))
    assert torch.bincount(bidx).tolist() == [32, 32] and len(proposals[0]) > 64   # a real draw
    assert int((det.roi_labels > 0).sum()) >= 8
    x = heads.box_head(heads.box_roi_pool(features, [boxes[bidx == i] for i in range(2)], IMAGE_SIZES))
    out = rt.det_detect_postprocess(det, *heads.box_predictor(x), boxes, bidx, image_sizes)
    assert [len(t) for t in out] == [0, 0, 0, 0]
    assert set(det.losses) == set(tv_losses)
    for key in tv_losses:
        assert float(tv_losses[key].detach()) > 1e-3
        torch.testing.assert_close(det.losses[key], tv_losses[key], rtol=0, atol=1e-6)
    # the proposals are sampled from this seed state: another one gives other RoIs
    torch.set_rng_state(rng)
    torch.rand(1)
    other, _ = rt.det_sample_rois(rt.DetContext(True, rpn_targets), torch.cat(proposals), bidx.new_tensor(
        [i for i, p in enumerate(proposals) for _ in range(len(p))]), batch_size_per_image=32)
    assert not torch.equal(other, boxes)
