"""netdsl's detection primitives (netdsl/backends/torch/detection_ops.py) against torchvision
itself: the pure-torch path (DET_USE_TORCHVISION = False) and the torchvision path give
torchvision's results (NMS keep lists identical, RoI pooling within 1e-5, gradients too).
Skipped where torchvision is not installed (run it in a virtualenv with torchvision, see the README)."""
import math

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from torchvision.models.detection._utils import BoxCoder  # noqa: E402
from torchvision.models.detection.anchor_utils import AnchorGenerator  # noqa: E402
from torchvision.models.detection.image_list import ImageList  # noqa: E402
from torchvision.models.detection.rpn import RPNHead  # noqa: E402
from torchvision.ops import boxes as box_ops  # noqa: E402

from netdsl.backends.torch import detection_ops as D  # noqa: E402

TOL = 1e-5


@pytest.fixture(params=["pure", "torchvision"])
def path(request, monkeypatch):
    monkeypatch.setattr(D, "DET_USE_TORCHVISION", request.param == "torchvision")
    assert (D.det_torchvision_ops() is not None) == (request.param == "torchvision")
    return request.param


def rand_boxes(g, n, extent=100.0, max_side=30.0, min_side=0.5):
    xy = torch.rand(n, 2, generator=g) * extent
    wh = torch.rand(n, 2, generator=g) * max_side + min_side
    return torch.cat([xy, xy + wh], 1)


def nms_case(seed):
    """Random boxes, some clustered (strong overlaps), and scores with ties on even seeds."""
    g = torch.Generator().manual_seed(seed)
    n = [30, 200, 800][seed % 3]
    extent = [40.0, 100.0, 200.0][seed % 3]
    parents = rand_boxes(g, n // 4 + 1, extent=extent, max_side=25.0, min_side=3.0)
    boxes = torch.cat([rand_boxes(g, n // 2, extent=extent),
                       parents[torch.randint(0, len(parents), (n - n // 2,), generator=g)]
                       + torch.randn(n - n // 2, 4, generator=g)])
    scores = torch.rand(n, generator=g)
    if seed % 2 == 0:
        scores = (scores * 8).round() / 8
    return boxes, scores


@pytest.mark.parametrize("seed", range(18))
def test_nms(seed, monkeypatch):
    boxes, scores = nms_case(seed)
    thr = [0.3, 0.5, 0.7, 0.1, 0.45, 0.9][seed % 6]
    want = torchvision.ops.nms(boxes, scores, thr)
    assert 0 < want.numel() < boxes.shape[0]                # suppresses some, not all
    monkeypatch.setattr(D, "DET_USE_TORCHVISION", False)
    assert torch.equal(D.det_nms(boxes, scores, thr), want)
    assert torch.equal(D.det__ops_nms(boxes, scores, thr, block=16 if len(boxes) < 500 else 64), want)
    monkeypatch.setattr(D, "DET_USE_TORCHVISION", True)
    assert torch.equal(D.det_nms(boxes, scores, thr), want)


def test_nms_threshold_and_ties_as_torchvision(path):
    boxes = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 3.], [0., 0., 10., 7.]])
    scores = torch.tensor([0.9, 0.8, 0.8])
    for thr in (0.3, 0.30000002, 0.7, 0.6999999, 0.5):
        assert torch.equal(D.det_nms(boxes, scores, thr), torchvision.ops.nms(boxes, scores, thr)), thr
    same = torch.tensor([[0., 0., 10., 10.]] * 4)
    tied = torch.tensor([0.5, 0.7, 0.5, 0.7])
    assert D.det_nms(same, tied, 0.5).tolist() == torchvision.ops.nms(same, tied, 0.5).tolist() == [1]


@pytest.mark.parametrize("n", [150, 1001, 3000])      # coordinate trick; per group above 4000
def test_batched_nms(path, n):
    g = torch.Generator().manual_seed(n)
    boxes = rand_boxes(g, n, extent=n / 8, max_side=25.0)
    scores = torch.rand(n, generator=g)
    groups = torch.randint(0, 5, (n,), generator=g)
    want = torchvision.ops.batched_nms(boxes, scores, groups, 0.5)
    assert n // 10 < want.numel() < n
    assert torch.equal(D.det_batched_nms(boxes, scores, groups, 0.5), want)
    assert torch.equal(D.det_batched_nms(boxes, scores, groups, 0.7),
                       torchvision.ops.batched_nms(boxes, scores, groups, 0.7))


def roi_case(seed, scale, n_boxes=40, c=4, hw=(13, 17), batch=2):
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    x = torch.randn(batch, c, h, w, generator=g)
    size = torch.tensor([w, h], dtype=torch.float32)
    xy = torch.rand(n_boxes, 2, generator=g) * (size + 6) - 4
    wh = torch.rand(n_boxes, 2, generator=g) * size * 0.7
    boxes = torch.cat([xy, xy + wh], 1)
    boxes[0] = torch.tensor([-8.0, -8.0, -3.0, -2.0])
    boxes[1] = torch.tensor([4.0, 3.0, 4.2, 3.1])
    boxes[2] = torch.tensor([-1.0, -2.0, w * 1.5, h * 1.5])
    boxes[3] = torch.tensor([2.5, 3.5, 6.5, 7.5])                 # halves (roi_pool's round)
    boxes[4] = torch.tensor([6.0, 5.0, 3.0, 2.0])                 # reversed corners
    bidx = torch.randint(0, batch, (n_boxes,), generator=g)
    return x, boxes / scale, bidx


def rois_of(boxes, bidx):
    return torch.cat([bidx[:, None].float(), boxes], 1)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sr", [2, 0, -1, 3])
@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_roi_align(path, aligned, sr, scale):
    x, boxes, bidx = roi_case(sr + 7, scale)
    want = torchvision.ops.roi_align(x, rois_of(boxes, bidx), (5, 4), scale, sr, aligned)
    got = D.det_roi_align(x, boxes, bidx, [5, 4], scale, sr, aligned)
    assert got.shape == want.shape == (40, 4, 5, 4)
    assert (want.abs().sum((1, 2, 3)) > 0).sum() >= 24 and (want == 0).any()
    if path == "torchvision":
        assert torch.equal(got, want)
    assert (got - want).abs().max() <= TOL


def test_roi_align_backward_as_torchvision(monkeypatch):
    monkeypatch.setattr(D, "DET_USE_TORCHVISION", False)
    x, boxes, bidx = roi_case(3, 0.5)
    grad_out = torch.randn(40, 4, 7, 7, generator=torch.Generator().manual_seed(9))
    for sr, aligned in [(2, False), (-1, True)]:
        a = x.clone().requires_grad_()
        b = x.clone().requires_grad_()
        torchvision.ops.roi_align(a, rois_of(boxes, bidx), 7, 0.5, sr, aligned).backward(grad_out)
        D.det_roi_align(b, boxes, bidx, 7, 0.5, sr, aligned).backward(grad_out)
        assert a.grad.abs().sum() > 0
        assert (a.grad - b.grad).abs().max() <= TOL


@pytest.mark.parametrize("scale", [1.0, 0.5, 1 / 16])
def test_roi_pool(path, scale):
    x, boxes, bidx = roi_case(int(4 / scale), scale)
    x = x.requires_grad_()
    want = torchvision.ops.roi_pool(x, rois_of(boxes, bidx), (3, 5), scale)
    got = D.det_roi_pool(x, boxes, bidx, (3, 5), scale)
    assert torch.equal(got, want)
    assert (want.abs().sum((1, 2, 3)) > 0).sum() >= 24 and (want == 0).any()
    grad_out = torch.randn_like(want)
    gw, = torch.autograd.grad(want, x, grad_out)
    gg, = torch.autograd.grad(got, x, grad_out)
    assert (gw - gg).abs().max() <= TOL and gw.abs().sum() > 0


def test_multiscale_roi_align(path):
    g = torch.Generator().manual_seed(0)
    # an FPN's four levels for a padded batch of 2 images resized to 250x180 and 256x190
    feats = [torch.randn(2, 3, 64 // 2 ** i, 48 // 2 ** i, generator=g) for i in range(4)]
    names = ["0", "1", "2", "3"]
    image_sizes = torch.tensor([[250, 180, 500, 360], [256, 190, 256, 190]])
    per_image = []
    for _ in range(2):                             # sides log-uniform in [2, 500]: every level
        xy = torch.rand(60, 2, generator=g) * 180
        wh = torch.exp(torch.rand(60, 2, generator=g) * math.log(250.0)) * 2
        fixed = torch.tensor([[0., 0., 10., 10.], [5., 5., 125., 125.], [0., 0., 240., 240.],
                              [0., 0., 470., 470.]])               # one box per level at least
        per_image.append(torch.cat([torch.cat([xy, xy + wh], 1), fixed]))
    boxes = torch.cat(per_image)
    bidx = torch.repeat_interleave(torch.arange(2), torch.tensor([64, 64]))
    pooler = torchvision.ops.MultiScaleRoIAlign(names, 7, 2)
    want = pooler(dict(zip(names, feats)), per_image, [(250, 180), (256, 190)])
    got = D.det_multiscale_roi_align(feats, boxes, bidx, image_sizes, 7, 2, 224, 4)
    assert (got - want).abs().max() <= TOL
    if path == "torchvision":
        assert torch.equal(got, want)
    levels = pooler.map_levels(per_image)
    assert len(set(levels.tolist())) == 4                      # every level pools some boxes
    one = torchvision.ops.MultiScaleRoIAlign(names[:1], (3, 2), -1)         # a single level
    want = one({"0": feats[0]}, [b[:10] for b in per_image], [(250, 180), (256, 190)])
    got = D.det_multiscale_roi_align(feats[:1], torch.cat([boxes[:10], boxes[64:74]]),
                                     torch.cat([bidx[:10], bidx[64:74]]), image_sizes, (3, 2), -1)
    assert (got - want).abs().max() <= TOL


def test_anchors():
    sizes = ((32,), (64,), (128,), (256,), (512,))
    ratios = ((0.5, 1.0, 2.0),) * 5
    gen = AnchorGenerator(sizes, ratios)
    image = torch.zeros(2, 3, 224, 320)
    feats = [torch.zeros(2, 8, 56 // 2 ** i, 80 // 2 ** i) for i in range(4)] + [torch.zeros(2, 8, 4, 5)]
    want = gen(ImageList(image, [(220, 300), (224, 320)]), feats)
    assert len(want) == 2 and torch.equal(want[0], want[1])
    got = torch.cat([D.det_anchors(f, image, s, r) for f, s, r in zip(feats, sizes, ratios)])
    assert torch.equal(got, want[0])
    odd = AnchorGenerator(((16, 40),), ((0.25, 1.3),))(ImageList(image, [(224, 320)]), feats[2:3])[0]
    assert torch.equal(D.det_anchors(feats[2], image, [16, 40], [0.25, 1.3]), odd)


def test_box_coding():
    g = torch.Generator().manual_seed(0)
    ref = rand_boxes(g, 50)
    boxes = rand_boxes(g, 50)
    for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        coder = BoxCoder(weights)
        assert torch.equal(D.det_box_encode(boxes, ref, weights), coder.encode_single(boxes, ref))
        deltas = torch.randn(50, 4 * 3, generator=g) * 3          # some dw, dh above the clamp
        want = coder.decode_single(deltas, ref)
        assert torch.equal(D.det_box_decode(deltas, ref, weights), want)
        assert torch.equal(D.det_box_decode(deltas, ref, weights, clamp=1.0),
                           BoxCoder(weights, bbox_xform_clip=1.0).decode_single(deltas, ref))
        assert not torch.equal(D.det_box_decode(deltas, ref, weights, clamp=1.0), want)


def test_clip_and_remove_small():
    g = torch.Generator().manual_seed(1)
    boxes = rand_boxes(g, 40, extent=300.0, max_side=150.0) - 50
    bidx = torch.tensor([0] * 15 + [1] * 25)
    sizes = torch.tensor([[200, 150, 400, 300], [120, 260, 120, 260]])
    got = D.det_clip_boxes(boxes, bidx, sizes)
    want = torch.cat([box_ops.clip_boxes_to_image(boxes[:15], (200, 150)),
                      box_ops.clip_boxes_to_image(boxes[15:], (120, 260))])
    assert torch.equal(got, want) and not torch.equal(got, boxes)
    for m in (1e-3, 5.0, 40.0):
        assert torch.equal(D.det_remove_small_boxes(got, m), box_ops.remove_small_boxes(got, m))
    assert 0 < D.det_remove_small_boxes(got, 40.0).numel() < 40


def test_rpn_head_same_init_and_outputs():
    torch.manual_seed(5)
    theirs = RPNHead(32, 3, conv_depth=2)
    torch.manual_seed(5)
    ours = D.DetRPNHead(32, 3, conv_depth=2)
    a, b = theirs.state_dict(), ours.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    feats = [torch.randn(1, 32, 12, 10), torch.randn(1, 32, 6, 5)]
    logits, deltas = theirs(feats)
    out = ours(*feats)
    assert len(out) == 4
    assert all(torch.equal(x, y) for x, y in zip(out, logits + deltas))
