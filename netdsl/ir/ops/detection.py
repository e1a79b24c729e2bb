"""Object detection ops (Faster R-CNN): the image transform, anchors, box coding, clipping,
non-maximum suppression, RoI pooling, the RPN head, proposal selection and post-processing.

Boxes are (x1, y1, x2, y2) rows of a flat [R, 4] tensor over the whole batch, with a
batch_index [R] (int64) naming each row's image; rows are image-major. `image_sizes` [N, 4]
(int64) holds each image's (resized h, resized w, original h, original w). Counts that
depend on the data (boxes left after NMS, detections) are data-dependent dims
(`ctx.dynamic`), with the bound the op guarantees. Semantics follow torchvision's.
"""
from __future__ import annotations

import math

from .. import dims as D
from ..graph import ParamSpec
from ..registry import AttrSpec, OpSpec, register
from .common import need_rank

I64 = "int64"
BOX_CLAMP = math.log(1000.0 / 16)


# ---- input checks ------------------------------------------------------------------------
def _boxes(ctx, shape, what="boxes"):
    if len(shape) != 2 or shape[1] != 4:
        ctx.fail(f"{what} must be [R, 4] (x1, y1, x2, y2 per row), got {D.fmt_shape(shape)}")
    return shape[0]


def _vector(ctx, shape, rows, what):
    if len(shape) != 1:
        ctx.fail(f"{what} must be a vector [R], got {D.fmt_shape(shape)}")
    ctx.require_eq(shape[0], rows, f"{what} has {D.fmt(shape[0])} rows, the boxes have {D.fmt(rows)}")


def _image_sizes(ctx, shape):
    if len(shape) != 2 or shape[1] != 4:
        ctx.fail(f"image_sizes must be [N, 4] (resized h, w, original h, w), got {D.fmt_shape(shape)}")
    return shape[0]


def _dtype_check(positions: dict):
    """check_inputs hook: {input index (negative from the end): (dtype, what)}."""
    def check(inputs, ctx):
        for i, (dtype, what) in positions.items():
            v = inputs[i]
            if v.dtype != dtype:
                ctx.fail(f"{what} must be an {dtype} tensor, got {v.dtype} (it should come from an op "
                         f"that gives {what}, such as detection_transform, rpn_proposals or nms)")
    return check


_INDEX_IN = {1: (I64, "batch_index"), 2: (I64, "image_sizes")}


def _floats4(a, ctx, name="weights"):
    if len(a[name]) != 4:
        ctx.fail(f"'{name}' needs 4 values (x, y, w, h), got {len(a[name])}")
    if any(w <= 0 for w in a[name]):
        ctx.fail(f"'{name}' must be positive, got {list(a[name])}")


# ---- the image transform -------------------------------------------------------------------
def _infer_transform(a, shapes, ctx):
    (x,) = shapes
    need_rank(ctx, x, (4,), "[N, C, H, W] image batch")
    if len(a["mean"]) != len(a["std"]):
        ctx.fail(f"mean has {len(a['mean'])} values but std has {len(a['std'])}")
    if any(s <= 0 for s in a["std"]):
        ctx.fail(f"std must be positive, got {list(a['std'])}")
    ctx.require_eq(x[1], len(a["mean"]), f"the images have {D.fmt(x[1])} channels, but mean and std give "
                                         f"{len(a['mean'])}")
    if a["min_size"] and a["min_size"] > a["max_size"]:
        ctx.fail(f"min_size ({a['min_size']}) is larger than max_size ({a['max_size']})")
    s = a["size_divisible"]
    if a["min_size"] == 0:          # no resize: only the padding to a multiple of s
        h, w = (D.mul(D.ceildiv(d, s), s) for d in x[2:])
    elif D.is_static(x[2]) and D.is_static(x[3]):
        h, w = (D.mul(D.ceildiv(d, s), s) for d in resized_size(int(x[2]), int(x[3]), a, ctx))
    else:
        h, w = D.mul(ctx.dynamic("Hb"), s), D.mul(ctx.dynamic("Wb"), s)
    return [(x[0], x[1], h, w), (x[0], 4)]


def resized_size(h: int, w: int, a, ctx) -> tuple:
    """The size torchvision resizes an h x w image to (before padding): floor(side * scale) in
    double precision, as F.interpolate(scale_factor=scale, recompute_scale_factor=True) sizes it."""
    scale = min(a["min_size"] / min(h, w), a["max_size"] / max(h, w))
    out = (math.floor(h * scale), math.floor(w * scale))
    if min(out) < 1:
        ctx.fail(f"an image of {h}x{w} would be resized to {out[0]}x{out[1]} (short side "
                 f"{a['min_size']}, long side at most {a['max_size']}): its aspect ratio is too "
                 f"extreme for the detector")
    return out


register(OpSpec(
    "detection_transform",
    "torchvision's GeneralizedRCNNTransform: normalise, resize so that the short side is min_size "
    "and the long side at most max_size (bilinear; min_size = 0: no resize), zero-pad to a "
    "multiple of size_divisible; outputs the batch and image_sizes [N, 4] (resized h, w, "
    "original h, w). The torch module also takes a list of images of different sizes.",
    _infer_transform,
    (AttrSpec("min_size", "int", 800, check="nonneg"),
     AttrSpec("max_size", "int", 1333, check="positive"),
     AttrSpec("mean", "floats", (0.485, 0.456, 0.406)),
     AttrSpec("std", "floats", (0.229, 0.224, 0.225)),
     AttrSpec("size_divisible", "int", 32, check="positive")),
    function=True, dynamic=True, dtypes=lambda a, ins: ["float32", I64]))


# ---- anchors and boxes ---------------------------------------------------------------------
def _infer_anchors(a, shapes, ctx):
    f, img = shapes
    need_rank(ctx, f, (4,), "[N, C, H, W] feature map")
    need_rank(ctx, img, (4,), "[N, C, H, W] image batch")
    count = len(a["sizes"]) * len(a["aspect_ratios"])
    if any(r <= 0 for r in a["aspect_ratios"]):
        ctx.fail(f"aspect_ratios must be positive, got {list(a['aspect_ratios'])}")
    for i in (2, 3):
        ctx.require_ge(D.sub(img[i], f[i]), 0, f"the feature map ({D.fmt(f[i])}) is larger than the image "
                                               f"({D.fmt(img[i])}) in dim {i}")
    return [(D.mul(D.mul(f[2], f[3]), count), 4)]


register(OpSpec(
    "anchors",
    "torchvision's AnchorGenerator for one feature level: len(sizes) * len(aspect_ratios) anchors "
    "per location (rounded base anchors, ratios outer, sizes inner), strided by image // feature.",
    _infer_anchors,
    (AttrSpec("sizes", "ints", (32,), check="positive"),
     AttrSpec("aspect_ratios", "floats", (0.5, 1.0, 2.0))),
    inputs=2, function=True))


def _infer_decode(a, shapes, ctx):
    deltas, boxes = shapes
    _floats4(a, ctx)
    rows = _boxes(ctx, boxes)
    if len(deltas) != 2 or not D.is_static(deltas[1]) or deltas[1] % 4:
        ctx.fail(f"deltas must be [R, 4k], got {D.fmt_shape(deltas)}")
    ctx.require_eq(deltas[0], rows, f"deltas have {D.fmt(deltas[0])} rows, the boxes {D.fmt(rows)}")
    return [(rows, deltas[1])]


register(OpSpec(
    "box_decode",
    "torchvision's BoxCoder.decode_single: deltas [R, 4k] applied to boxes [R, 4] (weights wx, wy, "
    "ww, wh; dw and dh clamped at `clamp`) -> [R, 4k].",
    _infer_decode,
    (AttrSpec("weights", "floats", (1.0, 1.0, 1.0, 1.0)),
     AttrSpec("clamp", "float", BOX_CLAMP)),
    inputs=2, function=True))


def _infer_encode(a, shapes, ctx):
    boxes, ref = shapes
    _floats4(a, ctx)
    rows = _boxes(ctx, boxes)
    ctx.require_eq(_boxes(ctx, ref, "reference"), rows, "boxes and reference have different row counts")
    return [(rows, 4)]


register(OpSpec(
    "box_encode",
    "torchvision's BoxCoder.encode_single: the deltas [R, 4] that take reference boxes to boxes.",
    _infer_encode, (AttrSpec("weights", "floats", (1.0, 1.0, 1.0, 1.0)),), inputs=2, function=True))


def _infer_clip(a, shapes, ctx):
    boxes, index, sizes = shapes
    rows = _boxes(ctx, boxes)
    _vector(ctx, index, rows, "batch_index")
    _image_sizes(ctx, sizes)
    return [(rows, 4)]


register(OpSpec(
    "clip_boxes", "Clip each box to its image's resized size (torchvision's clip_boxes_to_image).",
    _infer_clip, inputs=3, function=True, check_inputs=_dtype_check(_INDEX_IN)))


def _infer_small(a, shapes, ctx):
    rows = _boxes(ctx, shapes[0])
    return [(ctx.dynamic("K", bound=rows),)]


register(OpSpec(
    "remove_small_boxes",
    "Indices (increasing) of the boxes whose width and height are both >= min_size.",
    _infer_small, (AttrSpec("min_size", "float", 0.001, check="nonneg"),), function=True, dynamic=True,
    dtypes=lambda a, ins: [I64]))


def _infer_nms(a, shapes, ctx):
    rows = _boxes(ctx, shapes[0])
    _vector(ctx, shapes[1], rows, "scores")
    if len(shapes) == 3:
        _vector(ctx, shapes[2], rows, "groups")
    return [(ctx.dynamic("K", bound=rows),)]


register(OpSpec(
    "nms",
    "Non-maximum suppression (torchvision.ops.nms): the indices of the boxes kept, by decreasing "
    "score; a box is dropped when its IoU with a kept, higher-scoring box is > iou_threshold.",
    _infer_nms, (AttrSpec("iou_threshold", "float", 0.5, check="unit"),), inputs=2, function=True, dynamic=True,
    dtypes=lambda a, ins: [I64]))

register(OpSpec(
    "batched_nms",
    "NMS within each group (torchvision.ops.batched_nms): boxes of different groups never suppress "
    "each other; indices by decreasing score.",
    _infer_nms, (AttrSpec("iou_threshold", "float", 0.5, check="unit"),), inputs=3, function=True, dynamic=True,
    dtypes=lambda a, ins: [I64], check_inputs=_dtype_check({2: (I64, "groups")})))


# ---- RoI pooling ---------------------------------------------------------------------------
def _roi_out(a, feature, rows, ctx):
    need_rank(ctx, feature, (4,), "[N, C, H, W] feature map")
    if a["spatial_scale"] <= 0:
        ctx.fail(f"spatial_scale must be positive, got {a['spatial_scale']}")
    return (rows, feature[1]) + tuple(a["output_size"])


def _infer_roi(a, shapes, ctx):
    feature, boxes, index = shapes
    rows = _boxes(ctx, boxes)
    _vector(ctx, index, rows, "batch_index")
    return [_roi_out(a, feature, rows, ctx)]


def _roi_macs(samples):
    def macs(a, shapes, outs):
        return D.mul(D.mul(outs[0][0], outs[0][1]), a["output_size"][0] * a["output_size"][1] * samples(a))
    return macs


_ROI_ATTRS = (AttrSpec("output_size", "pair", 7, check="positive"),
              AttrSpec("spatial_scale", "float", 1.0))
_ALIGN_ATTRS = (AttrSpec("sampling_ratio", "int", -1, doc="samples per bin side; <= 0: adaptive"),
                AttrSpec("aligned", "bool", False, doc="shift boxes by -0.5 pixel (the half-pixel fix)"))


def _align_samples(a):
    return 4 * max(a["sampling_ratio"], 2) ** 2      # 4 reads per bilinear sample


register(OpSpec(
    "roi_align",
    "RoIAlign (torchvision.ops.roi_align): each box of `boxes` on its image's feature map, average of "
    "bilinear samples per output bin.",
    _infer_roi, _ROI_ATTRS + _ALIGN_ATTRS, inputs=3, function=True, macs=_roi_macs(_align_samples),
    check_inputs=_dtype_check({2: (I64, "batch_index")})))

register(OpSpec(
    "roi_pool",
    "RoI max pooling (torchvision.ops.roi_pool, Fast R-CNN): each box's integer-rounded region split "
    "into output_size bins, max per bin.",
    _infer_roi, _ROI_ATTRS, inputs=3, function=True, macs=_roi_macs(lambda a: 1),
    check_inputs=_dtype_check({2: (I64, "batch_index")})))


def _infer_msroi(a, shapes, ctx):
    if len(shapes) < 4:
        ctx.fail(f"takes one or more feature maps, then boxes, batch_index and image_sizes; got "
                 f"{len(shapes)} tensor{'s' if len(shapes) != 1 else ''}")
    *features, boxes, index, sizes = shapes
    rows = _boxes(ctx, boxes)
    _vector(ctx, index, rows, "batch_index")
    _image_sizes(ctx, sizes)
    out = None
    for i, f in enumerate(features):
        need_rank(ctx, f, (4,), "[N, C, H, W] feature map")
        if out is None:
            out = _roi_out(dict(a, spatial_scale=1.0), f, rows, ctx)
        else:
            ctx.require_eq(f[1], features[0][1], f"feature map {i} has {D.fmt(f[1])} channels, map 0 has "
                                                 f"{D.fmt(features[0][1])}")
    if a["canonical_scale"] <= 0:
        ctx.fail(f"canonical_scale must be positive, got {a['canonical_scale']}")
    return [out]


register(OpSpec(
    "multiscale_roi_align",
    "torchvision's MultiScaleRoIAlign: each box pooled (RoIAlign) from the feature map its size "
    "selects (LevelMapper: level = floor(canonical_level + log2(sqrt(area) / canonical_scale))), "
    "the maps' scales inferred from their size against the largest resized image.",
    _infer_msroi,
    (AttrSpec("output_size", "pair", 7, check="positive"),
     AttrSpec("sampling_ratio", "int", 2),
     AttrSpec("canonical_scale", "int", 224),
     AttrSpec("canonical_level", "int", 4)),
    inputs=None, function=True, macs=_roi_macs(_align_samples),
    check_inputs=lambda ins, ctx: _dtype_check({-2: (I64, "batch_index"), -1: (I64, "image_sizes")})(ins, ctx)))


# ---- the region proposal network -----------------------------------------------------------
def _infer_rpn_head(a, shapes, ctx):
    c = shapes[0][1] if len(shapes[0]) == 4 else None
    for i, s in enumerate(shapes):
        need_rank(ctx, s, (4,), "[N, C, H, W] feature map")
        if not D.is_static(s[1]):
            ctx.fail(f"feature map {i} has a symbolic channel count {D.fmt(s[1])}")
        ctx.require_eq(s[1], c, f"feature map {i} has {D.fmt(s[1])} channels, map 0 has {D.fmt(c)}")
    A = a["num_anchors"]
    return ([(s[0], A, s[2], s[3]) for s in shapes] + [(s[0], 4 * A, s[2], s[3]) for s in shapes])


def _rpn_head_params(a, shapes, ctx):
    c, A = int(shapes[0][1]), a["num_anchors"]
    out = {}
    for i in range(a["conv_depth"]):
        out[f"conv.{i}.0.weight"] = ParamSpec((c, c, 3, 3), "normal", scale=0.01)
        out[f"conv.{i}.0.bias"] = ParamSpec((c,), "zeros")
    for name, k in (("cls_logits", A), ("bbox_pred", 4 * A)):
        out[f"{name}.weight"] = ParamSpec((k, c, 1, 1), "normal", scale=0.01)
        out[f"{name}.bias"] = ParamSpec((k,), "zeros")
    return out


def _rpn_head_macs(a, shapes, outs):
    c, A = int(shapes[0][1]), a["num_anchors"]
    per_pixel = c * c * 9 * a["conv_depth"] + c * 5 * A
    total = 0
    for s in shapes:
        total = D.add(total, D.mul(D.mul(s[2], s[3]), per_pixel))     # per sample, as every op
    return total


register(OpSpec(
    "RPNHead",
    "torchvision's RPNHead, shared by every input level: conv_depth 3x3 convs with ReLU, then 1x1 "
    "convs to num_anchors objectness logits and 4 * num_anchors box deltas. Outputs the "
    "objectness maps of every level, then the delta maps.",
    _infer_rpn_head,
    (AttrSpec("num_anchors", "int", 3, check="positive"),
     AttrSpec("conv_depth", "int", 1, check="positive")),
    inputs=None, params=_rpn_head_params, macs=_rpn_head_macs))


def _pair(a, ctx, name):
    v = a[name]
    if len(v) == 1:
        v = (v[0], v[0])
    if len(v) != 2:
        ctx.fail(f"'{name}' takes one count or a [train, test] pair, got {len(v)} values")
    a[name] = v


def _per_location(count, hw):
    """k where `count` is provably k * `hw` (k a positive int), else None."""
    env = {name: 7 for name in D.symbols(count) | D.symbols(hw)}
    c, h = int(D.evaluate(count, env)), int(D.evaluate(hw, env))
    if h <= 0 or c < h or c % h:
        return None
    return c // h if D.same(count, D.mul(hw, c // h)) is True else None


def _resolve_rpn(a, shapes, ctx):
    for name in ("pre_nms_top_n", "post_nms_top_n"):
        _pair(a, ctx, name)
    if a["bg_iou_thresh"] > a["fg_iou_thresh"]:
        ctx.fail(f"bg_iou_thresh ({a['bg_iou_thresh']}) is above fg_iou_thresh ({a['fg_iou_thresh']})")
    return a


def _infer_rpn(a, shapes, ctx):
    if len(shapes) < 4 or (len(shapes) - 1) % 3:
        ctx.fail(f"takes 3L + 1 tensors (L objectness maps, L delta maps, L anchor sets, image_sizes), "
                 f"got {len(shapes)}")
    L = (len(shapes) - 1) // 3
    objs, deltas, anchors, sizes = shapes[:L], shapes[L:2 * L], shapes[2 * L:3 * L], shapes[-1]
    n = _image_sizes(ctx, sizes)
    per = 2 if a["objectness"] == "softmax2" else 1
    for i in range(L):
        o, d, an = objs[i], deltas[i], anchors[i]
        need_rank(ctx, o, (4,), "[N, A, H, W] objectness map")
        need_rank(ctx, d, (4,), "[N, 4A, H, W] box delta map")
        if not D.is_static(o[1]) or o[1] % per:
            ctx.fail(f"objectness map {i} has {D.fmt(o[1])} channels; with objectness = "
                     f"'{a['objectness']}' it needs {per} per anchor")
        A = o[1] // per
        ctx.require_eq(d[1], 4 * A, f"delta map {i} has {D.fmt(d[1])} channels, 4 per anchor is {4 * A}")
        for j in (0, 2, 3):
            ctx.require_eq(d[j], o[j], f"delta map {i} is {D.fmt_shape(d)}, objectness map {i} is "
                                       f"{D.fmt_shape(o)}")
        ctx.require_eq(o[0], n, f"objectness map {i} has batch {D.fmt(o[0])}, image_sizes has {D.fmt(n)}")
        _boxes(ctx, an, f"anchors {i}")
        # the maps' sizes after a detection_transform are data-dependent, so the requirement below
        # is dropped; a different count of anchors per location is still provably wrong
        per_loc = _per_location(an[0], D.mul(o[2], o[3]))
        if per_loc is not None and per_loc != A:
            ctx.fail(f"anchor set {i} has {per_loc} anchors per location, objectness map {i} has "
                     f"{A} (num_anchors = len(sizes) * len(aspect_ratios))")
        ctx.require_eq(an[0], D.mul(D.mul(o[2], o[3]), A),
                       f"anchor set {i} has {D.fmt(an[0])} anchors; its map {D.fmt_shape(o)} needs "
                       f"H * W * {A}")
    r = ctx.dynamic("R", bound=D.mul(n, a["post_nms_top_n"][1]))
    return [(r, 4), (r,)]


register(OpSpec(
    "rpn_proposals",
    "torchvision's RegionProposalNetwork after its head: per level the pre_nms_top_n best "
    "anchors, decoded, clipped, small ones and those under score_thresh dropped, NMS per level, the "
    "post_nms_top_n best per image (counts as [train, test]). In training with targets the RPN "
    "losses are computed too. objectness = 'softmax2': 2A channels per map (A background then A "
    "foreground logits), as the original Faster R-CNN.",
    _infer_rpn,
    (AttrSpec("pre_nms_top_n", "ints", (2000, 1000), check="positive"),
     AttrSpec("post_nms_top_n", "ints", (2000, 1000), check="positive"),
     AttrSpec("nms_thresh", "float", 0.7, check="unit"),
     AttrSpec("score_thresh", "float", 0.0),
     AttrSpec("min_size", "float", 0.001, check="nonneg"),
     AttrSpec("fg_iou_thresh", "float", 0.7, check="unit"),
     AttrSpec("bg_iou_thresh", "float", 0.3, check="unit"),
     AttrSpec("batch_size_per_image", "int", 256, check="positive"),
     AttrSpec("positive_fraction", "float", 0.5, check="unit"),
     AttrSpec("objectness", "str", "sigmoid", choices=("sigmoid", "softmax2"))),
    inputs=None, function=True, resolve=_resolve_rpn, dynamic=True, dtypes=lambda a, ins: ["float32", I64],
    check_inputs=lambda ins, ctx: _dtype_check({-1: (I64, "image_sizes")})(ins, ctx)))


# ---- the RoI heads -------------------------------------------------------------------------
def _resolve_sample(a, shapes, ctx):
    _floats4(a, ctx)
    return a


def _infer_sample(a, shapes, ctx):
    boxes, index = shapes
    rows = _boxes(ctx, boxes)
    _vector(ctx, index, rows, "batch_index")
    return [tuple(boxes), tuple(index)]


register(OpSpec(
    "sample_rois",
    "torchvision's RoIHeads.select_training_samples: in training with targets, the ground-truth "
    "boxes are added to the proposals, matched (IoU fg/bg thresholds) and batch_size_per_image "
    "sampled per image; otherwise the proposals pass through unchanged.",
    _infer_sample,
    (AttrSpec("fg_iou_thresh", "float", 0.5, check="unit"),
     AttrSpec("bg_iou_thresh", "float", 0.5, check="unit"),
     AttrSpec("batch_size_per_image", "int", 512, check="positive"),
     AttrSpec("positive_fraction", "float", 0.25, check="unit"),
     AttrSpec("weights", "floats", (10.0, 10.0, 5.0, 5.0))),
    inputs=2, function=True, resolve=_resolve_sample, dtypes=lambda a, ins: ["float32", I64],
    check_inputs=_dtype_check({1: (I64, "batch_index")})))


def _infer_post(a, shapes, ctx):
    logits, deltas, boxes, index, sizes = shapes
    _floats4(a, ctx)
    rows = _boxes(ctx, boxes)
    _vector(ctx, index, rows, "batch_index")
    n = _image_sizes(ctx, sizes)
    if len(logits) != 2 or not D.is_static(logits[1]) or logits[1] < 2:
        ctx.fail(f"class_logits must be [R, classes] with 2 or more classes (background first), got "
                 f"{D.fmt_shape(logits)}")
    ctx.require_eq(logits[0], rows, f"class_logits has {D.fmt(logits[0])} rows, the boxes {D.fmt(rows)}")
    if len(deltas) != 2:
        ctx.fail(f"box_regression must be [R, 4 * classes], got {D.fmt_shape(deltas)}")
    ctx.require_eq(deltas[1], 4 * logits[1], f"box_regression has {D.fmt(deltas[1])} columns, 4 per class is "
                                             f"{4 * logits[1]}")
    ctx.require_eq(deltas[0], rows, f"box_regression has {D.fmt(deltas[0])} rows, the boxes {D.fmt(rows)}")
    d = ctx.dynamic("D", bound=D.mul(n, a["detections_per_img"]))
    return [(d, 4), (d,), (d,), (d,)]


register(OpSpec(
    "detect_postprocess",
    "torchvision's RoIHeads.postprocess_detections: softmax scores, boxes decoded per class and "
    "clipped, background dropped, scores > score_thresh, small boxes dropped, NMS per class and "
    "image, the detections_per_img best per image. Outputs boxes, scores, labels, batch_index. "
    "In training with targets it computes the classifier and box losses instead.",
    _infer_post,
    (AttrSpec("score_thresh", "float", 0.05),
     AttrSpec("nms_thresh", "float", 0.5, check="unit"),
     AttrSpec("detections_per_img", "int", 100, check="positive"),
     AttrSpec("weights", "floats", (10.0, 10.0, 5.0, 5.0)),
     AttrSpec("min_size", "float", 0.01, check="nonneg")),
    inputs=5, function=True, dynamic=True, dtypes=lambda a, ins: ["float32", "float32", I64, I64],
    check_inputs=_dtype_check({3: (I64, "batch_index"), 4: (I64, "image_sizes")})))


register(OpSpec(
    "rescale_boxes",
    "Map boxes from the resized images back to the original ones (torchvision's transform."
    "postprocess): x scaled by original w / resized w, y by original h / resized h.",
    _infer_clip, inputs=3, function=True, check_inputs=_dtype_check(_INDEX_IN)))
