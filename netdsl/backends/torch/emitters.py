"""One PyTorch emitter per op.

An emitter gives the constructor of the op's module (for ops with parameters or
state; None for stateless ops, which are called functionally) and the forward
expression, from the input expressions and the module reference. Helper functions
an op needs are pasted into the generated source from `HELPERS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ...ir.graph import Node


@dataclass(frozen=True)
class TorchEmitter:
    call: Callable[[Node, list, str], str]        # (node, input exprs, module ref) -> expression
    module: Callable[[Node], str] | None = None   # (node) -> constructor expression
    helpers: tuple = ()
    inplace: Callable[[Node, list, str], str] | None = None   # the same, overwriting its input


def _kw(**kw) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kw.items())


def _args(*pos, **kw) -> str:
    parts = [repr(p) for p in pos] + [f"{k}={v!r}" for k, v in kw.items()]
    return ", ".join(parts)


def _compact(v):
    """(3, 3) -> 3 for readability where torch accepts either."""
    if isinstance(v, tuple) and v and all(x == v[0] for x in v):
        return v[0]
    return v


def _first(node, ins, mod):
    return f"{mod}({ins[0]})"


# ---- convolutions --------------------------------------------------------------------
def _conv_module(cls):
    def make(n: Node) -> str:
        a = n.attrs
        kw = {}
        if any(s != 1 for s in a["stride"]):
            kw["stride"] = _compact(a["stride"])
        pad = a["padding"]
        if pad != "valid" and (isinstance(pad, str) or any(p != 0 for p in pad)):
            kw["padding"] = pad if isinstance(pad, str) else _compact(pad)
        if "output_padding" in a and any(p != 0 for p in a["output_padding"]):
            kw["output_padding"] = _compact(a["output_padding"])
        # a dilation along a kernel of size 1 changes nothing, and torch's CPU convolution can
        # crash on it (a segfault with a [N, C, 1, W] view of odd strides): left out. Not for a
        # transposed conv, where it is what allows an output_padding of at least the stride.
        dilation = a["dilation"] if "output_padding" in a else tuple(
            d if k > 1 else 1 for d, k in zip(a["dilation"], a["kernel_size"]))
        if any(d != 1 for d in dilation):
            kw["dilation"] = _compact(dilation)
        if a["groups"] != 1:
            kw["groups"] = a["groups"]
        if not a["bias"]:
            kw["bias"] = False
        head = f"{a['in_channels']}, {a['out_channels']}, {_compact(a['kernel_size'])!r}"
        return f"nn.{cls}({head}" + (", " + _kw(**kw) if kw else "") + ")"
    return make


EMITTERS: dict[str, TorchEmitter] = {
    "Conv1d": TorchEmitter(_first, _conv_module("Conv1d")),
    "Conv2d": TorchEmitter(_first, _conv_module("Conv2d")),
    "ConvTranspose2d": TorchEmitter(_first, _conv_module("ConvTranspose2d")),
}


# ---- linear, reshaping ---------------------------------------------------------------------
def _linear_module(n):
    a = n.attrs
    return f"nn.Linear({a['in_features']}, {a['out_features']}" + ("" if a["bias"] else ", bias=False") + ")"


EMITTERS["Linear"] = TorchEmitter(_first, _linear_module)
EMITTERS["Flatten"] = TorchEmitter(
    lambda n, ins, m: f"torch.flatten({ins[0]}, {n.attrs['start_dim']}, {n.attrs['end_dim']})")


# ---- normalisation ---------------------------------------------------------------------
def _bn_module(cls):
    def make(n):
        a = n.attrs
        kw = {}
        if a["eps"] != 1e-5:
            kw["eps"] = a["eps"]
        if a["momentum"] != 0.1:
            kw["momentum"] = a["momentum"]
        if not a["affine"]:
            kw["affine"] = False
        return f"nn.{cls}({a['num_features']}" + (", " + _kw(**kw) if kw else "") + ")"
    return make


EMITTERS["BatchNorm1d"] = TorchEmitter(_first, _bn_module("BatchNorm1d"))
EMITTERS["BatchNorm2d"] = TorchEmitter(_first, _bn_module("BatchNorm2d"))
EMITTERS["FrozenBatchNorm2d"] = TorchEmitter(
    _first, lambda n: f"FrozenBatchNorm2d({n.attrs['num_features']}"
    + (f", eps={n.attrs['eps']!r})" if n.attrs["eps"] != 1e-5 else ")"), helpers=("FrozenBatchNorm2d",))
EMITTERS["Dropout"] = TorchEmitter(
    lambda n, ins, m: f"F.dropout({ins[0]}, {n.attrs['p']!r}, self.training)")
EMITTERS["LocalResponseNorm"] = TorchEmitter(
    lambda n, ins, m: f"F.local_response_norm({ins[0]}, {_args(n.attrs['size'], alpha=n.attrs['alpha'], beta=n.attrs['beta'], k=n.attrs['k'])})")


# ---- activations -----------------------------------------------------------------------
EMITTERS["Identity"] = TorchEmitter(lambda n, ins, m: ins[0])
EMITTERS["ReLU"] = TorchEmitter(lambda n, ins, m: f"F.relu({ins[0]})",
                                inplace=lambda n, ins, m: f"F.relu({ins[0]}, inplace=True)")
EMITTERS["LeakyReLU"] = TorchEmitter(lambda n, ins, m: f"F.leaky_relu({ins[0]}, {n.attrs['negative_slope']!r})")
EMITTERS["ELU"] = TorchEmitter(lambda n, ins, m: f"F.elu({ins[0]}, {n.attrs['alpha']!r})")
EMITTERS["GELU"] = TorchEmitter(
    lambda n, ins, m: f"F.gelu({ins[0]}" + (", approximate='tanh')" if n.attrs["approximate"] == "tanh" else ")"))
# In place where the input is dead and its producer does not need it for backward (a conv or
# BatchNorm output), as torchvision's Conv2dNormActivation builds its activations (inplace=True):
# it saves an allocation per layer, which shows at larger batches.
EMITTERS["SiLU"] = TorchEmitter(lambda n, ins, m: f"F.silu({ins[0]})",
                                inplace=lambda n, ins, m: f"F.silu({ins[0]}, inplace=True)")
EMITTERS["Sigmoid"] = TorchEmitter(lambda n, ins, m: f"torch.sigmoid({ins[0]})")
EMITTERS["Tanh"] = TorchEmitter(lambda n, ins, m: f"torch.tanh({ins[0]})")
EMITTERS["Softmax"] = TorchEmitter(lambda n, ins, m: f"F.softmax({ins[0]}, dim={n.attrs['dim']})")
EMITTERS["LogSoftmax"] = TorchEmitter(lambda n, ins, m: f"F.log_softmax({ins[0]}, dim={n.attrs['dim']})")
EMITTERS["ReLU6"] = TorchEmitter(lambda n, ins, m: f"F.relu6({ins[0]})",
                                 inplace=lambda n, ins, m: f"F.relu6({ins[0]}, inplace=True)")
EMITTERS["Hardswish"] = TorchEmitter(lambda n, ins, m: f"F.hardswish({ins[0]})",
                                     inplace=lambda n, ins, m: f"F.hardswish({ins[0]}, inplace=True)")
EMITTERS["Hardsigmoid"] = TorchEmitter(lambda n, ins, m: f"F.hardsigmoid({ins[0]})")
EMITTERS["Mish"] = TorchEmitter(lambda n, ins, m: f"F.mish({ins[0]})")


def _prelu_module(n):
    a = n.attrs
    args = ([str(a["num_parameters"])] if a["num_parameters"] != 1 else []) + \
        ([f"init={a['init']!r}"] if a["init"] != 0.25 else [])
    return f"nn.PReLU({', '.join(args)})"


EMITTERS["PReLU"] = TorchEmitter(_first, _prelu_module)


# ---- pooling ------------------------------------------------------------------------------
def _pool_call(fn):
    def call(n, ins, m):
        a = n.attrs
        kw = {"kernel_size": _compact(a["kernel_size"])}
        if a["stride"] != a["kernel_size"]:
            kw["stride"] = _compact(a["stride"])
        if any(a["padding"]):
            kw["padding"] = _compact(a["padding"])
        if fn == "max_pool2d" and any(d != 1 for d in a["dilation"]):
            kw["dilation"] = _compact(a["dilation"])
        if a["ceil_mode"]:
            kw["ceil_mode"] = True
        if fn == "avg_pool2d" and not a["count_include_pad"]:
            kw["count_include_pad"] = False
        return f"F.{fn}({ins[0]}, {_kw(**kw)})"
    return call


EMITTERS["MaxPool2d"] = TorchEmitter(_pool_call("max_pool2d"))
EMITTERS["AvgPool2d"] = TorchEmitter(_pool_call("avg_pool2d"))
EMITTERS["AdaptiveAvgPool2d"] = TorchEmitter(
    lambda n, ins, m: f"F.adaptive_avg_pool2d({ins[0]}, {_compact(n.attrs['output_size'])!r})")
EMITTERS["AdaptiveMaxPool2d"] = TorchEmitter(
    lambda n, ins, m: f"F.adaptive_max_pool2d({ins[0]}, {_compact(n.attrs['output_size'])!r})")
EMITTERS["GlobalAvgPool2d"] = TorchEmitter(lambda n, ins, m: f"{ins[0]}.mean((2, 3), keepdim=True)")
EMITTERS["GlobalMaxPool2d"] = TorchEmitter(lambda n, ins, m: f"{ins[0]}.amax((2, 3), keepdim=True)")


def _pyramid_call(n, ins, m):
    a = n.attrs
    return f"spatial_pyramid_pool({ins[0]}, {tuple(a['levels'])!r}, {a['mode']!r}, {a['bins']!r})"


def _lp_call(n, ins, m):
    a = n.attrs
    kw = {"kernel_size": _compact(a["kernel_size"])}
    if a["stride"] != a["kernel_size"]:
        kw["stride"] = _compact(a["stride"])
    if a["ceil_mode"]:
        kw["ceil_mode"] = True
    return f"F.lp_pool2d({ins[0]}, {float(a['norm_type'])!r}, {_kw(**kw)})"


EMITTERS["SpatialPyramidPool2d"] = TorchEmitter(_pyramid_call, helpers=("spatial_pyramid_pool",))
EMITTERS["LPPool2d"] = TorchEmitter(_lp_call)


# ---- tensor functions ----------------------------------------------------------------------
def _other(n, ins) -> str:
    """The second operand: a tensor, or the node's number as a float literal (`2.0`)."""
    return ins[1] if len(ins) == 2 else repr(float(n.attrs["scalar"]))


def _operands(n, ins) -> tuple:
    """The left and right operands: two tensors, or a tensor and its number (`x * 2.0`,
    `1.0 - x`), in the order the spec wrote them."""
    other = _other(n, ins)
    return (other, ins[0]) if len(ins) == 1 and n.attrs["reverse"] else (ins[0], other)


def _arith(sym):
    def call(n, ins, m):
        left, right = _operands(n, ins)
        return f"{left} {sym} {right}"
    return call


def _add_inplace(n, ins, m):
    """`out += identity` (a residual, see codegen._may_overwrite), or `x += 2.0`."""
    return f"{ins[0]}.add_({_other(n, ins)})"


EMITTERS["add"] = TorchEmitter(_arith("+"), inplace=_add_inplace)
EMITTERS["sub"] = TorchEmitter(_arith("-"))
EMITTERS["mul"] = TorchEmitter(_arith("*"))
EMITTERS["div"] = TorchEmitter(_arith("/"))
EMITTERS["neg"] = TorchEmitter(lambda n, ins, m: f"-{ins[0]}")
EMITTERS["concat"] = TorchEmitter(lambda n, ins, m: f"torch.cat([{', '.join(ins)}], dim={n.attrs['dim']})")
EMITTERS["center_crop"] = TorchEmitter(lambda n, ins, m: f"center_crop({ins[0]}, {ins[1]})",
                                       helpers=("center_crop",))


def _crop_call(n, ins, m):
    """x[:, :, o:o + like.shape[2], ...]: Caffe's Crop (axis 2) at fixed offsets."""
    x, like = ins
    parts = []
    for i, k in enumerate(n.attrs["offset"], 2):
        size = n.inputs[1].shape[i]
        end = str(k + size) if isinstance(size, int) else (f"{k} + " if k else "") + f"{like}.shape[{i}]"
        parts.append(f"{k or ''}:{end}")
    return f"{x}[:, :, {', '.join(parts)}]"


EMITTERS["crop"] = TorchEmitter(_crop_call)


def _resize_call(n, ins, m):
    """F.interpolate defines the rule (see `resize` in docs/language.md): with scale_factor=,
    and recompute_scale_factor unset, torch sizes by floor(L * s) in double and reads positions
    from 1 / s; shape inference and the ONNX graph copy that."""
    a = n.attrs
    if a["like"]:
        size = f"{ins[1]}.shape[-2:]"
        kw = f"size={size}"
    elif a["size"] is not None:
        kw = f"size={tuple(a['size'])!r}"
    else:
        kw = f"scale_factor={tuple(float(s) for s in a['scale'])!r}"
    kw += f", mode={a['mode']!r}"
    if a["mode"] == "bilinear":
        kw += f", align_corners={a['align_corners']!r}"
    return f"F.interpolate({ins[0]}, {kw})"


EMITTERS["resize"] = TorchEmitter(_resize_call)


HELPERS = {
    "spatial_pyramid_pool": '''
def spatial_pyramid_pool(x, levels, mode, bins):
    """Spatial pyramid pooling (He et al. 2014): each level n pools x [N, C, H, W] into n x n
    bins, flattened channel-major; the levels concatenated -> [N, C * sum(n * n)]. bins
    'adaptive': adaptive pooling's bins; 'paper': window ceil(a / n), stride floor(a / n)."""
    out = []
    for n in levels:
        if bins == "paper":
            kernel = (-(-x.shape[2] // n), -(-x.shape[3] // n))
            stride = (x.shape[2] // n, x.shape[3] // n)
            y = F.max_pool2d(x, kernel, stride) if mode == "max" else F.avg_pool2d(x, kernel, stride)
        else:
            y = F.adaptive_max_pool2d(x, n) if mode == "max" else F.adaptive_avg_pool2d(x, n)
        out.append(y.flatten(1))
    return torch.cat(out, 1)
''',
    "center_crop": '''
def center_crop(x, like):
    """Crop the spatial dims (2 and up) of x to those of `like`, centred."""
    for d in range(2, x.dim()):
        x = x.narrow(d, (x.shape[d] - like.shape[d]) // 2, like.shape[d])
    return x
''',
}


# ---- stochastic pooling --------------------------------------------------------------------
HELPERS["stochastic_pool2d"] = '''
def stochastic_pool2d(x, kernel_size, stride, padding, training):
    """Stochastic pooling (Zeiler & Fergus 2013) of x: [N, C, H, W] >= 0, zero padded. Training:
    each window outputs one of its elements, drawn with probability a_i / sum(a) by torch's
    generator, and passes its gradient to that element alone. Eval: the expectation,
    sum(a^2) / sum(a), and 0 for an all-zero window."""
    if not training:
        num = F.avg_pool2d(x * x, kernel_size, stride, padding)
        den = F.avg_pool2d(x, kernel_size, stride, padding)      # the same divisor: it cancels
        return num / torch.where(den > 0, den, torch.ones_like(den))
    # (a data-dependent branch: skipped under torch.compile, which could not trace it)
    if not torch.compiler.is_compiling() and not bool(((x >= 0) & torch.isfinite(x)).all()):
        raise ValueError("StochasticPool2d: its input must be finite and non-negative (as after a ReLU), "
                         f"but its smallest value is {float(x.min()):g}")
    n, c, h, w = x.shape
    oh = (h + 2 * padding[0] - kernel_size[0]) // stride[0] + 1
    ow = (w + 2 * padding[1] - kernel_size[1]) // stride[1] + 1
    k = kernel_size[0] * kernel_size[1]
    windows = F.unfold(x, kernel_size, padding=padding, stride=stride)     # [N, C * k, oh * ow]
    windows = windows.view(n, c, k, oh * ow).transpose(2, 3)               # [N, C, oh * ow, k]
    p = windows.detach().reshape(-1, k)
    p = torch.where(p.sum(1, keepdim=True) > 0, p, torch.ones_like(p))    # all zero: any (a zero)
    pick = torch.multinomial(p, 1).view(n, c, oh * ow, 1)
    return windows.gather(3, pick).view(n, c, oh, ow)
'''


def _stochastic_pool_call(n, ins, m):
    a = n.attrs
    args = ", ".join(repr(tuple(a[k])) for k in ("kernel_size", "stride", "padding"))
    return f"stochastic_pool2d({ins[0]}, {args}, self.training)"


EMITTERS["StochasticPool2d"] = TorchEmitter(_stochastic_pool_call, helpers=("stochastic_pool2d",))


from .training import HELPERS as _TRAINING_HELPERS  # noqa: E402 - init = bilinear(), FrozenBatchNorm2d
HELPERS.update(_TRAINING_HELPERS)


# ---- learned tensors ---------------------------------------------------------------------
def _parameter_module(n):
    """The tensor starts as its `param` declaration says (torch draws the random kinds)."""
    a = n.attrs
    (spec,) = n.params.values()
    dims = ", ".join(map(str, a["shape"]))
    if spec.init == "normal":
        return f"nn.Parameter(torch.empty({dims}).normal_(std={a['scale']!r}))"
    if spec.init == "uniform":
        return f"nn.Parameter(torch.empty({dims}).uniform_({-a['scale']!r}, {a['scale']!r}))"
    if spec.init == "constant":
        return f"nn.Parameter(torch.full(({dims},), {spec.scale!r}))"
    return f"nn.Parameter(torch.{spec.init}({dims}))"


EMITTERS["parameter"] = TorchEmitter(lambda n, ins, m: m, _parameter_module)


# ---- attention, shape functions, reductions ------------------------------------------------
def ln_module(size_attr: str):
    """The nn.LayerNorm constructor of a node whose normalised size is attribute `size_attr`
    (LayerNorm's normalized_shape, LayerNorm2d's num_channels)."""
    def make(n):
        a = n.attrs
        kw = {}
        if a["eps"] != 1e-5:
            kw["eps"] = a["eps"]
        if not a["elementwise_affine"]:
            kw["elementwise_affine"] = False
        return f"nn.LayerNorm({a[size_attr]}" + (", " + _kw(**kw) if kw else "") + ")"
    return make


def _mha_module(n):
    a = n.attrs
    kw = {}
    if a["dropout"]:
        kw["dropout"] = a["dropout"]
    if not a["bias"]:
        kw["bias"] = False
    kw["batch_first"] = True
    return f"nn.MultiheadAttention({a['embed_dim']}, {a['num_heads']}, {_kw(**kw)})"


def _mha_call(n, ins, m):
    q, k, v = ins if len(ins) == 3 else ins * 3
    return f"{m}({q}, {k}, {v}, need_weights=False)[0]"


def _reshape_call(n, ins, m):
    x, src = ins[0], ins[-1]
    parts = [f"{src}.shape[{i}]" if s == 0 else str(s) for i, s in enumerate(n.attrs["shape"])]
    return f"{x}.reshape({', '.join(parts)})"


def _expand_call(n, ins, m):
    t, like = ins
    sizes = [f"{like}.shape[{i}]" if i in n.attrs["dims"] else "-1" for i in range(n.inputs[0].rank)]
    return f"{t}.expand({', '.join(sizes)})"


def _reduce_call(fn):
    return lambda n, ins, m: f"{ins[0]}.{fn}({tuple(n.attrs['dims'])!r}, keepdim={n.attrs['keepdim']!r})"


EMITTERS["LayerNorm"] = TorchEmitter(_first, ln_module("normalized_shape"))
EMITTERS["MultiheadAttention"] = TorchEmitter(_mha_call, _mha_module)
EMITTERS["matmul"] = TorchEmitter(lambda n, ins, m: f"torch.matmul({ins[0]}, {ins[1]})")
EMITTERS["reshape"] = TorchEmitter(_reshape_call)
EMITTERS["permute"] = TorchEmitter(lambda n, ins, m: f"{ins[0]}.permute({', '.join(map(str, n.attrs['dims']))})")
EMITTERS["transpose"] = TorchEmitter(
    lambda n, ins, m: f"{ins[0]}.transpose({n.attrs['dim0']}, {n.attrs['dim1']})")
EMITTERS["expand"] = TorchEmitter(_expand_call)
EMITTERS["select"] = TorchEmitter(lambda n, ins, m: f"{ins[0]}.select({n.attrs['dim']}, {n.attrs['index']})")
EMITTERS["mean"] = TorchEmitter(_reduce_call("mean"))
EMITTERS["amax"] = TorchEmitter(_reduce_call("amax"))


# ---- selection: topk, take ---------------------------------------------------------------------
def _topk_call(n, ins, m):
    """torch.topk keeping min(k, size) elements; the size read at run time where symbolic."""
    a = n.attrs
    size = n.inputs[0].shape[a["dim"]]
    k = min(a["k"], int(size)) if isinstance(size, int) else f"min({a['k']}, {ins[0]}.shape[{a['dim']}])"
    return f"torch.topk({ins[0]}, {k}, dim={a['dim']}" + ("" if a["largest"] else ", largest=False") + ")"


EMITTERS["topk"] = TorchEmitter(_topk_call)
EMITTERS["take"] = TorchEmitter(lambda n, ins, m: f"{ins[0]}[{ins[1]}]")


from . import detection_emitters  # noqa: E402,F401 - registers the detection ops
from . import maxvit_emitters  # noqa: E402,F401 - registers MaxViT's ops
from . import channel_emitters  # noqa: E402,F401 - ChannelShuffle, chunk, StochasticDepth, LayerNorm2d
from . import swin_emitters  # noqa: E402,F401 - ShiftedWindowAttention, patch_merge (Swin)
