"""ONNX emitters for the composite detection ops: rpn_proposals, sample_rois (identity: the ONNX
target is eval only) and detect_postprocess.

Semantics are torchvision 0.29's eval path (RegionProposalNetwork.filter_proposals and
RoIHeads.postprocess_detections) with flat, image-major outputs: boxes [R, 4] plus
batch_index [R]. N, H and W are symbolic: every count is computed at run time.

Per-group NMS: ONNX NonMaxSuppression runs independently per (batch, class) pair, so the groups
are put on those two axes (scores of the other groups masked below its score threshold). The
boxes are still shifted as torchvision's batched_nms shifts them (group * (max coordinate + 1),
up to 4000 coordinates per image, else not): the IoU of shifted float32 boxes can round to the
other side of the threshold, and the results must be torchvision's. Masked entries get the score -1 and the
NMS score threshold is -0.5 (onnxruntime keeps scores strictly above it); every real score is a
probability in [0, 1], so none is lost. The IoU threshold is compared as torchvision does
(detection.iou_below). Each (image, group) NMS stops after as many boxes as an image keeps in
the end (post_nms_top_n, detections_per_img): any box among an image's best is among its
group's best.

Order: within an image, by decreasing score, as torchvision. Equal scores are ordered by
candidate index (torchvision's per-image candidate order: level-major top-n positions for the
RPN, proposal then class for the detections); torchvision sorts with torch.sort(descending=True),
which is not stable on CPU, so its order among exactly equal scores is unspecified. NMS itself
also breaks ties by the lower candidate index (onnxruntime does; torchvision's order follows the
same unstable sort). With continuous scores ties do not occur.
"""
from __future__ import annotations

import math

import numpy as np

from .builder import FLOAT, INT64, OnnxBuilder, reduce
from .detection import BATCHED_NMS_SWITCH, big_enough, clip, column, count, decode, f32, iou_below
from .emitters import emitter

_MASKED = -1.0          # score of an entry NMS must not see
_NMS_SCORE_MIN = -0.5   # NonMaxSuppression keeps scores > this: every probability, no masked one
_DEFAULT_CLAMP = math.log(1000.0 / 16)


def _eval(pair):
    """The eval value of a (train, test) pair attribute (an int accepted too)."""
    return int(pair[1]) if isinstance(pair, (list, tuple)) else int(pair)


# ---- steps shared by both ops (the primitives are detection.py's) -----------------------------
def _arange(b: OnnxBuilder, n1: str, hint: str) -> str:
    """int64 [n]: 0 .. n-1, n given as a [1] tensor."""
    n = b.add("Squeeze", [n1, b.ints([0])], hint + "_n")
    return b.add("Range", [b.const(np.int64(0), "zero_i"), n, b.const(np.int64(1), "one_i")], hint)


def _cat(b: OnnxBuilder, xs: list, hint: str, axis: int) -> str:
    return xs[0] if len(xs) == 1 else b.add("Concat", xs, hint, axis=axis)


def _nms(b: OnnxBuilder, boxes: str, scores: str, cap, iou: float) -> str:
    """NonMaxSuppression -> selected [K, 3] (batch, class, box): per (batch, class), by decreasing
    score (ties: lower box index first), at most `cap` each; IoU > iou as torchvision compares it
    (iou_below)."""
    return b.add("NonMaxSuppression", [boxes, scores, b.ints([int(cap)], "nms_cap"),
                                       b.const(np.array([iou_below(iou)], np.float32), "iou"),
                                       b.const(np.array([_NMS_SCORE_MIN], np.float32), "nms_min")],
                 "selected", center_point_box=0)


def _max_per_row(b: OnnxBuilder, x: str, width: int | None = None) -> str:
    """[A, ...] float (non-negative where it matters) -> [A]: the max of each row, 0 for an empty
    row (a zero column padded on, so that an empty row or an empty A never reduces nothing)."""
    flat = b.add("Reshape", [x, b.ints([-1, width] if width else [0, -1])], "rows_flat")
    padded = b.add("Pad", [flat, b.ints([0, 0, 0, 1])], "rows_padded")
    return reduce(b, "ReduceMax", padded, [1], keepdims=0)


def _group_shift(b: OnnxBuilder, coords_max: str, n_valid: str) -> str:
    """[N] float: per image, the step torchvision's batched_nms offsets each group by (group *
    step; step = max coordinate + 1, in float32) where it uses the coordinate trick (at most
    BATCHED_NMS_SWITCH box coordinates on CPU), else 0: one NMS per group, which is what the
    NMS on the class axis does anyway. The shifted IoU can round to the other side of the
    threshold than the plain one, so the shift is kept for equal results."""
    step = b.add("Add", [coords_max, f32(b, 1.0, "one")], "group_step")
    trick = b.add("LessOrEqual", [b.add("Mul", [n_valid, b.ints(4)], "n_coords"), b.ints(BATCHED_NMS_SWITCH)],
                  "coordinate_trick")
    return b.add("Where", [trick, step, f32(b, 0.0, "zero")], "group_shift")


def _sort_perm(b: OnnxBuilder, key: str, largest: int) -> str:
    """The permutation sorting `key` [K] (TopK over all of it; ONNX's TopK is stable: equal keys
    keep their order, lower index first)."""
    k = count(b, key, 0, "count")
    _, perm = b.add("TopK", [key, k], [b.fresh("sorted_key"), b.fresh("perm")], axis=0,
                    largest=largest, sorted=1)
    return perm


def _per_image_best(b: OnnxBuilder, sel: str, score: str, img: str, n_images: str, top: int,
                    first_key: str | None = None) -> str:
    """The rows of `sel` [K, c] to keep, in output order: sorted by image, then decreasing score
    (ties kept in the order `first_key` ascending gives, or sel's order), the first `top` of each
    image. `score` and `img` are sel's scores f32[K] and images i64[K]; n_images is [1]."""
    order = None
    for key, largest in ((first_key, 0), (score, 1), (img, 0)):
        if key is None:
            continue
        if order is not None:
            key = b.add("Gather", [key, order], "key", axis=0)
        perm = _sort_perm(b, key, largest)
        order = perm if order is None else b.add("Gather", [order, perm], "order", axis=0)
    img_sorted = b.add("Gather", [img, order], "img_sorted", axis=0)
    # rank within the image: position - the number of rows of earlier images
    one_hot = b.add("Equal", [b.add("Unsqueeze", [img_sorted, b.ints([1])], "img_col"),
                              _arange(b, n_images, "images")], "img_onehot")
    counts = reduce(b, "ReduceSum", b.add("Cast", [one_hot], "onehot_i", to=INT64), [0], keepdims=0)
    start = b.add("CumSum", [counts, b.const(np.int64(0), "axis0")], "img_start", exclusive=1)
    rank = b.add("Sub", [_arange(b, count(b, img_sorted, 0, "count"), "position"),
                         b.add("Gather", [start, img_sorted], "row_start", axis=0)], "rank")
    keep = b.add("NonZero", [b.add("Less", [rank, b.ints([top])], "in_top")], "kept")
    keep = b.add("Reshape", [keep, b.ints([-1])], "kept_flat")
    return b.add("Gather", [sel, b.add("Gather", [order, keep], "kept_rows", axis=0)], "final", axis=0)


# ---- rpn_proposals --------------------------------------------------------------------------
def _level_logits(b: OnnxBuilder, o: str, a: int, softmax2: bool) -> str:
    """objectness [N, A, H, W] (or [N, 2A, H, W] Caffe background/foreground, as fg - bg) ->
    [N, H*W*A], location-major as concat_box_prediction_layers."""
    if softmax2:
        pairs = b.add("Reshape", [o, b.ints([0, 2, a, -1])], "obj_pairs")
        fg = b.add("Slice", [pairs, b.ints([1]), b.ints([2]), b.ints([1])], "obj_fg")
        bg = b.add("Slice", [pairs, b.ints([0]), b.ints([1]), b.ints([1])], "obj_bg")
        flat = b.add("Reshape", [b.add("Sub", [fg, bg], "obj_diff"), b.ints([0, a, -1])], "obj_flat")
    else:
        flat = b.add("Reshape", [o, b.ints([0, a, -1])], "obj_flat")
    return b.add("Reshape", [b.add("Transpose", [flat], "obj_t", perm=[0, 2, 1]), b.ints([0, -1])], "obj")


def _level_deltas(b: OnnxBuilder, d: str, a: int) -> str:
    """deltas [N, 4A, H, W] -> [N, H*W*A, 4]."""
    flat = b.add("Reshape", [d, b.ints([0, a, 4, -1])], "deltas_flat")
    return b.add("Reshape", [b.add("Transpose", [flat], "deltas_t", perm=[0, 3, 1, 2]), b.ints([0, -1, 4])],
                 "deltas")


@emitter("rpn_proposals")
def _rpn_proposals(b: OnnxBuilder, node, ins, outs):
    a = node.attrs
    L = (len(ins) - 1) // 3
    obj, dlt, anc, image_sizes = ins[:L], ins[L:2 * L], ins[2 * L:3 * L], ins[3 * L]
    softmax2 = a.get("objectness", "sigmoid") == "softmax2"
    pre_n, post_n = _eval(a["pre_nms_top_n"]), _eval(a["post_nms_top_n"])
    logits, deltas, anchors, levels = [], [], [], []
    for l in range(L):
        n_anchors = int(node.inputs[l].shape[1]) // (2 if softmax2 else 1)     # static (the IR checks)
        lg = _level_logits(b, obj[l], n_anchors, softmax2)
        k = b.add("Min", [count(b, lg, 1, "level_count"), b.ints([pre_n])], "level_top_n")
        top, idx = b.add("TopK", [lg, k], [b.fresh("top_logits"), b.fresh("top_idx")], axis=1,
                         largest=1, sorted=1)
        logits.append(top)
        deltas.append(b.add("GatherND", [_level_deltas(b, dlt[l], n_anchors),
                                         b.add("Unsqueeze", [idx, b.ints([2])], "top_idx3")],
                            "top_deltas", batch_dims=1))
        anchors.append(b.add("Gather", [anc[l], idx], "top_anchors", axis=0))
        levels.append(b.add("Expand", [b.ints([l], "level"), k], "level_ids"))
    # the candidates [N, M] (M = sum of the levels' top-n), level-major as torchvision concatenates them
    logits, deltas = _cat(b, logits, "cand_logits", 1), _cat(b, deltas, "cand_deltas", 1)
    anchors, levels = _cat(b, anchors, "cand_anchors", 1), _cat(b, levels, "cand_levels", 0)
    # decode and clip the rows [N*M, 4] (weights 1, torchvision's default clamp), back to [N, M, 4]
    n_images = count(b, image_sizes, 0, "n_images")
    boxes = decode(b, b.add("Reshape", [deltas, b.ints([-1, 4])], "d_flat"),
                   b.add("Reshape", [anchors, b.ints([-1, 4])], "a_flat"), (1.0, 1.0, 1.0, 1.0), _DEFAULT_CLAMP)
    row_image = b.add("Expand", [b.add("Unsqueeze", [_arange(b, n_images, "images"), b.ints([1])], "images_col"),
                                 b.add("Shape", [logits], "nm")], "row_image")
    boxes = clip(b, boxes, b.add("Reshape", [row_image, b.ints([-1])], "row_image_flat"), image_sizes)
    boxes = b.add("Reshape", [boxes, b.add("Concat", [n_images, b.ints([-1, 4])], "nm4", axis=0)], "proposals")
    scores = b.add("Sigmoid", [logits], "objectness_prob")
    valid = b.add("And", [big_enough(b, boxes, float(a["min_size"])),
                          b.add("GreaterOrEqual", [scores, b.const(np.float32(a["score_thresh"]), "thresh")],
                                "score_ok")], "valid")
    # NMS: batch = image, class = level; scores [N, L, M], other levels masked
    in_level = b.add("Equal", [b.add("Unsqueeze", [levels, b.ints([0])], "levels_1m"),
                               b.ints([[l] for l in range(L)], "level_col")], "in_level")   # [L, M]
    mask = b.add("And", [b.add("Unsqueeze", [valid, b.ints([1])], "valid_n1m"), in_level], "nms_mask")
    nms_scores = b.add("Where", [mask, b.add("Unsqueeze", [scores, b.ints([1])], "scores_n1m"),
                                 b.const(np.float32(_MASKED), "masked")], "nms_scores")
    # torchvision's coordinate trick: level l's boxes + l * (max coordinate of the image's valid
    # candidates + 1) (clipped boxes are >= 0, so masked ones count as 0)
    coords = b.add("Where", [b.add("Unsqueeze", [valid, b.ints([2])], "valid_nm1"), boxes, f32(b, 0.0, "zero")],
                   "valid_coords")
    shift = _group_shift(b, _max_per_row(b, coords),
                         reduce(b, "ReduceSum", b.add("Cast", [valid], "valid_i", to=INT64), [1], keepdims=0))
    offsets = b.add("Mul", [b.add("Unsqueeze", [b.add("Cast", [levels], "levels_f", to=FLOAT), b.ints([0])], "levels_1m"),
                            b.add("Unsqueeze", [shift, b.ints([1])], "shift_n1")], "level_offsets")      # [N, M]
    shifted = b.add("Add", [boxes, b.add("Unsqueeze", [offsets, b.ints([2])], "offsets_nm1")], "boxes_for_nms")
    sel = _nms(b, shifted, nms_scores, post_n, float(a["nms_thresh"]))
    img, cand = column(b, sel, 0, "sel_img"), column(b, sel, 2, "sel_box")
    pairs = b.add("Concat", [b.add("Unsqueeze", [img, b.ints([1])], "img_c"),
                             b.add("Unsqueeze", [cand, b.ints([1])], "cand_c")], "img_cand", axis=1)
    sel_scores = b.add("GatherND", [scores, pairs], "sel_scores")
    final = _per_image_best(b, pairs, sel_scores, img, n_images, post_n)
    b.add("GatherND", [boxes, final], [outs[0]])
    b.add("Gather", [final, b.const(np.int64(0), "col")], [outs[1]], axis=1)


@emitter("sample_rois")
def _sample_rois(b: OnnxBuilder, node, ins, outs):
    """Eval: the proposals unchanged (training's sampling has no ONNX form; the target is eval)."""
    b.add("Identity", [ins[0]], [outs[0]])
    b.add("Identity", [ins[1]], [outs[1]])


# ---- detect_postprocess ---------------------------------------------------------------------
@emitter("detect_postprocess")
def _detect_postprocess(b: OnnxBuilder, node, ins, outs):
    a = node.attrs
    class_logits, box_regression, proposals, batch_index, image_sizes = ins[:5]
    top = int(a["detections_per_img"])
    probs = b.add("Softmax", [class_logits], "class_prob", axis=-1)                 # [R, C]
    # per-class decode [R, 4C], clipped as rows [R*C, 4] (each its proposal's image), then [R, C, 4]
    boxes = b.add("Reshape", [decode(b, box_regression, proposals, [float(w) for w in a["weights"]],
                                     _DEFAULT_CLAMP), b.ints([-1, 4])], "decoded_rows")
    row_image = b.add("Expand", [b.add("Unsqueeze", [batch_index, b.ints([1])], "bi_col"),
                                 b.add("Shape", [class_logits], "rc")], "row_image")
    boxes = clip(b, boxes, b.add("Reshape", [row_image, b.ints([-1])], "row_image_flat"), image_sizes)
    n_classes = int(node.inputs[0].shape[1])            # static (the IR checks); no -1: R may be 0
    boxes = b.add("Reshape", [boxes, b.add("Concat", [count(b, class_logits, 0, "r"), b.ints([n_classes, 4])],
                                           "rc4", axis=0)], "class_boxes")            # [R, C, 4]
    # drop the background class
    big = b.ints([np.iinfo(np.int64).max])
    boxes = b.add("Slice", [boxes, b.ints([1]), big, b.ints([1])], "fg_boxes")       # [R, C-1, 4]
    scores = b.add("Slice", [probs, b.ints([1]), big, b.ints([1])], "fg_scores")     # [R, C-1]
    valid = b.add("And", [b.add("Greater", [scores, b.const(np.float32(a["score_thresh"]), "thresh")],
                                "score_ok"),
                          big_enough(b, boxes, float(a["min_size"]))], "valid")
    # NMS: batch = class, class = image (rows of the other images masked), boxes [C-1, R, 4]
    n_images = count(b, image_sizes, 0, "n_images")
    boxes_t = b.add("Transpose", [boxes], "boxes_crc", perm=[1, 0, 2])
    own = b.add("Equal", [b.add("Unsqueeze", [batch_index, b.ints([0])], "bi_1r"),
                          b.add("Unsqueeze", [_arange(b, n_images, "image_ids"), b.ints([1])], "ids_n1")],
                "own_image")                                                            # [N, R]
    mask = b.add("And", [b.add("Unsqueeze", [b.add("Transpose", [valid], "valid_t", perm=[1, 0]), b.ints([1])],
                               "valid_c1r"), own], "nms_mask")                          # [C-1, N, R]
    nms_scores = b.add("Where", [mask, b.add("Unsqueeze", [b.add("Transpose", [scores], "scores_t", perm=[1, 0]),
                                                           b.ints([1])], "scores_c1r"),
                                 b.const(np.float32(_MASKED), "masked")], "nms_scores")
    # torchvision's coordinate trick per image: class c's boxes + c * (max coordinate of the
    # image's valid candidates + 1) (clipped boxes are >= 0, so masked ones count as 0)
    coords = b.add("Where", [b.add("Unsqueeze", [valid, b.ints([2])], "valid_rc1"), boxes, f32(b, 0.0, "zero")],
                   "valid_coords")
    row_max = _max_per_row(b, coords, 4 * (n_classes - 1))                                 # [R]
    own_max = b.add("Where", [own, b.add("Unsqueeze", [row_max, b.ints([0])], "row_max_1r"), f32(b, 0.0, "zero")],
                    "own_max")                                                          # [N, R]
    row_valid = reduce(b, "ReduceSum", b.add("Cast", [valid], "valid_i", to=INT64), [1], keepdims=0)   # [R]
    own_valid = b.add("Where", [own, b.add("Unsqueeze", [row_valid, b.ints([0])], "row_valid_1r"),
                                b.const(np.int64(0), "zero_i")], "own_valid")
    shift = _group_shift(b, _max_per_row(b, own_max),
                         reduce(b, "ReduceSum", own_valid, [1], keepdims=0))                # [N]
    labels = b.const(np.arange(1, n_classes, dtype=np.float32).reshape(-1, 1), "labels_f")  # [C-1, 1]
    offsets = b.add("Mul", [labels, b.add("Unsqueeze", [b.add("Gather", [shift, batch_index], "row_shift", axis=0),
                                                       b.ints([0])], "row_shift_1r")], "class_offsets")  # [C-1, R]
    shifted = b.add("Add", [boxes_t, b.add("Unsqueeze", [offsets, b.ints([2])], "offsets_cr1")], "boxes_for_nms")
    sel = _nms(b, shifted, nms_scores, top, float(a["nms_thresh"]))
    cls, img, row = (column(b, sel, i, h) for i, h in enumerate(("sel_class", "sel_img", "sel_row")))
    rc = b.add("Concat", [b.add("Unsqueeze", [row, b.ints([1])], "row_c"),
                          b.add("Unsqueeze", [cls, b.ints([1])], "cls_c")], "row_cls", axis=1)
    sel_scores = b.add("GatherND", [scores, rc], "sel_scores")
    n_fg = count(b, scores, 1, "n_fg")
    cand = b.add("Add", [b.add("Mul", [row, n_fg], "row_x"), cls], "cand_index")   # torchvision's order
    final = _per_image_best(b, sel, sel_scores, img, n_images, top, first_key=cand)
    cls, img, row = (column(b, final, i, h) for i, h in enumerate(("out_class", "out_img", "out_row")))
    cr = b.add("Concat", [b.add("Unsqueeze", [cls, b.ints([1])], "cls_c"),
                          b.add("Unsqueeze", [row, b.ints([1])], "row_c")], "cls_row", axis=1)
    b.add("GatherND", [boxes_t, cr], [outs[0]])
    b.add("GatherND", [scores, b.add("Gather", [cr, b.ints([1, 0])], "row_cls", axis=1)], [outs[1]])
    b.add("Add", [cls, b.ints([1])], [outs[2]])
    b.add("Identity", [img], [outs[3]])
