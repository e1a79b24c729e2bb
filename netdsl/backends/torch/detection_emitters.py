"""Torch emitters of the detection ops.

The run-time code lives in three plain modules (detection_ops, detection_losses,
detection_pipeline) that import only torch; each is pasted whole into a generated source
that uses a detection op, so the generated module still needs nothing but torch. The ops
that see the whole batch (the transform, proposal selection, RoI sampling and
post-processing) take the forward's `det` context, which carries the targets, the images'
sizes and, in training, the losses.
"""
from __future__ import annotations

import re
from pathlib import Path

from .emitters import EMITTERS, HELPERS, TorchEmitter

_HERE = Path(__file__).parent
# pasted in this order: the pipeline calls the losses, both call the primitives
RUNTIME = ("detection_ops", "detection_losses", "detection_pipeline")
CONTEXT = "det"          # forward()'s local holding the DetContext


def _runtime_source(name: str) -> str:
    path = _HERE / f"{name}.py"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return re.sub(r"^from __future__ import .*\n", "", text, flags=re.M)


for _name in RUNTIME:
    HELPERS[_name] = _runtime_source(_name)


def _kw(node, names) -> str:
    return ", ".join(f"{k}={node.attrs[k]!r}" for k in names)


def _call(fn, attrs=(), context=False, lists=()):
    """An emitter calling `fn(det?, inputs..., attr=...)`; `lists` splits the inputs into
    Python lists: each entry is a count (or None: the rest but the trailing `lists` tail)."""
    def call(n, ins, m):
        args = [CONTEXT] if context else []
        if lists:
            groups, tail = lists
            k = (len(ins) - tail) // groups
            args += ["[" + ", ".join(ins[i * k:(i + 1) * k]) + "]" for i in range(groups)]
            args += ins[groups * k:]
        else:
            args += ins
        kw = _kw(n, attrs)
        return f"{fn}({', '.join(args)}{', ' + kw if kw else ''})"
    return call


CONTEXT_OPS: set = set()    # the ops whose call takes `det`


def _emit(op, fn, attrs=(), context=False, lists=()):
    EMITTERS[op] = TorchEmitter(_call(fn, attrs, context, lists), helpers=RUNTIME)
    if context:
        CONTEXT_OPS.add(op)


_emit("detection_transform", "det_transform", ("min_size", "max_size", "mean", "std", "size_divisible"),
      context=True)
_emit("anchors", "det_anchors", ("sizes", "aspect_ratios"))
_emit("box_decode", "det_box_decode", ("weights", "clamp"))
_emit("box_encode", "det_box_encode", ("weights",))
_emit("clip_boxes", "det_clip_boxes")
_emit("remove_small_boxes", "det_remove_small_boxes", ("min_size",))
_emit("nms", "det_nms", ("iou_threshold",))
_emit("batched_nms", "det_batched_nms", ("iou_threshold",))
_emit("roi_align", "det_roi_align", ("output_size", "spatial_scale", "sampling_ratio", "aligned"))
_emit("roi_pool", "det_roi_pool", ("output_size", "spatial_scale"))
_emit("multiscale_roi_align", "det_multiscale_roi_align",
      ("output_size", "sampling_ratio", "canonical_scale", "canonical_level"), lists=(1, 3))
_emit("rpn_proposals", "det_rpn_proposals",
      ("pre_nms_top_n", "post_nms_top_n", "nms_thresh", "score_thresh", "min_size", "fg_iou_thresh",
       "bg_iou_thresh", "batch_size_per_image", "positive_fraction", "objectness"), context=True, lists=(3, 1))
_emit("sample_rois", "det_sample_rois",
      ("fg_iou_thresh", "bg_iou_thresh", "batch_size_per_image", "positive_fraction", "weights"), context=True)
_emit("detect_postprocess", "det_detect_postprocess",
      ("score_thresh", "nms_thresh", "detections_per_img", "weights", "min_size"), context=True)
_emit("rescale_boxes", "det_rescale_boxes")


def _rpn_head_module(n) -> str:
    c = n.inputs[0].shape[1]
    return f"DetRPNHead({c}, {n.attrs['num_anchors']!r}, conv_depth={n.attrs['conv_depth']!r})"


EMITTERS["RPNHead"] = TorchEmitter(lambda n, ins, m: f"{m}({', '.join(ins)})", _rpn_head_module,
                                   helpers=RUNTIME)


def is_detector(graph) -> bool:
    """Whether forward() takes (images, targets=None) and keeps a detection context."""
    return any(n.op == "detection_transform" for n in graph.nodes)


def needs_context(graph) -> bool:
    """Whether forward() calls an op that takes the detection context (rpn_proposals,
    sample_rois, ... may run without a detection_transform: then eval-style, no targets)."""
    return any(n.op in CONTEXT_OPS for n in graph.nodes)


DETECTION_OUTPUTS = ("boxes", "scores", "labels", "batch_index")
