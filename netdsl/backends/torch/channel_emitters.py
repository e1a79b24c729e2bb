"""Torch emitters of ChannelShuffle, chunk, StochasticDepth and LayerNorm2d (netdsl/ir/ops/channels.py).

Each is the fastest exact form measured: F.channel_shuffle (about 30% faster than torchvision's
view / transpose / contiguous / view, the same values); LayerNorm2d as torchvision's (permute to
channels-last, nn.LayerNorm over C, permute back); StochasticDepth as torchvision.ops'
stochastic_depth, drawing its Bernoulli noise from torch's global generator in the same way, so a
seeded run drops the same samples as torchvision.
"""
from __future__ import annotations

from .emitters import EMITTERS, HELPERS, TorchEmitter, ln_module

EMITTERS["ChannelShuffle"] = TorchEmitter(lambda n, ins, m: f"F.channel_shuffle({ins[0]}, {n.attrs['groups']})")


def _chunk_call(n, ins, m):
    if len(n.outputs) == 1:        # one part: the tensor itself (torch.chunk's only part is a view of it)
        return ins[0]
    return f"torch.chunk({ins[0]}, {n.attrs['chunks']}, dim={n.attrs['dim']})"


EMITTERS["chunk"] = TorchEmitter(_chunk_call)

HELPERS["stochastic_depth"] = '''
def stochastic_depth(x, p, mode, training):
    """torchvision.ops.stochastic_depth: while training, zero x per sample of dim 0 (mode 'row')
    or as a whole (mode 'batch') with probability p, the rest scaled by 1 / (1 - p); the noise
    drawn by torch's global generator. Identity in eval."""
    if not training or p == 0.0:
        return x
    survival = 1.0 - p
    size = [x.shape[0]] + [1] * (x.dim() - 1) if mode == "row" else [1] * x.dim()
    noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)
    if survival > 0.0:
        noise.div_(survival)
    return x * noise
'''


def _depth_call(n, ins, m):
    a = n.attrs
    if a["p"] == 0:
        return ins[0]
    return f"stochastic_depth({ins[0]}, {float(a['p'])!r}, {a['mode']!r}, self.training)"


EMITTERS["StochasticDepth"] = TorchEmitter(_depth_call, helpers=("stochastic_depth",))


EMITTERS["LayerNorm2d"] = TorchEmitter(lambda n, ins, m: f"{m}({ins[0]}.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)",
                                       ln_module("num_channels"))
