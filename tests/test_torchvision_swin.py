"""torchvision's Swin Transformers (V1 and V2): netdsl's examples/swin.net has their state_dict
keys, shapes and parameter counts, loads their weights strictly and gives the same logits, in
PyTorch and through onnxruntime (one ONNX file, two batch sizes and a second input size that
is padded at every stage); MACs are within 0.5% of torchvision's weights metadata.

Needs torchvision (skipped without it):  python -m pytest tests/test_torchvision_swin.py
"""
from pathlib import Path

import numpy as np
import pytest

import netdsl

torch = pytest.importorskip("torch")
tvm = pytest.importorskip("torchvision.models")

FILE = Path(__file__).resolve().parents[1] / "examples" / "swin.net"
NETWORKS = [("Swin_T", "swin_t"), ("Swin_S", "swin_s"), ("Swin_B", "swin_b"), ("Swin_V2_T", "swin_v2_t"),
            ("Swin_V2_S", "swin_v2_s"), ("Swin_V2_B", "swin_v2_b")]


@pytest.mark.parametrize("name, ctor", NETWORKS)
def test_keys_shapes_counts_and_macs_match_torchvision(name, ctor):
    with torch.device("meta"):                      # structure only, no memory
        tv = getattr(tvm, ctor)()
    meta = tvm.get_model_weights(ctor).DEFAULT.meta
    net = netdsl.load(FILE, network=name)
    assert net.param_count() == sum(p.numel() for p in tv.parameters()) == meta["num_params"]
    want = {k: tuple(v.shape) for k, v in tv.state_dict().items()}
    got = {k: tuple(v) for k, v in net.state_layout().items()}
    # the same keys and shapes; the order differs where netdsl registers layers in the order they
    # run (PatchMerging's norm before its reduction; V2's attn before norm1), torchvision as built
    assert got == want
    # netdsl's own buffers (every attention layer has the same) are torchvision's, bit for bit
    from torchvision.models import swin_transformer as st
    window = 8 if "V2" in name else 7
    attn = (st.ShiftedWindowAttentionV2 if "V2" in name else st.ShiftedWindowAttention)(8, [window] * 2, [0, 0], 2)
    mine = netdsl.loads("network t { input x: f32[N, H, W, 8]\n output y = x -> attn: ShiftedWindowAttention("
                        f"2, window_size = {window}, version = {2 if 'V2' in name else 1}) }}").init_weights(0)
    for key, value in attn.named_buffers():
        assert np.array_equal(mine["attn." + key], value.numpy()), key
    size = meta["min_size"][0]
    gmacs = net.summary(inputs=(1, 3, size, size))["macs"] / 1e9
    assert gmacs == pytest.approx(meta["_ops"], rel=5e-3), (gmacs, meta["_ops"])


def _randomised(ctor, seed):
    """torchvision's model with every parameter made to matter: its Linear biases and the
    LayerNorms start at 0 / 1, V2's logit scales at log(10) (some now above log(100), where
    they are clamped); the relative position bias tables (trunc_normal, std 0.02) are scaled up."""
    torch.manual_seed(seed)
    tv = getattr(tvm, ctor)().eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in tv.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "logit_scale":
                p.copy_(torch.rand(p.shape, generator=g) * 4 + 1)
            elif leaf == "relative_position_bias_table":
                p.mul_(50)
            elif leaf == "bias":
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif p.ndim == 1:                               # LayerNorm weights
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    return tv


@pytest.mark.parametrize("name, ctor, size, other", [("Swin_T", "swin_t", 224, (200, 168)),
                                                     ("Swin_V2_T", "swin_v2_t", 256, (200, 168))])
def test_weights_load_strictly_and_logits_agree_in_torch_and_onnxruntime(name, ctor, size, other):
    import onnxruntime as ort
    tv = _randomised(ctor, seed=0)
    net = netdsl.load(FILE, network=name)
    model = net.to_torch(weights=tv.state_dict()).eval()          # load_state_dict(strict=True)
    assert sorted(model.state_dict()) == sorted(tv.state_dict())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, size, size, generator=g)
    x2 = torch.randn(1, 3, *other, generator=g)
    with torch.no_grad():
        want, want2 = tv(x), tv(x2)
        got, got2 = model(x), model(x2)
    assert got.shape == want.shape == (2, 1000)
    scale = float(want.abs().max())
    assert float((want[0] - want[1]).abs().max()) > 1e-2 * scale      # the logits depend on the image
    assert float((got - want).abs().max()) <= 1e-4 * max(1.0, scale)
    assert float((got2 - want2).abs().max()) <= 1e-4 * max(1.0, float(want2.abs().max()))
    # one ONNX file (symbolic N, H, W) from torchvision's state_dict: both batch sizes, both sizes
    proto = net.to_onnx(weights=tv.state_dict())
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for inp, ref in ((x, want), (x[1:], want[1:]), (x2, want2)):
        out = sess.run(None, {"image": inp.numpy()})[0]
        err = float(np.abs(out - ref.numpy()).max())
        assert err <= 1e-4 * max(1.0, float(ref.abs().max())), (inp.shape, err)
