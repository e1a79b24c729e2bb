"""Detection primitives for generated torch modules (Faster R-CNN, issue 8).

This file is pasted verbatim into generated standalone sources (before detection_losses.py
and detection_pipeline.py, which call these functions by name), so it imports only math and
torch at top level and every top-level name starts with det_ / Det / DET_; private helpers
start with det__ops_.

Semantics are torchvision 0.29's (AnchorGenerator, BoxCoder, clip_boxes_to_image,
remove_small_boxes, ops.nms / batched_nms, ops.roi_align / roi_pool, MultiScaleRoIAlign,
RPNHead), with every per-box tensor flat over the batch: boxes [R, 4] (x1, y1, x2, y2) plus
batch_index i64[R], and image_sizes i64[N, 4] = (resized h, resized w, original h, original w).

det_nms, det_roi_align and det_roi_pool call torchvision.ops when torchvision imports with
its compiled ops (imported lazily, on first use) and DET_USE_TORCHVISION is true; otherwise
they run the pure-torch versions below, which follow torchvision's CPU kernels:
- det_nms: the same order (a stable descending sort of the scores: equal scores keep their
  index order, as the CPU kernel's `scores.sort(stable=True, descending=True)`), the same
  float IoU and the same `iou > threshold` test (made in double, as the kernel does), so the
  kept indices are identical. torchvision's CUDA kernel sorts unstably: on CUDA, ties between
  equal scores may be broken differently from the pure path.
- det_roi_align / det_roi_pool: the kernels' sample points, clamping, rounding and empty-bin
  rules in the same float arithmetic; results agree within float rounding (the sums run in
  another order). Gradients flow to the features only (torchvision gives the boxes none); the
  pure path gathers through F.embedding_bag, so it never materialises [R, C, oh, ow, samples].
  Not reproduced: NaN / -inf features in roi_pool (the kernel skips NaNs and starts its max at
  -FLT_MAX). Bin sizes are divided as IEEE floats also on CUDA (det__ops_div), so the pure
  path's bins on CUDA are the CPU kernel's.
"""
import math

import torch
from torch import nn
import torch.nn.functional as F

DET_USE_TORCHVISION = True      # tests set this to False to force the pure-torch path
DET_TORCHVISION_CACHE = []      # [torchvision.ops or None] once looked up
DET_GATHER_LIMIT = 1 << 21      # sample entries gathered per embedding_bag call (memory bound)


def det_torchvision_ops():
    """torchvision.ops when torchvision imports with its compiled ops and
    DET_USE_TORCHVISION is true, else None (the import is tried once, then cached)."""
    if not DET_USE_TORCHVISION:
        return None
    if not DET_TORCHVISION_CACHE:
        found = None
        try:
            import torchvision.ops as det__tv_ops
            from torchvision.extension import _has_ops as det__tv_has_ops
            if det__tv_has_ops():
                found = det__tv_ops
        except Exception:           # absent, or built against another torch
            found = None
        DET_TORCHVISION_CACHE.append(found)
    return DET_TORCHVISION_CACHE[0]


def det__ops_tv_for(*tensors):
    """torchvision.ops if it should run on these tensors (cpu / cuda), else None."""
    tv = det_torchvision_ops()
    if tv is None:
        return None
    for t in tensors:
        if t.device.type not in ("cpu", "cuda"):
            return None
    return tv


def det__ops_pair(size):
    if isinstance(size, (list, tuple)):
        if len(size) == 1:
            return int(size[0]), int(size[0])
        return int(size[0]), int(size[1])
    return int(size), int(size)


# ---------------------------------------------------------------- anchors and box coding

def det_anchors(feature, image, sizes=(32,), aspect_ratios=(0.5, 1.0, 2.0)):
    """torchvision AnchorGenerator for one feature level: [Hf * Wf * A, 4], A =
    len(sizes) * len(aspect_ratios); location-major (y, then x, then anchor), anchors
    ratio-major (sizes inner); stride = image size // feature size per dim (the padded
    batch's size); base anchors rounded."""
    grid_h, grid_w = int(feature.shape[-2]), int(feature.shape[-1])
    image_h, image_w = int(image.shape[-2]), int(image.shape[-1])
    dtype, device = feature.dtype, feature.device
    # AnchorGenerator.generate_anchors (float32, on the CPU), then cast to the feature's dtype
    scales = torch.as_tensor(list(sizes), dtype=torch.float32)
    ratios = torch.as_tensor(list(aspect_ratios), dtype=torch.float32)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).view(-1)
    hs = (h_ratios[:, None] * scales[None, :]).view(-1)
    base = (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round().to(dtype=dtype, device=device)
    # AnchorGenerator.grid_anchors: int32 offsets times an int64 0-d stride
    stride_h = torch.empty((), dtype=torch.int64, device=device).fill_(image_h // grid_h)
    stride_w = torch.empty((), dtype=torch.int64, device=device).fill_(image_w // grid_w)
    shifts_x = torch.arange(0, grid_w, dtype=torch.int32, device=device) * stride_w
    shifts_y = torch.arange(0, grid_h, dtype=torch.int32, device=device) * stride_h
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    shift_x = shift_x.reshape(-1)
    shift_y = shift_y.reshape(-1)
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
    return (shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4)


def det_box_decode(deltas, boxes, weights=(1.0, 1.0, 1.0, 1.0), clamp=math.log(1000.0 / 16)):
    """BoxCoder(weights, bbox_xform_clip=clamp).decode_single: deltas [R, 4k] relative to
    boxes [R, 4] -> boxes [R, 4k]."""
    boxes = boxes.to(deltas.dtype)
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights

    wx, wy, ww, wh = [float(v) for v in weights]
    dx = deltas[:, 0::4] / wx
    dy = deltas[:, 1::4] / wy
    dw = deltas[:, 2::4] / ww
    dh = deltas[:, 3::4] / wh
    dw = torch.clamp(dw, max=clamp)
    dh = torch.clamp(dh, max=clamp)

    pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
    pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
    pred_w = torch.exp(dw) * widths[:, None]
    pred_h = torch.exp(dh) * heights[:, None]
    half_h = torch.tensor(0.5, dtype=pred_ctr_y.dtype, device=pred_h.device) * pred_h
    half_w = torch.tensor(0.5, dtype=pred_ctr_x.dtype, device=pred_w.device) * pred_w
    return torch.stack((pred_ctr_x - half_w, pred_ctr_y - half_h,
                        pred_ctr_x + half_w, pred_ctr_y + half_h), dim=2).flatten(1)


def det_box_encode(boxes, reference, weights=(1.0, 1.0, 1.0, 1.0)):
    """BoxCoder(weights).encode_single(reference_boxes=boxes, proposals=reference): the
    deltas [R, 4] that take `reference` to `boxes`."""
    w = torch.as_tensor(list(weights), dtype=boxes.dtype, device=boxes.device)
    wx, wy, ww, wh = w[0], w[1], w[2], w[3]
    px1, py1 = reference[:, 0].unsqueeze(1), reference[:, 1].unsqueeze(1)
    px2, py2 = reference[:, 2].unsqueeze(1), reference[:, 3].unsqueeze(1)
    gx1, gy1 = boxes[:, 0].unsqueeze(1), boxes[:, 1].unsqueeze(1)
    gx2, gy2 = boxes[:, 2].unsqueeze(1), boxes[:, 3].unsqueeze(1)
    ex_widths = px2 - px1
    ex_heights = py2 - py1
    ex_ctr_x = px1 + 0.5 * ex_widths
    ex_ctr_y = py1 + 0.5 * ex_heights
    gt_widths = gx2 - gx1
    gt_heights = gy2 - gy1
    gt_ctr_x = gx1 + 0.5 * gt_widths
    gt_ctr_y = gy1 + 0.5 * gt_heights
    dx = wx * (gt_ctr_x - ex_ctr_x) / ex_widths
    dy = wy * (gt_ctr_y - ex_ctr_y) / ex_heights
    dw = ww * torch.log(gt_widths / ex_widths)
    dh = wh * torch.log(gt_heights / ex_heights)
    return torch.cat((dx, dy, dw, dh), dim=1)


def det_clip_boxes(boxes, batch_index, image_sizes):
    """clip_boxes_to_image for each box in its own image: x to [0, resized w], y to
    [0, resized h] (image_sizes[batch_index, :2])."""
    size = image_sizes[batch_index].to(device=boxes.device)
    h = size[:, 0].to(boxes.dtype)
    w = size[:, 1].to(boxes.dtype)
    x1 = torch.minimum(boxes[:, 0].clamp(min=0), w)
    y1 = torch.minimum(boxes[:, 1].clamp(min=0), h)
    x2 = torch.minimum(boxes[:, 2].clamp(min=0), w)
    y2 = torch.minimum(boxes[:, 3].clamp(min=0), h)
    return torch.stack((x1, y1, x2, y2), dim=1)


def det_remove_small_boxes(boxes, min_size=1e-3):
    """torchvision remove_small_boxes: indices (increasing) of the boxes whose width and
    height are both >= min_size."""
    ws, hs = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    keep = (ws >= min_size) & (hs >= min_size)
    return torch.where(keep)[0]


def det_topk(x, k=1, dim=-1, largest=True):
    """torch.topk with k clipped to the dimension's size: (values, indices)."""
    n = int(x.shape[dim])
    values, indices = torch.topk(x, min(int(k), n), dim=dim, largest=bool(largest), sorted=True)
    return values, indices


def det_take(x, indices):
    """x[indices] along dim 0."""
    return x[indices]


# ---------------------------------------------------------------- non-maximum suppression

def det__ops_iou_gt(a, area_a, b, area_b, threshold):
    """[len(a), len(b)] bool: IoU(a_i, b_j) > threshold, computed as torchvision's CPU nms
    kernel does (float max / min, the areas added first, then the intersection subtracted).
    a, b: the four coordinates as separate 1-d tensors."""
    w = torch.minimum(a[2][:, None], b[2][None, :])
    w.sub_(torch.maximum(a[0][:, None], b[0][None, :])).clamp_(min=0)
    h = torch.minimum(a[3][:, None], b[3][None, :])
    h.sub_(torch.maximum(a[1][:, None], b[1][None, :])).clamp_(min=0)
    inter = w.mul_(h)
    union = area_a[:, None] + area_b[None, :]
    union.sub_(inter)
    return torch.gt(inter.div_(union), threshold)


def det__ops_threshold(iou_threshold, dtype, device):
    """The largest value t of `dtype` with (iou > t) == (double(iou) > iou_threshold) for every
    iou of that dtype: the kernel compares its float IoU with the double threshold."""
    exact = torch.tensor(float(iou_threshold), dtype=torch.float64)
    t = exact.to(dtype)
    if bool(t.to(torch.float64) > exact):
        t = torch.nextafter(t, torch.tensor(-math.inf, dtype=dtype))
    return t.to(device)


def det__ops_nms(boxes, scores, iou_threshold, block=256):
    """Pure-torch greedy NMS, identical to torchvision's CPU kernel: boxes visited by
    decreasing score (stable sort), a box is kept unless a kept box before it has
    IoU > iou_threshold with it. Works on blocks of `block` sorted boxes: a block is resolved
    by a fixed-point iteration (exact: entry i is settled after i rounds), then its kept
    boxes suppress the later boxes not yet suppressed, all at once."""
    n = int(boxes.shape[0])
    if n == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, dim=0, descending=True, stable=True)[1]
    b = boxes[order]
    cols = [b[:, i].contiguous() for i in range(4)]
    area = (cols[2] - cols[0]) * (cols[3] - cols[1])
    thr = det__ops_threshold(iou_threshold, b.dtype, b.device)
    keep = torch.zeros(n, dtype=torch.bool, device=b.device)
    suppressed = torch.zeros(n, dtype=torch.bool, device=b.device)
    for s in range(0, n, block):
        e = min(s + block, n)
        alive = ~suppressed[s:e]
        if not bool(alive.any()):
            continue
        blk = [c[s:e] for c in cols]
        hit = det__ops_iou_gt(blk, area[s:e], blk, area[s:e], thr).triu_(1)   # i kills j > i
        kept = alive
        while True:
            nxt = alive & ~(hit & kept[:, None]).any(0)
            if torch.equal(nxt, kept):
                break
            kept = nxt
        keep[s:e] = kept
        if e < n:
            rest = torch.where(~suppressed[e:])[0] + e
            if rest.numel() and bool(kept.any()):
                mine = [c[kept] for c in blk]
                hit = det__ops_iou_gt(mine, area[s:e][kept], [c[rest] for c in cols], area[rest], thr)
                suppressed[rest] = hit.any(0)
    return order[keep]


def det_nms(boxes, scores, iou_threshold=0.5):
    """torchvision.ops.nms: indices of the kept boxes by decreasing score."""
    tv = det__ops_tv_for(boxes, scores)
    if tv is not None:
        return tv.nms(boxes, scores, float(iou_threshold))
    return det__ops_nms(boxes, scores, iou_threshold)


def det_batched_nms(boxes, scores, groups, iou_threshold=0.5):
    """torchvision.ops.batched_nms: NMS within each group. As torchvision: boxes offset per
    group (the coordinate trick) when boxes.numel() <= 4000 on the CPU (100000 elsewhere) or
    when tracing, else one NMS per group, the union sorted by decreasing score."""
    limit = 4000 if boxes.device.type == "cpu" else 100_000
    if boxes.numel() > limit and not torch.jit.is_tracing():
        keep_mask = torch.zeros_like(scores, dtype=torch.bool)
        for group in torch.unique(groups):
            idx = torch.where(groups == group)[0]
            keep_mask[idx[det_nms(boxes[idx], scores[idx], iou_threshold)]] = True
        keep = torch.where(keep_mask)[0]
        return keep[scores[keep].sort(descending=True)[1]]
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    max_coordinate = boxes.max()
    offsets = groups.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    return det_nms(boxes + offsets[:, None], scores, iou_threshold)


# ---------------------------------------------------------------- RoI pooling

def det__ops_rois(boxes, batch_index, dtype):
    """torchvision's [K, 5] roi format: (batch index, x1, y1, x2, y2)."""
    return torch.cat([batch_index.to(dtype)[:, None], boxes.to(dtype)], dim=1)


def det__ops_div(t, n):
    """t / n rounded as IEEE division (dividing by a Python number, CUDA multiplies by its
    reciprocal, which can be an ulp off: enough to move a bin edge)."""
    return t / torch.full_like(t, n)


def det__ops_chunks(counts, limit):
    """Split range(len(counts)) into consecutive (start, end) runs of at most `limit` total
    count (a run holds at least one item)."""
    chunks, start, total = [], 0, 0
    for i, c in enumerate(counts):
        if i > start and total + c > limit:
            chunks.append((start, i))
            start, total = i, 0
        total += c
    chunks.append((start, len(counts)))
    return chunks


def det__ops_table(features):
    """[N, C, H, W] -> the channels-last row table [N * H * W, C] that embedding_bag gathers."""
    n, c, h, w = features.shape
    return features.permute(0, 2, 3, 1).reshape(n * h * w, c)


def det__ops_segments(sizes):
    """For segment sizes s (int64 [B]): (segment id, position within the segment) of each of
    the sum(s) entries."""
    total = int(sizes.sum())
    seg = torch.repeat_interleave(torch.arange(sizes.numel(), device=sizes.device), sizes,
                                  output_size=total)
    starts = torch.cumsum(sizes, 0) - sizes
    return seg, torch.arange(total, device=sizes.device) - starts[seg]


def det__ops_roi_inputs(features, boxes, batch_index, spatial_scale):
    """The boxes (detached: torchvision gives them no gradient) and batch indices on the
    features' device and dtype, and the scale as a tensor of that dtype (products rounded as the
    kernel rounds them)."""
    dtype, device = features.dtype, features.device
    rois = boxes.detach().to(device=device, dtype=dtype)
    bidx = batch_index.to(device=device, dtype=torch.int64)
    return rois, bidx, torch.tensor(float(spatial_scale), dtype=dtype, device=device)


def det__ops_roi_align(features, boxes, batch_index, output_size, spatial_scale,
                       sampling_ratio, aligned):
    """Pure-torch roi_align following torchvision's CPU kernel (see the module docstring)."""
    n, c, h, w = (int(s) for s in features.shape)
    oh, ow = output_size
    k = int(boxes.shape[0])
    dtype, device = features.dtype, features.device
    if k == 0 or c == 0 or oh == 0 or ow == 0:
        return features.new_zeros((k, c, oh, ow))
    rois, bidx, scale = det__ops_roi_inputs(features, boxes, batch_index, spatial_scale)
    offset = 0.5 if aligned else 0.0
    start_w = rois[:, 0] * scale - offset
    start_h = rois[:, 1] * scale - offset
    roi_w = rois[:, 2] * scale - offset - start_w
    roi_h = rois[:, 3] * scale - offset - start_h
    if not aligned:
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    bin_h = det__ops_div(roi_h, oh)
    bin_w = det__ops_div(roi_w, ow)
    if sampling_ratio > 0:
        grid_h = torch.full((k,), int(sampling_ratio), dtype=torch.int64, device=device)
        grid_w = grid_h
    else:
        grid_h = torch.ceil(bin_h).to(torch.int64)
        grid_w = torch.ceil(bin_w).to(torch.int64)
    count = (grid_h * grid_w).clamp(min=1).to(dtype)
    # the kernel's loops run max(grid, 0) times in each direction
    gh, gw = grid_h.clamp(min=0), grid_w.clamp(min=0)
    samples = oh * ow * gh * gw                       # sample points per roi
    table = det__ops_table(features)
    outs = []
    for a, e in det__ops_chunks(samples.tolist(), DET_GATHER_LIMIT):
        roi, local = det__ops_segments(samples[a:e])
        roi = roi + a
        g_h, g_w = gh[roi], gw[roi]
        per_bin = g_h * g_w
        bin_id, within = local // per_bin, local % per_bin
        ph, pw = bin_id // ow, bin_id % ow
        iy, ix = within // g_w, within % g_w
        # the kernel's float arithmetic, operation by operation
        yy = start_h[roi] + ph.to(dtype) * bin_h[roi] + ((iy.to(dtype) + 0.5) * bin_h[roi]) / g_h.to(dtype)
        xx = start_w[roi] + pw.to(dtype) * bin_w[roi] + ((ix.to(dtype) + 0.5) * bin_w[roi]) / g_w.to(dtype)
        valid = ~((yy < -1.0) | (yy > h) | (xx < -1.0) | (xx > w) | torch.isnan(yy) | torch.isnan(xx))
        yy = torch.where(valid, yy.clamp(min=0), torch.zeros_like(yy))
        xx = torch.where(valid, xx.clamp(min=0), torch.zeros_like(xx))
        y_low, x_low = yy.to(torch.int64), xx.to(torch.int64)
        top_y, top_x = y_low >= h - 1, x_low >= w - 1
        yy = torch.where(top_y, torch.full_like(yy, h - 1), yy)
        xx = torch.where(top_x, torch.full_like(xx, w - 1), xx)
        y_high = torch.where(top_y, torch.full_like(y_low, h - 1), y_low + 1)
        x_high = torch.where(top_x, torch.full_like(x_low, w - 1), x_low + 1)
        y_low = torch.where(top_y, torch.full_like(y_low, h - 1), y_low)
        x_low = torch.where(top_x, torch.full_like(x_low, w - 1), x_low)
        ly = yy - y_low.to(dtype)
        lx = xx - x_low.to(dtype)
        hy, hx = 1.0 - ly, 1.0 - lx
        zero = torch.zeros_like(ly)
        weights = torch.stack([torch.where(valid, hy * hx, zero), torch.where(valid, hy * lx, zero),
                               torch.where(valid, ly * hx, zero), torch.where(valid, ly * lx, zero)], 1)
        base = bidx[roi] * (h * w)
        index = torch.stack([base + y_low * w + x_low, base + y_low * w + x_high,
                             base + y_high * w + x_low, base + y_high * w + x_high], 1)
        bag_sizes = torch.repeat_interleave(4 * gh[a:e] * gw[a:e], oh * ow)
        offsets = torch.cumsum(bag_sizes, 0) - bag_sizes
        outs.append(F.embedding_bag(index.reshape(-1), table, offsets, mode="sum",
                                    per_sample_weights=weights.reshape(-1)))
    out = torch.cat(outs, 0) if len(outs) > 1 else outs[0]
    out = out.view(k, oh, ow, c).permute(0, 3, 1, 2)
    return (out / count.view(k, 1, 1, 1)).contiguous()


def det_roi_align(features, boxes, batch_index, output_size=7, spatial_scale=1.0,
                  sampling_ratio=-1, aligned=False):
    """torchvision.ops.roi_align(features, rois(batch_index, boxes), ...) -> [R, C, oh, ow]."""
    output_size = det__ops_pair(output_size)
    tv = det__ops_tv_for(features, boxes)
    if tv is not None:
        rois = det__ops_rois(boxes, batch_index.to(boxes.device), features.dtype)
        return tv.roi_align(features, rois, output_size, float(spatial_scale), int(sampling_ratio),
                            bool(aligned))
    return det__ops_roi_align(features, boxes, batch_index, output_size, spatial_scale,
                              int(sampling_ratio), bool(aligned))


def det__ops_round(v):
    """C's round(): halves away from zero (torch.round rounds them to even)."""
    t = torch.trunc(v)
    return torch.where((v - t).abs() >= 0.5, t + torch.sign(v), t).to(torch.int64)


def det__ops_roi_pool(features, boxes, batch_index, output_size, spatial_scale):
    """Pure-torch roi_pool (max) following torchvision's CPU kernel."""
    n, c, h, w = (int(s) for s in features.shape)
    oh, ow = output_size
    k = int(boxes.shape[0])
    dtype, device = features.dtype, features.device
    if k == 0 or c == 0 or oh == 0 or ow == 0:
        return features.new_zeros((k, c, oh, ow))
    rois, bidx, scale = det__ops_roi_inputs(features, boxes, batch_index, spatial_scale)
    start_w = det__ops_round(rois[:, 0] * scale)
    start_h = det__ops_round(rois[:, 1] * scale)
    end_w = det__ops_round(rois[:, 2] * scale)
    end_h = det__ops_round(rois[:, 3] * scale)
    roi_w = (end_w - start_w + 1).clamp(min=1)
    roi_h = (end_h - start_h + 1).clamp(min=1)
    bin_h = det__ops_div(roi_h.to(dtype), oh)
    bin_w = det__ops_div(roi_w.to(dtype), ow)
    ph = torch.arange(oh, device=device).to(dtype)
    pw = torch.arange(ow, device=device).to(dtype)
    h0 = (torch.floor(ph[None, :] * bin_h[:, None]).to(torch.int64) + start_h[:, None]).clamp(0, h)
    h1 = (torch.ceil((ph[None, :] + 1) * bin_h[:, None]).to(torch.int64) + start_h[:, None]).clamp(0, h)
    w0 = (torch.floor(pw[None, :] * bin_w[:, None]).to(torch.int64) + start_w[:, None]).clamp(0, w)
    w1 = (torch.ceil((pw[None, :] + 1) * bin_w[:, None]).to(torch.int64) + start_w[:, None]).clamp(0, w)
    len_h, len_w = (h1 - h0).clamp(min=0), (w1 - w0).clamp(min=0)      # [K, oh], [K, ow]
    bag_sizes = (len_h[:, :, None] * len_w[:, None, :]).reshape(k, oh * ow)   # 0: empty bin
    table = det__ops_table(features)
    outs = []
    for a, e in det__ops_chunks(bag_sizes.sum(1).tolist(), DET_GATHER_LIMIT):
        sizes = bag_sizes[a:e].reshape(-1)
        bag, local = det__ops_segments(sizes)
        roi = bag // (oh * ow) + a
        py, px = (bag // ow) % oh, bag % ow
        lw = len_w[roi, px]
        yy = h0[roi, py] + local // lw
        xx = w0[roi, px] + local % lw
        index = bidx[roi] * (h * w) + yy * w + xx
        offsets = torch.cumsum(sizes, 0) - sizes
        outs.append(F.embedding_bag(index, table, offsets, mode="max"))
    out = torch.cat(outs, 0) if len(outs) > 1 else outs[0]
    return out.view(k, oh, ow, c).permute(0, 3, 1, 2).contiguous()


def det_roi_pool(features, boxes, batch_index, output_size=7, spatial_scale=1.0):
    """torchvision.ops.roi_pool(features, rois(batch_index, boxes), ...) -> [R, C, oh, ow]."""
    output_size = det__ops_pair(output_size)
    tv = det__ops_tv_for(features, boxes)
    if tv is not None:
        rois = det__ops_rois(boxes, batch_index.to(boxes.device), features.dtype)
        return tv.roi_pool(features, rois, output_size, float(spatial_scale))
    return det__ops_roi_pool(features, boxes, batch_index, output_size, spatial_scale)


def det__ops_infer_scale(feature, size):
    """MultiScaleRoIAlign's _infer_scale: 2 ** round(log2(feature h / image h))."""
    approx = float(feature.shape[-2]) / float(size[0])
    return 2 ** float(torch.tensor(approx).log2().round())


def det_multiscale_roi_align(features, boxes, batch_index, image_sizes, output_size=7,
                             sampling_ratio=2, canonical_scale=224, canonical_level=4):
    """torchvision MultiScaleRoIAlign over the levels `features` (a list): each level's scale
    inferred from the largest resized image size, each box pooled from the level
    floor(canonical_level + log2(sqrt(area) / canonical_scale) + 1e-6), clamped to the
    levels present."""
    features = list(features)
    output_size = det__ops_pair(output_size)
    sizes = image_sizes[:, :2].tolist()
    if not sizes:
        raise ValueError("multiscale_roi_align: images list should not be empty")
    largest = (max(s[0] for s in sizes), max(s[1] for s in sizes))
    scales = [det__ops_infer_scale(f, largest) for f in features]
    if len(features) == 1:
        return det_roi_align(features[0], boxes, batch_index, output_size, scales[0],
                             sampling_ratio, False)
    k_min = int(-torch.log2(torch.tensor(scales[0], dtype=torch.float32)).item())
    k_max = int(-torch.log2(torch.tensor(scales[-1], dtype=torch.float32)).item())
    # LevelMapper
    b = boxes if boxes.is_floating_point() and boxes.dtype in (torch.float32, torch.float64) \
        else boxes.float()
    s = torch.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    target = torch.floor(canonical_level + torch.log2(s / canonical_scale)
                         + torch.tensor(1e-6, dtype=s.dtype))
    levels = (torch.clamp(target, min=k_min, max=k_max).to(torch.int64) - k_min).to(torch.int64)
    first = features[0]
    result = torch.zeros((int(boxes.shape[0]), int(first.shape[1])) + output_size,
                         dtype=first.dtype, device=first.device)
    for level, (feature, scale) in enumerate(zip(features, scales)):
        idx = torch.where(levels == level)[0]
        pooled = det_roi_align(feature, boxes[idx], batch_index[idx], output_size, scale,
                               sampling_ratio, False)
        result[idx] = pooled.to(result.dtype)
    return result


# ---------------------------------------------------------------- RPN head

class DetRPNHead(nn.Module):
    """torchvision RPNHead: `conv_depth` shared 3x3 convs (+ReLU), then 1x1 convs to
    objectness logits (A channels) and box deltas (4A channels), applied to every level.
    Parameters conv.0.0.weight / bias, cls_logits.*, bbox_pred.* (torchvision's names);
    normal(std 0.01) weights and zero biases, drawn in torchvision's order."""

    def __init__(self, in_channels, num_anchors, conv_depth=1):
        super().__init__()
        self.conv = nn.Sequential(*[
            nn.Sequential(nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=1, padding=1),
                          nn.ReLU(inplace=True))
            for _ in range(conv_depth)])
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, kernel_size=1, stride=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, kernel_size=1, stride=1)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                torch.nn.init.normal_(layer.weight, std=0.01)
                if layer.bias is not None:
                    torch.nn.init.constant_(layer.bias, 0)

    def forward(self, *features):
        """features: the levels (or one list of them) -> (objectness per level...,
        deltas per level...)."""
        if len(features) == 1 and isinstance(features[0], (list, tuple)):
            features = tuple(features[0])
        logits, deltas = [], []
        for feature in features:
            t = self.conv(feature)
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return tuple(logits) + tuple(deltas)
