"""Ops of the modern convolutional nets: `ChannelShuffle` (ShuffleNet), `chunk` (a tensor split
into equal parts, a tuple), `StochasticDepth` (torchvision.ops: residual branches dropped per
sample while training) and `LayerNorm2d` (ConvNeXt's LayerNorm over the channels of
[N, C, H, W])."""
from __future__ import annotations

from .. import dims as D
from ..registry import AttrSpec, OpSpec, register
from .common import need_rank, ones, resolve_dim, zeros


# ---- ChannelShuffle ------------------------------------------------------------------------
def _resolve_shuffle(a, shapes, ctx):
    (x,) = shapes
    if len(x) < 3:
        ctx.fail(f"expects an input of rank >= 3 [N, C, ...], got rank {len(x)} {D.fmt_shape(x)}")
    c = ctx.static(x[1], "the number of channels (dim 1)")
    g = a["groups"]
    if c % g:
        ctx.fail(f"the {c} channels do not divide into groups={g}")
    a["channels"] = c
    return a


register(OpSpec(
    "ChannelShuffle", "Shuffle the channels of [N, C, ...] in `groups` groups (torch.nn.ChannelShuffle, "
    "torchvision's channel_shuffle): channel i * groups + j of the output is channel j * (C / groups) + i "
    "of the input.",
    lambda a, s, ctx: [s[0]], (AttrSpec("groups", "int", check="positive"),), resolve=_resolve_shuffle))


# ---- chunk -----------------------------------------------------------------------------------
def chunk_sizes(size: int, chunks: int) -> list:
    """torch.chunk's part sizes: ceil(size / chunks) each, the last one what is left; so fewer
    than `chunks` parts where the size does not divide (6 in 4 chunks: 2, 2, 2); a size of 0
    gives `chunks` empty parts."""
    if size == 0:
        return [0] * chunks
    step = -(-size // chunks)
    return [min(step, size - i) for i in range(0, size, step)]


def _infer_chunk(a, shapes, ctx):
    x = shapes[0]
    d, k = a["dim"], a["chunks"]
    size = x[d]
    if D.is_static(size):
        parts = chunk_sizes(int(size), k)
    elif k == 1:
        parts = [size]
    else:
        # torch.chunk's rule at every size the symbol takes, where it makes exactly k parts (as
        # the statement unpacking them needs): k - 1 parts of ceil(size / k), the rest last. The
        # sizes where the last part would be empty (fewer parts) are excluded, as they are when a
        # concrete size is given (the unpacking fails there).
        step = D.ceildiv(size, k)
        last = D.sub(size, D.mul(step, k - 1))
        ctx.require_ge(last, 1, f"dim {d} (size {D.fmt(size)}) does not make {k} chunks at every size: "
                                f"torch.chunk cuts parts of ceil({D.fmt(size)} / {k}), which leaves "
                                f"nothing for the last one at some sizes")
        parts = [step] * (k - 1) + [last]
    return [tuple(p if i == d else s for i, s in enumerate(x)) for p in parts]


register(OpSpec(
    "chunk",
    "Split x along `dim` into `chunks` parts (torch.chunk): `a, b = chunk(x, 2)` or "
    "`a, b = x -> chunk(2)`. Parts of ceil(size / chunks), the last smaller (so fewer parts where "
    "that leaves nothing for the last); a symbolic size must make `chunks` parts at every size.",
    _infer_chunk,
    (AttrSpec("chunks", "int", check="positive"), AttrSpec("dim", "int", 1)),
    function=True, resolve=resolve_dim, tuple_result=True))


# ---- StochasticDepth -------------------------------------------------------------------------
def _resolve_depth(a, shapes, ctx):
    if len(shapes[0]) == 0:
        ctx.fail("needs a tensor of rank 1 or more (dim 0 is the batch)")
    return a


register(OpSpec(
    "StochasticDepth",
    "torchvision.ops.StochasticDepth: while training, zero the input with probability p (mode 'row': "
    "each sample of dim 0 drawn apart; 'batch': the whole batch at once) and scale the rest by "
    "1 / (1 - p); identity in eval and in ONNX. Draws from torch's global generator.",
    lambda a, s, ctx: [s[0]],
    (AttrSpec("p", "float", check="unit", doc="the drop probability, 0 <= p <= 1"),
     AttrSpec("mode", "str", "row", choices=("row", "batch"))),
    resolve=_resolve_depth))


# ---- LayerNorm2d -----------------------------------------------------------------------------
def _resolve_ln2d(a, shapes, ctx):
    need_rank(ctx, shapes[0], (4,), "[N, C, H, W]")
    a["num_channels"] = ctx.static(shapes[0][1], "the number of channels (dim 1)")
    return a


def _ln2d_params(a, shapes, ctx):
    c = a["num_channels"]
    return {"weight": ones((c,)), "bias": zeros((c,))} if a["elementwise_affine"] else {}


register(OpSpec(
    "LayerNorm2d",
    "Layer normalisation over the channels (dim 1) of [N, C, H, W], each position apart "
    "(torchvision.models.convnext.LayerNorm2d); params weight, bias [C].",
    lambda a, s, ctx: [s[0]],
    (AttrSpec("eps", "float", 1e-5, check="positive"), AttrSpec("elementwise_affine", "bool", True)),
    resolve=_resolve_ln2d, params=_ln2d_params))
