"""ONNX emitters for the detection primitives (Faster R-CNN): the image transform, anchors, box
coding, clipping, small-box removal, NMS and batched NMS, RoIAlign / RoIPool / MultiScaleRoIAlign,
the RPN head and the rescaling of boxes to the original images. Semantics are torchvision's
(0.29); every count that depends on the data, and every image size, is read at run time, so
one file serves any N, H, W. Needs opset 16 (RoiAlign's coordinate_transformation_mode).

Boxes are flat over the batch: f32[R, 4] (x1, y1, x2, y2) plus batch_index i64[R];
image_sizes is i64[N, 4] = (resized h, resized w, original h, original w).

The public module-level helpers (`nms_keep`, `iou_below`, `decode`, `encode`, `clip`, `clip_to`,
`per_box_sizes`, `remove_small`, `roi_align`, `take`, `column`, `columns`, `count`) work on ONNX
value names in a builder, for the composite ops (detection_post.py). Never imports torch.
"""
from __future__ import annotations

import math

import numpy as np
from onnx import GraphProto, helper

from ...errors import BackendError
from .builder import DOUBLE, FLOAT, INT64, OnnxBuilder
from .emitters import emitter

MIN_DETECTION_OPSET = 16
# torchvision's batched_nms runs one NMS per group (_batched_nms_vanilla) above this many box
# coordinates on CPU, else one NMS over boxes offset per group (_batched_nms_coordinate_trick)
BATCHED_NMS_SWITCH = 4000


def need_opset(b: OnnxBuilder, node) -> None:
    """Fail clearly below opset 16 (RoiAlign's coordinate_transformation_mode and the rest)."""
    if b.opset < MIN_DETECTION_OPSET:
        raise BackendError(f"{node.op} needs ONNX opset {MIN_DETECTION_OPSET} or later (got {b.opset})",
                           node.span, node.trace)


# ---- small building blocks ---------------------------------------------------------------------
def f32(b: OnnxBuilder, value, hint="c") -> str:
    return b.const(np.asarray(value, np.float32), hint)


def take(b: OnnxBuilder, x: str, indices: str, out=None) -> str:
    """x[indices] along dim 0 (Gather)."""
    return b.add("Gather", [x, indices], out or "taken", axis=0)


def column(b: OnnxBuilder, x: str, j: int, hint="col") -> str:
    """x[:, j] of a 2-D tensor: [R]."""
    return b.add("Gather", [x, b.ints(j)], hint, axis=1)


def columns(b: OnnxBuilder, x: str, start: int, step: int, hint="cols") -> str:
    """x[:, start::step] of a 2-D tensor: [R, k]."""
    return b.add("Slice", [x, b.ints([start]), b.ints([np.iinfo(np.int64).max]), b.ints([1]), b.ints([step])],
                 hint)


def count(b: OnnxBuilder, x: str, axis: int = 0, hint="n") -> str:
    """[1] int64: x's size along `axis`, read at run time."""
    return b.shape_dims(x, axis, axis + 1, hint)


def _scalar(b: OnnxBuilder, x1: str, hint="s") -> str:
    """[1] -> [] (a scalar)."""
    return b.add("Squeeze", [x1, b.ints([0])], hint)


def _flat_nonzero(b: OnnxBuilder, mask: str, out=None) -> str:
    """Indices (increasing, int64 [K]) where a 1-D bool mask is true."""
    return b.add("Squeeze", [b.add("NonZero", [mask], "nz"), b.ints([0])], out or "where")


def _subgraph(b: OnnxBuilder, name: str, build) -> GraphProto:
    """A graph for an If branch: the nodes `build()` adds (it returns its one output name, an
    int64 tensor); constants go to the main graph's initializers (outer scope). `build` must not
    call b.input_dim, whose cached nodes would then live only in the branch."""
    saved, b.nodes = b.nodes, []
    made = len(b.made)
    try:
        out = build()
        nodes = b.nodes
    finally:
        b.nodes = saved
        del b.made[made:]       # make_graph copies them: name_nodes names the copies in the If
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, INT64, None)])


# ---- box coding ----------------------------------------------------------------------------------
def _widths_centres(b, boxes, hint):
    """(widths, heights, ctr_x, ctr_y), each [R, 1], as torchvision computes them."""
    x1, y1, x2, y2 = (columns(b, boxes, j, 4, f"{hint}_{c}") for j, c in enumerate(("x1", "y1", "x2", "y2")))
    w = b.add("Sub", [x2, x1], f"{hint}_w")
    h = b.add("Sub", [y2, y1], f"{hint}_h")
    half = f32(b, 0.5, "half")
    cx = b.add("Add", [x1, b.add("Mul", [w, half], f"{hint}_hw")], f"{hint}_cx")
    cy = b.add("Add", [y1, b.add("Mul", [h, half], f"{hint}_hh")], f"{hint}_cy")
    return w, h, cx, cy


def decode(b: OnnxBuilder, deltas: str, boxes: str, weights, clamp: float, out=None) -> str:
    """torchvision's BoxCoder.decode_single: deltas f32[R, 4k] applied to boxes f32[R, 4] ->
    f32[R, 4k] (k boxes per row, each (x1, y1, x2, y2)). weights (wx, wy, ww, wh) divide the
    deltas; dw, dh are clamped at `clamp` (log(1000 / 16) in torchvision) before exp."""
    w, h, cx, cy = _widths_centres(b, boxes, "ref")
    wx, wy, ww, wh = (float(v) for v in weights)
    dx, dy, dw, dh = (b.add("Div", [columns(b, deltas, j, 4, f"d{j}"), f32(b, wt, "wt")], f"d{j}_w")
                      for j, wt in enumerate((wx, wy, ww, wh)))
    top = f32(b, clamp, "clamp")
    dw, dh = b.add("Min", [dw, top], "dw_c"), b.add("Min", [dh, top], "dh_c")
    pcx = b.add("Add", [b.add("Mul", [dx, w], "dxw"), cx], "pcx")
    pcy = b.add("Add", [b.add("Mul", [dy, h], "dyh"), cy], "pcy")
    pw = b.add("Mul", [b.add("Exp", [dw], "edw"), w], "pw")
    ph = b.add("Mul", [b.add("Exp", [dh], "edh"), h], "ph")
    half = f32(b, 0.5, "half")
    hw, hh = b.add("Mul", [half, pw], "c2c_w"), b.add("Mul", [half, ph], "c2c_h")
    corners = [b.add("Sub", [pcx, hw], "px1"), b.add("Sub", [pcy, hh], "py1"),
               b.add("Add", [pcx, hw], "px2"), b.add("Add", [pcy, hh], "py2")]     # each [R, k]
    stacked = b.add("Concat", [b.add("Unsqueeze", [c, b.ints([2])], "corner") for c in corners], "stacked",
                    axis=2)                                                         # [R, k, 4]
    # deltas' own shape, not [R, -1]: a Reshape cannot infer -1 from 0 rows
    return b.add("Reshape", [stacked, b.shape_dims(deltas, 0, 2, "deltas_shape")], out or "decoded")


def encode(b: OnnxBuilder, boxes: str, reference: str, weights, out=None) -> str:
    """torchvision's BoxCoder.encode_single(boxes, reference): the deltas f32[R, 4] that
    decode(., reference) takes to `boxes` (both f32[R, 4])."""
    gw, gh, gcx, gcy = _widths_centres(b, boxes, "gt")
    ew, eh, ecx, ecy = _widths_centres(b, reference, "ex")
    wx, wy, ww, wh = (f32(b, float(v), "wt") for v in weights)
    tx = b.add("Div", [b.add("Mul", [wx, b.add("Sub", [gcx, ecx], "ddx")], "wdx"), ew], "tx")
    ty = b.add("Div", [b.add("Mul", [wy, b.add("Sub", [gcy, ecy], "ddy")], "wdy"), eh], "ty")
    tw = b.add("Mul", [ww, b.add("Log", [b.add("Div", [gw, ew], "rw")], "lrw")], "tw")
    th = b.add("Mul", [wh, b.add("Log", [b.add("Div", [gh, eh], "rh")], "lrh")], "th")
    return b.add("Concat", [tx, ty, tw, th], out or "encoded", axis=1)


# ---- clipping, small boxes ---------------------------------------------------------------------
def per_box_sizes(b: OnnxBuilder, batch_index: str, image_sizes: str, hint="sizes") -> str:
    """f32[R, 4]: image_sizes' row of each box's image."""
    return b.add("Cast", [take(b, image_sizes, batch_index, f"{hint}_i")], hint, to=FLOAT)


def clip(b: OnnxBuilder, boxes: str, batch_index: str, image_sizes: str, out=None) -> str:
    """torchvision's clip_boxes_to_image per box: x clamped to [0, w], y to [0, h], with (h, w)
    the resized size of each box's image (image_sizes[batch_index, :2])."""
    sizes = per_box_sizes(b, batch_index, image_sizes)
    hi = b.add("Gather", [sizes, b.ints([1, 0, 1, 0])], "clip_hi", axis=1)     # w, h, w, h
    return clip_to(b, boxes, hi, out)


def clip_to(b: OnnxBuilder, boxes: str, hi: str, out=None) -> str:
    """boxes clamped to [0, hi] (hi f32, broadcast against [R, 4]: (w, h, w, h) per row)."""
    lo = b.add("Max", [boxes, f32(b, 0.0, "zero")], "clip_lo")
    return b.add("Min", [lo, hi], out or "clipped")


def big_enough(b: OnnxBuilder, boxes: str, min_size: float) -> str:
    """bool [...]: remove_small_boxes's keep mask of boxes [..., 4] (width and height both
    >= min_size)."""
    def side(i, hint):
        lo = b.add("Gather", [boxes, b.ints(i)], hint + "_lo", axis=-1)
        hi = b.add("Gather", [boxes, b.ints(i + 2)], hint + "_hi", axis=-1)
        return b.add("Sub", [hi, lo], hint)
    m = f32(b, min_size, "min_size")
    return b.add("And", [b.add("GreaterOrEqual", [side(0, "ws"), m], "w_ok"),
                         b.add("GreaterOrEqual", [side(1, "hs"), m], "h_ok")], "big_enough")


def remove_small(b: OnnxBuilder, boxes: str, min_size: float, out=None) -> str:
    """torchvision's remove_small_boxes: int64 [K], the increasing indices of the boxes whose
    width and height are both >= min_size."""
    return _flat_nonzero(b, big_enough(b, boxes, min_size), out)


# ---- NMS ------------------------------------------------------------------------------------------
def iou_below(iou: float) -> np.float32:
    """The float32 threshold t with (x > t) == (x > iou) for every float32 x: torchvision compares
    its float32 IoU with the double threshold, onnxruntime with a float32 one (0.3 rounds up to
    0.30000001 in float32: an IoU of exactly 0.3f is above 0.3)."""
    t = np.float32(iou)
    return np.nextafter(t, np.float32(-np.inf)) if float(t) > iou else t


def _nms_selected(b, boxes3, scores3, n, iou, with_threshold=False):
    """NonMaxSuppression (center_point_box = 0) -> selected [K, 3] (batch, class, box)."""
    args = [boxes3, scores3, n, f32(b, [iou_below(iou)], "iou")]
    if with_threshold:      # drops the masked (-inf) scores: onnxruntime keeps score > threshold
        args.append(f32(b, [np.finfo(np.float32).min], "lowest"))
    return b.add("NonMaxSuppression", args, "selected", center_point_box=0)


def _nms_plain(b, boxes, scores, iou, out=None):
    """torchvision.ops.nms: int64 [K], kept indices by decreasing score. onnxruntime visits the
    boxes by decreasing score (ties: lower index first, as torchvision's stable sort) and drops a
    box whose IoU with a kept one is > iou, as torchvision does."""
    boxes3 = b.add("Unsqueeze", [boxes, b.ints([0])], "boxes3")                      # [1, M, 4]
    scores3 = b.add("Unsqueeze", [scores, b.ints([0, 1])], "scores3")                # [1, 1, M]
    sel = _nms_selected(b, boxes3, scores3, count(b, boxes, 0, "m"), iou)
    return column(b, sel, 2, out or "keep")


def _nms_offset(b, boxes, scores, groups, iou, out=None):
    """torchvision's _batched_nms_coordinate_trick: boxes + groups * (max coordinate + 1), then
    one NMS (all in float32, as torchvision computes it)."""
    top = b.add("ReduceMax", [b.add("Reshape", [boxes, b.ints([-1])], "all_coords")], "max_coord", keepdims=0)
    step = b.add("Add", [top, f32(b, 1.0, "one")], "offset_step")
    offsets = b.add("Mul", [b.add("Cast", [groups], "groups_f", to=FLOAT), step], "offsets")
    shifted = b.add("Add", [boxes, b.add("Unsqueeze", [offsets, b.ints([1])], "offsets_col")], "boxes_for_nms")
    return _nms_plain(b, shifted, scores, iou, out)


def _nms_per_group(b, boxes, scores, groups, iou, out=None):
    """torchvision's _batched_nms_vanilla: one NMS per group (NonMaxSuppression's class axis:
    scores [1, G, M], -inf outside the group, G = max(groups) + 1), kept indices in increasing
    order, then sorted by decreasing score (TopK: ties keep the lower index first)."""
    m = count(b, boxes, 0, "m")
    g = b.add("Add", [b.add("ReduceMax", [groups], "max_group", keepdims=1), b.ints([1])], "n_groups")
    ids = b.add("Range", [b.ints(0), _scalar(b, g, "g"), b.ints(1)], "group_ids")           # [G]
    member = b.add("Equal", [b.add("Unsqueeze", [ids, b.ints([1])], "ids_col"),
                             b.add("Unsqueeze", [groups, b.ints([0])], "groups_row")], "member")  # [G, M]
    masked = b.add("Where", [member, b.add("Unsqueeze", [scores, b.ints([0])], "scores_row"),
                             f32(b, -np.inf, "neg_inf")], "masked")
    sel = _nms_selected(b, b.add("Unsqueeze", [boxes, b.ints([0])], "boxes3"),
                        b.add("Unsqueeze", [masked, b.ints([0])], "scores3"), m, iou, with_threshold=True)
    kept = column(b, sel, 2, "kept")
    k = count(b, kept, 0, "k")
    kept = b.add("TopK", [kept, k], ["kept_sorted", b.fresh("kept_pos")], axis=0, largest=0, sorted=1)[0]
    order = b.add("TopK", [take(b, scores, kept, "kept_scores"), k], ["kept_top", b.fresh("kept_order")],
                  axis=0, largest=1, sorted=1)[1]
    return take(b, kept, order, out or "keep")


def nms_keep(b: OnnxBuilder, boxes: str, scores: str, iou: float, groups: str | None = None,
             out=None) -> str:
    """Non-maximum suppression: int64 [K], the indices of the boxes kept, by decreasing score.

    boxes f32[M, 4] (x1, y1, x2, y2), scores f32[M]; a box is dropped when its IoU with a kept,
    higher-scoring box is > iou. groups (int64 [M], >= 0) or None: with groups, boxes of
    different groups never suppress each other (torchvision.ops.batched_nms, with its switch:
    over 4000 coordinates one NMS per group, else the offset-coordinate trick, chosen at run
    time with an If). Empty inputs give an empty result. Scores must be finite with groups (the
    per-group NMS masks the other groups' scores with -inf). Boxes must have x1 <= x2, y1 <= y2
    (as torchvision requires): onnxruntime orders flipped corners, torchvision does not."""
    if groups is None:
        return _nms_plain(b, boxes, scores, iou, out)
    m = count(b, boxes, 0, "m")
    big = _scalar(b, b.add("Greater", [m, b.ints([BATCHED_NMS_SWITCH // 4])], "many_boxes"), "many")
    then = _subgraph(b, b.fresh("nms_per_group"), lambda: _nms_per_group(b, boxes, scores, groups, iou))
    other = _subgraph(b, b.fresh("nms_offset"), lambda: _nms_offset(b, boxes, scores, groups, iou))
    return b.add("If", [big], out or "keep", then_branch=then, else_branch=other)


# ---- RoI pooling -------------------------------------------------------------------------------
def roi_align(b: OnnxBuilder, features: str, boxes: str, batch_index: str, output_size, spatial_scale: float,
              sampling_ratio: int, aligned: bool, out=None) -> str:
    """torchvision.ops.roi_align (average of bilinear samples per bin) with ONNX RoiAlign:
    aligned -> half_pixel, else output_half_pixel (boxes at least 1 x 1); sampling_ratio <= 0 is
    adaptive (ceil(roi size / output size) samples per bin side), ONNX's 0."""
    oh, ow = output_size
    return b.add("RoiAlign", [features, boxes, batch_index], out or "roi_align", mode="avg",
                 output_height=int(oh), output_width=int(ow), sampling_ratio=max(int(sampling_ratio), 0),
                 spatial_scale=float(spatial_scale),
                 coordinate_transformation_mode="half_pixel" if aligned else "output_half_pixel")


# ---- emitters ------------------------------------------------------------------------------------
@emitter("box_decode")
def _box_decode(b, node, ins, outs):
    need_opset(b, node)
    a = node.attrs
    decode(b, ins[0], ins[1], a["weights"], a["clamp"], outs)


@emitter("box_encode")
def _box_encode(b, node, ins, outs):
    need_opset(b, node)
    encode(b, ins[0], ins[1], node.attrs["weights"], outs)


@emitter("clip_boxes")
def _clip_boxes(b, node, ins, outs):
    need_opset(b, node)
    clip(b, ins[0], ins[1], ins[2], outs)


@emitter("rescale_boxes")
def _rescale_boxes(b, node, ins, outs):
    """torchvision's resize_boxes(boxes, resized, original): x * (float32(original w) /
    float32(resized w)), y likewise with the heights."""
    need_opset(b, node)
    sizes = per_box_sizes(b, ins[1], ins[2])                                      # [R, 4]
    ratio = b.add("Div", [b.add("Gather", [sizes, b.ints([3, 2])], "orig_wh", axis=1),
                          b.add("Gather", [sizes, b.ints([1, 0])], "new_wh", axis=1)], "ratio_wh")
    b.add("Mul", [ins[0], b.add("Concat", [ratio, ratio], "ratio", axis=1)], outs)


@emitter("remove_small_boxes")
def _remove_small(b, node, ins, outs):
    need_opset(b, node)
    remove_small(b, ins[0], node.attrs["min_size"], outs)


@emitter("nms")
def _nms(b, node, ins, outs):
    need_opset(b, node)
    nms_keep(b, ins[0], ins[1], node.attrs["iou_threshold"], None, outs)


@emitter("batched_nms")
def _batched_nms(b, node, ins, outs):
    need_opset(b, node)
    nms_keep(b, ins[0], ins[1], node.attrs["iou_threshold"], ins[2], outs)


@emitter("anchors")
def _anchors(b, node, ins, outs):
    """torchvision's AnchorGenerator for one level: base anchors (numpy, float32, rounded half
    to even as torch rounds) shifted by (x, y) * stride, stride = image size // feature size,
    location-major ([Hf, Wf, A, 4] flattened)."""
    need_opset(b, node)
    a = node.attrs
    scales = np.asarray(a["sizes"], np.float32)
    ratios = np.asarray(a["aspect_ratios"], np.float32)
    h_ratios = np.sqrt(ratios)
    w_ratios = np.float32(1) / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    base = np.round(np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2)).astype(np.float32)    # [A, 4]
    fhw = b.shape_dims(ins[0], 2, 4, "feat_hw")
    ihw = b.shape_dims(ins[1], 2, 4, "img_hw")
    stride = b.add("Div", [ihw, fhw], "stride")                 # int64 division: floor for sizes >= 0
    shifts = []
    for axis, name in ((0, "y"), (1, "x")):
        n = _scalar(b, b.add("Gather", [fhw, b.ints([axis])], f"grid_{name}"), f"n{name}")
        s = b.add("Gather", [stride, b.ints([axis])], f"stride_{name}")
        shifts.append(b.add("Mul", [b.add("Range", [b.ints(0), n, b.ints(1)], f"r{name}"), s], f"shift_{name}"))
    sy = b.add("Unsqueeze", [shifts[0], b.ints([1])], "sy")                       # [Hf, 1]
    sx = b.add("Unsqueeze", [shifts[1], b.ints([0])], "sx")                       # [1, Wf]
    grid = b.add("Add", [b.add("Mul", [sy, b.ints(0)], "zy"), b.add("Mul", [sx, b.ints(0)], "zx")], "zero_grid")
    gy = b.add("Add", [grid, sy], "gy")
    gx = b.add("Add", [grid, sx], "gx")
    xyxy = b.add("Concat", [b.add("Unsqueeze", [t, b.ints([2])], "g") for t in (gx, gy, gx, gy)], "shifts",
                 axis=2)                                                           # [Hf, Wf, 4] int64
    xyxy = b.add("Cast", [b.add("Unsqueeze", [xyxy, b.ints([2])], "shifts4")], "shifts_f", to=FLOAT)
    all_ = b.add("Add", [xyxy, b.const(base, "base_anchors")], "anchors4")      # [Hf, Wf, A, 4]
    b.add("Reshape", [all_, b.ints([-1, 4])], outs)


@emitter("roi_align")
def _roi_align(b, node, ins, outs):
    need_opset(b, node)
    a = node.attrs
    roi_align(b, ins[0], ins[1], ins[2], a["output_size"], a["spatial_scale"], a["sampling_ratio"], a["aligned"],
              outs)


@emitter("roi_pool")
def _roi_pool(b, node, ins, outs):
    """torchvision.ops.roi_pool with MaxRoiPool (rois [R, 5]: the image index, then the box);
    onnxruntime's rounding and bins are Caffe's, as torchvision's."""
    need_opset(b, node)
    a = node.attrs
    idx = b.add("Cast", [b.add("Unsqueeze", [ins[2], b.ints([1])], "bi_col")], "bi_f", to=FLOAT)
    rois = b.add("Concat", [idx, ins[1]], "rois5", axis=1)
    b.add("MaxRoiPool", [ins[0], rois], outs, pooled_shape=[int(v) for v in a["output_size"]],
          spatial_scale=float(a["spatial_scale"]))


def _log2_f32(b, x: str, hint: str) -> str:
    """float32 log2(x) through double (onnx has no Log2): the correctly rounded value in all but
    rare cases, as torch's float32 log2."""
    xd = b.add("Cast", [x], f"{hint}_d", to=DOUBLE)
    l2 = b.add("Div", [b.add("Log", [xd], f"{hint}_ln"), b.const(np.float64(math.log(2.0)), "ln2")], f"{hint}_l2d")
    return b.add("Cast", [l2], hint, to=FLOAT)


@emitter("multiscale_roi_align")
def _multiscale_roi_align(b, node, ins, outs):
    """torchvision's MultiScaleRoIAlign. Level l's scale is 2 ** round(log2(H_l / max resized h))
    (read at run time); boxes are multiplied by it before RoiAlign (spatial_scale 1): exact, a
    power of two. Level of each box: floor(canonical_level + log2(sqrt(area) / canonical_scale)
    + 1e-6) clamped to the levels' range; per level NonZero -> Gather -> RoiAlign, then the levels'
    results concatenated and put back in box order by one Gather with the inverse of the
    concatenated indices (an argsort of that permutation): two copies of the pooled features,
    where a ScatterND per level copied the whole result each time."""
    need_opset(b, node)
    a = node.attrs
    *feats, boxes, batch_index, image_sizes = ins
    oh, ow = (int(v) for v in a["output_size"])
    max_h = b.add("ReduceMax", [column(b, image_sizes, 0, "resized_h")], "max_h", keepdims=1)   # [1] int64
    max_hd = b.add("Cast", [max_h], "max_h_d", to=DOUBLE)
    exps = []           # round(log2(scale)) per level, float32 [1]
    for i, f in enumerate(feats):
        fh = b.add("Cast", [b.shape_dims(f, 2, 3, f"feat{i}_h")], f"feat{i}_hd", to=DOUBLE)
        approx = b.add("Cast", [b.add("Div", [fh, max_hd], f"approx{i}_d")], f"approx{i}", to=FLOAT)
        exps.append(b.add("Round", [_log2_f32(b, approx, f"log_scale{i}")], f"scale_exp{i}"))
    two = f32(b, 2.0, "two")
    scales = [b.add("Pow", [two, e], f"scale{i}") for i, e in enumerate(exps)]
    if len(feats) == 1:
        rois = b.add("Mul", [boxes, scales[0]], "rois")
        roi_align(b, feats[0], rois, batch_index, (oh, ow), 1.0, a["sampling_ratio"], False, outs)
        return
    # LevelMapper: k_min = -log2(scale_0), k_max = -log2(scale_last)
    k_min = b.add("Neg", [exps[0]], "k_min")
    k_max = b.add("Neg", [exps[-1]], "k_max")
    ws = b.add("Sub", [column(b, boxes, 2, "bx2"), column(b, boxes, 0, "bx1")], "bw")
    hs = b.add("Sub", [column(b, boxes, 3, "by2"), column(b, boxes, 1, "by1")], "bh")
    s = b.add("Sqrt", [b.add("Mul", [ws, hs], "area")], "sqrt_area")
    rel = b.add("Div", [s, f32(b, float(a["canonical_scale"]), "canonical_scale")], "rel_size")
    lvl = b.add("Add", [f32(b, float(a["canonical_level"]), "canonical_level"), _log2_f32(b, rel, "log_rel")],
                "lvl_raw")
    lvl = b.add("Floor", [b.add("Add", [lvl, f32(b, 1e-6, "eps")], "lvl_eps")], "lvl_floor")
    lvl = b.add("Min", [b.add("Max", [lvl, k_min], "lvl_lo"), k_max], "lvl_clamped")
    levels = b.add("Cast", [b.add("Sub", [lvl, k_min], "lvl_rel")], "levels", to=INT64)        # [R]
    idxs, pooled = [], []
    for i, f in enumerate(feats):
        idx = _flat_nonzero(b, b.add("Equal", [levels, b.ints(i)], f"at_level{i}"), f"idx{i}")
        rois = b.add("Mul", [take(b, boxes, idx, f"boxes{i}"), scales[i]], f"rois{i}")
        pooled.append(roi_align(b, f, rois, take(b, batch_index, idx, f"bi{i}"), (oh, ow), 1.0,
                                a["sampling_ratio"], False, f"pooled_level{i}"))
        idxs.append(idx)
    order = b.add("Concat", idxs, "level_order", axis=0)            # [R]: a permutation of the boxes
    _, back = b.add("TopK", [order, count(b, boxes, 0, "rows")], [b.fresh("order_sorted"), b.fresh("box_order")], axis=0,
                    largest=0, sorted=1)
    by_level = b.add("Concat", pooled, "pooled_by_level", axis=0)
    b.add("Gather", [by_level, back], outs, axis=0)


@emitter("RPNHead")
def _rpn_head(b, node, ins, outs):
    """torchvision's RPNHead on every level: conv_depth x (3x3 conv, pad 1, ReLU), then the 1x1
    objectness and box-delta convs. Outputs: objectness of every level, then the deltas."""
    need_opset(b, node)
    a = node.attrs
    L = len(ins)
    convs = [(b.weight(node, f"conv.{i}.0.weight"), b.weight(node, f"conv.{i}.0.bias"))
             for i in range(a["conv_depth"])]
    cls = [b.weight(node, "cls_logits.weight"), b.weight(node, "cls_logits.bias")]
    box = [b.weight(node, "bbox_pred.weight"), b.weight(node, "bbox_pred.bias")]
    for lvl, x in enumerate(ins):
        t = x
        for w, bias in convs:
            t = b.add("Relu", [b.add("Conv", [t, w, bias], f"rpn_conv{lvl}", kernel_shape=[3, 3],
                                     pads=[1, 1, 1, 1])], f"rpn_t{lvl}")
        b.add("Conv", [t] + cls, [outs[lvl]], kernel_shape=[1, 1])
        b.add("Conv", [t] + box, [outs[L + lvl]], kernel_shape=[1, 1])


def _linear_along(b, x: str, axis: int, length: str, n_out: str) -> str:
    """Bilinear (half-pixel) resize of x along `axis` from `length` to `n_out` ([1] int64 each),
    written out as torch computes it with recomputed scales: r = float32(length) / n_out,
    src = max(r * (j + 0.5) - 0.5, 0) (rounded once: torch's CPU kernel fuses the multiply-add),
    i0 = min(floor(src), length - 1), i1 = min(i0 + 1, length - 1), w1 = clamp(src - i0, 0, 1),
    out = x[i0] * (1 - w1) + x[i1] * w1. (ONNX Resize maps positions by dividing by
    out / length: up to 1e-5 off on noisy images.)"""
    zero, one = f32(b, 0.0, "zero"), f32(b, 1.0, "one")
    r = b.add("Div", [b.add("Cast", [length], "len_f", to=FLOAT), b.add("Cast", [n_out], "out_f", to=FLOAT)], "r")
    j = b.add("Range", [b.ints(0), _scalar(b, n_out, "n"), b.ints(1)], "j")
    # r * (j + 0.5) - 0.5 rounded once to float32, as torch's kernel computes it (a fused
    # multiply-add): the product of float32 r and j + 0.5 is exact in double
    jd = b.add("Add", [b.add("Cast", [j], "j_d", to=DOUBLE), b.const(np.float64(0.5), "half_d")], "j_half")
    src = b.add("Sub", [b.add("Mul", [b.add("Cast", [r], "r_d", to=DOUBLE), jd], "src_s"),
                        b.const(np.float64(0.5), "half_d")], "src_d")
    src = b.add("Max", [b.add("Cast", [src], "src_h", to=FLOAT), zero], "src")
    last = b.add("Sub", [length, b.ints([1])], "last")
    i0 = b.add("Min", [b.add("Cast", [b.add("Floor", [src], "src_fl")], "src_i", to=INT64), last], "i0")
    i1 = b.add("Min", [b.add("Add", [i0, b.ints([1])], "next"), last], "i1")
    w1 = b.add("Sub", [src, b.add("Cast", [i0], "i0_f", to=FLOAT)], "frac")
    w1 = b.add("Min", [b.add("Max", [w1, zero], "frac_lo"), one], "w1")
    w0 = b.add("Sub", [one, w1], "w0")
    if axis == 2:                   # weights [out, 1] against [N, C, out, W]
        w0, w1 = (b.add("Unsqueeze", [w, b.ints([1])], "w_col") for w in (w0, w1))
    lo = b.add("Mul", [b.add("Gather", [x, i0], "lo_in", axis=axis), w0], "lo")
    hi = b.add("Mul", [b.add("Gather", [x, i1], "hi_in", axis=axis), w1], "hi")
    return b.add("Add", [lo, hi], f"resized{axis}")


@emitter("detection_transform")
def _detection_transform(b, node, ins, outs):
    """torchvision's GeneralizedRCNNTransform (eval, a batch of one size): normalise, resize by
    scale = min(min_size / min(h, w), max_size / max(h, w)) to floor(h * scale) x floor(w * scale)
    (double, as torch's interpolate with recompute_scale_factor), bilinear half-pixel (positions
    from the sizes, as torch's with recomputed scales), zero-pad bottom / right to a multiple of
    size_divisible; image_sizes [N, 4] = (resized h, w, original h, w). The resize is written out
    (_linear_along): equal to torch's to float32 rounding."""
    need_opset(b, node)
    a = node.attrs
    x = ins[0]
    c = len(a["mean"])
    mean = b.const(np.asarray(a["mean"], np.float32).reshape(c, 1, 1), "mean")
    std = b.const(np.asarray(a["std"], np.float32).reshape(c, 1, 1), "std")
    x = b.add("Div", [b.add("Sub", [x, mean], "centred"), std], "normalised")
    hw = b.shape_dims(ins[0], 2, 4, "orig_hw")                                    # [2] int64
    if a["min_size"]:
        hwd = b.add("Cast", [hw], "orig_hw_d", to=DOUBLE)
        lo = b.add("ReduceMin", [hwd], "short_side", keepdims=1)
        hi = b.add("ReduceMax", [hwd], "long_side", keepdims=1)
        scale = b.add("Min", [b.add("Div", [b.const(np.array([float(a["min_size"])]), "min_size"), lo], "s_min"),
                              b.add("Div", [b.const(np.array([float(a["max_size"])]), "max_size"), hi], "s_max")],
                      "scale")
        new_hw = b.add("Cast", [b.add("Floor", [b.add("Mul", [hwd, scale], "hw_scaled")], "hw_floor")], "new_hw",
                       to=INT64)
        for axis in (3, 2):         # along W, then H, as torch's kernel combines them
            x = _linear_along(b, x, axis, b.add("Gather", [hw, b.ints([axis - 2])], f"len{axis}"),
                              b.add("Gather", [new_hw, b.ints([axis - 2])], f"new_len{axis}"))
    else:
        new_hw = hw
    k = b.ints([a["size_divisible"]])
    padded = b.add("Mul", [b.add("Div", [b.add("Add", [new_hw, b.ints([a["size_divisible"] - 1])], "hw_up"), k],
                                 "hw_blocks"), k], "padded_hw")
    extra = b.add("Sub", [padded, new_hw], "pad_hw")
    pads = b.add("Concat", [b.ints([0, 0, 0, 0, 0, 0]), extra], "pads", axis=0)
    b.add("Pad", [x, pads], [outs[0]], mode="constant")
    row = b.add("Unsqueeze", [b.add("Concat", [new_hw, hw], "sizes_row", axis=0), b.ints([0])], "sizes_row2")
    n = b.shape_dims(ins[0], 0, 1, "n_images")
    b.add("Expand", [row, b.add("Concat", [n, b.ints([4])], "sizes_shape", axis=0)], [outs[1]])
