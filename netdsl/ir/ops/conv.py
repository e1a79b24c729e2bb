"""Convolutions: Conv1d, Conv2d, ConvTranspose2d."""
from __future__ import annotations

from .. import dims as D
from ..registry import AttrSpec, OpSpec, register
from ..init import check_bilinear, layer_param
from .common import INIT_ATTRS, need_rank, numel, prod, same_pads, uniform, window_out


def _conv_attrs(n: int, transposed: bool) -> tuple:
    k = "pair" if n == 2 else "single"
    pad_kind = k if transposed else ("pair_or_str" if n == 2 else "single_or_str")
    attrs = [
        AttrSpec("out_channels", "int", check="positive", doc="output channels"),
        AttrSpec("kernel_size", k, check="positive"),
        AttrSpec("stride", k, 1, check="positive"),
        AttrSpec("padding", pad_kind, 0, check="nonneg", doc="an int, a pair, or 'same' / 'valid'"),
    ]
    if transposed:
        attrs.append(AttrSpec("output_padding", k, 0, check="nonneg"))
    attrs += [
        AttrSpec("dilation", k, 1, check="positive"),
        AttrSpec("groups", "int", 1, check="positive"),
        AttrSpec("bias", "bool", True),
    ] + list(INIT_ATTRS)
    return tuple(attrs)


def _resolve_conv(n: int, transposed: bool):
    def resolve(a, shapes, ctx):
        (x,) = shapes
        need_rank(ctx, x, (n + 2,), "[N, C, " + ", ".join("HW"[-n:] if n < 3 else "DHW") + "]")
        cin = ctx.static(x[1], "the number of input channels (dim 1)")
        g = a["groups"]
        if cin % g:
            ctx.fail(f"input channels {cin} are not divisible by groups={g}")
        if a["out_channels"] % g:
            ctx.fail(f"out_channels {a['out_channels']} is not divisible by groups={g}")
        a["in_channels"] = cin
        pad = a["padding"]
        if isinstance(pad, str):
            if pad not in ("same", "valid"):
                ctx.fail(f"padding must be an int, a tuple, 'same' or 'valid', got '{pad}'")
            if pad == "same" and any(s != 1 for s in a["stride"]):
                ctx.fail("padding='same' needs stride 1 (as in PyTorch)")
            a["pads"] = same_pads(a["kernel_size"], a["dilation"]) if pad == "same" else ((0, 0),) * n
        else:
            a["pads"] = tuple((p, p) for p in pad)
        if transposed:
            for op_, s, d in zip(a["output_padding"], a["stride"], a["dilation"]):
                if op_ >= s and op_ >= d:
                    ctx.fail(f"output_padding {op_} must be smaller than stride or dilation")
        return a
    return resolve


def _infer_conv(a, shapes, ctx):
    (x,) = shapes
    out = [x[0], a["out_channels"]]
    for i, size in enumerate(x[2:]):
        pb, pe = a["pads"][i]
        out.append(window_out(size, pb + pe, a["dilation"][i], a["kernel_size"][i], a["stride"][i]))
    return [tuple(out)]


def _infer_deconv(a, shapes, ctx):
    (x,) = shapes
    out = [x[0], a["out_channels"]]
    for i, size in enumerate(x[2:]):
        s, (p, _), d, k, op_ = (a["stride"][i], a["pads"][i], a["dilation"][i],
                                a["kernel_size"][i], a["output_padding"][i])
        out.append(D.add(D.mul(D.add(size, -1), s), -2 * p + d * (k - 1) + op_ + 1))
    return [tuple(out)]


def _weight_and_bias(a, weight_lead: tuple, fan_in: int, ctx, op: str) -> dict:
    shape = weight_lead + a["kernel_size"]
    p = {"weight": layer_param(a["init"], shape, uniform(shape, fan_in), ctx, "weight", op)}
    if a["bias"]:
        p["bias"] = layer_param(a["bias_init"], (a["out_channels"],), uniform((a["out_channels"],), fan_in),
                                ctx, "bias", op)
    elif a["bias_init"] is not None:
        ctx.fail("bias_init is given but the layer has no bias (bias = false)")
    return p


def _conv_params(op):
    def params(a, shapes, ctx):
        cin, cout, g = a["in_channels"], a["out_channels"], a["groups"]
        return _weight_and_bias(a, (cout, cin // g), cin // g * prod(a["kernel_size"]), ctx, op)
    return params


def _deconv_params(a, shapes, ctx):
    cin, cout, g = a["in_channels"], a["out_channels"], a["groups"]
    if a["init"] is not None and a["init"].kind == "bilinear":
        check_bilinear((cin, cout // g), g, ctx)
    # torch's weight is [in, out / groups, *kernel], and its fan_in is weight.size(1) * kernel
    return _weight_and_bias(a, (cin, cout // g), cout // g * prod(a["kernel_size"]), ctx, "ConvTranspose2d")


def _conv_macs(a, shapes, outs):
    return D.mul(numel(outs[0]), a["in_channels"] // a["groups"] * prod(a["kernel_size"]))


def _deconv_macs(a, shapes, outs):
    # every input pixel is scattered through the kernel into out_channels/groups maps
    return D.mul(numel(shapes[0]), a["out_channels"] // a["groups"] * prod(a["kernel_size"]))


for _n in (1, 2):
    register(OpSpec(
        f"Conv{_n}d", f"{_n}-D convolution (torch.nn.Conv{_n}d); input channels are inferred.",
        _infer_conv, _conv_attrs(_n, False), resolve=_resolve_conv(_n, False),
        params=_conv_params(f"Conv{_n}d"), macs=_conv_macs))

register(OpSpec(
    "ConvTranspose2d", "2-D transposed convolution (torch.nn.ConvTranspose2d).",
    _infer_deconv, _conv_attrs(2, True), resolve=_resolve_conv(2, True),
    params=_deconv_params, macs=_deconv_macs))
