"""The torch target's training-related lines of __init__: layer initialisers (`init =`,
`bias_init =`, as torch.nn.init calls after the module is built) and frozen parameters
(requires_grad=False). A layer without either gets no extra line, so sources stay as
they were."""
from __future__ import annotations

from ...ir.graph import Node

# argument -> parameter it initialises
_INIT_ATTRS = (("init", "weight"), ("bias_init", "bias"))


def _init_call(init, target: str) -> tuple:
    """(the statement initialising `target` as `init` says, helper names it needs)."""
    k = init.kind
    if k in ("zeros", "ones"):
        return f"nn.init.{k}_({target})", ()
    if k == "constant":
        return f"nn.init.constant_({target}, {init.scale!r})", ()
    if k == "normal":
        return f"nn.init.normal_({target}, std={init.scale!r})", ()
    if k == "uniform":
        return f"nn.init.uniform_({target}, {-init.scale!r}, {init.scale!r})", ()
    if k.startswith("kaiming"):
        kw = ""
        if init.a != 0:
            kw += f", a={init.a!r}"
        if init.mode != "fan_in":
            kw += f", mode={init.mode!r}"
        if init.nonlinearity != "leaky_relu":
            kw += f", nonlinearity={init.nonlinearity!r}"
        return f"nn.init.{k}_({target}{kw})", ()
    if k.startswith("xavier"):
        return f"nn.init.{k}_({target}" + (f", gain={init.scale!r})" if init.scale != 1 else ")"), ()
    if k == "bilinear":
        return f"bilinear_init_({target})", ("bilinear_init_",)
    raise AssertionError(f"unknown initialiser {k}")


def init_lines(n: Node, ref: str) -> tuple:
    """(statements following the module's construction, helper names they need)."""
    lines, helpers = [], []
    for attr, pname in _INIT_ATTRS:
        init = n.attrs.get(attr)
        # (an initialiser value only: PReLU's `init =` is its slope's number, which nn.PReLU sets)
        if getattr(init, "type_label", None) == "init" and pname in n.params:
            line, hs = _init_call(init, f"{ref}.{pname}")
            lines.append(line)
            helpers += hs
    trainable = {p: s.trainable for p, s in n.params.items() if not s.buffer}
    frozen = [p for p, t in trainable.items() if not t]
    if frozen and len(frozen) == len(trainable):
        lines.append(f"{ref}.requires_grad_(False)")
    else:
        lines += [f"{ref}.{p}.requires_grad_(False)" for p in frozen]
    return lines, helpers


HELPERS = {
    # keyed by the name it defines, as pynames keeps helper names free of networks' names
    "bilinear_init_": '''
@torch.no_grad()
def bilinear_init_(weight):
    """FCN's bilinear upsampling kernel on each channel of a transposed convolution's weight
    [C, C / groups, kh, kw]: weight[i, i % (C / groups)] = filter, 0 elsewhere."""
    filt = torch.ones((), dtype=torch.float64)
    for k in weight.shape[2:]:
        factor = (k + 1) // 2
        center = factor - 1 if k % 2 == 1 else factor - 0.5
        axis = 1 - (torch.arange(k, dtype=torch.float64) - center).abs() / factor
        filt = filt[..., None] * axis
    weight.zero_()
    channels = torch.arange(weight.shape[0])
    weight[channels, channels % weight.shape[1]] = filt.to(weight.dtype)
    return weight
''',
    "FrozenBatchNorm2d": '''
class FrozenBatchNorm2d(nn.Module):
    """Batch normalisation with fixed statistics and affine parameters, all buffers (as
    torchvision.ops.FrozenBatchNorm2d): the same in training and in eval."""

    def __init__(self, num_features, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        state_dict.pop(prefix + "num_batches_tracked", None)     # from a BatchNorm2d
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def forward(self, x):
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        bias = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)
''',
}
