"""Every example network computes the same outputs in PyTorch (eval mode) and in onnxruntime,
for the same weights, at two input sizes run through one ONNX model with symbolic N, H and W.

Full-size networks (550 MB of VGG weights) are marked `slow`: they run by default and take
most of this file's time; `-m "not slow"` leaves them out. The other VGG variants are shrunk
through their network parameters (width, hidden, num_classes), which keeps their layer
structure exactly.
"""
from pathlib import Path

import pytest

import netdsl
from parity_util import RTOL, assert_parity, randomise

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
VGG_FILE = ROOT / "examples" / "vgg.net"
UNET_FILE = ROOT / "examples" / "unet.net"

SMALL_VGG = dict(width=8, hidden=64, num_classes=10)
VGG_NAMES = ["VGG11", "VGG13", "VGG16", "VGG19", "VGG11_BN", "VGG13_BN", "VGG16_BN", "VGG19_BN",
             "VGG_A", "VGG_A_LRN", "VGG_B", "VGG_C", "VGG_D", "VGG_E"]
FULL_SIZE = {"VGG11": (224, 256), "VGG16_BN": (224, 160), "VGG_A_LRN": (224, 192)}

slow = pytest.mark.slow

# (id, file, network, parameter overrides, [(N, H, W), (N, H, W)])
CASES = [pytest.param(VGG_FILE, name, SMALL_VGG, [(2, 3, 64, 64), (1, 3, 80, 48)], id=f"{name}-small")
         for name in VGG_NAMES]
CASES += [pytest.param(VGG_FILE, name, {}, [(1, 3, s, s) for s in sizes], id=f"{name}-full",
                       marks=slow)
          for name, sizes in FULL_SIZE.items()]
CASES += [
    pytest.param(UNET_FILE, "UNet", {}, [(1, 1, 188, 188), (1, 1, 204, 220)], id="UNet-full",
                 marks=slow),
    pytest.param(UNET_FILE, "UNet", dict(base=8), [(2, 1, 188, 188), (1, 1, 220, 204)],
                 id="UNet-base8"),
    pytest.param(UNET_FILE, "UNet", dict(pad=1, bn=True, base=8, in_ch=3, classes=4),
                 [(2, 3, 32, 32), (1, 3, 48, 64)], id="UNet-padded-bn"),
]


@pytest.mark.parametrize("path, network, params, shapes", CASES)
def test_torch_and_onnxruntime_agree(path, network, params, shapes):
    net = netdsl.load(path, network=network, **params)
    model = net.to_torch(seed=1).eval()
    randomise(model, seed=2)
    assert_parity(net, model, shapes, dims=["N", shapes[0][1], "H", "W"], rtol=RTOL, label=network)
