"""Element-wise activations and softmax."""
from __future__ import annotations

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
