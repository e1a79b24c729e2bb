"""Detection pipeline runtime for generated torch modules (Faster R-CNN, issue 8).

This file is pasted verbatim into generated standalone sources, right after
detection_ops.py (whose det_* functions it calls by name) and before detection_losses.py
(det_rpn_losses, det_fastrcnn_loss: called only in training with targets). It imports only
math and torch at top level, and every top-level name starts with det_ / Det.

Semantics are torchvision 0.29's (GeneralizedRCNNTransform, RegionProposalNetwork,
RoIHeads.postprocess_detections, transform.postprocess), with every per-box tensor flat over
the batch: boxes f32[R, 4] plus batch_index i64[R], image-major, and image_sizes i64[N, 4] =
(resized h, resized w, original h, original w).

Modes: `det.training` picks the training member of (train, test) pairs such as
pre_nms_top_n and makes the transform draw torchvision's random number per image; losses are
computed only when the context also holds targets (torchvision refuses training without
targets; here that runs the eval post-processing with the training counts instead).
"""
import math

import torch
from torch import nn
import torch.nn.functional as F


class DetContext:
    """Per-forward state of a detector: mode, targets (validated; resized by det_transform),
    the losses computed so far, and the images' original sizes.

    targets: None, or one dict per image with "boxes" (floating tensor [K, 4], x1 y1 x2 y2 in
    the given image's pixels) and "labels" (int64 tensor [K]); other keys are kept as given."""

    def __init__(self, training, targets=None):
        self.training = bool(training)
        self.targets = det__check_targets(targets)
        self.losses = {}
        self.original_sizes = None      # [(h, w)] per image, set by det_transform
        self.image_sizes = None         # i64[N, 4], set by det_transform
        self.n_images = None

    @property
    def with_losses(self):
        return self.training and self.targets is not None


def det__check_targets(targets):
    if targets is None:
        return None
    if isinstance(targets, dict) or not isinstance(targets, (list, tuple)):
        raise ValueError("targets must be a list with one dict per image "
                         f"(keys 'boxes' and 'labels'), got {type(targets).__name__}")
    checked = []
    for i, t in enumerate(targets):
        if not isinstance(t, dict):
            raise ValueError(f"targets[{i}] (image {i}) must be a dict with keys 'boxes' and "
                             f"'labels', got {type(t).__name__}")
        for key in ("boxes", "labels"):
            if key not in t:
                raise ValueError(f"targets[{i}] (image {i}) has no '{key}'")
            if not isinstance(t[key], torch.Tensor):
                raise ValueError(f"targets[{i}]['{key}'] (image {i}) must be a tensor, got "
                                 f"{type(t[key]).__name__}")
        boxes, labels = t["boxes"], t["labels"]
        if boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"targets[{i}]['boxes'] (image {i}) must have shape [K, 4], got "
                             f"{list(boxes.shape)}")
        if not boxes.is_floating_point():
            raise ValueError(f"targets[{i}]['boxes'] (image {i}) must be a floating tensor, "
                             f"got {boxes.dtype}")
        if labels.dim() != 1:
            raise ValueError(f"targets[{i}]['labels'] (image {i}) must have shape [K], got "
                             f"{list(labels.shape)}")
        if labels.dtype != torch.int64:
            raise ValueError(f"targets[{i}]['labels'] (image {i}) must be int64, got "
                             f"{labels.dtype}")
        if labels.shape[0] != boxes.shape[0]:
            raise ValueError(f"targets[{i}] (image {i}) has {boxes.shape[0]} boxes but "
                             f"{labels.shape[0]} labels")
        checked.append(dict(t))        # a copy: the transform replaces "boxes"
    return checked


def det__pair(value, training):
    """A (train, test) pair attribute, or one value for both."""
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return value[0]
        return value[0] if training else value[1]
    return value


def det_transform(det, images, min_size=800, max_size=1333, mean=(0.485, 0.456, 0.406),
                  std=(0.229, 0.224, 0.225), size_divisible=32):
    """torchvision's GeneralizedRCNNTransform: normalise, resize each image (scale =
    min(min_size / min(h, w), max_size / max(h, w)), bilinear, recompute_scale_factor; no
    resize when min_size is 0), resize det's target boxes, zero-pad the batch bottom/right to
    a multiple of size_divisible. images: a tensor [N, C, H, W] or a list of [C, H_i, W_i].
    Returns (x [N, C, Hp, Wp], image_sizes i64[N, 4] = resized h, w, original h, w)."""
    channels = len(mean)
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise ValueError("detection_transform: images must be a tensor [N, "
                             f"{channels}, H, W] or a list of [{channels}, H, W] tensors, got a "
                             f"tensor of shape {list(images.shape)}")
        if images.shape[1] != channels:
            raise ValueError(f"detection_transform: images have {images.shape[1]} channels, "
                             f"expected {channels} (shape {list(images.shape)})")
        images = list(images.unbind(0))
    elif isinstance(images, (list, tuple)):
        for i, img in enumerate(images):
            if not isinstance(img, torch.Tensor) or img.dim() != 3:
                what = (f"shape {list(img.shape)}" if isinstance(img, torch.Tensor)
                        else type(img).__name__)
                raise ValueError(f"detection_transform: image {i} must be a tensor "
                                 f"[{channels}, H, W], got {what}")
    else:
        raise ValueError("detection_transform: images must be a tensor [N, "
                         f"{channels}, H, W] or a list of [{channels}, H, W] tensors, got "
                         f"{type(images).__name__}")
    if len(images) == 0:
        raise ValueError("detection_transform: no images")
    for i, img in enumerate(images):
        if img.shape[0] != channels:
            raise ValueError(f"detection_transform: image {i} has {img.shape[0]} channels, "
                             f"expected {channels} (shape {list(img.shape)})")
        if not img.is_floating_point():
            raise ValueError(f"detection_transform: image {i} must be a floating tensor "
                             f"(values in [0, 1]), got {img.dtype}")
        if img.shape[1] == 0 or img.shape[2] == 0:
            raise ValueError(f"detection_transform: image {i} is empty "
                             f"(shape {list(img.shape)})")
    targets = det.targets
    if targets is not None and len(targets) != len(images):
        raise ValueError(f"detection_transform: {len(images)} images but {len(targets)} "
                         "targets")
    if targets is not None:
        targets = [dict(t) for t in targets]

    resized, sizes, original = [], [], []
    for i, img in enumerate(images):
        h, w = int(img.shape[-2]), int(img.shape[-1])
        m = torch.as_tensor(mean, dtype=img.dtype, device=img.device)
        s = torch.as_tensor(std, dtype=img.dtype, device=img.device)
        img = (img - m[:, None, None]) / s[:, None, None]
        if min_size:
            if det.training:
                # torchvision's torch_choice over its tuple of sizes (here one): it draws a
                # number from torch's generator even then; drawn too, so that streams agree
                int(torch.empty(1).uniform_(0.0, 1.0).item())
            scale = min(min_size / min(h, w), max_size / max(h, w))
            if math.floor(h * scale) < 1 or math.floor(w * scale) < 1:
                raise ValueError(f"detection_transform: image {i} ({h}x{w}) would be resized to "
                                 f"{math.floor(h * scale)}x{math.floor(w * scale)} (short side "
                                 f"{min_size}, long side at most {max_size}): its aspect ratio is "
                                 "too extreme for the detector")
            img = F.interpolate(img[None], size=None, scale_factor=scale, mode="bilinear",
                                recompute_scale_factor=True, align_corners=False)[0]
        nh, nw = int(img.shape[-2]), int(img.shape[-1])
        if targets is not None:
            targets[i]["boxes"] = det__resize_boxes(targets[i]["boxes"], (h, w), (nh, nw))
        resized.append(img)
        sizes.append((nh, nw))
        original.append((h, w))

    if targets is not None:
        for i, t in enumerate(targets):
            boxes = t["boxes"]
            bad = (boxes[:, 2:] <= boxes[:, :2]).any(dim=1)
            if bool(bad.any()):
                j = int(torch.where(bad)[0][0])
                raise ValueError("All bounding boxes should have positive height and width. "
                                 f"Found invalid box {boxes[j].tolist()} for target at index "
                                 f"{i}.")

    hp = max(hw[0] for hw in sizes)
    wp = max(hw[1] for hw in sizes)
    if size_divisible and size_divisible > 0:
        stride = float(size_divisible)
        hp = int(math.ceil(float(hp) / stride) * stride)
        wp = int(math.ceil(float(wp) / stride) * stride)
    first = resized[0]
    x = first.new_full((len(resized), first.shape[0], hp, wp), 0)
    for i, img in enumerate(resized):
        x[i, :, : img.shape[1], : img.shape[2]].copy_(img)
    image_sizes = torch.tensor([[a, b, c, d] for (a, b), (c, d) in zip(sizes, original)],
                               dtype=torch.int64, device=first.device)
    det.targets = targets
    det.original_sizes = original
    det.image_sizes = image_sizes
    det.n_images = len(resized)
    return x, image_sizes


def det__resize_boxes(boxes, old, new):
    """torchvision's resize_boxes: x * float32(new_w) / float32(old_w), y likewise."""
    ratio_h = (torch.tensor(new[0], dtype=torch.float32, device=boxes.device)
               / torch.tensor(old[0], dtype=torch.float32, device=boxes.device))
    ratio_w = (torch.tensor(new[1], dtype=torch.float32, device=boxes.device)
               / torch.tensor(old[1], dtype=torch.float32, device=boxes.device))
    return det__scale_boxes(boxes, ratio_h, ratio_w)


def det__scale_boxes(boxes, ratio_h, ratio_w):
    """x * ratio_w, y * ratio_h, the ratios one number or one per box."""
    xmin, ymin, xmax, ymax = boxes.unbind(1)
    return torch.stack((xmin * ratio_w, ymin * ratio_h, xmax * ratio_w, ymax * ratio_h), dim=1)


def det__flatten_level(t, n, c):
    """torchvision's permute_and_flatten: [N, A*C, H, W] -> [N, H*W*A, C]."""
    _, _, h, w = t.shape
    return t.view(n, -1, c, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, c)


def det_rpn_proposals(det, logits, deltas, anchors, image_sizes, *,
                      pre_nms_top_n=(2000, 1000), post_nms_top_n=(2000, 1000), nms_thresh=0.7,
                      score_thresh=0.0, min_size=0.001, fg_iou_thresh=0.7, bg_iou_thresh=0.3,
                      batch_size_per_image=256, positive_fraction=0.5, objectness="sigmoid"):
    """torchvision's RegionProposalNetwork.forward after the head and the anchor generator.
    logits: the objectness per level, [N, A, H, W] ("sigmoid") or [N, 2A, H, W] ("softmax2":
    A background then A foreground logits, probability softmax = sigmoid(fg - bg)); deltas:
    per level [N, 4A, H, W]; anchors: per level [H*W*A, 4] (the same for every image).
    Returns (boxes f32[R, 4], batch_index i64[R]), image-major, by decreasing score per image.
    In training with targets, the RPN losses go into det.losses."""
    kind = objectness
    if kind not in ("sigmoid", "softmax2"):
        raise ValueError(f"det_rpn_proposals: objectness must be 'sigmoid' or 'softmax2', "
                         f"got {kind!r}")
    n = int(image_sizes.shape[0])
    flat_logits, codes, per_level = [], [], []
    for level, (o, d) in enumerate(zip(logits, deltas)):
        if o.shape[0] != d.shape[0] or o.shape[-2:] != d.shape[-2:]:
            # (their sizes are data-dependent after the transform: the compiler cannot compare them)
            raise ValueError(f"rpn_proposals: objectness map {level} is {list(o.shape)} but delta map "
                             f"{level} is {list(d.shape)}: each level's maps need the same batch, height "
                             "and width")
        a = d.shape[1] // 4
        if kind == "softmax2":
            o = o[:, a:] - o[:, :a]        # log-odds of the two-way softmax
        per_level.append(o.shape[1] * o.shape[2] * o.shape[3])
        flat_logits.append(det__flatten_level(o, n, 1))
        codes.append(det__flatten_level(d, n, 4))
    obj_flat = torch.cat(flat_logits, dim=1).flatten(0, -2)            # [N * sumA, 1]
    deltas_flat = torch.cat(codes, dim=1).reshape(-1, 4)          # [N * sumA, 4]
    anchors_image = torch.cat(list(anchors), dim=0)
    if anchors_image.shape[0] != sum(per_level):
        raise ValueError(f"rpn_proposals: {anchors_image.shape[0]} anchors for "
                         f"{sum(per_level)} objectness values per image")
    anchors_all = anchors_image.repeat(n, 1)
    proposals = det_box_decode(deltas_flat.detach(), anchors_all, weights=[1.0, 1.0, 1.0, 1.0],
                               clamp=math.log(1000.0 / 16))
    proposals = proposals.view(n, -1, 4)

    # filter_proposals
    pre_n = int(det__pair(pre_nms_top_n, det.training))
    post_n = int(det__pair(post_nms_top_n, det.training))
    device = proposals.device
    obj = obj_flat.detach().reshape(n, -1)
    levels = torch.cat([torch.full((k,), i, dtype=torch.int64, device=device)
                        for i, k in enumerate(per_level)], 0).reshape(1, -1).expand_as(obj)
    top, offset = [], 0
    for ob in obj.split(per_level, 1):
        k = min(pre_n, ob.shape[1])
        top.append(ob.topk(k, dim=1)[1] + offset)
        offset += ob.shape[1]
    top = torch.cat(top, dim=1)
    rows = torch.arange(n, device=device)[:, None]
    obj, levels, proposals = obj[rows, top], levels[rows, top], proposals[rows, top]
    prob = torch.sigmoid(obj)
    k = top.shape[1]
    flat_index = torch.arange(n, device=device).repeat_interleave(k)
    proposals = det_clip_boxes(proposals.reshape(-1, 4), flat_index, image_sizes).view(n, k, 4)

    out_boxes, out_index = [], []
    for i in range(n):
        boxes, scores, lvl = proposals[i], prob[i], levels[i]
        keep = det_remove_small_boxes(boxes, min_size=min_size)
        boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
        keep = torch.where(scores >= score_thresh)[0]
        boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
        keep = det_batched_nms(boxes, scores, lvl, iou_threshold=nms_thresh)
        keep = keep[:post_n]
        out_boxes.append(boxes[keep])
        out_index.append(torch.full((keep.shape[0],), i, dtype=torch.int64, device=device))

    if det.with_losses:
        anchors_per_image = [anchors_image] * n
        det_rpn_losses(det, obj_flat, deltas_flat, anchors_per_image,
                       fg_iou_thresh=fg_iou_thresh, bg_iou_thresh=bg_iou_thresh,
                       batch_size_per_image=batch_size_per_image,
                       positive_fraction=positive_fraction)
    return torch.cat(out_boxes, 0), torch.cat(out_index, 0)


def det__counts(batch_index, n):
    """Rows per image of a flat image-major tensor."""
    if batch_index.numel() == 0:
        return [0] * n
    return torch.bincount(batch_index, minlength=n).tolist()


def det_detect_postprocess(det, class_logits, box_regression, boxes, batch_index, image_sizes,
                           *, score_thresh=0.05, nms_thresh=0.5, detections_per_img=100,
                           weights=(10.0, 10.0, 5.0, 5.0), min_size=0.01):
    """torchvision's RoIHeads.postprocess_detections on flat image-major proposals:
    class_logits [R, C], box_regression [R, 4C], boxes [R, 4], batch_index [R]. Returns
    (boxes f32[D, 4], scores f32[D], labels i64[D], batch_index i64[D]) in the resized
    images' coordinates. In training with targets: fastrcnn_loss into det.losses, and empty
    outputs."""
    device = class_logits.device
    if det.with_losses:
        det_fastrcnn_loss(det, class_logits, box_regression)
        return (class_logits.new_zeros((0, 4)), class_logits.new_zeros((0,)),
                torch.zeros((0,), dtype=torch.int64, device=device),
                torch.zeros((0,), dtype=torch.int64, device=device))
    n = int(image_sizes.shape[0])
    r, c = class_logits.shape[0], class_logits.shape[-1]
    pred = det_box_decode(box_regression, boxes, weights=list(weights),
                          clamp=math.log(1000.0 / 16))
    pred = det_clip_boxes(pred.reshape(-1, 4), batch_index.repeat_interleave(c), image_sizes)
    pred = pred.reshape(r, c, 4)
    scores_all = F.softmax(class_logits, -1)
    counts = det__counts(batch_index, n)
    out_b, out_s, out_l, out_i = [], [], [], []
    for i, (bx, sc) in enumerate(zip(pred.split(counts, 0), scores_all.split(counts, 0))):
        labels = torch.arange(c, device=device).view(1, -1).expand_as(sc)
        bx, sc, labels = bx[:, 1:].reshape(-1, 4), sc[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
        keep = torch.where(sc > score_thresh)[0]
        bx, sc, labels = bx[keep], sc[keep], labels[keep]
        keep = det_remove_small_boxes(bx, min_size=min_size)
        bx, sc, labels = bx[keep], sc[keep], labels[keep]
        keep = det_batched_nms(bx, sc, labels, iou_threshold=nms_thresh)
        keep = keep[:detections_per_img]
        out_b.append(bx[keep])
        out_s.append(sc[keep])
        out_l.append(labels[keep])
        out_i.append(torch.full((keep.shape[0],), i, dtype=torch.int64, device=device))
    return torch.cat(out_b, 0), torch.cat(out_s, 0), torch.cat(out_l, 0), torch.cat(out_i, 0)


def det_rescale_boxes(boxes, batch_index, image_sizes):
    """torchvision's transform.postprocess: boxes from the resized image's coordinates to the
    original's (ratio = float32(original) / float32(resized), per image)."""
    sizes = image_sizes.to(device=boxes.device, dtype=torch.float32)
    ratio_h = (sizes[:, 2] / sizes[:, 0])[batch_index]
    ratio_w = (sizes[:, 3] / sizes[:, 1])[batch_index]
    return det__scale_boxes(boxes, ratio_h, ratio_w)


det__LOSS_ORDER = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")


def det_results(det, boxes, scores, labels, batch_index, n_images=None):
    """What torchvision's detector returns: in training with targets, the losses (torchvision's
    key order); otherwise one dict {"boxes", "labels", "scores"} per image."""
    if det.with_losses:
        out = {k: det.losses[k] for k in det__LOSS_ORDER if k in det.losses}
        out.update((k, v) for k, v in det.losses.items() if k not in out)
        return out
    n = int(n_images) if n_images is not None else int(det.n_images)
    counts = det__counts(batch_index, n)
    return [{"boxes": b, "labels": l, "scores": s}
            for b, l, s in zip(boxes.split(counts, 0), labels.split(counts, 0),
                               scores.split(counts, 0))]
