"""Faster R-CNN training code (netdsl/backends/torch/detection_losses.py) without torchvision:
IoU, matcher and sampler semantics on hand-made cases, the losses against their formulas,
modes (eval / no targets), errors, and the rules for a file pasted into generated sources.
Exact agreement with torchvision: tests/test_detection_losses_torchvision.py."""
import ast
import builtins
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

RUNTIME_DIR = Path(__file__).resolve().parents[1] / "netdsl" / "backends" / "torch"
SOURCE = RUNTIME_DIR / "detection_losses.py"


def load_runtime(names=("detection_ops", "detection_losses")):
    """The runtime files exec'd into one namespace, as a generated source holds them."""
    ns = {"__name__": "netdsl_detection_runtime"}
    for name in names:
        path = RUNTIME_DIR / f"{name}.py"
        text = re.sub(r"^from __future__ import .*\n", "", path.read_text(encoding="utf-8"), flags=re.M)
        exec(compile(text, str(path), "exec"), ns)
    return SimpleNamespace(**ns)


L = load_runtime()


def _context(targets, training=True):
    return SimpleNamespace(training=training, targets=targets, losses={})


def _grid_anchors(h, w, stride, shapes):
    """Anchors of the given (width, height) centred on a stride grid, location-major."""
    ys, xs = torch.meshgrid(torch.arange(0, h, stride, dtype=torch.float32) + stride / 2,
                            torch.arange(0, w, stride, dtype=torch.float32) + stride / 2, indexing="ij")
    c = torch.stack([xs.flatten(), ys.flatten()], dim=1)
    out = [torch.cat([c - torch.tensor(s) / 2, c + torch.tensor(s) / 2], dim=1) for s in shapes]
    return torch.stack(out, dim=1).reshape(-1, 4)


TARGETS = [
    {"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0], [30.0, 10.0, 62.0, 34.0], [4.0, 36.0, 28.0, 60.0]]),
     "labels": torch.tensor([1, 3, 2])},
    {"boxes": torch.tensor([[16.0, 16.0, 48.0, 56.0], [40.0, 4.0, 60.0, 24.0]]),
     "labels": torch.tensor([2, 2])},
]


def test_box_iou_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [2.0, 0.0, 4.0, 2.0], [5.0, 5.0, 6.0, 6.0]])
    expected = torch.tensor([[1 / 7, 1.0, 0.0, 0.0], [0.0, 0.25, 0.0, 0.0]])
    torch.testing.assert_close(L.det_box_iou(a, b), expected)
    torch.testing.assert_close(L.det_box_iou(a.long() * 2, b.long() * 2), expected)     # integer boxes
    assert L.det_box_iou(a.half(), b.half()).dtype == torch.float32       # upcast as torchvision
    assert L.det_box_iou(a, b[:0]).shape == (2, 0)


def test_match_thresholds_and_low_quality_matches():
    q = torch.tensor([[0.9, 0.5, 0.1, 0.1, 0.2],
                      [0.1, 0.6, 0.2, 0.6, 0.35]])
    assert L.det_match(q.clone(), 0.7, 0.3).tolist() == [0, -2, -1, -2, -2]
    # each ground truth also keeps its best predictions (ties included), whatever their quality
    assert L.det_match(q.clone(), 0.7, 0.3, allow_low_quality_matches=True).tolist() == [0, 1, -1, 1, -2]
    assert L.det_match(q.clone(), 0.5, 0.5).tolist() == [0, 1, -1, 1, -1]     # >= high is a match
    with pytest.raises(ValueError, match="No ground-truth boxes"):
        L.det_match(torch.zeros(0, 5), 0.7, 0.3)
    with pytest.raises(ValueError, match="No proposal boxes"):
        L.det_match(torch.zeros(2, 0), 0.7, 0.3)
    with pytest.raises(ValueError, match="low_threshold"):
        L.det_match(q, 0.3, 0.7)


def test_sampler_counts_and_randomness():
    gen = torch.Generator().manual_seed(0)
    many = torch.randint(-1, 3, (600,), generator=gen)              # ~200 of each kind
    few_pos = torch.zeros(400, dtype=torch.int64)
    few_pos[[3, 50, 90]] = 1
    few_pos[:10][few_pos[:10] == 0] = -1
    torch.manual_seed(1)
    pos, neg = L.det_sample_pos_neg([many, few_pos.float()], 128, 0.25)
    # image 0: 32 positives (of ~200), 96 negatives; image 1: its 3 positives, 125 negatives
    assert [int(p.sum()) for p in pos] == [32, 3] and [int(n.sum()) for n in neg] == [96, 125]
    for p, n, lab in zip(pos, neg, [many, few_pos.float()]):
        assert p.dtype == torch.bool and p.shape == lab.shape
        assert bool((lab[p] >= 1).all()) and bool((lab[n] == 0).all()) and not bool((p & n).any())
    torch.manual_seed(1)
    again = L.det_sample_pos_neg([many, few_pos.float()], 128, 0.25)
    assert all(torch.equal(a, b) for a, b in zip(again[0] + again[1], pos + neg))
    torch.manual_seed(2)
    other = L.det_sample_pos_neg([many, few_pos.float()], 128, 0.25)
    assert not torch.equal(other[0][0], pos[0]) and not torch.equal(other[1][0], neg[0])
    # fewer negatives than asked for: all of them
    pos, neg = L.det_sample_pos_neg([torch.tensor([1, 1, 0, -1, 0])], 10, 0.5)
    assert pos[0].tolist() == [True, True, False, False, False]
    assert neg[0].tolist() == [False, False, True, False, True]


def _rpn_inputs(seed=0):
    anchors = _grid_anchors(64, 64, 4, [(16, 16), (20, 20), (24, 24), (32, 32), (32, 24), (24, 32), (32, 40),
                                        (20, 40)])         # 2048 anchors
    gen = torch.Generator().manual_seed(seed)
    objectness = torch.randn(2 * len(anchors), 1, generator=gen, requires_grad=True)
    deltas = (0.3 * torch.randn(2 * len(anchors), 4, generator=gen)).requires_grad_()
    return anchors, objectness, deltas


def _smooth_l1(x, beta):
    x = x.abs()
    return torch.where(x < beta, 0.5 * x * x / beta, x - 0.5 * beta)


def test_rpn_losses_match_their_formula():
    anchors, objectness, deltas = _rpn_inputs()
    det = _context(TARGETS)
    torch.manual_seed(5)
    lo, lb = L.det_rpn_losses(det, objectness, deltas, [anchors, anchors], fg_iou_thresh=0.7,
                              bg_iou_thresh=0.3, batch_size_per_image=32, positive_fraction=0.5)
    assert det.losses == {"loss_objectness": lo, "loss_rpn_box_reg": lb}

    # the same computation written out: labels from the matcher, the same draws
    labels, matched = [], []
    for t in TARGETS:
        m = L.det_match(L.det_box_iou(t["boxes"], anchors), 0.7, 0.3, allow_low_quality_matches=True)
        lab = torch.where(m >= 0, 1.0, torch.where(m == -1, 0.0, -1.0))
        labels.append(lab)
        matched.append(t["boxes"][m.clamp(min=0)])
    assert all(int((lab == 1).sum()) >= 4 and int((lab == 0).sum()) > 32 for lab in labels)
    torch.manual_seed(5)
    pos, neg = L.det_sample_pos_neg(labels, 32, 0.5)
    pos, neg = torch.cat(pos), torch.cat(neg)
    lab = torch.cat(labels)
    a = torch.cat([anchors, anchors])
    g = torch.cat(matched)
    aw, ah = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    target = torch.stack([(g[:, 0] + gw / 2 - a[:, 0] - aw / 2) / aw, (g[:, 1] + gh / 2 - a[:, 1] - ah / 2) / ah,
                          torch.log(gw / aw), torch.log(gh / ah)], dim=1)
    n_sampled = int(pos.sum() + neg.sum())
    expected_box = _smooth_l1(deltas[pos] - target[pos], 1 / 9).sum() / n_sampled
    x, y = objectness[:, 0][pos | neg], lab[pos | neg]
    expected_obj = (torch.clamp(x, min=0) - x * y + torch.log1p(torch.exp(-x.abs()))).mean()
    torch.testing.assert_close(lb, expected_box, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lo, expected_obj, rtol=1e-5, atol=1e-6)
    assert float(lb.detach()) > 0.01 and float(lo.detach()) > 0.1

    # gradients reach only the sampled anchors
    (lo + lb).backward()
    assert int((objectness.grad != 0).sum()) == n_sampled
    assert int((deltas.grad.abs().sum(1) != 0).sum()) == int(pos.sum())


def test_rpn_losses_forms_of_inputs():
    anchors, objectness, deltas = _rpn_inputs(1)
    kw = dict(batch_size_per_image=64, positive_fraction=0.5)
    runs = []
    for obj, anc in [(objectness, [anchors, anchors]), (objectness.flatten(), anchors),
                     (torch.cat([torch.zeros_like(objectness), objectness], dim=1), [anchors, anchors]),
                     (torch.cat([-objectness, torch.zeros_like(objectness)], dim=1), anchors)]:
        det = _context(TARGETS)
        torch.manual_seed(3)
        runs.append(L.det_rpn_losses(det, obj, deltas, anc, **kw))
    for r in runs[1:]:
        torch.testing.assert_close(r[0], runs[0][0])
        torch.testing.assert_close(r[1], runs[0][1])
    # (background, foreground) pairs: the loss is the two-way softmax cross-entropy
    pair = torch.randn(50, 2)
    y = torch.randint(0, 2, (50,))
    torch.testing.assert_close(F.binary_cross_entropy_with_logits(pair[:, 1] - pair[:, 0], y.float()),
                               F.cross_entropy(pair, y))


def test_rpn_losses_modes_and_errors():
    anchors, objectness, deltas = _rpn_inputs()
    for det in (_context(TARGETS, training=False), _context(None)):
        assert L.det_rpn_losses(det, objectness, deltas, anchors) is None and det.losses == {}
    with pytest.raises(ValueError, match="4096 objectness logits and 4096 box deltas for 6144 anchors"):
        L.det_rpn_losses(_context(TARGETS + TARGETS[:1]), objectness, deltas, anchors)
    with pytest.raises(ValueError, match="2 images but 1 targets"):
        L.det_rpn_losses(_context(TARGETS[:1]), objectness, deltas, [anchors, anchors])
    # a background image: its anchors are all negatives, no box loss from it
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    det = _context([empty, empty])
    lo, lb = L.det_rpn_losses(det, objectness, deltas, anchors, batch_size_per_image=16)
    assert float(lb.detach()) == 0.0 and float(lo.detach()) > 0


def _proposals(seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for t in TARGETS:
        b = t["boxes"]
        near = b[torch.randint(len(b), (40,), generator=gen)] + torch.randn(40, 4, generator=gen) * 2
        xy = torch.rand(60, 2, generator=gen) * 48
        anywhere = torch.cat([xy, xy + 4 + torch.rand(60, 2, generator=gen) * 16], dim=1)
        out.append(torch.cat([near, anywhere]))
    return torch.cat(out), torch.tensor([0] * 100 + [1] * 100)


def test_sample_rois_eval_is_identity():
    boxes, bidx = _proposals()
    for det in (_context(TARGETS, training=False), _context(None)):
        out = L.det_sample_rois(det, boxes, bidx)
        assert out[0] is boxes and out[1] is bidx and not hasattr(det, "roi_labels")


def test_sample_rois_training():
    boxes, bidx = _proposals()
    det = _context(TARGETS)
    torch.manual_seed(0)
    out, out_index = L.det_sample_rois(det, boxes, bidx, batch_size_per_image=64, positive_fraction=0.25)
    counts = torch.bincount(out_index).tolist()
    assert counts == [64, 64] and torch.equal(out_index, out_index.sort().values)      # image-major
    assert det.roi_labels.shape == (128,) and det.roi_regression_targets.shape == (128, 4)
    assert 8 <= int((det.roi_labels > 0).sum()) <= 32 and int((det.roi_labels == 0).sum()) >= 64
    assert not bool((det.roi_labels < 0).any())
    assert set(det.roi_labels.tolist()) <= {0, 1, 2, 3}
    # every row comes from the image's proposals or ground truth, in their order
    for i, t in enumerate(TARGETS):
        pool = torch.cat([boxes[bidx == i], t["boxes"]])
        rows = out[out_index == i]
        where = [int(torch.where((pool == r).all(1))[0][0]) for r in rows]
        assert where == sorted(where)
    # a ground-truth box that is sampled is labelled with its class and has zero targets
    gt_rows = [(i, j) for i, t in enumerate(TARGETS) for j in range(len(t["boxes"]))]
    found = 0
    for i, j in gt_rows:
        hit = torch.where((out == TARGETS[i]["boxes"][j]).all(1) & (out_index == i))[0]
        for k in hit.tolist():
            found += 1
            assert int(det.roi_labels[k]) == int(TARGETS[i]["labels"][j])
            assert float(det.roi_regression_targets[k].abs().max()) == 0.0
    assert found >= 1
    # a positive's regression target decodes back (weights 10, 10, 5, 5) to its ground truth
    k = int(torch.where(det.roi_labels > 0)[0][0])
    p, d = out[k], det.roi_regression_targets[k] / torch.tensor([10.0, 10.0, 5.0, 5.0])
    w, h = p[2] - p[0], p[3] - p[1]
    cx, cy = p[0] + w / 2 + d[0] * w, p[1] + h / 2 + d[1] * h
    w, h = w * torch.exp(d[2]), h * torch.exp(d[3])
    decoded = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    i = int(out_index[k])
    assert float(L.det_box_iou(decoded[None], TARGETS[i]["boxes"]).max()) > 0.999


def test_sample_rois_background_image_and_errors():
    boxes, bidx = _proposals(1)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    det = _context([empty, TARGETS[1]])
    out, out_index = L.det_sample_rois(det, boxes, bidx, batch_size_per_image=32)
    first = out_index == 0
    assert int(first.sum()) == 32 and bool((det.roi_labels[first] == 0).all())
    assert int((det.roi_labels[~first] > 0).sum()) > 0
    with pytest.raises(ValueError, match="image 1 but there are 1 targets"):
        L.det_sample_rois(_context(TARGETS[:1]), boxes, bidx)


def test_fastrcnn_loss_formula():
    det = _context(TARGETS)
    det.roi_labels = torch.tensor([2, 0, 1, 0, 2])
    det.roi_regression_targets = torch.tensor([[0.1, -0.2, 0.3, 0.0], [9.0, 9.0, 9.0, 9.0],
                                               [0.05, 0.02, -0.5, 1.0], [9.0, 9.0, 9.0, 9.0],
                                               [0.0, 0.0, 0.0, 0.0]])
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, generator=gen)
    regression = torch.randn(5, 12, generator=gen)
    cls, box = L.det_fastrcnn_loss(det, logits, regression)
    expected_cls = -sum(math.log(torch.softmax(logits[k], 0)[c]) for k, c in enumerate([2, 0, 1, 0, 2])) / 5
    reg = regression.reshape(5, 3, 4)
    picked = torch.stack([reg[0, 2], reg[2, 1], reg[4, 2]])
    expected_box = _smooth_l1(picked - det.roi_regression_targets[[0, 2, 4]], 1 / 9).sum() / 5
    assert abs(float(cls) - expected_cls) < 1e-5
    torch.testing.assert_close(box, expected_box)
    assert det.losses == {"loss_classifier": cls, "loss_box_reg": box}
    assert L.det_fastrcnn_loss(_context(TARGETS, training=False), logits, regression) is None
    with pytest.raises(ValueError, match="sample_rois must run"):
        L.det_fastrcnn_loss(_context(TARGETS), logits, regression)
    with pytest.raises(ValueError, match="4 class logits rows for 5 sampled RoIs"):
        L.det_fastrcnn_loss(det, logits[:4], regression[:4])


def test_file_pastes_into_generated_sources():
    """Top level: imports of math/torch/nn/F only, every name det_/Det/DET_; the only names it
    needs from elsewhere are detection_ops' (the file is exec'd after it)."""
    tree = ast.parse(SOURCE.read_text(encoding="utf-8"))
    defined = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            assert [a.name for a in node.names] in (["math"], ["torch"], ["torch.nn.functional"])
            defined |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.module == "torch" and [a.name for a in node.names] == ["nn"]
            defined.add("nn")
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            assert node.name.startswith(("det_", "Det"))
            defined.add(node.name)
        elif isinstance(node, ast.Assign):
            assert all(t.id.startswith(("det_", "DET_")) for t in node.targets)
            defined |= {t.id for t in node.targets}
        else:
            assert isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)   # docstring
    local = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    local |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments)
              for a in n.args + n.kwonlyargs + n.posonlyargs}
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    external = used - defined - local - set(dir(builtins))
    ops = {n.name for n in ast.parse((RUNTIME_DIR / "detection_ops.py").read_text(encoding="utf-8")).body
           if isinstance(n, ast.FunctionDef)}
    assert external == {"det_box_encode"} and external <= ops
