"""MaxViT (examples/maxvit.net, netdsl/std/maxvit.net) and its ops without torchvision:
MaxViT_T's parameter count, MACs and state_dict layout; torch vs onnxruntime through one ONNX
file at batch sizes 1 and 2 (224x224, the size maxvit_t is built for); the std blocks at
symbolic sizes; train mode (stochastic depth and dropout vary between calls, gradients reach
every parameter); located errors. torchvision itself: tests/test_torchvision_maxvit.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import netdsl
from netdsl.errors import NetDSLError
from parity_util import assert_parity, randomise  # tests/ is on sys.path (no package)

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

FILE = Path(__file__).resolve().parents[1] / "examples" / "maxvit.net"
SMALL = dict(image_size=56, stem_channels=8, block_channels=[16, 32], block_layers=[1, 2], head_dim=8,
             num_classes=10)


@pytest.fixture(scope="module")
def maxvit_t():
    return netdsl.load(FILE, network="MaxViT_T")


def small(**params):
    return netdsl.load(FILE, network="MaxViT", **{**SMALL, **params})


def test_maxvit_t_counts_and_layout(maxvit_t):
    assert maxvit_t.param_count() == 30_919_624                 # torchvision's maxvit_t
    assert maxvit_t.graph.macs() == 5_558_046_720                # torchvision: 5.558 GFLOPs (= GMACs)
    layout = maxvit_t.graph.state_layout()          # name -> ParamSpec
    assert len(layout) == 582                       # as torchvision's state_dict
    first = "blocks.0.layers.0.layers."
    assert list(layout)[:3] == ["stem.0.0.weight", "stem.0.1.weight", "stem.0.1.bias"]
    shapes = {k: tuple(v.shape) for k, v in layout.items()}
    assert shapes["stem.1.0.bias"] == (64,)
    assert shapes[first + "MBconv.proj.1.weight"] == (64, 64, 1, 1)          # proj.0 is the AvgPool2d
    assert shapes[first + "MBconv.layers.conv_b.0.weight"] == (256, 1, 3, 3)
    assert shapes[first + "MBconv.layers.squeeze_excitation.fc1.weight"] == (16, 256, 1, 1)
    attn = first + "grid_attention.attn_layer.1."
    assert [k[len(attn):] for k in layout if k.startswith(attn)] == [
        "relative_position_bias_table", "relative_position_index", "to_qkv.weight", "to_qkv.bias",
        "merge.weight", "merge.bias"]
    assert shapes[attn + "relative_position_bias_table"] == (169, 2)
    index = layout[attn + "relative_position_index"]
    assert index.buffer and index.dtype == "int64" and index.shape == (49, 49)
    assert shapes["blocks.3.layers.1.layers.window_attention.mlp_layer.3.weight"] == (512, 2048)
    assert "classifier.5.bias" not in layout and shapes["classifier.5.weight"] == (1000, 512)
    # the first MBConv of a block has none (p = 0): torchvision's nn.Identity
    ops = [(n.path, n.attrs["p"]) for n in maxvit_t.graph.nodes if n.op == "StochasticDepth"]
    assert not any(path.startswith("blocks.0.layers.0.layers.MBconv") for path, _ in ops)
    assert max(p for _, p in ops) == pytest.approx(0.2) and len({p for _, p in ops}) == 11


def test_relative_position_index_buffer():
    from netdsl.weights import relative_position_index
    idx = relative_position_index(2, 3)
    # tokens (row, col): 0 = (0, 0), 5 = (1, 2); offset (dy, dx) -> (dy + 1) * 5 + dx + 2
    assert idx.shape == (6, 6) and idx.dtype == np.int64
    assert idx[0, 0] == 1 * 5 + 2 and idx[0, 5] == 0 * 5 + 0 and idx[5, 0] == 2 * 5 + 4
    assert sorted(set(idx.ravel())) == sorted({(dy + 1) * 5 + dx + 2 for dy in (-1, 0, 1)
                                               for dx in range(-2, 3)})


def test_maxvit_t_torch_and_onnxruntime_agree_at_two_batch_sizes(maxvit_t):
    model = maxvit_t.to_torch().eval()
    randomise(model, seed=0)           # He-normal matrices: a large relative position bias too
    # 1e-3: under these weights torch's own float32 logits are 4e-4 (of the largest) from its
    # float64 ones, onnxruntime's 2e-4; the spread between two images is a third of the scale
    assert_parity(maxvit_t, model, [(2, 3, 224, 224), (1, 3, 224, 224)], dims=["N", 3, 224, 224],
                  rtol=1e-3, label="MaxViT_T")


LAYER = """import "std/maxvit.net"
network L {
    input x: f32[N, 16, H, W]
    y = x -> w: PartitionAttentionLayer(8, 7, "window")
    output y = y -> m: MaxVitMBConv(24, stride = 2) -> MaxVitMBConv(32)
}
network G {
    input x: f32[N, 16, 14, 14]
    output y = x -> l: MaxVitLayer(16, 1, head_dim = 4, partition_size = 7)
}
"""


def test_blocks_agree_through_one_onnx_file():
    """Window attention and MBConv at symbolic H, W (multiples of 7, and of 14 for the stride-2
    MBConv, whose shortcut is an average pool and a conv); a MaxVitLayer (grid attention) at two
    batch sizes."""
    for name, dims, shapes in (("L", ["N", 16, "H", "W"], [(2, 16, 14, 28), (1, 16, 7, 7)]),
                               ("G", ["N", 16, 14, 14], [(2, 16, 14, 14), (1, 16, 14, 14)])):
        net = netdsl.loads(LAYER, network=name)
        model = net.to_torch().eval()
        randomise(model, seed=1)
        assert_parity(net, model, shapes, dims=dims, label=name)


def _two_train_calls(net, x):
    model = net.to_torch().train()
    with torch.no_grad():
        return model, model(x), model(x)


def test_train_mode_stochastic_depth_and_dropout():
    x = torch.randn(4, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    # without stochastic depth and dropout, train mode (batch statistics) is deterministic
    plain, a, b = _two_train_calls(small(stochastic_depth_prob=0.0), x)
    assert torch.equal(a, b)
    torch.manual_seed(0)
    model, a, b = _two_train_calls(small(stochastic_depth_prob=0.5), x)
    assert float((a - b).abs().max()) > 1e-3
    torch.manual_seed(0)
    _, c, d = _two_train_calls(small(stochastic_depth_prob=0.0, mlp_dropout=0.3, attention_dropout=0.3), x)
    assert float((c - d).abs().max()) > 1e-3
    # eval: stochastic depth and dropout are the identity, the same output every call
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    # gradients reach every parameter in train mode (with nothing dropped: stochastic depth
    # may drop a whole branch for a small batch, which then gets none)
    plain.zero_grad()
    plain(x).square().mean().backward()
    params = dict(plain.named_parameters())
    assert sum(p.numel() for p in params.values()) == small().param_count()
    missing = [k for k, p in params.items() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert missing == []


@pytest.mark.parametrize("src, where, message", [
    ("network T { input x: f32[N, 8, 10, 14]\noutput y = window_partition(x, 7)\n}", "2:12",
     "window_partition: cannot split [N, 8, 10, 14] into 7 x 7 windows: H = 10 is not a multiple"),
    ("network T { input x: f32[N, 8, 14, 14]\noutput y = window_departition(window_partition(x, 7), 7)\n}",
     "2:12", "window_departition: needs like= the [B, C, H, W] map"),
    ("network T { input x: f32[N, 8, 14, 14]\noutput y = window_departition(window_partition(x, 7), 2, like = x)\n}",
     "2:12", "window_departition: the windows hold 49 tokens, not p * p = 4"),
    ("network T { input x: f32[N, 8, 14, 14]\nt = window_partition(x, 7)\n"
     "output y = t -> RelativePositionalMultiHeadAttention(3)\n}", "3:17",
     "RelativePositionalMultiHeadAttention: the feature size 8 is not divisible by head_dim=3"),
    ("network T { input x: f32[N, 8, 6, 4]\nt = window_partition(x, 2) -> transpose(1, 2)\n"
     "output y = t -> RelativePositionalMultiHeadAttention(4)\n}", "3:17",
     "RelativePositionalMultiHeadAttention: the relative position bias needs a square window: 6 tokens"),
    ("network T { input x: f32[N, 8, H, W]\noutput y = x -> window_partition(7) -> transpose(1, 2)"
     " -> RelativePositionalMultiHeadAttention(4)\n}", "2:59",
     "RelativePositionalMultiHeadAttention: the tokens per group (dim 2) must be known at compile time"),
])
def test_located_errors(src, where, message):
    with pytest.raises(NetDSLError) as info:
        netdsl.loads(src, name="t.net").graph
    err = info.value
    text = err.render()
    assert f"t.net:{where}" in text and "^" in text, text
    assert message in str(err), str(err)


def test_image_size_that_does_not_split_into_windows_is_a_located_error():
    with pytest.raises(NetDSLError) as info:
        small(image_size=64).graph       # 64 -> 32 -> 16: not a multiple of 7
    text = info.value.render()
    assert "window_partition" in text and "not a multiple of the window size 7" in text
    assert "maxvit.net" in text and "^" in text


def test_unknown_partition_type_is_a_located_error():
    src = 'import "std/maxvit.net"\nnetwork T { input x: f32[N, 8, 14, 14]\noutput y = x -> PartitionAttentionLayer(4, 7, "grd")\n}'
    with pytest.raises(NetDSLError) as info:
        netdsl.loads(src, name="t.net").graph
    text = info.value.render()
    assert "std/maxvit.net" in text and "^" in text
    assert 'partition_type is "window" or "grid", got "grd"' in text
