"""Swin Transformer: the ops ShiftedWindowAttention and patch_merge (netdsl/ir/ops/swin.py),
std/swin.net and examples/swin.net.

Parameter counts and MACs are torchvision's published figures (weights metadata num_params and
_ops, GMACs at 224x224 for V1 and 256x256 for V2); key names and shapes follow torchvision's
module structure (SwinTransformer -> features.0 (conv, permute, norm), stages features.1, 3, 5,
7 of SwinTransformerBlock(V2) (norm1, attn, norm2, mlp), PatchMerging(V2) features.2, 4, 6,
norm, head). The window arithmetic of the ONNX emitter (numpy) is checked against a direct
emulation of torch.roll and the window partition with np.roll. torch and onnxruntime agree at
two batch sizes and two input sizes (not window multiples: padded, with the shift dropped along
a dim that pads to one window) through one ONNX file. Equality with torchvision itself:
tests/test_torchvision_swin.py.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import netdsl
from netdsl.backends.onnx.swin import attention_mask, map_token_index, window_token_index
from netdsl.errors import NetDSLError
from parity_util import RTOL, assert_parity, randomise

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
FILE = ROOT / "examples" / "swin.net"

# torchvision 0.29 weights metadata: num_params, and _ops (GFLOPs = GMACs in its convention)
TORCHVISION = {"Swin_T": (28_288_354, 4.491, 224), "Swin_S": (49_606_258, 8.741, 224),
               "Swin_B": (87_768_224, 15.431, 224), "Swin_V2_T": (28_351_570, 5.94, 256),
               "Swin_V2_S": (49_737_442, 11.546, 256), "Swin_V2_B": (87_930_848, 20.325, 256)}
CONFIGS = {"Swin_T": (96, [2, 2, 6, 2], [3, 6, 12, 24], 7), "Swin_S": (96, [2, 2, 18, 2], [3, 6, 12, 24], 7),
           "Swin_B": (128, [2, 2, 18, 2], [4, 8, 16, 32], 7), "Swin_V2_T": (96, [2, 2, 6, 2], [3, 6, 12, 24], 8),
           "Swin_V2_S": (96, [2, 2, 18, 2], [3, 6, 12, 24], 8),
           "Swin_V2_B": (128, [2, 2, 18, 2], [4, 8, 16, 32], 8)}


def swin_arithmetic(name, size, attention_products=True):
    """(parameters, MACs at size x size) of torchvision's SwinTransformer, from its configuration."""
    e, depths, heads, w = CONFIGS[name]
    v2 = "V2" in name
    ln = lambda c: 2 * c                                                    # noqa: E731
    params = 3 * 16 * e + e + ln(e)
    side = size // 4
    macs = side * side * e * 48                                             # the 4x4 patch conv
    for s, (d, h) in enumerate(zip(depths, heads)):
        c = e * 2 ** s
        pad = -(-side // w) * w
        tokens = pad * pad
        table = (2 * w - 1) ** 2
        attn = (c * 3 * c + 3 * c) + (c * c + c) + (h + 512 * 2 + 512 + 512 * h if v2 else table * h)
        params += d * (ln(c) + attn + ln(c) + (c * 4 * c + 4 * c) + (4 * c * c + c))
        macs += d * (tokens * 4 * c * c + side * side * 8 * c * c)         # projections, MLP
        if attention_products:
            macs += d * tokens * 2 * w * w * c
        if v2:
            macs += d * table * (2 * 512 + 512 * h)                         # the bias MLP
        if s < len(depths) - 1:
            params += 4 * c * 2 * c + (ln(2 * c) if v2 else ln(4 * c))
            side = -(-side // 2)
            macs += side * side * 4 * c * 2 * c
    c = e * 2 ** (len(depths) - 1)
    return params + ln(c) + c * 1000 + 1000, macs + c * 1000


@pytest.fixture(scope="module")
def nets():
    return {name: netdsl.load(FILE, network=name) for name in TORCHVISION}


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_parameter_counts_and_macs_are_torchvisions(nets, name):
    params, gmacs, size = TORCHVISION[name]
    net = nets[name]
    assert net.param_count() == params == swin_arithmetic(name, size)[0]
    summary = net.summary(inputs=(1, 3, size, size))
    macs = summary["macs"]
    assert macs == swin_arithmetic(name, size)[1]
    assert macs / 1e9 == pytest.approx(gmacs, rel=5e-3)
    # torchvision's figures count the attention products (q k^T, attn v): without them, more than 0.5% off
    assert swin_arithmetic(name, size, attention_products=False)[1] / 1e9 < gmacs * (1 - 5e-3)
    assert summary["outputs"][0]["shape"] == [1, 1000]


def test_state_layout_is_torchvisions(nets):
    t, v2 = nets["Swin_T"].state_layout(), nets["Swin_V2_T"].state_layout()
    assert len(t) == 185 and len(v2) == 233                         # torchvision's state_dict sizes
    assert tuple(t["features.0.0.weight"]) == (96, 3, 4, 4) and tuple(t["features.0.2.weight"]) == (96,)
    block = "features.5.3."
    for key, shape in [("norm1.weight", (384,)), ("attn.relative_position_bias_table", (169, 12)),
                       ("attn.relative_position_index", (2401,)), ("attn.qkv.weight", (1152, 384)),
                       ("attn.qkv.bias", (1152,)), ("attn.proj.weight", (384, 384)), ("norm2.bias", (384,)),
                       ("mlp.0.weight", (1536, 384)), ("mlp.3.weight", (384, 1536)), ("mlp.3.bias", (384,))]:
        assert tuple(t[block + key]) == shape, key
    assert tuple(t["features.2.reduction.weight"]) == (192, 384) and tuple(t["features.2.norm.weight"]) == (384,)
    assert "features.2.reduction.bias" not in t
    assert tuple(t["features.7.1.attn.relative_position_index"]) == (2401,)
    assert tuple(t["head.weight"]) == (1000, 768) and tuple(t["norm.weight"]) == (768,)
    for key, shape in [("attn.logit_scale", (12, 1, 1)), ("attn.relative_coords_table", (1, 15, 15, 2)),
                       ("attn.relative_position_index", (4096,)), ("attn.cpb_mlp.0.weight", (512, 2)),
                       ("attn.cpb_mlp.0.bias", (512,)), ("attn.cpb_mlp.2.weight", (12, 512))]:
        assert tuple(v2[block + key]) == shape, key
    assert "features.5.3.attn.relative_position_bias_table" not in v2 and "features.5.3.attn.cpb_mlp.2.bias" not in v2
    assert tuple(v2["features.2.norm.weight"]) == (192,)           # V2: the norm after the reduction
    graph = nets["Swin_T"].graph.state_layout()
    assert graph["features.1.0.attn.relative_position_index"].buffer
    assert graph["features.1.0.attn.relative_position_index"].dtype == "int64"


def test_buffers_are_computed_as_torchvision_defines_them():
    net = netdsl.loads("network t { input x: f32[N, H, W, 8]\n"
                       " output y = x -> attn: ShiftedWindowAttention(2, window_size = [3, 4], version = 2) }")
    w = net.init_weights(0)
    index, table = w["attn.relative_position_index"], w["attn.relative_coords_table"]
    assert index.dtype == np.int64 and index.shape == (144,) and table.shape == (1, 5, 7, 2)
    tokens = [(i, j) for i in range(3) for j in range(4)]            # row-major in the window
    want = [(a[0] - b[0] + 2) * 7 + (a[1] - b[1] + 3) for a in tokens for b in tokens]
    assert index.tolist() == want
    for dy in range(-2, 3):
        for dx in range(-3, 4):
            t = np.array([8 * dy / 2, 8 * dx / 3])
            assert table[0, dy + 2, dx + 3] == pytest.approx(np.sign(t) * np.log2(np.abs(t) + 1) / 3, abs=1e-6)


# ---- the ONNX emitter's window arithmetic -------------------------------------------------------

def rolled_windows(ph, pw, wh, ww, sh, sw):
    """The flat positions of the padded map in window order, by torch's recipe, in numpy."""
    grid = np.roll(np.arange(ph * pw).reshape(ph, pw), (-sh, -sw), axis=(0, 1))
    return grid.reshape(ph // wh, wh, pw // ww, ww).transpose(0, 2, 1, 3).reshape(-1)


@pytest.mark.parametrize("h, w, wh, ww, sh, sw", [(7, 8, 3, 3, 1, 1), (3, 5, 3, 3, 0, 1), (12, 9, 4, 3, 2, 1),
                                                  (6, 6, 3, 2, 0, 0), (9, 16, 8, 8, 4, 4)])
def test_token_indices_are_roll_and_partition(h, w, wh, ww, sh, sw):
    ph, pw = -(-h // wh) * wh, -(-w // ww) * ww
    fwd = window_token_index(ph, pw, wh, ww, sh, sw)
    assert np.array_equal(fwd, rolled_windows(ph, pw, wh, ww, sh, sw))
    # back: un-partition, roll back, crop to h x w; as a gather of the windowed tokens
    back = map_token_index(h, w, ph, pw, wh, ww, sh, sw)
    tokens = np.random.default_rng(0).standard_normal(ph * pw)
    windowed = tokens[fwd]
    assert np.array_equal(windowed[back], tokens.reshape(ph, pw)[:h, :w].reshape(-1))


def test_attention_mask_separates_the_rolled_regions():
    m = attention_mask(14, 14, 7, 7, 3, 3)                    # torchvision's 14 x 14, window 7, shift 3
    assert m.shape == (4, 49, 49) and set(np.unique(m)) == {0.0, -100.0}
    assert (m[0] == 0).all()                                  # the first window holds one region
    # the last window holds four regions (3 + 4 rows x 3 + 4 cols): a token sees only its own
    region = np.add.outer(np.repeat([0, 1], [4, 3]) * 3, np.repeat([0, 1], [4, 3])).reshape(-1)
    assert np.array_equal(m[3] == 0, region[:, None] == region[None, :])
    assert not attention_mask(7, 14, 7, 7, 0, 3)[0].all()    # rows not shifted: columns still split


# ---- torch vs onnxruntime ------------------------------------------------------------------------

def strong(net, seed=0):
    """Random weights; the position biases, logit scales, norms and biases made to matter."""
    w = net.init_weights(seed)
    rng = np.random.default_rng(seed + 1)
    for k, v in w.items():
        leaf = k.rsplit(".", 1)[-1]
        if leaf == "relative_position_bias_table":
            w[k] = rng.normal(0, 1.0, v.shape).astype(np.float32)
        elif leaf == "logit_scale":
            w[k] = rng.uniform(0.5, 5.0, v.shape).astype(np.float32)     # some above log(100): clamped
        elif leaf == "bias":
            w[k] = rng.normal(0, 0.2, v.shape).astype(np.float32)
    return w


OP = "network t {{ input x: f32[N, H, W, 8]\n output y = x -> attn: ShiftedWindowAttention({}) }}"
OP_SHAPES = [(2, 7, 8, 8), (1, 3, 5, 8), (3, 6, 6, 8)]      # padded; H of 3 x 5 pads to one window


@pytest.mark.parametrize("args", ["2, window_size = 3, shift_size = 1",
                                  "4, window_size = [3, 2], shift_size = [2, 1], version = 2",
                                  "2, window_size = 3, shift_size = [0, 1], qkv_bias = false, version = 2",
                                  "2, window_size = 3"])
def test_op_torch_and_onnxruntime_agree_through_one_file(args):
    net = netdsl.loads(OP.format(args))
    w = strong(net)
    assert_parity(net, net.to_torch(w).eval(), OP_SHAPES, dims=["N", "H", "W", 8], label=args)
    # the same weights, static sizes: the indices and the mask are constants
    static = net.with_inputs((2, 7, 8, 8))
    proto = static.to_onnx(w)
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["Range"] == ops["Shape"] == ops["Mod"] == 0 and ops["Gather"] == 3, ops
    assert_parity(static, static.to_torch(w).eval(), [(2, 7, 8, 8)], dims=[2, 7, 8, 8], label=args)


def test_shift_and_bias_change_the_output():
    """Not vacuous: shifting and the bias table change what the op computes."""
    x = torch.randn(2, 6, 6, 8, generator=torch.Generator().manual_seed(0))
    outs = []
    for args in ["2, window_size = 3", "2, window_size = 3, shift_size = 1"]:
        net = netdsl.loads(OP.format(args))
        w = strong(net)
        with torch.no_grad():
            outs.append(net.to_torch(w).eval()(x))
            w["attn.relative_position_bias_table"] *= 0
            outs.append(net.to_torch(w).eval()(x))
    scale = float(outs[0].abs().max())
    for a, b in [(0, 1), (0, 2), (2, 3)]:
        assert float((outs[a] - outs[b]).abs().max()) > 1e-2 * scale, (a, b)


def test_patch_merge_order_and_padding():
    net = netdsl.loads("network t { input x: f32[N, H, W, 2]\n output y = patch_merge(x) }")
    x = torch.arange(2 * 3 * 5 * 2, dtype=torch.float32).reshape(2, 3, 5, 2)
    y = net.to_torch()(x)
    assert y.shape == (2, 2, 3, 8)
    assert y[1, 0, 1].tolist() == x[1, 0, 2].tolist() + x[1, 1, 2].tolist() + x[1, 0, 3].tolist() + x[1, 1, 3].tolist()
    assert y[0, 1, 2].tolist() == x[0, 2, 4].tolist() + [0.0] * 6                  # zero padded
    sess = ort.InferenceSession(net.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
    for shape in [(2, 3, 5, 2), (1, 4, 2, 2)]:
        xs = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        assert np.array_equal(sess.run(None, {"x": xs})[0], net.to_torch()(torch.from_numpy(xs)).numpy())


SMALL = dict(embed_dim=16, depths=[2, 2, 2], num_heads=[2, 2, 4], num_classes=10)


@pytest.mark.parametrize("version, window", [(1, 4), (2, 3)])
def test_small_swin_torch_and_onnxruntime_agree(version, window):
    net = netdsl.load(FILE, network="SwinTransformer", window_size=window, version=version, **SMALL)
    model = net.to_torch(strong(net)).eval()
    randomise(model, seed=2)
    # 64: windows fit; 44 x 60: padded at every stage, last stage one window along H (no shift)
    assert_parity(net, model, [(2, 3, 64, 64), (1, 3, 44, 60), (3, 3, 64, 64)], dims=["N", 3, "H", "W"],
                  rtol=RTOL, label=f"v{version}")


@pytest.mark.slow
def test_swin_t_torch_and_onnxruntime_agree_at_two_batch_sizes(nets):
    net = nets["Swin_T"]
    model = net.to_torch(strong(net)).eval()
    randomise(model, seed=3)
    assert_parity(net, model, [(2, 3, 224, 224), (1, 3, 224, 224)], dims=["N", 3, "H", "W"], label="Swin_T")


def test_symbolic_file_shares_window_indices_between_layers():
    """Token indices and masks are computed once per stage and shift, not once per layer: as
    many run-time index computations for 2 blocks per stage as for 6."""
    counts = []
    for depths in ([2, 2, 2], [6, 4, 2]):
        net = netdsl.load(FILE, network="SwinTransformer", **{**SMALL, "depths": depths})
        ops = Counter(n.op_type for n in net.to_onnx().graph.node)
        counts.append((ops["Range"], ops["Mod"], ops["Equal"], ops["Softmax"]))
    assert counts[0][:3] == counts[1][:3] and counts[0][0] > 0
    assert (counts[0][3], counts[1][3]) == (6, 12)


# ---- train mode -------------------------------------------------------------------------------

@pytest.mark.parametrize("drops", [dict(stochastic_depth_prob=0.5), dict(dropout=0.2),
                                   dict(attention_dropout=0.2, version=2)], ids=["depth", "dropout", "attn"])
def test_train_mode_stochastic_depth_and_dropout(drops):
    net = netdsl.load(FILE, network="SwinTransformer", **{"version": 1, **SMALL, **drops})
    model = net.to_torch(strong(net))
    x = torch.randn(4, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    a, b = model(x), model(x)
    assert float((a - b).detach().abs().max()) > 1e-3       # each call draws anew
    (a.square().mean() + b.square().mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and float(p.grad.abs().max()) > 0, name
    if "version" in drops:      # V2 ignores the middle (key) third of qkv.bias: no gradient there
        g = model.state_dict(keep_vars=True)["features.1.0.attn.qkv.bias"].grad
        assert float(g[16:32].abs().max()) == 0 and float(g[:16].abs().max()) > 0


def test_version_2_gradients_by_directional_derivatives():
    """Version 2's cpb_mlp and logit scale (too many parameters for a full gradcheck):
    d/dt f(theta + t d) at 0 by central differences, against the gradient, in double."""
    net = netdsl.loads(OP.format("2, window_size = 3, shift_size = 1, version = 2"))
    model = net.to_torch(strong(net)).double().eval()
    x = torch.randn(2, 5, 7, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    params = dict(model.named_parameters())
    weights = torch.randn(2, 5, 7, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def f(ps):
        return (torch.func.functional_call(model, ps, (x,)) * weights).sum()

    grads = torch.autograd.grad(f(params), list(params.values()))
    g = torch.Generator().manual_seed(3)
    for name in ["attn.cpb_mlp.0.weight", "attn.cpb_mlp.0.bias", "attn.cpb_mlp.2.weight", "attn.logit_scale",
                 "attn.qkv.weight", None]:
        d = {k: (torch.randn(p.shape, dtype=torch.float64, generator=g) if name in (None, k) else torch.zeros_like(p))
             for k, p in params.items()}
        eps = 1e-6
        with torch.no_grad():
            num = (f({k: p + eps * d[k] for k, p in params.items()})
                   - f({k: p - eps * d[k] for k, p in params.items()})) / (2 * eps)
        ana = sum((gr * d[k]).sum() for gr, k in zip(grads, params))
        assert abs(float(num - ana)) <= 1e-6 * max(1.0, abs(float(ana))), name
        assert abs(float(ana)) > 1e-6, name


# ---- errors ----------------------------------------------------------------------------------

ERR = "network T {{ input x: f32[N, H, W, 8]\n output y = x -> {} }}\n"


@pytest.mark.parametrize("layer, message", [
    ("ShiftedWindowAttention(3)", "the embedding size 8 is not divisible by num_heads=3"),
    ("ShiftedWindowAttention(2, window_size = 4, shift_size = [1, 4])", "shift_size 4 must be smaller than"),
    ("ShiftedWindowAttention(2, window_size = [1, 4], version = 2)", "version 2's continuous position bias needs"),
    ("ShiftedWindowAttention(2, version = 3)", "'version' must be one of 1, 2"),
    ("ShiftedWindowAttention(2, dropout = 1.0)", "'dropout' must be in [0, 1)"),
    ("Flatten(2) -> ShiftedWindowAttention(2)", "expects a [N, H, W, C] (channels last) input of rank 4"),
    ("Flatten(2) -> patch_merge", "expects a [N, H, W, C] (channels last) input of rank 4"),
])
def test_located_errors(layer, message):
    with pytest.raises(NetDSLError) as info:
        netdsl.loads(ERR.format(layer), name="t.net").graph
    err = info.value
    assert message in err.message
    assert err.span is not None and err.span.line == 2
    assert "^" in err.render()


def test_symbolic_channels_are_a_located_error():
    with pytest.raises(NetDSLError) as info:
        netdsl.loads("network T { input x: f32[N, H, W, C]\n output y = x -> ShiftedWindowAttention(2) }",
                     name="t.net").graph
    assert "the embedding size (last dim) must be known at compile time" in info.value.message
    assert info.value.span.line == 2
