"""RegNet (examples/regnet.net, blocks from std/regnet.net) and ConvNeXt (examples/convnext.net,
std/convnext.net): parameter counts, MACs, stage widths and state_dict layout of every size, torch
vs onnxruntime parity through one ONNX file at two input sizes, and ConvNeXt's stochastic depth
(train mode only).

Expected values come from outside the compiler: torchvision 0.29's weights metadata (num_params,
_ops: GFLOPs there are GMACs) and the stage widths, depths and group widths torchvision's
RegNet BlockParams computes, recorded here. tests/test_torchvision_regnet_convnext.py checks
the same against torchvision itself (keys, shapes, logits).
"""
from pathlib import Path

import numpy as np
import pytest

import netdsl
from parity_util import assert_parity, randomise

torch = pytest.importorskip("torch")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
REGNET_FILE = EXAMPLES / "regnet.net"
CONVNEXT_FILE = EXAMPLES / "convnext.net"

# torchvision 0.29: name -> (num_params, _ops in GMACs at 224x224); RegNetY-128GF's 224x224
# figure is its IMAGENET1K_SWAG_LINEAR_V1 weights' (the default weights are at 384x384)
REFERENCE = {
    "RegNetY_400MF": (4_344_144, 0.402), "RegNetY_800MF": (6_432_512, 0.834),
    "RegNetY_1_6GF": (11_202_430, 1.612), "RegNetY_3_2GF": (19_436_338, 3.176),
    "RegNetY_8GF": (39_381_472, 8.473), "RegNetY_16GF": (83_590_140, 15.912),
    "RegNetY_32GF": (145_046_770, 32.28), "RegNetY_128GF": (644_812_894, 127.518),
    "RegNetX_400MF": (5_495_976, 0.414), "RegNetX_800MF": (7_259_656, 0.8),
    "RegNetX_1_6GF": (9_190_136, 1.603), "RegNetX_3_2GF": (15_296_552, 3.177),
    "RegNetX_8GF": (39_572_648, 7.995), "RegNetX_16GF": (54_278_536, 15.941),
    "RegNetX_32GF": (107_811_560, 31.736),
    "ConvNeXt_Tiny": (28_589_128, 4.456), "ConvNeXt_Small": (50_223_688, 8.684),
    "ConvNeXt_Base": (88_591_464, 15.355), "ConvNeXt_Large": (197_767_336, 34.361),
}

# torchvision's BlockParams.from_init_params for each RegNet: stage widths, depths, group widths
STAGES = {
    "RegNetY_400MF": ([48, 104, 208, 440], [1, 3, 6, 6], [8, 8, 8, 8]),
    "RegNetY_800MF": ([64, 144, 320, 784], [1, 3, 8, 2], [16, 16, 16, 16]),
    "RegNetY_1_6GF": ([48, 120, 336, 888], [2, 6, 17, 2], [24, 24, 24, 24]),
    "RegNetY_3_2GF": ([72, 216, 576, 1512], [2, 5, 13, 1], [24, 24, 24, 24]),
    "RegNetY_8GF": ([224, 448, 896, 2016], [2, 4, 10, 1], [56, 56, 56, 56]),
    "RegNetY_16GF": ([224, 448, 1232, 3024], [2, 4, 11, 1], [112, 112, 112, 112]),
    "RegNetY_32GF": ([232, 696, 1392, 3712], [2, 5, 12, 1], [232, 232, 232, 232]),
    "RegNetY_128GF": ([528, 1056, 2904, 7392], [2, 7, 17, 1], [264, 264, 264, 264]),
    "RegNetX_400MF": ([32, 64, 160, 400], [1, 2, 7, 12], [16, 16, 16, 16]),
    "RegNetX_800MF": ([64, 128, 288, 672], [1, 3, 7, 5], [16, 16, 16, 16]),
    "RegNetX_1_6GF": ([72, 168, 408, 912], [2, 4, 10, 2], [24, 24, 24, 24]),
    "RegNetX_3_2GF": ([96, 192, 432, 1008], [2, 6, 15, 2], [48, 48, 48, 48]),
    "RegNetX_8GF": ([80, 240, 720, 1920], [2, 5, 15, 1], [80, 120, 120, 120]),
    "RegNetX_16GF": ([256, 512, 896, 2048], [2, 6, 13, 1], [128, 128, 128, 128]),
    "RegNetX_32GF": ([336, 672, 1344, 2520], [2, 7, 13, 1], [168, 168, 168, 168]),
}


def _file(name):
    return REGNET_FILE if name.startswith("RegNet") else CONVNEXT_FILE


@pytest.mark.parametrize("name", REFERENCE)
def test_parameter_counts_and_macs_are_torchvisions(name):
    net = netdsl.load(_file(name), network=name)
    params, gmacs = REFERENCE[name]
    assert net.param_count() == params
    macs = net.summary(inputs=(1, 3, 224, 224))["macs"]
    assert macs == pytest.approx(gmacs * 1e9, rel=5e-3)


@pytest.mark.parametrize("name", STAGES)
def test_regnet_stages_are_torchvisions(name):
    """The widths the spec computes from (depth, w_0, w_a, w_m, group_width) with round and log:
    per stage the output width (f.c's conv), the number of blocks and the 3x3 conv's groups."""
    layout = netdsl.load(REGNET_FILE, network=name).state_layout()
    widths, depths, group_widths = STAGES[name]
    for s, (w, d, g) in enumerate(zip(widths, depths, group_widths), start=1):
        blocks = list(dict.fromkeys(k.split(".")[2] for k in layout
                                    if k.startswith(f"trunk_output.block{s}.")))
        assert blocks == [f"block{s}-{j}" for j in range(d)]
        for j in range(d):
            prefix = f"trunk_output.block{s}.block{s}-{j}.f."
            assert layout[prefix + "c.0.weight"][0] == w
            assert layout[prefix + "b.0.weight"][1] == g            # in-channels per group
    assert not any(k.startswith(f"trunk_output.block{len(widths) + 1}.") for k in layout)


def test_regnet_layouts():
    y = netdsl.load(REGNET_FILE, network="RegNetY_400MF").state_layout()
    pre = "trunk_output.block1.block1-0."
    assert list(y)[:6] == ["stem.0.weight", "stem.1.weight", "stem.1.bias", "stem.1.running_mean",
                           "stem.1.running_var", "stem.1.num_batches_tracked"]
    assert list(y)[6] == pre + "proj.0.weight"
    assert y[pre + "f.a.0.weight"] == (48, 32, 1, 1)
    assert y[pre + "f.b.0.weight"] == (48, 8, 3, 3)                 # 48 // 8 = 6 groups
    assert y[pre + "f.se.fc1.weight"] == (8, 48, 1, 1)              # round(0.25 * 32) = 8
    assert y["trunk_output.block2.block2-1.f.se.fc1.weight"] == (26, 104, 1, 1)
    assert "trunk_output.block2.block2-1.proj.0.weight" not in y    # same width, stride 1
    assert y["fc.weight"] == (1000, 440)
    x = netdsl.load(REGNET_FILE, network="RegNetX_400MF").state_layout()
    assert not any(".se." in k for k in x)


def test_convnext_layout():
    t = netdsl.load(CONVNEXT_FILE, network="ConvNeXt_Tiny").state_layout()
    assert t["features.0.0.weight"] == (96, 3, 4, 4) and t["features.0.0.bias"] == (96,)
    assert t["features.0.1.weight"] == (96,)                        # LayerNorm2d
    assert t["features.1.2.layer_scale"] == (96, 1, 1)
    assert t["features.1.2.block.0.weight"] == (96, 1, 7, 7)        # depthwise 7x7
    assert t["features.1.2.block.2.weight"] == (96,)                # LayerNorm (channels last)
    assert t["features.1.2.block.3.weight"] == (384, 96)
    assert t["features.1.2.block.5.weight"] == (96, 384)
    assert t["features.2.0.weight"] == (96,) and t["features.2.1.weight"] == (192, 96, 2, 2)
    assert t["features.5.8.block.3.weight"] == (1536, 384)          # 9 blocks in stage 3
    assert "features.5.9.layer_scale" not in t and "features.8.0.weight" not in t
    assert t["classifier.0.weight"] == (768,) and t["classifier.2.weight"] == (1000, 768)


@pytest.fixture(scope="module")
def convnext():
    net = netdsl.load(CONVNEXT_FILE, network="ConvNeXt_Tiny")
    model = net.to_torch().eval()
    randomise(model, seed=0)
    with torch.no_grad():      # layer scales start at 1e-6 (randomise gives them N(0, 2))
        g = torch.Generator().manual_seed(1)
        for name, p in model.named_parameters():
            if name.endswith("layer_scale"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return net, model


def test_regnet_y_torch_and_onnxruntime_agree():
    net = netdsl.load(REGNET_FILE, network="RegNetY_400MF")
    model = net.to_torch().eval()
    randomise(model, seed=0)
    assert_parity(net, model, [(2, 3, 64, 64), (2, 3, 96, 80)], dims=["N", 3, "H", "W"],
                  label="RegNetY_400MF")


def test_convnext_torch_and_onnxruntime_agree(convnext):
    net, model = convnext
    assert_parity(net, model, [(2, 3, 64, 64), (2, 3, 96, 128)], dims=["N", 3, "H", "W"],
                  label="ConvNeXt_Tiny")


def test_convnext_stochastic_depth_acts_in_training_only(convnext):
    net, model = convnext
    x = torch.from_numpy(np.random.default_rng(5).standard_normal((4, 3, 32, 32), dtype=np.float32))
    try:
        with torch.no_grad():
            eval_out = model(x)
            assert torch.equal(model(x), eval_out)                       # eval: deterministic
        model.train()
        torch.manual_seed(0)
        first = model(x)
        second = model(x)
        assert not torch.allclose(first, second)                         # rows dropped at random
        first.square().mean().backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        for name in ("features.0.0.weight", "features.7.2.layer_scale", "classifier.2.weight"):
            assert grads[name] is not None and float(grads[name].abs().max()) > 0, name
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
