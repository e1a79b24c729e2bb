"""examples/resnet.net against torchvision itself: a torchvision model's state_dict loads
(strictly) into netdsl's module, and the two compute the same logits, in PyTorch and through
the ONNX model built from the same weights. Skipped where torchvision is not installed."""
from pathlib import Path

import numpy as np
import pytest

import netdsl
from parity_util import assert_torchvision_agrees, randomise_batchnorm  # tests/ is on sys.path (no package)

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
ort = pytest.importorskip("onnxruntime")

RESNET_FILE = Path(__file__).resolve().parents[1] / "examples" / "resnet.net"
RTOL = 1e-4          # max |difference| relative to the largest |logit|

MODELS = {"resnet18": "ResNet18", "resnet50": "ResNet50",
          "resnext50_32x4d": "ResNeXt50_32x4d", "wide_resnet50_2": "WideResNet50_2"}


def _torchvision_model(name, seed):
    """torchvision's model, randomly initialised (its own init), with random BatchNorm statistics
    and affine parameters, so that eval mode is really exercised (torchvision starts them at
    0, 1, 1, 0)."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None)
    return randomise_batchnorm(model, torch.Generator().manual_seed(seed + 1))


@pytest.mark.parametrize("tv_name", sorted(MODELS))
def test_torchvision_weights_load_and_agree(tv_name):
    reference = _torchvision_model(tv_name, seed=0)
    state = reference.state_dict()
    net = netdsl.load(RESNET_FILE, network=MODELS[tv_name])
    assert list(net.state_layout()) == list(state)                 # same keys, same order
    x = np.random.default_rng(1).standard_normal((2, 3, 96, 96), dtype=np.float32)
    assert_torchvision_agrees(reference, net, x, RTOL)
