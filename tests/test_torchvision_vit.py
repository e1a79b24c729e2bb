"""torchvision's ViT weights load into netdsl's ViT (strict, every key and shape) and give the
same logits; netdsl's ViT variants have torchvision's parameter counts.

Needs torchvision (skipped without it):  /opt/tv-venv/bin/python -m pytest tests/test_torchvision_vit.py
"""
from pathlib import Path

import pytest

import netdsl

torch = pytest.importorskip("torch")
tvm = pytest.importorskip("torchvision.models")

FILE = Path(__file__).resolve().parents[1] / "examples" / "attention.net"


@pytest.mark.parametrize("name, ctor", [("ViT_B_16", "vit_b_16"), ("ViT_B_32", "vit_b_32"),
                                        ("ViT_L_16", "vit_l_16"), ("ViT_L_32", "vit_l_32")])
def test_parameter_counts_and_layout_match_torchvision(name, ctor):
    with torch.device("meta"):                      # structure only, no memory
        tv = getattr(tvm, ctor)()
    net = netdsl.load(FILE, network=name)
    assert net.param_count() == sum(p.numel() for p in tv.parameters())
    want = {k: tuple(v.shape) for k, v in tv.state_dict().items()}
    got = {k: tuple(v) for k, v in net.state_layout().items()}
    assert list(got) == list(want)
    assert got == want


def test_vit_b_16_loads_torchvision_weights_and_agrees():
    torch.manual_seed(0)
    tv = tvm.vit_b_16().eval()
    with torch.no_grad():   # torchvision zeroes the head and the class token: make them matter
        tv.heads.head.weight.normal_(0, 0.02)
        tv.heads.head.bias.normal_(0, 0.1)
        tv.class_token.normal_(0, 1.0)
    net = netdsl.load(FILE, network="ViT_B_16")
    model = net.to_torch(weights=tv.state_dict()).eval()
    assert list(model.state_dict()) == list(tv.state_dict())
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = tv(x)
        got = model(x)
    assert got.shape == want.shape == (2, 1000)
    assert float((want[0] - want[1]).abs().max()) > 1e-3      # the logits depend on the image
    err = float((got - want).abs().max())
    assert err <= 1e-4 * max(1.0, float(want.abs().max())), err
