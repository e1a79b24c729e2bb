"""Training a detector as a feature (issue 8, "Training"): a small Faster R-CNN written in
netdsl, compiled with the API, trained on CPU on a synthetic set (bright rectangles on
noise, the colour coding the class). The four losses stay finite and their sum falls; the
trained detector finds the held-out rectangles (IoU > 0.5, the right label, score > 0.5)
while the untrained one does not. The generated STANDALONE source gives the same training
step as the live module; gradients reach the backbone and both heads; `frozen = true` and
FrozenBatchNorm2d layers do not change. Runs without torchvision (pure-torch NMS/RoIAlign)."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

import netdsl

torch = pytest.importorskip("torch")

# the ops of docs/language.md's TinyDetector; a frozen stem conv and a FrozenBatchNorm2d,
# features at stride 4, one anchor size per position for rectangles of 14 ... 27 px
SPEC = """
network TinyDet {
    input images: f32[N, 3, H, W]
    x, sizes = detection_transform(images, min_size = 64, max_size = 96)
    f = x -> stem: Conv2d(16, 3, stride = 2, padding = 1, frozen = true) -> stem_bn: FrozenBatchNorm2d
          -> ReLU -> c2: Conv2d(32, 3, stride = 2, padding = 1) -> ReLU
          -> c3: Conv2d(32, 3, padding = 1) -> ReLU
    o, d = f -> rpn: RPNHead(3)
    a = anchors(f, x, sizes = [20], aspect_ratios = [0.5, 1.0, 2.0])
    props, idx = rpn_proposals(o, d, a, sizes, pre_nms_top_n = [200, 100], post_nms_top_n = [64, 32],
                               batch_size_per_image = 64)
    rois, ridx = sample_rois(props, idx, batch_size_per_image = 32)
    h = roi_align(f, rois, ridx, output_size = 4, spatial_scale = 0.25, sampling_ratio = 2)
    h = h -> Flatten -> fc: Linear(64) -> ReLU
    cls = h -> cls_score: Linear(3)
    reg = h -> bbox_pred: Linear(12)
    b, s, l, bi = detect_postprocess(cls, reg, rois, ridx, sizes)
    output boxes = rescale_boxes(b, bi, sizes)
    output scores = s
    output labels = l
    output batch_index = bi
}
"""
# in torchvision's order (the box branch's losses, then the RPN's)
LOSSES = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
COLOURS = {1: (1.0, 0.25, 0.2), 2: (0.2, 0.45, 1.0)}      # class 1 reddish, class 2 bluish
BATCH, TRAIN_IMAGES, STEPS = 8, 32, 160
# held-out images of other sizes too: the transform resizes 80x80 to 64x64 and 72x96 to 64x85,
# and rescale_boxes maps the detections back
HELD_OUT_SIZES = [(64, 64), (80, 80), (72, 96)]
FOUND_AFTER, FOUND_BEFORE = 0.75, 0.2     # measured: 0.96 after (0.83 ... 1.0 over other seeds), 0 before


def _overlap(a, b) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def make_image(g, h, w):
    """Noise in [0, 0.3) with one or two non-overlapping rectangles of a class's colour."""
    img = torch.rand(3, h, w, generator=g) * 0.3
    boxes, labels = [], []
    for _ in range(int(torch.randint(1, 3, (1,), generator=g))):
        for _ in range(50):
            bw, bh = (int(v) for v in torch.randint(14, 28, (2,), generator=g))
            x0 = int(torch.randint(0, w - bw + 1, (1,), generator=g))
            y0 = int(torch.randint(0, h - bh + 1, (1,), generator=g))
            box = [x0, y0, x0 + bw, y0 + bh]
            if not any(_overlap(box, o) for o in boxes):
                break
        else:
            continue
        c = int(torch.randint(1, 3, (1,), generator=g))
        img[:, y0:y0 + bh, x0:x0 + bw] = torch.tensor(COLOURS[c])[:, None, None]
        boxes.append(box)
        labels.append(c)
    return img, {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}


def make_set(seed, sizes):
    g = torch.Generator().manual_seed(seed)
    images, targets = zip(*(make_image(g, h, w) for h, w in sizes))
    return list(images), list(targets)


def box_iou(a, b):
    """IoU matrix of (x1, y1, x2, y2) rows, written out here (independent of the runtime)."""
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area = lambda t: (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])      # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def detection_quality(module, images, targets):
    """(fraction of ground-truth rectangles found by a detection with score > 0.5, the right
    label and IoU > 0.5; fraction of detections with score > 0.5 that find one; how many)."""
    module.eval()
    with torch.no_grad():
        results = module(images)
    found = total = hits = confident = 0
    for res, tgt in zip(results, targets):
        keep = res["scores"] > 0.5
        boxes, labels = res["boxes"][keep], res["labels"][keep]
        iou = box_iou(tgt["boxes"], boxes) if len(boxes) else torch.zeros(len(tgt["boxes"]), 0)
        match = (iou > 0.5) & (tgt["labels"][:, None] == labels[None, :])
        found += int(match.any(dim=1).sum())
        total += len(tgt["boxes"])
        hits += int(match.any(dim=0).sum())
        confident += len(boxes)
    return found / total, (hits / confident if confident else 0.0), confident


def trainable(module):
    return [p for p in module.parameters() if p.requires_grad]


@pytest.fixture(scope="module")
def run():
    """Compile, train once (160 Adam steps of 8 images, 5 to 10 s on one core)
    and keep everything the tests look at."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = netdsl.loads(SPEC)
        module = net.to_torch(seed=0)
        initial = {k: v.clone() for k, v in module.state_dict().items()}
        images, targets = make_set(0, [(64, 64)] * TRAIN_IMAGES)
        batch = torch.stack(images)
        held_images, held_targets = make_set(1, HELD_OUT_SIZES * 6)
        before = detection_quality(module, held_images, held_targets)
        optimiser = torch.optim.Adam(trainable(module), lr=2e-3)
        torch.manual_seed(0)          # the samplers' and the transform's random numbers
        history = []
        for step in range(STEPS):
            module.train()
            i = (step * BATCH) % TRAIN_IMAGES
            losses = module(batch[i:i + BATCH], targets[i:i + BATCH])
            loss = sum(losses.values())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            history.append({k: v.item() for k, v in losses.items()})
        after = detection_quality(module, held_images, held_targets)
        yield dict(net=net, module=module, initial=initial, history=history, before=before,
                   after=after, batch=batch, targets=targets, held=(held_images, held_targets))
    finally:
        torch.set_num_threads(threads)


def test_data_set_is_what_it_claims(run):
    images, targets = run["held"]
    assert [tuple(i.shape[1:]) for i in images[:3]] == HELD_OUT_SIZES
    n_boxes = sum(len(t["boxes"]) for t in targets)
    assert n_boxes >= 24                       # 18 images with one or two rectangles
    labels = torch.cat([t["labels"] for t in targets + run["targets"]])
    assert set(labels.tolist()) == {1, 2}
    # the rectangles are bright and the background is noise
    for img, tgt in zip(run["batch"][:4], run["targets"][:4]):
        background = torch.ones(img.shape[1:], dtype=torch.bool)
        for (x1, y1, x2, y2), c in zip(tgt["boxes"].int().tolist(), tgt["labels"].tolist()):
            assert torch.equal(img[:, y1:y2, x1:x2].amax(dim=(1, 2)), torch.tensor(COLOURS[c]))
            background[y1:y2, x1:x2] = False
        assert img[:, background].max() < 0.3 and img[:, background].std() > 0.05


def test_losses_are_finite_and_fall(run):
    history = run["history"]
    assert all(list(h) == list(LOSSES) for h in history)
    assert all(math.isfinite(v) for h in history for v in h.values())
    total = [sum(h.values()) for h in history]
    first, last = sum(total[:5]) / 5, sum(total[-5:]) / 5
    assert last < 0.5 * first, (first, last)
    # the RPN's objectness and the classifier learn, not only one of them
    mean = lambda k, part: sum(h[k] for h in part) / len(part)      # noqa: E731
    for k in ("loss_objectness", "loss_classifier"):
        assert mean(k, history[-5:]) < 0.5 * mean(k, history[:5]), k


def test_trained_detector_finds_held_out_rectangles(run):
    found, precision, confident = run["after"]
    found_before, _, confident_before = run["before"]
    # untrained (random weights): no detection reaches a score of 0.5 with the right box
    assert found_before <= FOUND_BEFORE, run["before"]
    # trained: (nearly) every rectangle found, and the confident detections are rectangles
    assert found >= FOUND_AFTER, run["after"]
    assert precision >= 0.7, run["after"]


def test_standalone_source_trains_as_the_live_module(run):
    net = run["net"]
    source = net.torch_source()
    assert "netdsl" not in "".join(l for l in source.splitlines() if l.startswith(("import", "from")))
    namespace = {"__name__": "tinydet_standalone"}
    exec(compile(source, "<tinydet standalone>", "exec"), namespace)
    standalone = namespace["TinyDet"]()
    live = net.to_torch(seed=3)
    standalone.load_state_dict(live.state_dict(), strict=True)
    images, targets = run["batch"][:4], run["targets"][:4]
    steps = []
    for module in (live, standalone):
        module.train()
        torch.manual_seed(7)
        losses = module(images, targets)
        sum(losses.values()).backward()
        steps.append((losses, {k: p.grad.clone() for k, p in module.named_parameters() if p.requires_grad}))
    (live_losses, live_grads), (sa_losses, sa_grads) = steps
    assert list(live_losses) == list(LOSSES) == list(sa_losses)
    for k in LOSSES:
        assert torch.equal(live_losses[k], sa_losses[k]), k
    assert all(v.item() > 0 for v in live_losses.values())
    assert live_grads.keys() == sa_grads.keys()
    for k in live_grads:
        assert torch.equal(live_grads[k], sa_grads[k]), k
    # a different seed draws other samples: the equality above is not vacuous
    live.zero_grad()
    torch.manual_seed(8)
    other = live(images, targets)
    assert any(not torch.equal(other[k], live_losses[k]) for k in LOSSES)


def test_gradients_reach_backbone_and_both_heads(run):
    module = run["net"].to_torch(seed=1)
    module.train()
    torch.manual_seed(2)
    losses = module(run["batch"][:4], run["targets"][:4])
    sum(losses.values()).backward()
    grads = {k: p.grad for k, p in module.named_parameters()}
    reached = ["c2.weight", "c2.bias", "c3.weight",                       # backbone
               "rpn.conv.0.0.weight", "rpn.cls_logits.weight", "rpn.bbox_pred.weight",   # RPN head
               "fc.weight", "cls_score.weight", "bbox_pred.weight"]     # box head
    for k in reached:
        assert grads[k] is not None and torch.isfinite(grads[k]).all(), k
        assert grads[k].abs().sum() > 0, k
    # the frozen stem gets none; FrozenBatchNorm2d has no parameters at all
    assert not module.stem.weight.requires_grad and grads["stem.weight"] is None
    assert not any(k.startswith("stem_bn.") for k in grads)
    assert {k for k, _ in module.named_buffers() if k.startswith("stem_bn.")} == {
        "stem_bn.weight", "stem_bn.bias", "stem_bn.running_mean", "stem_bn.running_var"}


def test_frozen_layers_do_not_change(run):
    state, initial = run["module"].state_dict(), run["initial"]
    for k in ("stem.weight", "stem.bias", "stem_bn.weight", "stem_bn.bias",
              "stem_bn.running_mean", "stem_bn.running_var"):
        assert torch.equal(state[k], initial[k]), k
    for k in ("c2.weight", "rpn.cls_logits.weight", "cls_score.weight"):
        assert not torch.equal(state[k], initial[k]), k


def test_documented_training_loop_runs(run, tmp_path, monkeypatch):
    """docs/language.md's "Training a detector" snippet, on its TinyDetector, for two batches
    (a batched tensor and a list of images of different sizes)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "language.md").read_text(encoding="utf-8")
    section = text[:text.index("**Training a detector.**")]
    spec = re.findall(r"```net\n(network TinyDetector .*?)```", section, re.S)[-1]
    snippet = re.search(r"```python\n(.*?)```", text[len(section):], re.S).group(1)
    assert "model(images, targets)" in snippet and "detections = model(images)" in snippet
    (tmp_path / "detector.net").write_text(spec, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    held_images, held_targets = run["held"]
    loader = [(run["batch"][:4], run["targets"][:4]), (held_images[:3], held_targets[:3])]
    namespace = {"loader": loader}
    torch.manual_seed(0)
    exec(compile(snippet, "docs/language.md", "exec"), namespace)
    assert list(namespace["losses"]) == list(LOSSES)
    assert math.isfinite(namespace["loss"].item()) and namespace["loss"].item() > 0
    detections = namespace["detections"]
    assert len(detections) == 3 and all(set(d) == {"boxes", "labels", "scores"} for d in detections)
    assert all(d["boxes"].shape[1:] == (4,) for d in detections)
