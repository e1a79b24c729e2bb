"""Torch emitters of Swin Transformer's ops (netdsl/ir/ops/swin.py): torchvision's
ShiftedWindowAttention(V2) as one module class, and its patch merging's pixel shuffle, as
helpers pasted into the generated source (which needs only torch). The bias index is MaxViT's
helper `relative_position_index` (maxvit_emitters), flattened as torchvision's Swin keeps it."""
from __future__ import annotations

from .emitters import EMITTERS, HELPERS, TorchEmitter

HELPERS["patch_merge"] = '''
def patch_merge(x):
    """[N, H, W, C] -> [N, ceil(H/2), ceil(W/2), 4C]: odd sizes zero padded, then each 2 x 2
    patch's pixels side by side (torchvision's _patch_merging_pad)."""
    h, w = x.shape[-3], x.shape[-2]
    x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
    return torch.cat([x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :], x[..., 0::2, 1::2, :],
                      x[..., 1::2, 1::2, :]], -1)
'''

HELPERS["ShiftedWindowAttention"] = '''
class ShiftedWindowAttention(nn.Module):
    """Swin Transformer's shifted-window attention on [N, H, W, C], as torchvision's
    ShiftedWindowAttention (version 1) and ShiftedWindowAttentionV2 (version 2: cosine attention
    with a learned logit scale, continuous position bias from cpb_mlp), with their parameters
    and buffers. The map is zero padded to window multiples and rolled by -shift_size (not along
    a dim whose padded size is one window); tokens attend within their window, across the
    roll's seams masked by -100; then everything is undone. The mask depends only on the
    padded size: it is made once per size (and device and dtype) and kept."""

    def __init__(self, dim, window_size, shift_size, num_heads, qkv_bias=True, proj_bias=True,
                 attention_dropout=0.0, dropout=0.0, version=1):
        super().__init__()
        wh, ww = window_size
        self.window_size, self.shift_size, self.num_heads = [wh, ww], list(shift_size), num_heads
        self.attention_dropout, self.dropout, self.version = attention_dropout, dropout, version
        if version == 1:
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        else:
            self.logit_scale = nn.Parameter(torch.log(10 * torch.ones((num_heads, 1, 1))))
            dy = torch.arange(-(wh - 1), wh, dtype=torch.float32) / (wh - 1) * 8
            dx = torch.arange(-(ww - 1), ww, dtype=torch.float32) / (ww - 1) * 8
            t = torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1).unsqueeze(0)
            self.register_buffer("relative_coords_table", torch.sign(t) * torch.log2(t.abs() + 1.0) / 3.0)
        self.register_buffer("relative_position_index", relative_position_index(wh, ww).flatten())
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        if version == 2:
            self.cpb_mlp = nn.Sequential(nn.Linear(2, 512), nn.ReLU(inplace=True),
                                         nn.Linear(512, num_heads, bias=False))
            if qkv_bias:
                with torch.no_grad():
                    self.qkv.bias[dim:2 * dim].zero_()
        self._masks = {}

    def position_bias(self):
        """[1, heads, n, n] for the n tokens of a window."""
        n = self.window_size[0] * self.window_size[1]
        if self.version == 1:
            table = self.relative_position_bias_table
        else:
            table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        bias = table[self.relative_position_index].view(n, n, -1).permute(2, 0, 1).contiguous().unsqueeze(0)
        return bias if self.version == 1 else 16 * torch.sigmoid(bias)

    def attention_mask(self, pad_h, pad_w, shift, like):
        """[windows, n, n]: -100 between tokens from different regions of the rolled map."""
        key = (pad_h, pad_w, tuple(shift), like.device, like.dtype)
        if key not in self._masks:
            if len(self._masks) >= 16:          # many input sizes: keep the cache small
                self._masks.clear()
            (wh, ww), (sh, sw) = self.window_size, shift
            mask = like.new_zeros((pad_h, pad_w))
            count = 0
            for h in ((0, -wh), (-wh, -sh), (-sh, None)):
                for w in ((0, -ww), (-ww, -sw), (-sw, None)):
                    mask[h[0]:h[1], w[0]:w[1]] = count
                    count += 1
            mask = mask.view(pad_h // wh, wh, pad_w // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)
            mask = mask.unsqueeze(1) - mask.unsqueeze(2)
            self._masks[key] = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
        return self._masks[key]

    def forward(self, x):
        b, h, w, c = x.shape
        (wh, ww), heads = self.window_size, self.num_heads
        pad_r, pad_b = (ww - w % ww) % ww, (wh - h % wh) % wh
        if pad_r or pad_b:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        ph, pw = h + pad_b, w + pad_r
        shift = [0 if wh >= ph else self.shift_size[0], 0 if ww >= pw else self.shift_size[1]]
        if sum(shift) > 0:
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        nw, n = (ph // wh) * (pw // ww), wh * ww
        x = x.view(b, ph // wh, wh, pw // ww, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b * nw, n, c)
        qkv_bias = self.qkv.bias
        if self.version == 2 and qkv_bias is not None:      # V2: no bias on the keys
            qkv_bias = torch.cat((qkv_bias[:c], torch.zeros_like(qkv_bias[c:2 * c]), qkv_bias[2 * c:]))
        qkv = F.linear(x, self.qkv.weight, qkv_bias)
        q, k, v = qkv.reshape(b * nw, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        if self.version == 2:
            attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
            attn = attn * torch.clamp(self.logit_scale, max=4.605170185988092).exp()     # log(100)
        else:
            attn = (q * (c // heads) ** -0.5).matmul(k.transpose(-2, -1))
        attn = attn + self.position_bias()
        if sum(shift) > 0:
            mask = self.attention_mask(ph, pw, shift, x)
            attn = (attn.view(b, nw, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)).view(-1, heads, n, n)
        attn = F.dropout(F.softmax(attn, dim=-1), p=self.attention_dropout, training=self.training)
        x = attn.matmul(v).transpose(1, 2).reshape(b * nw, n, c)
        x = F.dropout(self.proj(x), p=self.dropout, training=self.training)
        x = x.view(b, ph // wh, pw // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, c)
        if sum(shift) > 0:
            x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
        return x[:, :h, :w, :].contiguous() if pad_r or pad_b else x
'''


def _swa_module(n):
    a = n.attrs
    args = [str(a["dim"]), repr(list(a["window_size"])), repr(list(a["shift_size"])), str(a["num_heads"])]
    defaults = {"qkv_bias": True, "proj_bias": True, "attention_dropout": 0.0, "dropout": 0.0, "version": 1}
    args += [f"{k}={a[k]!r}" for k, v in defaults.items() if a[k] != v]
    return f"ShiftedWindowAttention({', '.join(args)})"


EMITTERS["ShiftedWindowAttention"] = TorchEmitter(lambda n, ins, m: f"{m}({ins[0]})", _swa_module,
                                                  helpers=("relative_position_index", "ShiftedWindowAttention"))
EMITTERS["patch_merge"] = TorchEmitter(lambda n, ins, m: f"patch_merge({ins[0]})", helpers=("patch_merge",))
