"""The pure-torch detection primitives (netdsl/backends/torch/detection_ops.py) against
straightforward loop transcriptions of torchvision's CPU kernels and hand-computed values.
Runs without torchvision; tests/test_detection_ops_torchvision.py compares with torchvision
itself where it is installed."""
import ast
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from netdsl.backends.torch import detection_ops as ops_module  # noqa: E402

RUNTIME_DIR = Path(ops_module.__file__).parent
SOURCE = RUNTIME_DIR / "detection_ops.py"


@pytest.fixture
def D(monkeypatch):
    """The module with the torchvision path switched off."""
    monkeypatch.setattr(ops_module, "DET_USE_TORCHVISION", False)
    return ops_module


def rand_boxes(g, n, extent=100.0, max_side=30.0, min_side=0.5):
    xy = torch.rand(n, 2, generator=g) * extent
    wh = torch.rand(n, 2, generator=g) * max_side + min_side
    return torch.cat([xy, xy + wh], 1)


def clustered_boxes(g, n, extent=60.0):
    """Boxes around n // 3 + 1 centres, jittered by about a pixel: many overlap strongly."""
    parents = rand_boxes(g, n // 3 + 1, extent=extent, max_side=20.0, min_side=4.0)
    pick = torch.randint(0, len(parents), (n,), generator=g)
    return parents[pick] + torch.randn(n, 4, generator=g)


# ---------------------------------------------------------------- the file itself

def test_runtime_file_can_be_pasted_into_a_generated_source():
    tree = ast.parse(SOURCE.read_text(encoding="utf-8"))
    names = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            assert [(a.name, a.asname) for a in node.names] in (
                [("math", None)], [("torch", None)], [("torch.nn.functional", "F")]), ast.dump(node)
        elif isinstance(node, ast.ImportFrom):
            assert node.module == "torch" and [(a.name, a.asname) for a in node.names] == [("nn", None)]
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets]
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            assert node is tree.body[0]                      # the docstring only
        else:
            raise AssertionError(f"unexpected top-level statement: {ast.dump(node)[:80]}")
    assert names and all(n.startswith(("det_", "Det", "DET_")) for n in names), names
    # torchvision is imported lazily, inside the guarded helper only
    lookup = next(n for n in tree.body if getattr(n, "name", "") == "det_torchvision_ops")
    inside = {id(n) for n in ast.walk(lookup)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            if any(m.startswith("torchvision") for m in mods):
                assert id(node) in inside, ast.dump(node)
    # and the names clash with nothing else pasted into the same source
    for other in ("detection_losses.py", "detection_pipeline.py"):
        path = RUNTIME_DIR / other
        if path.exists():
            theirs = {n.name for n in ast.parse(path.read_text()).body
                      if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            assert not theirs & set(names), (other, theirs & set(names))
    namespace = {}
    exec(compile(SOURCE.read_text(), "<pasted>", "exec"), namespace)
    namespace["DET_USE_TORCHVISION"] = False
    keep = namespace["det_nms"](torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]]),
                                torch.tensor([0.5, 0.9]), 0.5)
    assert keep.tolist() == [1]


def test_torchvision_switch(D):
    assert D.det_torchvision_ops() is None          # DET_USE_TORCHVISION = False


# ---------------------------------------------------------------- NMS

def ref_nms(boxes, scores, thr):
    """torchvision's CPU nms kernel, loop for loop (float32 IoU, double comparison)."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))      # stable
    b = boxes.tolist()
    f = lambda v: torch.tensor(v, dtype=boxes.dtype)                          # noqa: E731
    areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    suppressed, keep = set(), []
    for ii, i in enumerate(order):
        if i in suppressed:
            continue
        keep.append(i)
        rest = [j for j in order[ii + 1:] if j not in suppressed]
        if not rest:
            continue
        r = torch.tensor(rest)
        xx1 = torch.maximum(f(b[i][0]), boxes[r, 0])
        yy1 = torch.maximum(f(b[i][1]), boxes[r, 1])
        xx2 = torch.minimum(f(b[i][2]), boxes[r, 2])
        yy2 = torch.minimum(f(b[i][3]), boxes[r, 3])
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        ovr = inter / (areas[i] + areas[r] - inter)
        suppressed |= {j for j, o in zip(rest, ovr.tolist()) if o > thr}
    return keep


@pytest.mark.parametrize("seed", range(12))
def test_nms_matches_the_kernel(D, seed):
    g = torch.Generator().manual_seed(seed)
    n = [12, 40, 150][seed % 3]
    boxes = clustered_boxes(g, n, extent=[15.0, 40.0, 60.0][seed % 3])
    scores = torch.rand(n, generator=g)
    if seed % 2:
        scores = (scores * 4).round() / 4                     # many equal scores
    thr = [0.3, 0.5, 0.7, 0.1][seed % 4]
    expected = ref_nms(boxes, scores, thr)
    assert 0 < len(expected) < n                              # suppresses some, not all
    assert D.det_nms(boxes, scores, thr).tolist() == expected
    # small blocks: the fixed-point iteration and the cross-block suppression both matter
    assert D.det__ops_nms(boxes, scores, thr, block=8).tolist() == expected


def test_nms_ties_keep_index_order(D):
    boxes = torch.tensor([[0., 0., 10., 10.]] * 3 + [[50., 50., 60., 60.]] * 2)
    scores = torch.tensor([0.5, 0.5, 0.5, 0.7, 0.7])
    assert D.det_nms(boxes, scores, 0.5).tolist() == [3, 0]


def test_nms_compares_the_float_iou_with_the_double_threshold(D):
    # IoU = 30 / 100 = float32(0.3) = 0.30000001192..., above the double 0.3: suppressed by
    # the kernel (a float32 comparison with float32(0.3) would keep it)
    boxes = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 3.]])
    scores = torch.tensor([0.9, 0.8])
    assert D.det_nms(boxes, scores, 0.3).tolist() == [0]
    assert D.det_nms(boxes, scores, 0.30000002).tolist() == [0, 1]
    # IoU = float32(0.7) = 0.69999998..., below the double 0.7: kept
    boxes[1, 3] = 7.0
    assert D.det_nms(boxes, scores, 0.7).tolist() == [0, 1]
    assert D.det_nms(boxes, scores, 0.6999999).tolist() == [0]


def test_nms_empty_and_float64(D):
    assert D.det_nms(torch.zeros(0, 4), torch.zeros(0), 0.5).dtype == torch.int64
    assert D.det_nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0
    g = torch.Generator().manual_seed(3)
    boxes = rand_boxes(g, 60, extent=40.0).double()
    scores = torch.rand(60, generator=g, dtype=torch.float64)
    expected = ref_nms(boxes, scores, 0.5)
    assert 0 < len(expected) < 60
    assert D.det_nms(boxes, scores, 0.5).tolist() == expected


def test_nms_5000_boxes(D):
    g = torch.Generator().manual_seed(0)
    boxes = rand_boxes(g, 5000, extent=400.0, max_side=60.0)
    scores = torch.rand(5000, generator=g)
    keep = D.det_nms(boxes, scores, 0.5)
    assert 1000 < keep.numel() < 5000
    assert torch.all(scores[keep][:-1] >= scores[keep][1:])
    kept = boxes[keep[:300]]                                    # no kept pair overlaps too much
    lt = torch.maximum(kept[:, None, :2], kept[None, :, :2])
    rb = torch.minimum(kept[:, None, 2:], kept[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(2)
    area = (kept[:, 2:] - kept[:, :2]).prod(1)
    iou = inter / (area[:, None] + area[None, :] - inter)
    assert iou.fill_diagonal_(0).max() <= 0.5


@pytest.mark.parametrize("n", [60, 1200])           # coordinate trick / one NMS per group
def test_batched_nms(D, n):
    g = torch.Generator().manual_seed(n)
    boxes = rand_boxes(g, n, extent=20.0 + n / 10)
    scores = torch.rand(n, generator=g)
    groups = torch.randint(0, 3, (n,), generator=g)
    keep = D.det_batched_nms(boxes, scores, groups, 0.5)
    expected = []
    for c in range(3):
        idx = torch.where(groups == c)[0]
        expected += idx[torch.tensor(ref_nms(boxes[idx], scores[idx], 0.5), dtype=torch.long)].tolist()
    expected.sort(key=lambda i: -float(scores[i]))
    assert keep.tolist() == expected
    assert len(expected) < n                                 # some suppressed
    if n < 100:                                              # and the groups matter
        assert len(ref_nms(boxes, scores, 0.5)) < len(expected)
    assert D.det_batched_nms(boxes[:0], scores[:0], groups[:0]).numel() == 0


# ---------------------------------------------------------------- RoI align / pool

def ref_roi_align(x, boxes, bidx, oh, ow, scale, sr, aligned):
    """torchvision's CPU roi_align kernel, loop for loop, in Python floats (double)."""
    n, c, h, w = x.shape
    out = torch.zeros(len(boxes), c, oh, ow, dtype=torch.float64)
    xs = x.double()
    for k, (b, bi) in enumerate(zip(boxes.tolist(), bidx.tolist())):
        off = 0.5 if aligned else 0.0
        sw, sh, ew, eh = (v * scale - off for v in b)
        rw, rh = ew - sw, eh - sh
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / oh, rw / ow
        gh = sr if sr > 0 else math.ceil(rh / oh)
        gw = sr if sr > 0 else math.ceil(rw / ow)
        count = max(gh * gw, 1)
        for ph in range(oh):
            for pw in range(ow):
                acc = torch.zeros(c, dtype=torch.float64)
                for iy in range(gh):
                    y = sh + ph * bh + (iy + .5) * bh / gh
                    for ix in range(gw):
                        xx = sw + pw * bw + (ix + .5) * bw / gw
                        yy = y
                        if yy < -1.0 or yy > h or xx < -1.0 or xx > w:
                            continue
                        yy, xx = max(yy, 0.0), max(xx, 0.0)
                        yl, xl = int(yy), int(xx)
                        if yl >= h - 1:
                            yh = yl = h - 1
                            yy = float(yl)
                        else:
                            yh = yl + 1
                        if xl >= w - 1:
                            xh = xl = w - 1
                            xx = float(xl)
                        else:
                            xh = xl + 1
                        ly, lx = yy - yl, xx - xl
                        hy, hx = 1 - ly, 1 - lx
                        acc += (hy * hx * xs[bi, :, yl, xl] + hy * lx * xs[bi, :, yl, xh]
                                + ly * hx * xs[bi, :, yh, xl] + ly * lx * xs[bi, :, yh, xh])
                out[k, :, ph, pw] = acc / count
    return out


def ref_roi_pool(x, boxes, bidx, oh, ow, scale):
    """torchvision's CPU roi_pool kernel, loop for loop (float32 bin arithmetic)."""
    n, c, h, w = x.shape
    out = torch.zeros(len(boxes), c, oh, ow, dtype=x.dtype)
    f32 = lambda v: torch.tensor(v, dtype=torch.float32)                    # noqa: E731
    rnd = lambda v: int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)   # noqa: E731 (C round)
    for k, (b, bi) in enumerate(zip(boxes.tolist(), bidx.tolist())):
        sw, sh, ew, eh = (rnd(float(f32(v) * f32(scale))) for v in b)
        rw, rh = max(ew - sw + 1, 1), max(eh - sh + 1, 1)
        bh, bw = f32(rh) / oh, f32(rw) / ow
        for ph in range(oh):
            for pw in range(ow):
                h0 = min(max(int(torch.floor(f32(ph) * bh)) + sh, 0), h)
                h1 = min(max(int(torch.ceil(f32(ph + 1) * bh)) + sh, 0), h)
                w0 = min(max(int(torch.floor(f32(pw) * bw)) + sw, 0), w)
                w1 = min(max(int(torch.ceil(f32(pw + 1) * bw)) + sw, 0), w)
                if h1 > h0 and w1 > w0:
                    out[k, :, ph, pw] = x[bi, :, h0:h1, w0:w1].amax((1, 2))
    return out


def roi_case(seed, scale=1.0, n_boxes=9, c=3, hw=(11, 14)):
    """Features [2, c, h, w] and boxes (image coordinates: map coordinates / scale), partly
    or wholly outside the map, one tiny, one covering more than the whole map."""
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    x = torch.randn(2, c, h, w, generator=g)
    size = torch.tensor([w, h], dtype=torch.float32)
    xy = torch.rand(n_boxes, 2, generator=g) * (size * 0.8 + 2) - 2
    wh = torch.rand(n_boxes, 2, generator=g) * size / 2
    boxes = torch.cat([xy, xy + wh], 1)
    boxes[0] = torch.tensor([-8.0, -8.0, -3.0, -2.0])          # wholly outside
    boxes[1] = torch.tensor([4.0, 3.0, 4.2, 3.1])               # tiny
    boxes[2] = torch.tensor([-1.0, -2.0, w * 1.5, h * 1.5])     # beyond every edge
    bidx = torch.randint(0, 2, (n_boxes,), generator=g)
    return x, boxes / scale, bidx


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sr,scale", [(2, 0.5), (-1, 0.5), (0, 1.0), (3, 0.25)])
def test_roi_align_matches_the_kernel(D, aligned, sr, scale):
    x, boxes, bidx = roi_case(sr + 10 * aligned, scale)
    got = D.det_roi_align(x.double(), boxes.double(), bidx, (3, 4), scale, sr, aligned)
    want = ref_roi_align(x, boxes.double(), bidx, 3, 4, scale, sr, aligned)
    assert got.shape == (9, 3, 3, 4)
    assert torch.allclose(got, want, atol=1e-12)
    assert (want[0] == 0).all() and (want.abs().sum((1, 2, 3)) > 0).sum() >= 6   # not vacuous
    got32 = D.det_roi_align(x, boxes, bidx, (3, 4), scale, sr, aligned)
    assert got32.dtype == torch.float32 and torch.allclose(got32.double(), want, atol=1e-5)


def test_roi_align_chunks(D, monkeypatch):
    x, boxes, bidx = roi_case(5, 0.5, n_boxes=12)
    whole = D.det_roi_align(x, boxes, bidx, 5, 0.5, -1, False)
    monkeypatch.setattr(D, "DET_GATHER_LIMIT", 60)             # one or two boxes per chunk
    assert torch.equal(D.det_roi_align(x, boxes, bidx, 5, 0.5, -1, False), whole)


def test_roi_align_gradients(D):
    x, boxes, bidx = roi_case(7, n_boxes=5, c=2, hw=(6, 7))
    x = x.double().requires_grad_()
    boxes = boxes.double()

    def fn(features):
        return D.det_roi_align(features, boxes, bidx, (2, 3), 1.0, 2, False)
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-8, fast_mode=True)
    fn(x).sum().backward()
    assert x.grad.abs().sum() > 0 and (x.grad == 0).any()      # reaches some pixels, not all
    boxes.requires_grad_()
    assert fn(x).grad_fn is not None
    assert torch.autograd.grad(fn(x).sum(), boxes, allow_unused=True)[0] is None  # as torchvision


def test_roi_align_empty(D):
    x = torch.randn(1, 4, 5, 5)
    out = D.det_roi_align(x, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 7)
    assert out.shape == (0, 4, 7, 7)


@pytest.mark.parametrize("scale", [1.0, 0.5, 1 / 16])
def test_roi_pool_matches_the_kernel(D, scale):
    x, boxes, bidx = roi_case(int(1 / scale), scale, n_boxes=10)
    boxes[3] = torch.tensor([2.5, 3.5, 6.5, 7.5]) / scale       # halves: C round, not to-even
    want = ref_roi_pool(x, boxes, bidx, 3, 4, scale)
    got = D.det_roi_pool(x, boxes, bidx, (3, 4), scale)
    assert torch.equal(got, want)
    assert (want[0] == 0).all() and (want != 0).any()
    x = x.requires_grad_()
    D.det_roi_pool(x, boxes, bidx, (3, 4), scale).sum().backward()
    grad = x.grad.clone()
    assert grad.sum() == (want != 0).sum()                    # one pixel per non-empty bin


def test_c_round(D):
    v = torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49999997, -0.49999997, 3.2, -3.7])
    assert D.det__ops_round(v).tolist() == [-3, -2, -1, 1, 2, 3, 0, 0, 3, -4]


def test_multiscale_roi_align(D):
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, 3, 64 // 2 ** i, 48 // 2 ** i, generator=g) for i in range(4)]
    image_sizes = torch.tensor([[250, 180, 500, 360], [256, 190, 256, 190]])
    boxes = torch.tensor([[0., 0., 20., 20.],            # sqrt(area) 20: level 2 -> index 0
                          [10., 10., 130., 130.],        # 120: floor(4 + log2(120/224)) = 3
                          [0., 0., 224., 224.],          # 224: level 4
                          [0., 0., 190., 256.],          # 220: level 3 (eps decides nothing)
                          [5., 5., 5.5, 5.5]])           # tiny: clamped to level 2
    bidx = torch.tensor([0, 1, 0, 1, 1])
    out = D.det_multiscale_roi_align(feats, boxes, bidx, image_sizes, 3, 2)
    levels = [0, 1, 2, 1, 0]
    for k, lvl in enumerate(levels):
        one = D.det_roi_align(feats[lvl], boxes[k:k + 1], bidx[k:k + 1], 3, 0.25 / 2 ** lvl, 2)
        assert torch.equal(out[k:k + 1], one), k
    assert (out.abs().sum((1, 2, 3)) > 0).all()
    single = D.det_multiscale_roi_align(feats[:1], boxes, bidx, image_sizes, 3, 2)
    assert torch.equal(single, D.det_roi_align(feats[0], boxes, bidx, 3, 0.25, 2))
    with pytest.raises(ValueError):
        D.det_multiscale_roi_align(feats, boxes[:0], bidx[:0], image_sizes[:0], 3, 2)


# ---------------------------------------------------------------- anchors, boxes, head

def test_anchors(D):
    feature = torch.zeros(1, 8, 2, 3)
    image = torch.zeros(1, 3, 64, 100)                          # strides 32 (h), 33 (w)
    a = D.det_anchors(feature, image, sizes=[32], aspect_ratios=[0.5, 1.0, 2.0])
    assert a.shape == (2 * 3 * 3, 4) and a.dtype == torch.float32
    base = [[-23., -11., 23., 11.], [-16., -16., 16., 16.], [-11., -23., 11., 23.]]
    assert a[:3].tolist() == base
    assert a[3:6].tolist() == [[x + 33, y, x2 + 33, y2] for x, y, x2, y2 in base]   # then x
    assert a[9:12].tolist() == [[x, y + 32, x2, y2 + 32] for x, y, x2, y2 in base]  # then y
    two = D.det_anchors(feature.double(), image, sizes=[16, 32], aspect_ratios=[1.0])
    assert two.dtype == torch.float64 and two[:2].tolist() == [[-8, -8, 8, 8], [-16, -16, 16, 16]]


def test_box_coding(D):
    g = torch.Generator().manual_seed(1)
    ref = rand_boxes(g, 20)
    boxes = rand_boxes(g, 20)
    w = [10.0, 10.0, 5.0, 5.0]
    deltas = D.det_box_encode(boxes, ref, w)
    assert deltas.shape == (20, 4)
    assert torch.allclose(D.det_box_decode(deltas, ref, w), boxes, atol=1e-3)
    # k classes: [R, 4k]; dw / dh clamped before exp
    big = torch.cat([deltas, torch.full((20, 4), 50.0)], 1)
    out = D.det_box_decode(big, ref, w, clamp=math.log(1000.0 / 16))
    assert out.shape == (20, 8) and torch.allclose(out[:, :4], boxes, atol=1e-3)
    width = ref[:, 2] - ref[:, 0]
    assert torch.allclose(out[:, 6] - out[:, 4], width * 1000 / 16, rtol=1e-5)
    assert D.det_box_decode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)


def test_clip_and_small_boxes(D):
    boxes = torch.tensor([[-5., -5., 50., 50.], [10., 20., 300., 400.], [1., 1., 1.0005, 3.]])
    sizes = torch.tensor([[40, 30, 80, 60], [100, 200, 100, 200]])
    clipped = D.det_clip_boxes(boxes, torch.tensor([0, 1, 1]), sizes)
    assert torch.equal(clipped, torch.tensor([[0., 0., 30., 40.], [10., 20., 200., 100.],
                                              [1., 1., 1.0005, 3.]]))
    assert D.det_remove_small_boxes(clipped, 1e-3).tolist() == [0, 1]
    assert D.det_remove_small_boxes(clipped, 31.0).tolist() == [1]


def test_topk_take(D):
    x = torch.tensor([[3., 1., 2.], [0., 5., 4.]])
    v, i = D.det_topk(x, k=5, dim=1)
    assert v.tolist() == [[3., 2., 1.], [5., 4., 0.]] and i.tolist() == [[0, 2, 1], [1, 2, 0]]
    v, i = D.det_topk(x, k=1, dim=0, largest=False)
    assert v.tolist() == [[0., 1., 2.]]
    assert D.det_take(x, torch.tensor([1, 1, 0])).tolist() == [[0., 5., 4.]] * 2 + [[3., 1., 2.]]


def test_rpn_head(D):
    torch.manual_seed(0)
    head = D.DetRPNHead(16, 3, conv_depth=2)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == {"conv.0.0.weight": (16, 16, 3, 3), "conv.0.0.bias": (16,),
                      "conv.1.0.weight": (16, 16, 3, 3), "conv.1.0.bias": (16,),
                      "cls_logits.weight": (3, 16, 1, 1), "cls_logits.bias": (3,),
                      "bbox_pred.weight": (12, 16, 1, 1), "bbox_pred.bias": (12,)}
    for k, v in head.state_dict().items():
        if k.endswith("bias"):
            assert (v == 0).all()
        else:
            assert 0.007 < float(v.std()) < 0.013
    p = [torch.randn(2, 16, 8, 10), torch.randn(2, 16, 4, 5)]
    out = head(*p)
    assert [tuple(o.shape) for o in out] == [(2, 3, 8, 10), (2, 3, 4, 5), (2, 12, 8, 10), (2, 12, 4, 5)]
    assert all(torch.equal(a, b) for a, b in zip(out, head(p)))
    t = torch.relu(torch.nn.functional.conv2d(p[1], head.conv[0][0].weight, head.conv[0][0].bias, padding=1))
    t = torch.relu(torch.nn.functional.conv2d(t, head.conv[1][0].weight, head.conv[1][0].bias, padding=1))
    assert torch.allclose(out[3], torch.nn.functional.conv2d(t, head.bbox_pred.weight, head.bbox_pred.bias),
                          atol=1e-6)
    assert out[3].abs().max() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(D):
    """On CUDA, dividing by a Python number multiplies by its reciprocal: the bins must still
    be those of the CPU kernel (det__ops_div)."""
    x, boxes, bidx = roi_case(11, 1 / 16, n_boxes=60, c=8, hw=(23, 31))
    args = [(7, 7), 1 / 16]
    cpu = D.det_roi_pool(x, boxes, bidx, *args)
    assert torch.equal(D.det_roi_pool(x.cuda(), boxes.cuda(), bidx.cuda(), *args).cpu(), cpu)
    for sr in (2, -1):
        cpu = D.det_roi_align(x, boxes, bidx, *args, sr)
        gpu = D.det_roi_align(x.cuda(), boxes.cuda(), bidx.cuda(), *args, sr).cpu()
        assert (gpu - cpu).abs().max() <= 1e-5
    g = torch.Generator().manual_seed(2)
    b, s = clustered_boxes(g, 500), torch.rand(500, generator=g)
    assert torch.equal(D.det_nms(b.cuda(), s.cuda(), 0.5).cpu(), D.det_nms(b, s, 0.5))
