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
        if any(d != 1 for d in a["dilation"]):
            kw["dilation"] = _compact(a["dilation"])
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
EMITTERS["SiLU"] = TorchEmitter(lambda n, ins, m: f"F.silu({ins[0]})")
EMITTERS["Sigmoid"] = TorchEmitter(lambda n, ins, m: f"torch.sigmoid({ins[0]})")
EMITTERS["Tanh"] = TorchEmitter(lambda n, ins, m: f"torch.tanh({ins[0]})")
EMITTERS["Softmax"] = TorchEmitter(lambda n, ins, m: f"F.softmax({ins[0]}, dim={n.attrs['dim']})")
EMITTERS["LogSoftmax"] = TorchEmitter(lambda n, ins, m: f"F.log_softmax({ins[0]}, dim={n.attrs['dim']})")


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


# ---- tensor functions ----------------------------------------------------------------------
EMITTERS["add"] = TorchEmitter(lambda n, ins, m: f"{ins[0]} + {ins[1]}")
EMITTERS["mul"] = TorchEmitter(lambda n, ins, m: f"{ins[0]} * {ins[1]}")
EMITTERS["concat"] = TorchEmitter(lambda n, ins, m: f"torch.cat([{', '.join(ins)}], dim={n.attrs['dim']})")
EMITTERS["center_crop"] = TorchEmitter(lambda n, ins, m: f"center_crop({ins[0]}, {ins[1]})",
                                       helpers=("center_crop",))


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
    "center_crop": '''
def center_crop(x, like):
    """Crop the spatial dims (2 and up) of x to those of `like`, centred."""
    for d in range(2, x.dim()):
        x = x.narrow(d, (x.shape[d] - like.shape[d]) // 2, like.shape[d])
    return x
''',
}


# ---- learned tensors ---------------------------------------------------------------------
EMITTERS["parameter"] = TorchEmitter(
    lambda n, ins, m: m,
    lambda n: f"nn.Parameter(torch.zeros({', '.join(map(str, n.attrs['shape']))}))")


# ---- attention, shape functions, reductions ------------------------------------------------
def _ln_module(n):
    a = n.attrs
    kw = {}
    if a["eps"] != 1e-5:
        kw["eps"] = a["eps"]
    if not a["elementwise_affine"]:
        kw["elementwise_affine"] = False
    return f"nn.LayerNorm({a['normalized_shape']}" + (", " + _kw(**kw) if kw else "") + ")"


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


EMITTERS["LayerNorm"] = TorchEmitter(_first, _ln_module)
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
