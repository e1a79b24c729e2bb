"""ONNX emitters of Swin Transformer's ops (netdsl/ir/ops/swin.py).

ShiftedWindowAttention, as torchvision computes it, in few and cheap nodes:

- padding, the cyclic roll and the window partition are one Gather of the padded map's tokens
  (indices: where each window's token comes from); the reverse roll, partition and the crop
  back to H x W are one Gather as well;
- the relative position bias ([heads, n, n], from the table or V2's cpb_mlp) and the shift's
  attention mask ([windows, 1, n, n]) are added up once, into one [windows, heads, n, n]
  addend: computed from initializers only, it is constant-folded by onnxruntime when the
  session starts;
- q, k and v come from three products with thirds of qkv.weight (sliced from the initializer,
  V1's q scale folded in: constants after folding), so no Split copies the activations; V2's
  keys get no bias;
- with static H and W the token indices and the mask are constants; with symbolic ones they
  are computed at run time from the input's size (a few small integer ops).

patch_merge is a Reshape, a Transpose and a Reshape (after a Pad where a size may be odd).
"""
from __future__ import annotations

import math
import weakref
from functools import cached_property

import numpy as np

from ...ir import dims as D
from .builder import INT64, OnnxBuilder, reduce
from .emitters import emitter, project


# ---- index arithmetic, in numpy (static sizes) -------------------------------------------
def effective_shift(padded: int, window: int, shift: int) -> int:
    """torchvision's rule: no shift along a dim whose padded size is one window."""
    return 0 if window >= padded else shift


def window_token_index(ph, pw, wh, ww, sh, sw) -> np.ndarray:
    """[windows * n]: for each token in window order (window row-major, then token row-major),
    its flat position in the padded [ph, pw] map rolled by (-sh, -sw)."""
    rows = ((np.arange(ph) + sh) % ph).reshape(ph // wh, 1, wh, 1)
    cols = ((np.arange(pw) + sw) % pw).reshape(1, pw // ww, 1, ww)
    return (rows * pw + cols).reshape(-1).astype(np.int64)


def map_token_index(h, w, ph, pw, wh, ww, sh, sw) -> np.ndarray:
    """[h * w]: for each position of the output map, the windowed token holding it (the
    inverse of window_token_index, cropped to h x w)."""
    n, windows_w = wh * ww, pw // ww
    p = (np.arange(h) - sh) % ph
    q = (np.arange(w) - sw) % pw
    rows = (p // wh) * windows_w * n + (p % wh) * ww
    cols = (q // ww) * n + q % ww
    return (rows[:, None] + cols[None, :]).reshape(-1).astype(np.int64)


def attention_mask(ph, pw, wh, ww, sh, sw) -> np.ndarray:
    """[windows, n, n] float32: torchvision's mask, built as it builds it (regions of the rolled
    map, by its slices; -100 between tokens of different regions)."""
    m = np.zeros((ph, pw), np.float32)
    count = 0
    for h0, h1 in ((0, -wh), (-wh, -sh), (-sh, None)):
        for w0, w1 in ((0, -ww), (-ww, -sw), (-sw, None)):
            m[h0:h1, w0:w1] = count
            count += 1
    m = m.reshape(ph // wh, wh, pw // ww, ww).transpose(0, 2, 1, 3).reshape(-1, wh * ww)
    d = m[:, None, :] - m[:, :, None]
    return np.where(d != 0, np.float32(-100.0), np.float32(0.0)).astype(np.float32)


# ---- the same at run time (symbolic sizes) --------------------------------------------------
# builder -> {(H, W, window, shift): _Geometry}: the layers of a stage share their token
# indices and masks (one constant, or one run-time computation, per geometry)
_SHARED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _geometry(b: OnnxBuilder, x: str, shape, window, shift) -> "_Geometry":
    key = (tuple(D.fmt(d) for d in shape[1:3]), tuple(window), tuple(shift))
    shared = _SHARED.setdefault(b, {})
    if key not in shared:
        shared[key] = _Geometry(b, x, shape, window, shift)
    return shared[key]


class _Geometry:
    """Sizes along H (axis 1) and W (axis 2): ints where static, else [1] int64 tensors."""

    def __init__(self, b: OnnxBuilder, x: str, shape, window, shift):
        self.b, self.window, self.user_shift = b, window, shift
        self.made: dict = {}
        self.static = all(D.is_static(d) for d in shape[1:3])
        self.size, self.padded, self.shift = [], [], []
        for axis, (d, wnd, s) in enumerate(zip(shape[1:3], window, shift), 1):
            if self.static:
                p = -(-int(d) // wnd) * wnd
                self.size.append(int(d))
                self.padded.append(p)
                self.shift.append(effective_shift(p, wnd, s))
                continue
            size = b.size(x, shape, axis, "len")
            size = b.ints([size], "len") if isinstance(size, int) else size
            up = b.add("Div", [b.add("Add", [size, b.ints([wnd - 1])], "len_up"), b.ints([wnd])], "windows")
            p = b.add("Mul", [up, b.ints([wnd])], "padded")
            self.size.append(size)
            self.padded.append(p)
            if s:
                more = b.add("Greater", [p, b.ints([wnd])], "shifted")
                self.shift.append(b.add("Where", [more, b.ints([s]), b.ints([0])], "shift"))
            else:
                self.shift.append(0)

    # run-time helpers
    def _range(self, n: str, hint: str) -> str:
        b = self.b
        return b.add("Range", [b.ints(0), b.add("Squeeze", [n, b.ints([0])], "n"), b.ints(1)], hint)

    def _t(self, v) -> str:
        return v if isinstance(v, str) else self.b.ints([v])

    @cached_property      # its nodes or constant made once
    def pads(self) -> str | None:
        """Pad's pads for [N, H, W, C] (end of H and W), or None when nothing is padded."""
        b = self.b
        if self.static:
            extra = [p - s for p, s in zip(self.padded, self.size)]
            return b.ints([0, 0, 0, 0, 0, *extra, 0]) if any(extra) else None
        extra = [b.add("Sub", [self._t(p), self._t(s)], "pad") for p, s in zip(self.padded, self.size)]
        return b.add("Concat", [b.ints([0, 0, 0, 0, 0]), *extra, b.ints([0])], "pads", axis=0)

    @cached_property
    def window_index(self) -> str:
        b = self.b
        (wh, ww), (ph, pw), (sh, sw) = self.window, self.padded, self.shift
        if self.static:
            return b.ints(window_token_index(ph, pw, wh, ww, sh, sw), "window_tokens")
        rows = b.add("Mod", [b.add("Add", [self._range(ph, "rows"), self._t(sh)], "rows_s"), ph], "rows_r")
        cols = b.add("Mod", [b.add("Add", [self._range(pw, "cols"), self._t(sw)], "cols_s"), pw], "cols_r")
        rows = b.add("Mul", [b.add("Reshape", [rows, b.ints([-1, 1, wh, 1])], "rows_w"), pw], "rows_at")
        cols = b.add("Reshape", [cols, b.ints([1, -1, 1, ww])], "cols_w")
        return b.add("Reshape", [b.add("Add", [rows, cols], "tokens"), b.ints([-1])], "window_tokens")

    @cached_property
    def map_index(self) -> str:
        b = self.b
        (wh, ww), (h, w), (ph, pw), (sh, sw) = self.window, self.size, self.padded, self.shift
        if self.static:
            return b.ints(map_token_index(h, w, ph, pw, wh, ww, sh, sw), "map_tokens")
        n = wh * ww
        p = b.add("Mod", [b.add("Add", [b.add("Sub", [self._range(h, "i"), self._t(sh)], "i_s"), ph], "i_p"), ph], "p")
        q = b.add("Mod", [b.add("Add", [b.add("Sub", [self._range(w, "j"), self._t(sw)], "j_s"), pw], "j_p"), pw], "q")
        row_stride = b.add("Mul", [b.add("Div", [pw, b.ints([ww])], "windows_w"), b.ints([n])], "row_stride")
        rows = b.add("Add", [b.add("Mul", [b.add("Div", [p, b.ints([wh])], "pw_"), row_stride], "r0"),
                             b.add("Mul", [b.add("Mod", [p, b.ints([wh])], "pm"), b.ints([ww])], "r1")], "rows")
        cols = b.add("Add", [b.add("Mul", [b.add("Div", [q, b.ints([ww])], "qw"), b.ints([n])], "c0"),
                             b.add("Mod", [q, b.ints([ww])], "c1")], "cols")
        both = b.add("Add", [b.add("Unsqueeze", [rows, b.ints([1])], "rows_c"),
                             b.add("Unsqueeze", [cols, b.ints([0])], "cols_r")], "map_tokens_2d")
        return b.add("Reshape", [both, b.ints([-1])], "map_tokens")

    @cached_property
    def tokens(self):
        """The padded map's tokens ph * pw: an int, or a [1] int64 tensor."""
        (ph, pw) = self.padded
        return ph * pw if self.static else self.b.add("Mul", [ph, pw], "tokens_n")

    def tokens_shape(self, c: int) -> str:
        """[-1, ph * pw, c]: the padded map as tokens, each dim but the batch given, so that a
        batch of 0 reshapes too (Reshape cannot infer a -1 beside a 0)."""
        key = ("tokens_shape", c)
        if key not in self.made:
            self.made[key] = self.b.shape_of_parts([-1, self.tokens, c], "tokens_shape")
        return self.made[key]

    @cached_property
    def windows(self):
        """The number of windows: an int, or a [1] int64 tensor."""
        (wh, ww), (ph, pw) = self.window, self.padded
        if self.static:
            return (ph // wh) * (pw // ww)
        b = self.b
        return b.add("Mul", [b.add("Div", [ph, b.ints([wh])], "nh"), b.add("Div", [pw, b.ints([ww])], "nw")],
                     "windows")

    @cached_property
    def mask(self) -> str:
        """[windows, 1, n, n] float32 (see attention_mask)."""
        b = self.b
        (wh, ww), (ph, pw), (sh, sw) = self.window, self.padded, self.shift
        if self.static:
            return b.const(attention_mask(ph, pw, wh, ww, sh, sw)[:, None], "shift_mask")
        # region of each row of the rolled map: 0 before the last window, 1 in it before the
        # wrapped rows, 2 in those; one region where the dim is not shifted (torchvision's slices)
        regions = []
        for axis, (p, wnd, s, user) in enumerate(zip((ph, pw), (wh, ww), (sh, sw), self.user_shift)):
            pos = self._range(p, "pos")
            if not user:
                regions.append(b.add("Mul", [pos, b.ints(0)], "region"))
                continue
            first = b.add("GreaterOrEqual", [pos, b.add("Sub", [p, b.ints([wnd])], "last_window")], "in_last")
            second = b.add("GreaterOrEqual", [pos, b.add("Sub", [p, s], "wrap")], "wrapped")
            regions.append(b.add("Add", [b.add("Cast", [first], "r1", to=INT64),
                                         b.add("Cast", [second], "r2", to=INT64)], "region"))
        rows = b.add("Mul", [b.add("Reshape", [regions[0], b.ints([-1, 1, wh, 1])], "region_h"), b.ints(3)],
                     "region_h3")
        cols = b.add("Reshape", [regions[1], b.ints([1, -1, 1, ww])], "region_w")
        ids = b.add("Reshape", [b.add("Add", [rows, cols], "region_ids"), b.ints([-1, wh * ww])], "window_regions")
        same = b.add("Equal", [b.add("Unsqueeze", [ids, b.ints([1])], "ids_j"),
                               b.add("Unsqueeze", [ids, b.ints([2])], "ids_i")], "same_region")
        mask = b.add("Where", [same, b.const(np.float32(0.0), "zero"), b.const(np.float32(-100.0), "minus100")],
                     "shift_mask3")
        return b.add("Unsqueeze", [mask, b.ints([1])], "shift_mask")


def _position_bias(b: OnnxBuilder, node, heads: int, n: int) -> str:
    """[heads, n, n] from initializers only (onnxruntime folds it): the table (V1) or
    16 sigmoid(cpb_mlp(relative_coords_table)) (V2), gathered by relative_position_index."""
    a = node.attrs
    if a["version"] == 1:
        table = b.weight(node, "relative_position_bias_table")
    else:
        hidden = project(b, b.weight(node, "relative_coords_table"), b.weight(node, "cpb_mlp.0.weight"),
                         b.weight(node, "cpb_mlp.0.bias"), "cpb_h")
        table = project(b, b.add("Relu", [hidden], "cpb_relu"), b.weight(node, "cpb_mlp.2.weight"), None, "cpb_out")
        table = b.add("Reshape", [table, b.ints([-1, heads])], "cpb_table")
    bias = b.add("Gather", [table, b.weight(node, "relative_position_index")], "bias_rows", axis=0)
    bias = b.add("Transpose", [b.add("Reshape", [bias, b.ints([n, n, heads])], "bias_nnh")], "bias_hnn",
                 perm=[2, 0, 1])
    if a["version"] == 2:
        bias = b.add("Mul", [b.add("Sigmoid", [bias], "bias_sig"), b.const(np.float32(16.0), "sixteen")], "bias16")
    return bias


def _normalize(b: OnnxBuilder, x: str, axis: int, hint: str) -> str:
    """F.normalize(x, dim=axis): x / max(||x||_2, 1e-12)."""
    norm = reduce(b, "ReduceL2", x, [axis])
    return b.add("Div", [x, b.add("Max", [norm, b.const(np.float32(1e-12), "eps")], hint + "_norm")], hint)


@emitter("ShiftedWindowAttention")
def _shifted_window_attention(b, node, ins, outs):
    a = node.attrs
    c, heads = a["dim"], a["num_heads"]
    d = c // heads
    wh, ww = a["window_size"]
    n = wh * ww
    x = ins[0]
    geo = _geometry(b, x, node.inputs[0].shape, (wh, ww), a["shift_size"])
    # windows: [N, H, W, C] -> padded -> [N, ph * pw, C] -> gathered [N * windows, n, C]
    pads = geo.pads
    if pads is not None:
        x = b.add("Pad", [x, pads], "padded")
    x = b.add("Reshape", [x, geo.tokens_shape(c)], "tokens")
    x = b.add("Gather", [x, geo.window_index], "windowed", axis=1)
    x = b.add("Reshape", [x, b.ints([-1, n, c])], "windows")
    # q, k and v by three products with thirds of qkv.weight (sliced from the initializer: folded
    # into constants by onnxruntime, as V1's q scale is; no Split of the activations); V2 puts no
    # bias on the keys
    w = b.add("Transpose", [b.weight(node, "qkv.weight")], "qkv_wt", perm=[1, 0])
    ws = b.add("Split", [w, b.ints([c, c, c])], [b.fresh("w" + t) for t in "qkv"], axis=1)
    bs = (b.add("Split", [b.weight(node, "qkv.bias"), b.ints([c, c, c])], [b.fresh("b" + t) for t in "qkv"], axis=0)
          if a["qkv_bias"] else [None] * 3)
    if a["version"] == 1:
        scale = b.const(np.float32(d ** -0.5), "q_scale")
        ws[0] = b.add("Mul", [ws[0], scale], "wq_scaled")
        bs[0] = b.add("Mul", [bs[0], scale], "bq_scaled") if bs[0] else None
    else:
        bs[1] = None
    q, k, v = (b.add("MatMul", [x, wt], t) for wt, t in zip(ws, "qkv"))
    q, k, v = (b.add("Add", [t, bt], t + "_b") if bt else t for t, bt in zip((q, k, v), bs))
    split = b.ints([0, 0, heads, d])
    q = b.add("Transpose", [b.add("Reshape", [q, split], "q_heads")], "q_t", perm=[0, 2, 1, 3])   # [B*, h, n, d]
    k = b.add("Transpose", [b.add("Reshape", [k, split], "k_heads")], "k_t", perm=[0, 2, 3, 1])   # [B*, h, d, n]
    v = b.add("Transpose", [b.add("Reshape", [v, split], "v_heads")], "v_t", perm=[0, 2, 1, 3])
    if a["version"] == 2:           # cosine attention, the clamped logit scale applied to q
        scale = b.add("Exp", [b.add("Min", [b.weight(node, "logit_scale"),
                                            b.const(np.float32(math.log(100.0)), "log100")], "logit_c")],
                      "logit_scale")
        q = b.add("Mul", [_normalize(b, q, -1, "q_n"), scale], "q_scaled")
        k = _normalize(b, k, 2, "k_n")
    attn = b.add("MatMul", [q, k], "scores")                                           # [B*, h, n, n]
    bias = _position_bias(b, node, heads, n)
    if any(a["shift_size"]) and (not geo.static or any(geo.shift)):
        addend = b.add("Add", [geo.mask, bias], "bias_masked")                       # [windows, h, n, n]
        windows = geo.windows
        per_image = (b.ints([-1, windows, heads, n, n]) if isinstance(windows, int) else
                     b.add("Concat", [b.ints([-1]), windows, b.ints([heads, n, n])], "per_image", axis=0))
        attn = b.add("Reshape", [attn, per_image], "scores_w")
        attn = b.add("Softmax", [b.add("Add", [attn, addend], "scores_b")], "attn_w", axis=-1)
        attn = b.add("Reshape", [attn, b.ints([-1, heads, n, n])], "attn")
    else:
        attn = b.add("Softmax", [b.add("Add", [attn, bias], "scores_b")], "attn", axis=-1)
    ctx = b.add("Transpose", [b.add("MatMul", [attn, v], "ctx")], "ctx_t", perm=[0, 2, 1, 3])
    ctx = b.add("Reshape", [ctx, b.ints([0, 0, c])], "merged")
    y = project(b, ctx, b.weight(node, "proj.weight"), b.weight(node, "proj.bias") if a["proj_bias"] else None,
                "proj")
    # back: [N * windows, n, C] -> [N, windows * n, C] -> gathered [N, H * W, C] -> [N, H, W, C]
    out_shape = b.ints([0, *geo.size, c]) if geo.static else b.add("Shape", [ins[0]], "map_shape")
    y = b.add("Reshape", [y, geo.tokens_shape(c)], "image_tokens")
    y = b.add("Gather", [y, geo.map_index], "map_tokens", axis=1)
    b.add("Reshape", [y, out_shape], outs)


@emitter("patch_merge")
def _patch_merge(b, node, ins, outs):
    """[N, H, W, C] -> padded to even sizes -> [N, H/2, 2, W/2, 2, C] -> [N, H/2, W/2, 2 (w), 2 (h), C]
    -> [N, H/2, W/2, 4C]: channel block k = h + 2 w, torchvision's order."""
    shape = node.inputs[0].shape
    h, w, c = (b.size(ins[0], shape, axis) for axis in (1, 2, 3))
    x = ins[0]
    odd = [v % 2 if isinstance(v, int) else b.add("Mod", [v, b.ints([2])], "odd") for v in (h, w)]
    if any(not isinstance(v, int) or v for v in odd):
        x = b.add("Pad", [x, b.shape_of_parts([0, 0, 0, 0, 0, *odd, 0], "pads")], "padded")
    # every dim but the batch given (not -1): Reshape cannot infer a -1 beside a batch of 0
    half_h, half_w = ((v + 1) // 2 if isinstance(v, int) else
                      b.add("Div", [b.add("Add", [v, b.ints([1])], "up"), b.ints([2])], "half") for v in (h, w))
    x = b.add("Reshape", [x, b.shape_of_parts([-1, half_h, 2, half_w, 2, c], "split_shape")], "patches")
    x = b.add("Transpose", [x], "patches_t", perm=[0, 1, 3, 4, 2, 5])
    if isinstance(c, int):
        b.add("Reshape", [x, b.ints([0, 0, 0, 4 * c])], outs)
        return
    # not [0, 0, 0, 4C]: onnxruntime's ReshapeFusion makes its one run-time dim a -1
    c4 = b.add("Mul", [c, b.ints([4])], "c4")
    b.add("Reshape", [x, b.shape_of_parts([-1, half_h, half_w, c4], "merged_shape")], outs)
