"""Layer initialisers (`init =`, `bias_init =`) as parameter specs, with torch.nn.init's rules.

The random kinds are reduced here to the two distributions the weights are drawn from,
U(-bound, bound) and N(0, std), with the bound or std torch computes for the weight's shape
(torch.nn.init._calculate_fan_in_and_fan_out, calculate_gain), so that netdsl.weights needs
nothing more. The deterministic kinds (zeros, ones, constant, bilinear) give exactly torch's
values. `bilinear` is the upsampling kernel of the FCN reference (`upsample_filt` in
shelhamer/fcn.berkeleyvision.org's surgery.py): for a kernel of size k along an axis,
factor = (k + 1) // 2, center = factor - 1 (k odd) or factor - 0.5 (k even), and
f[i] = 1 - |i - center| / factor; the 2-D filter is the outer product of the two axes'. A
ConvTranspose2d weight [in, out / groups, kh, kw] with in == out holds it per channel:
weight[i, i % (out / groups)] = filter, every other entry 0 (groups 1: the diagonal, as the
reference's `weight[range(C), range(C)] = filt`; groups == C: every depthwise kernel).
"""
from __future__ import annotations

import math

from .graph import ParamSpec

# torch.nn.init.calculate_gain: each nonlinearity's gain (leaky_relu's depends on its slope)
GAINS = {**dict.fromkeys(("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                          "conv_transpose3d", "sigmoid"), 1.0),
         "tanh": 5.0 / 3, "relu": math.sqrt(2.0), "leaky_relu": None, "selu": 3.0 / 4}


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """torch.nn.init.calculate_gain (the name is one of GAINS, checked where the spec gives it)."""
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope ** 2))
    return GAINS[nonlinearity]


def fans(shape: tuple) -> tuple:
    """torch.nn.init._calculate_fan_in_and_fan_out: (fan_in, fan_out) of a weight of >= 2 dims."""
    receptive = 1
    for d in shape[2:]:
        receptive *= d
    return shape[1] * receptive, shape[0] * receptive


def layer_param(init, shape: tuple, default: ParamSpec, ctx, what: str, op: str) -> ParamSpec:
    """The ParamSpec of a layer parameter (`what`: "weight" or "bias") that starts from `init`
    (an Init, or None for torch's default, `default`). Errors are located (ctx.fail)."""
    if init is None:
        return default
    shape = tuple(shape)
    arg = "init" if what == "weight" else "bias_init"
    kind = init.kind
    if kind == "zeros":
        return ParamSpec(shape, "zeros")
    if kind == "ones":
        return ParamSpec(shape, "ones")
    if kind == "constant":
        return ParamSpec(shape, "constant", scale=init.scale) if init.scale else ParamSpec(shape, "zeros")
    if kind == "normal":
        return _normal(shape, init.scale)
    if kind == "uniform":
        return _uniform(shape, init.scale)
    if kind == "bilinear":
        if op != "ConvTranspose2d" or what != "weight":
            ctx.fail(f"'{arg} = bilinear()' is the upsampling kernel of a transposed convolution: "
                     "only ConvTranspose2d's weight (init = bilinear()) takes it")
        return ParamSpec(shape, "bilinear")
    # kaiming_normal, kaiming_uniform, xavier_normal, xavier_uniform (values.INIT_SIGNATURES)
    if len(shape) < 2:
        ctx.fail(f"'{arg} = {kind}()' needs the fans of a weight of 2 or more dims, and "
                 f"the {what} has shape {list(shape)} (torch refuses it too); use zeros(), "
                 "constant(v), normal(std) or uniform(bound)")
    fan_in, fan_out = fans(shape)
    if kind.startswith("kaiming"):
        fan = fan_in if init.mode == "fan_in" else fan_out
        std = calculate_gain(init.nonlinearity, init.a) / math.sqrt(fan)
    else:
        std = init.scale * math.sqrt(2.0 / float(fan_in + fan_out))
    if kind.endswith("uniform"):
        return _uniform(shape, math.sqrt(3.0) * std)
    return _normal(shape, std)


def _uniform(shape, bound: float) -> ParamSpec:
    # bound 0 gives zeros in torch (uniform_(-0, 0)); ParamSpec's scale 0 would mean torch's default
    return ParamSpec(shape, "uniform", scale=bound) if bound > 0 else ParamSpec(shape, "zeros")


def _normal(shape, std: float) -> ParamSpec:
    return ParamSpec(shape, "normal", scale=std) if std > 0 else ParamSpec(shape, "zeros")


def check_bilinear(shape: tuple, groups: int, ctx) -> None:
    """The weight [in, out / groups, kh, kw] can hold FCN's kernel per channel: in == out."""
    cin, per_group = shape[0], shape[1]
    cout = per_group * groups
    if cin != cout:
        ctx.fail(f"init = bilinear() puts one upsampling kernel on each channel, so it needs "
                 f"as many output channels as input channels, got {cin} in and {cout} out")
