"""Element-wise activations and softmax."""
from __future__ import annotations

from .. import dims as D
from ..graph import ParamSpec
from ..registry import AttrSpec, OpSpec, register


def _same(a, s, ctx):
    return [s[0]]


def _act(name, doc, *attrs):
    register(OpSpec(name, doc, _same, tuple(attrs)))


_act("Identity", "x unchanged (e.g. the default of a block-typed hook parameter)")
_act("ReLU", "max(x, 0)")
_act("LeakyReLU", "x if x > 0 else negative_slope * x", AttrSpec("negative_slope", "float", 0.01))
_act("ELU", "x if x > 0 else alpha * (exp(x) - 1)", AttrSpec("alpha", "float", 1.0))
_act("GELU", "x * Phi(x); approximate='tanh' uses the tanh approximation",
     AttrSpec("approximate", "str", "none", choices=("none", "tanh")))
_act("SiLU", "x * sigmoid(x)")
_act("Sigmoid", "1 / (1 + exp(-x))")
_act("Tanh", "tanh(x)")


def _softmax_resolve(a, shapes, ctx):
    rank = len(shapes[0])
    if not -rank <= a["dim"] < rank:
        ctx.fail(f"dim={a['dim']} is out of range for a rank-{rank} input")
    a["dim"] %= rank
    return a


for _name, _doc in (("Softmax", "exp(x) / sum(exp(x)) along dim"),
                    ("LogSoftmax", "log(Softmax(x)) along dim")):
    register(OpSpec(_name, _doc, _same, (AttrSpec("dim", "int", 1),), resolve=_softmax_resolve))


# ---- mobile-network activations (torch.nn.ReLU6, Hardswish, Hardsigmoid, Mish, PReLU)
_act("ReLU6", "min(max(x, 0), 6)")
_act("Hardswish", "x * ReLU6(x + 3) / 6")
_act("Hardsigmoid", "ReLU6(x + 3) / 6")
_act("Mish", "x * tanh(softplus(x))")


def _prelu_resolve(a, shapes, ctx):
    """num_parameters is 1 (one slope for every element) or the channel count (dim 1), as
    torch.nn.PReLU: a rank < 2 input has no channel dim."""
    x, n = shapes[0], a["num_parameters"]
    if n == 1:
        return a
    if len(x) < 2:
        ctx.fail(f"num_parameters = {n} needs a channel dim (dim 1), but the input has rank {len(x)}; "
                 f"use num_parameters = 1")
    c = x[1]
    if not D.is_static(c) or c != n:
        ctx.fail(f"num_parameters = {n} must be 1 or the input's channel count (dim 1), "
                 f"which is {D.fmt(c)}")
    return a


def _prelu_params(a, shapes, ctx):
    return {"weight": ParamSpec((a["num_parameters"],), "constant", scale=a["init"])}


register(OpSpec("PReLU", "x if x >= 0 else weight * x: a learned slope, one for all elements or one per "
                "channel (dim 1)", _same,
                (AttrSpec("num_parameters", "int", 1, check="positive",
                          doc="1, or the input's channel count (dim 1)"),
                 AttrSpec("init", "float", 0.25, doc="the slope's initial value")),
                resolve=_prelu_resolve, params=_prelu_params))
