"""Torch emitters of MaxViT's ops (netdsl/ir/ops/maxvit.py): window partitioning and
torchvision's RelativePositionalMultiHeadAttention, as helpers pasted into the source."""
from __future__ import annotations

from ...ir import dims as D
from .emitters import EMITTERS, HELPERS, TorchEmitter

HELPERS["window_partition"] = '''
def window_partition(x, p):
    """[B, C, H, W] -> [B, (H/p)(W/p), p*p, C]: p x p windows (torchvision's WindowPartition)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // p) * (w // p), p * p, c)
'''

HELPERS["window_departition"] = '''
def window_departition(x, p, hp, wp):
    """[B, hp * wp, p*p, C] -> [B, C, hp * p, wp * p] (torchvision's WindowDepartition)."""
    b, _, _, c = x.shape
    x = x.reshape(b, hp, wp, p, p, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, c, hp * p, wp * p)
'''

HELPERS["relative_position_index"] = '''
def relative_position_index(height, width):
    """[h * w, h * w] int64: the bias table's row for each pair of tokens of an h x w window."""
    coords = torch.stack(torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    return (rel[:, :, 0] + height - 1) * (2 * width - 1) + rel[:, :, 1] + width - 1
'''

HELPERS["RelativePositionalMultiHeadAttention"] = '''
class RelativePositionalMultiHeadAttention(nn.Module):
    """torchvision.models.maxvit.RelativePositionalMultiHeadAttention: attention within each
    group of max_seq_len = s * s tokens of [B, G, P, D], feat_dim / head_dim heads, keys scaled
    by feat_dim ** -0.5, plus a learned bias per head and relative offset."""

    def __init__(self, feat_dim, head_dim, max_seq_len):
        super().__init__()
        self.n_heads = feat_dim // head_dim
        self.head_dim = head_dim
        self.size = int(round(max_seq_len ** 0.5))
        self.max_seq_len = max_seq_len
        self.to_qkv = nn.Linear(feat_dim, self.n_heads * self.head_dim * 3)
        self.scale_factor = feat_dim ** -0.5
        self.merge = nn.Linear(self.head_dim * self.n_heads, feat_dim)
        self.relative_position_bias_table = nn.Parameter(
            torch.empty((2 * self.size - 1) * (2 * self.size - 1), self.n_heads))
        self.register_buffer("relative_position_index", relative_position_index(self.size, self.size))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x):
        b, g, p, d = x.shape
        q, k, v = self.to_qkv(x).reshape(b, g, p, 3, self.n_heads, self.head_dim).permute(3, 0, 1, 4, 2, 5)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(self.max_seq_len, self.max_seq_len, -1).permute(2, 0, 1)
        attn = torch.matmul(q, (k * self.scale_factor).transpose(-2, -1)) + bias
        out = torch.matmul(F.softmax(attn, dim=-1), v)
        return self.merge(out.permute(0, 1, 3, 2, 4).reshape(b, g, p, d))
'''


def _departition_call(n, ins, m):
    p = n.attrs["p"]
    h, w = n.outputs[0].shape[2:]
    hp = str(int(h) // p) if D.is_static(h) else f"{ins[1]}.shape[2] // {p}"
    wp = str(int(w) // p) if D.is_static(w) else f"{ins[1]}.shape[3] // {p}"
    return f"window_departition({ins[0]}, {p}, {hp}, {wp})"


def _rpmha_module(n):
    a = n.attrs
    return f"RelativePositionalMultiHeadAttention({a['feat_dim']}, {a['head_dim']}, {a['max_seq_len']})"


EMITTERS["window_partition"] = TorchEmitter(
    lambda n, ins, m: f"window_partition({ins[0]}, {n.attrs['p']})", helpers=("window_partition",))
EMITTERS["window_departition"] = TorchEmitter(_departition_call, helpers=("window_departition",))
EMITTERS["RelativePositionalMultiHeadAttention"] = TorchEmitter(
    lambda n, ins, m: f"{m}({ins[0]})", _rpmha_module,
    helpers=("relative_position_index", "RelativePositionalMultiHeadAttention"))
