"""Normalisation: BatchNorm1d/2d, LocalResponseNorm; regularisation: Dropout."""
from __future__ import annotations

from ..registry import AttrSpec, OpSpec, register
from .common import need_rank, ones, zeros

_BN_ATTRS = (AttrSpec("eps", "float", 1e-5, check="positive"),
             AttrSpec("momentum", "float", 0.1, check="nonneg"),
             AttrSpec("affine", "bool", True))


def _bn(ranks, layout):
    def resolve(a, shapes, ctx):
        need_rank(ctx, shapes[0], ranks, layout)
        a["num_features"] = ctx.static(shapes[0][1], "the number of channels (dim 1)")
        return a
    return resolve


def _bn_params(a, shapes, ctx):
    c = a["num_features"]
    p = {}
    if a["affine"]:
        p["weight"] = ones((c,))
        p["bias"] = zeros((c,))
    p["running_mean"] = zeros((c,), buffer=True)
    p["running_var"] = ones((c,), buffer=True)
    p["num_batches_tracked"] = zeros((), buffer=True, dtype="int64")
    return p


register(OpSpec(
    "BatchNorm1d", "Batch normalisation over [N, C] or [N, C, L] (torch.nn.BatchNorm1d): batch "
    "statistics in training, running statistics in eval (and in ONNX).",
    lambda a, s, ctx: [s[0]], _BN_ATTRS, resolve=_bn((2, 3), "[N, C] or [N, C, L]"), params=_bn_params))
register(OpSpec(
    "BatchNorm2d", "Batch normalisation over [N, C, H, W] (torch.nn.BatchNorm2d): batch statistics "
    "in training, running statistics in eval (and in ONNX).",
    lambda a, s, ctx: [s[0]], _BN_ATTRS, resolve=_bn((4,), "[N, C, H, W]"), params=_bn_params))

def _frozen_bn_params(a, shapes, ctx):
    c = a["num_features"]
    # torchvision.ops.FrozenBatchNorm2d: four buffers, in this order, and nothing trainable
    return {"weight": ones((c,), buffer=True), "bias": zeros((c,), buffer=True),
            "running_mean": zeros((c,), buffer=True), "running_var": ones((c,), buffer=True)}


register(OpSpec(
    "FrozenBatchNorm2d", "Batch normalisation with fixed statistics and affine parameters, all "
    "buffers (torchvision.ops.FrozenBatchNorm2d): the same in training and in eval.",
    lambda a, s, ctx: [s[0]], (AttrSpec("eps", "float", 1e-5, check="positive"),),
    resolve=_bn((4,), "[N, C, H, W]"), params=_frozen_bn_params))

register(OpSpec(
    "Dropout", "Zero elements with probability p while training; identity in eval and in ONNX.",
    lambda a, s, ctx: [s[0]], (AttrSpec("p", "float", 0.5, check="prob"),)))


def _lrn_resolve(a, shapes, ctx):
    if len(shapes[0]) < 3:
        ctx.fail("expects an input of rank >= 3 [N, C, ...]")
    return a


register(OpSpec(
    "LocalResponseNorm", "Local response normalisation across channels (torch.nn.LocalResponseNorm).",
    lambda a, s, ctx: [s[0]],
    (AttrSpec("size", "int", check="positive"), AttrSpec("alpha", "float", 1e-4),
     AttrSpec("beta", "float", 0.75), AttrSpec("k", "float", 1.0)),
    resolve=_lrn_resolve))
