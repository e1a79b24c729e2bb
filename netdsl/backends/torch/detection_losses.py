"""Faster R-CNN training: matching, sampling and the four losses (torchvision 0.29 semantics).

Pasted verbatim into generated standalone sources with detection_ops.py (whose
det_box_encode it calls by name) and detection_pipeline.py (which calls det_rpn_losses,
det_sample_rois and det_fastrcnn_loss), so it imports only torch at top level and every
top-level name starts with det_/Det/DET_. Loaded on its own it lacks det_box_encode: exec it
after detection_ops.py into one namespace, as a generated source does. Boxes are flat over
the batch (boxes f32[R, 4] plus batch_index i64[R], image-major); per-image work splits
them, as torchvision keeps one tensor per image.

Random numbers are drawn exactly as torchvision's BalancedPositiveNegativeSampler draws
them (one torch.randperm over the positives, then one over the negatives, per image, on the
labels' device), so with the same seed the same anchors and proposals are sampled.
"""
import torch
import torch.nn.functional as F


DET_BELOW_LOW_THRESHOLD = -1
DET_BETWEEN_THRESHOLDS = -2


def det__upcast(t):
    """torchvision's _upcast: keeps float32/64 and int32/64, widens smaller types."""
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t if t.dtype in (torch.int32, torch.int64) else t.int()


def det_box_iou(boxes1, boxes2):
    """IoU matrix [N, M] of boxes1 [N, 4] against boxes2 [M, 4] (x1, y1, x2, y2), as
    torchvision.ops.box_iou."""
    area1 = det__upcast(boxes1)
    area1 = (area1[:, 2] - area1[:, 0]) * (area1[:, 3] - area1[:, 1])
    area2 = det__upcast(boxes2)
    area2 = (area2[:, 2] - area2[:, 0]) * (area2[:, 3] - area2[:, 1])
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = det__upcast(rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return inter / union


def det_match(match_quality_matrix, high_threshold, low_threshold, allow_low_quality_matches=False):
    """torchvision's Matcher: for each prediction (column) the index of its best ground truth
    (row), or DET_BELOW_LOW_THRESHOLD (-1) / DET_BETWEEN_THRESHOLDS (-2)."""
    if low_threshold > high_threshold:
        raise ValueError("low_threshold should be <= high_threshold")
    if match_quality_matrix.numel() == 0:
        if match_quality_matrix.shape[0] == 0:
            raise ValueError("No ground-truth boxes available for one of the images during training")
        raise ValueError("No proposal boxes available for one of the images during training")
    matched_vals, matches = match_quality_matrix.max(dim=0)
    all_matches = matches.clone() if allow_low_quality_matches else None
    below = matched_vals < low_threshold
    between = (matched_vals >= low_threshold) & (matched_vals < high_threshold)
    matches[below] = DET_BELOW_LOW_THRESHOLD
    matches[between] = DET_BETWEEN_THRESHOLDS
    if allow_low_quality_matches:
        # every prediction that ties for a ground truth's best quality keeps its best match
        highest, _ = match_quality_matrix.max(dim=1)
        pred_inds = torch.where(match_quality_matrix == highest[:, None])[1]
        matches[pred_inds] = all_matches[pred_inds]
    return matches


def det_sample_pos_neg(labels_list, batch_size, fraction):
    """torchvision's BalancedPositiveNegativeSampler over one label tensor per image
    (>= 1 positive, 0 negative, -1 ignored). Returns (pos_masks, neg_masks), bool per image.
    Draws torch.randperm(#positives) then torch.randperm(#negatives) per image."""
    pos_masks, neg_masks = [], []
    for labels in labels_list:
        positive = torch.where(labels >= 1)[0]
        negative = torch.where(labels == 0)[0]
        num_pos = min(positive.numel(), int(batch_size * fraction))
        num_neg = min(negative.numel(), batch_size - num_pos)
        perm1 = torch.randperm(positive.numel(), device=positive.device)[:num_pos]
        perm2 = torch.randperm(negative.numel(), device=negative.device)[:num_neg]
        pos_mask = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
        neg_mask = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
        pos_mask[positive[perm1]] = True
        neg_mask[negative[perm2]] = True
        pos_masks.append(pos_mask)
        neg_masks.append(neg_mask)
    return pos_masks, neg_masks


def det__wants_losses(det):
    return bool(getattr(det, "training", False)) and getattr(det, "targets", None) is not None


def det__check_images(det, n_images, what):
    if len(det.targets) != n_images:
        raise ValueError(f"{what}: {n_images} images but {len(det.targets)} targets")


def det_rpn_losses(det, objectness, pred_bbox_deltas, anchors, *, fg_iou_thresh=0.7, bg_iou_thresh=0.3,
                   batch_size_per_image=256, positive_fraction=0.5):
    """RegionProposalNetwork's training losses: assign_targets_to_anchors, encode, compute_loss.

    objectness: the logits flat over images and anchors, image-major as
    concat_box_prediction_layers gives them: [N*A_total] or [N*A_total, 1]; [N*A_total, 2] is
    read as (background, foreground) logits (the loss is then the two-way softmax
    cross-entropy, which is binary cross-entropy on foreground - background).
    pred_bbox_deltas: [N*A_total, 4]. anchors: a list with one [A_total, 4] tensor per image,
    or one [A_total, 4] tensor shared by every image.
    Stores det.losses["loss_objectness"], det.losses["loss_rpn_box_reg"]; returns both (None
    outside training with targets)."""
    if not det__wants_losses(det):
        return None
    n = len(det.targets)
    if isinstance(anchors, torch.Tensor):
        anchors = [anchors] * n
    det__check_images(det, len(anchors), "rpn losses")
    if objectness.dim() == 2 and objectness.shape[1] == 2:
        objectness = objectness[:, 1] - objectness[:, 0]
    objectness = objectness.flatten()
    pred_bbox_deltas = pred_bbox_deltas.reshape(-1, 4)
    total = sum(int(a.shape[0]) for a in anchors)
    if objectness.shape[0] != total or pred_bbox_deltas.shape[0] != total:
        raise ValueError(f"rpn losses: {objectness.shape[0]} objectness logits and "
                         f"{pred_bbox_deltas.shape[0]} box deltas for {total} anchors")
    labels, matched_gt_boxes = [], []
    for anchors_i, target in zip(anchors, det.targets):
        gt_boxes = target["boxes"]
        if gt_boxes.numel() == 0:
            # background image: every anchor negative
            matched = torch.zeros(anchors_i.shape, dtype=torch.float32, device=anchors_i.device)
            labels_i = torch.zeros((anchors_i.shape[0],), dtype=torch.float32, device=anchors_i.device)
        else:
            matched_idxs = det_match(det_box_iou(gt_boxes, anchors_i), fg_iou_thresh, bg_iou_thresh,
                                     allow_low_quality_matches=True)
            matched = gt_boxes[matched_idxs.clamp(min=0)]
            labels_i = (matched_idxs >= 0).to(dtype=torch.float32)
            labels_i[matched_idxs == DET_BELOW_LOW_THRESHOLD] = 0.0
            labels_i[matched_idxs == DET_BETWEEN_THRESHOLDS] = -1.0
        labels.append(labels_i)
        matched_gt_boxes.append(matched)
    regression_targets = det_box_encode(torch.cat(matched_gt_boxes, dim=0), torch.cat(anchors, dim=0),
                                        weights=(1.0, 1.0, 1.0, 1.0))
    pos_masks, neg_masks = det_sample_pos_neg(labels, batch_size_per_image, positive_fraction)
    pos_inds = torch.where(torch.cat(pos_masks, dim=0))[0]
    neg_inds = torch.where(torch.cat(neg_masks, dim=0))[0]
    sampled_inds = torch.cat([pos_inds, neg_inds], dim=0)
    labels = torch.cat(labels, dim=0)
    box_loss = F.smooth_l1_loss(pred_bbox_deltas[pos_inds], regression_targets[pos_inds],
                                beta=1 / 9, reduction="sum") / sampled_inds.numel()
    objectness_loss = F.binary_cross_entropy_with_logits(objectness[sampled_inds], labels[sampled_inds])
    det.losses["loss_objectness"] = objectness_loss
    det.losses["loss_rpn_box_reg"] = box_loss
    return objectness_loss, box_loss


def det_sample_rois(det, boxes, batch_index, *, fg_iou_thresh=0.5, bg_iou_thresh=0.5,
                    batch_size_per_image=512, positive_fraction=0.25, weights=(10.0, 10.0, 5.0, 5.0)):
    """RoIHeads.select_training_samples on flat proposals. Eval, or no targets: (boxes,
    batch_index) unchanged. Training: per image, append the ground-truth boxes, match
    (no low-quality matches), sample, keep the sampled proposals in their order; the labels
    and regression targets (flat, image-major) go to det.roi_labels and
    det.roi_regression_targets for det_fastrcnn_loss. Returns (boxes, batch_index)."""
    if not det__wants_losses(det):
        return boxes, batch_index
    n = len(det.targets)
    if batch_index.numel() and int(batch_index.max()) >= n:
        raise ValueError(f"sample_rois: a proposal belongs to image {int(batch_index.max())} "
                         f"but there are {n} targets")
    dtype, device = boxes.dtype, boxes.device
    out_boxes, out_labels, out_targets, counts = [], [], [], []
    proposals, labels, matched_idxs, gt_boxes = [], [], [], []
    for i, target in enumerate(det.targets):
        gt_boxes_i = target["boxes"].to(dtype)
        gt_labels_i = target["labels"]
        proposals_i = torch.cat((boxes[batch_index == i], gt_boxes_i))
        if gt_boxes_i.numel() == 0:
            # background image: every proposal negative, matched to a dummy box
            matched_i = torch.zeros((proposals_i.shape[0],), dtype=torch.int64, device=device)
            labels_i = torch.zeros((proposals_i.shape[0],), dtype=torch.int64, device=device)
        else:
            raw = det_match(det_box_iou(gt_boxes_i, proposals_i), fg_iou_thresh, bg_iou_thresh,
                            allow_low_quality_matches=False)
            matched_i = raw.clamp(min=0)
            labels_i = gt_labels_i[matched_i].to(dtype=torch.int64)
            labels_i[raw == DET_BELOW_LOW_THRESHOLD] = 0
            labels_i[raw == DET_BETWEEN_THRESHOLDS] = -1
        proposals.append(proposals_i)
        labels.append(labels_i)
        matched_idxs.append(matched_i)
        gt_boxes.append(gt_boxes_i)
    pos_masks, neg_masks = det_sample_pos_neg(labels, batch_size_per_image, positive_fraction)
    for i in range(n):
        keep = torch.where(pos_masks[i] | neg_masks[i])[0]
        gt_boxes_i = gt_boxes[i]
        if gt_boxes_i.numel() == 0:
            gt_boxes_i = torch.zeros((1, 4), dtype=dtype, device=device)
        out_boxes.append(proposals[i][keep])
        out_labels.append(labels[i][keep])
        out_targets.append(gt_boxes_i[matched_idxs[i][keep]])
        counts.append(int(keep.numel()))
    sampled = torch.cat(out_boxes, dim=0)
    det.roi_labels = torch.cat(out_labels, dim=0)
    det.roi_regression_targets = det_box_encode(torch.cat(out_targets, dim=0), sampled, weights=weights)
    new_index = torch.repeat_interleave(torch.arange(n, dtype=torch.int64, device=device),
                                        torch.tensor(counts, dtype=torch.int64, device=device))
    return sampled, new_index


def det_fastrcnn_loss(det, class_logits, box_regression):
    """torchvision's fastrcnn_loss with the labels and regression targets det_sample_rois
    kept: cross-entropy over the classes, smooth-L1 (beta 1/9) on the positives' boxes of
    their class, summed and divided by the number of sampled RoIs. Stores
    det.losses["loss_classifier"], det.losses["loss_box_reg"]; returns both (None outside
    training with targets)."""
    if not det__wants_losses(det):
        return None
    labels = getattr(det, "roi_labels", None)
    regression_targets = getattr(det, "roi_regression_targets", None)
    if labels is None or regression_targets is None:
        raise ValueError("fastrcnn loss: no sampled RoIs (sample_rois must run before the box head in training)")
    if class_logits.shape[0] != labels.shape[0]:
        raise ValueError(f"fastrcnn loss: {class_logits.shape[0]} class logits rows for "
                         f"{labels.shape[0]} sampled RoIs")
    classification_loss = F.cross_entropy(class_logits, labels)
    pos = torch.where(labels > 0)[0]
    labels_pos = labels[pos]
    n_rois = class_logits.shape[0]
    box_regression = box_regression.reshape(n_rois, box_regression.size(-1) // 4, 4)
    box_loss = F.smooth_l1_loss(box_regression[pos, labels_pos], regression_targets[pos],
                                beta=1 / 9, reduction="sum") / labels.numel()
    det.losses["loss_classifier"] = classification_loss
    det.losses["loss_box_reg"] = box_loss
    return classification_loss, box_loss
