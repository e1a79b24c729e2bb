"""Attention: std/attention.net and examples/attention.net.

ViT's parameter counts are torchvision's published figures, and its state_dict keys are
torchvision's, written out here from torchvision's module structure (VisionTransformer ->
class_token, conv_proj, encoder (pos_embedding, layers.encoder_layer_i, ln), heads.head).
The CBAM and non-local counts are arithmetic on the blocks' definitions. Every network also
computes the same outputs in PyTorch (eval mode) and in onnxruntime, at two input sizes
through one ONNX model.
"""
from pathlib import Path

import pytest

import netdsl
from parity_util import RTOL, assert_parity, randomise

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
FILE = ROOT / "examples" / "attention.net"

# torchvision 0.29 model docs (num_params), at the constructors' default image_size 224
TORCHVISION_PARAMS = {"ViT_B_16": 86_567_656, "ViT_B_32": 88_224_232,
                      "ViT_L_16": 304_326_632, "ViT_L_32": 306_535_400}

ENCODER_LAYER_KEYS = ["ln_1.weight", "ln_1.bias",
                      "self_attention.in_proj_weight", "self_attention.in_proj_bias",
                      "self_attention.out_proj.weight", "self_attention.out_proj.bias",
                      "ln_2.weight", "ln_2.bias",
                      "mlp.0.weight", "mlp.0.bias", "mlp.3.weight", "mlp.3.bias"]


def vit_keys(num_layers):
    """torchvision VisionTransformer.state_dict() keys, in order (own parameters, then children)."""
    keys = ["class_token", "conv_proj.weight", "conv_proj.bias", "encoder.pos_embedding"]
    for i in range(num_layers):
        keys += [f"encoder.layers.encoder_layer_{i}.{k}" for k in ENCODER_LAYER_KEYS]
    return keys + ["encoder.ln.weight", "encoder.ln.bias", "heads.head.weight", "heads.head.bias"]


def vit_params(patch, layers, e, mlp, classes=1000, image=224):
    seq = (image // patch) ** 2 + 1
    per_layer = 2 * 2 * e + (3 * e * e + 3 * e) + (e * e + e) + (e * mlp + mlp) + (mlp * e + e)
    return e + (3 * patch * patch * e + e) + seq * e + layers * per_layer + 2 * e + (e * classes + classes)


def test_vit_b_16_parameters_and_layout():
    net = netdsl.load(FILE, network="ViT_B_16")
    assert net.param_count() == 86_567_656 == vit_params(16, 12, 768, 3072)
    layout = net.state_layout()
    assert list(layout) == vit_keys(12)
    assert tuple(layout["class_token"]) == (1, 1, 768)
    assert tuple(layout["encoder.pos_embedding"]) == (1, 197, 768)
    assert tuple(layout["encoder.layers.encoder_layer_0.self_attention.in_proj_weight"]) == (2304, 768)
    assert tuple(layout["conv_proj.weight"]) == (768, 3, 16, 16)
    assert net.summary(inputs=(2, 3, 224, 224))["outputs"][0]["shape"] == [2, 1000]


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_vit_variants_parameter_counts(name):
    net = netdsl.load(FILE, network=name)
    assert net.param_count() == TORCHVISION_PARAMS[name]
    patch = 32 if name.endswith("32") else 16
    large = "_L_" in name
    assert list(net.state_layout()) == vit_keys(24 if large else 12)
    assert net.param_count() == vit_params(patch, 24 if large else 12, 1024 if large else 768,
                                           4096 if large else 3072)


# torchvision 0.29 model docs: GFLOPS (multiply-adds) at 224x224
TORCHVISION_GMACS = {"ViT_B_16": 17.564, "ViT_B_32": 4.409, "ViT_L_16": 61.555, "ViT_L_32": 15.378}


@pytest.mark.parametrize("name", sorted(TORCHVISION_GMACS))
def test_vit_variants_macs(name):
    macs = netdsl.load(FILE, network=name).summary(inputs=(1, 3, 224, 224))["macs"]
    assert macs / 1e9 == pytest.approx(TORCHVISION_GMACS[name], rel=1e-3)


def cbam_params(c, r=16, k=7):
    return 2 * c * max(c // r, 1) + 2 * k * k


def resnet18_cbam_params(width=64, layers=(2, 2, 2, 2), r=16, classes=1000):
    """torchvision's ResNet-18 arithmetic plus one CBAM per basic block."""
    bn = lambda c: 2 * c                                                  # noqa: E731
    total = 3 * 49 * width + bn(width)
    cin = width
    for s, n in enumerate(layers):
        c = width * 2 ** s
        for b in range(n):
            total += cin * 9 * c + bn(c) + c * 9 * c + bn(c) + cbam_params(c, r)
            if cin != c or (s > 0 and b == 0):
                total += cin * c + bn(c)
            cin = c
    return total + cin * classes + classes


def test_resnet18_cbam_parameters_and_layout():
    net = netdsl.load(FILE, network="ResNet18_CBAM")
    # ResNet-18 alone: 11,689,512 (torchvision); the CBAMs add 87,824
    assert resnet18_cbam_params() - cbam_total() == 11_689_512
    assert net.param_count() == resnet18_cbam_params() == 11_777_336
    layout = net.state_layout()
    assert tuple(layout["layer1.0.cbam.ca.mlp.0.weight"]) == (4, 64, 1, 1)
    assert tuple(layout["layer1.0.cbam.ca.mlp.2.weight"]) == (64, 4, 1, 1)
    assert tuple(layout["layer4.1.cbam.sa.conv.weight"]) == (1, 2, 7, 7)
    assert tuple(layout["layer2.0.downsample.0.weight"]) == (128, 64, 1, 1)
    assert "layer1.0.downsample.0.weight" not in layout
    assert net.summary(inputs=(1, 3, 224, 224))["outputs"][0]["shape"] == [1, 1000]


def cbam_total(width=64):
    return sum(2 * cbam_params(width * 2 ** s) for s in range(4))


def nonlocal_params(c, ci):
    return 3 * (c * ci + ci) + (ci * c + c) + 2 * c


def test_nonlocal_parameters_and_layout():
    net = netdsl.load(FILE, network="NonLocalNet")
    w = 32
    expected = (3 * 9 * w + w + 2 * w + nonlocal_params(w, w // 2)
                + w * 9 * 2 * w + 2 * w + 4 * w + nonlocal_params(2 * w, w) + 2 * w * 10 + 10)
    assert net.param_count() == expected
    layout = net.state_layout()
    for k in ["nl1.theta.weight", "nl1.phi.weight", "nl1.g.weight", "nl1.W.0.weight",
              "nl1.W.1.running_var"]:
        assert k in layout
    assert tuple(layout["nl2.theta.weight"]) == (32, 64, 1, 1)
    assert net.summary(inputs=(2, 3, 32, 48))["outputs"][0]["shape"] == [2, 10]


def test_nonlocal_inter_channels():
    src = ('import "std/attention.net"\n'
           'network T { input x: f32[N, 12, H, W]\n output y = x -> nl: NonLocal(inter = 5) }')
    net = netdsl.loads(src, name=str(ROOT / "examples" / "t.net"))
    assert tuple(net.state_layout()["nl.theta.weight"]) == (5, 12, 1, 1)
    assert net.summary(inputs=(1, 12, 6, 7))["outputs"][0]["shape"] == [1, 12, 6, 7]


# ---- torch vs onnxruntime ---------------------------------------------------------------------



SMALL_VIT = dict(image_size=64, patch_size=16, num_layers=2, num_heads=4, hidden_dim=64,
                 mlp_dim=128, num_classes=10)

# (network, overrides, ONNX input dims, [input shapes])
CASES = [
    pytest.param("ViT_B_16", {}, ["N", 3, 224, 224], [(2, 3, 224, 224), (1, 3, 224, 224)],
                 id="ViT_B_16-full", marks=pytest.mark.slow),
    pytest.param("ViT", SMALL_VIT, ["N", 3, 64, 64], [(3, 3, 64, 64), (2, 3, 64, 64)],
                 id="ViT-small"),
    pytest.param("ResNet18_CBAM", dict(width=16, num_classes=10), ["N", 3, "H", "W"],
                 [(2, 3, 64, 64), (1, 3, 96, 72)], id="ResNet18_CBAM-w16"),
    pytest.param("NonLocalNet", {}, ["N", 3, "H", "W"], [(2, 3, 32, 32), (1, 3, 24, 40)],
                 id="NonLocalNet"),
]


@pytest.mark.parametrize("network, params, dims, shapes", CASES)
def test_torch_and_onnxruntime_agree(network, params, dims, shapes):
    net = netdsl.load(FILE, network=network, **params)
    model = net.to_torch(seed=1).eval()
    randomise(model, seed=2)
    assert_parity(net, model, shapes, dims=dims, rtol=RTOL, label=network)
