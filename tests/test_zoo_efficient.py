"""examples/efficientnet.net (EfficientNet B0-B7, EfficientNetV2 S/M/L) and examples/shufflenet.net
(ShuffleNet V2 x0.5 ... x2.0): parameter counts and MACs as torchvision's, torchvision's
state_dict layout, PyTorch and onnxruntime agreeing through one ONNX file at two sizes, and
dropout / stochastic depth acting only in training.

Expected figures come from torchvision 0.29's weights metadata (num_params, and _ops in GFLOPs,
which are GMACs in torchvision's convention, at each model's crop size) and from its source
(stochastic depth probabilities), never from netdsl's own output. The comparison with
torchvision itself is tests/test_torchvision_efficient.py.
"""
from pathlib import Path

import pytest

import netdsl
from parity_util import assert_parity, randomise

ROOT = Path(__file__).resolve().parents[1]
EFFICIENTNET = ROOT / "examples" / "efficientnet.net"
SHUFFLENET = ROOT / "examples" / "shufflenet.net"

# network -> (file, torchvision's num_params, its GMACs, the crop size they are given at)
FIGURES = {
    "EfficientNet_B0": (EFFICIENTNET, 5_288_548, 0.386, 224),
    "EfficientNet_B1": (EFFICIENTNET, 7_794_184, 0.687, 240),
    "EfficientNet_B2": (EFFICIENTNET, 9_109_994, 1.088, 288),
    "EfficientNet_B3": (EFFICIENTNET, 12_233_232, 1.827, 300),
    "EfficientNet_B4": (EFFICIENTNET, 19_341_616, 4.394, 380),
    "EfficientNet_B5": (EFFICIENTNET, 30_389_784, 10.266, 456),
    "EfficientNet_B6": (EFFICIENTNET, 43_040_704, 19.068, 528),
    "EfficientNet_B7": (EFFICIENTNET, 66_347_960, 37.746, 600),
    "EfficientNetV2_S": (EFFICIENTNET, 21_458_488, 8.366, 384),
    "EfficientNetV2_M": (EFFICIENTNET, 54_139_356, 24.582, 480),
    "EfficientNetV2_L": (EFFICIENTNET, 118_515_272, 56.08, 480),
    "ShuffleNetV2_x0_5": (SHUFFLENET, 1_366_792, 0.04, 224),
    "ShuffleNetV2_x1_0": (SHUFFLENET, 2_278_604, 0.145, 224),
    "ShuffleNetV2_x1_5": (SHUFFLENET, 3_503_624, 0.296, 224),
    "ShuffleNetV2_x2_0": (SHUFFLENET, 7_393_996, 0.583, 224),
}
# torchvision rounds its figures to 3 decimals: within 0.5%, or half a unit of the last decimal
# (ShuffleNetV2_x0_5's 0.04 is 0.0395 ... 0.0405)
MACS_ABS = 0.0005e9


@pytest.fixture(scope="module")
def nets():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = netdsl.load(FIGURES[name][0], network=name)
        return cache[name]
    return get


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_parameter_counts_and_macs_are_torchvisions(nets, name):
    _, params, gmacs, size = FIGURES[name]
    net = nets(name)
    assert net.param_count() == params
    macs = net.summary(inputs=(1, 3, size, size))["macs"]
    assert macs == pytest.approx(gmacs * 1e9, rel=5e-3, abs=MACS_ABS)


def test_efficientnet_b0_layout(nets):
    layout = nets("EfficientNet_B0").state_layout()
    want = {
        "features.0.0.weight": (32, 3, 3, 3), "features.0.1.running_var": (32,),
        # stage 1: expand ratio 1, so no expanding conv: depthwise, SE (32 // 4), project
        "features.1.0.block.0.0.weight": (32, 1, 3, 3), "features.1.0.block.1.fc1.weight": (8, 32, 1, 1),
        "features.1.0.block.1.fc2.bias": (32,), "features.1.0.block.2.0.weight": (16, 32, 1, 1),
        "features.1.0.block.2.1.weight": (16,),
        # stage 2: expand 16 -> 96, depthwise, SE squeezes to 16 // 4 = 4, project to 24
        "features.2.0.block.0.0.weight": (96, 16, 1, 1), "features.2.0.block.1.0.weight": (96, 1, 3, 3),
        "features.2.0.block.2.fc1.weight": (4, 96, 1, 1), "features.2.0.block.3.0.weight": (24, 96, 1, 1),
        "features.2.1.block.2.fc1.weight": (6, 144, 1, 1),
        "features.3.0.block.1.0.weight": (144, 1, 5, 5),
        "features.7.0.block.3.0.weight": (320, 1152, 1, 1),
        "features.8.0.weight": (1280, 320, 1, 1), "features.8.1.num_batches_tracked": (),
        "classifier.1.weight": (1000, 1280), "classifier.1.bias": (1000,),
    }
    for key, shape in want.items():
        assert tuple(layout[key]) == shape, key
    blocks = {k.split(".block.")[0] for k in layout if ".block." in k}
    assert len(blocks) == 16                                     # 1 + 2 + 2 + 3 + 3 + 4 + 1
    assert not any("stochastic_depth" in k or "features.1.0.block.3" in k for k in layout)
    assert len(layout) == 360


def test_efficientnet_v2_s_layout(nets):
    layout = nets("EfficientNetV2_S").state_layout()
    want = {
        "features.0.0.weight": (24, 3, 3, 3),
        # Fused-MBConv with expand ratio 1: one 3x3 conv
        "features.1.0.block.0.0.weight": (24, 24, 3, 3), "features.1.1.block.0.1.bias": (24,),
        # Fused-MBConv, expand 4: 3x3 conv to 96 (stride 2), 1x1 project to 48
        "features.2.0.block.0.0.weight": (96, 24, 3, 3), "features.2.0.block.1.0.weight": (48, 96, 1, 1),
        # MBConv, expand 4: 64 -> 256, SE to 64 // 4
        "features.4.0.block.0.0.weight": (256, 64, 1, 1), "features.4.0.block.2.fc1.weight": (16, 256, 1, 1),
        "features.6.14.block.3.1.running_mean": (256,),
        "features.7.0.weight": (1280, 256, 1, 1), "classifier.1.weight": (1000, 1280),
    }
    for key, shape in want.items():
        assert tuple(layout[key]) == shape, key
    assert "features.1.0.block.1.0.weight" not in layout and "features.6.15.block.0.0.weight" not in layout


def test_efficientnet_b7_scales_widths_and_depths(nets):
    """B7 (width 2.0, depth 3.1): stage widths make_divisible(c * 2, 8), layers ceil(n * 3.1),
    BatchNorm2d(eps = 0.001, momentum = 0.01) as torchvision's."""
    net = nets("EfficientNet_B7")
    layout = net.state_layout()
    depths = [1, 2, 2, 3, 3, 4, 1]
    for stage, n in enumerate(depths, start=1):
        last = -(-n * 31 // 10) - 1
        assert f"features.{stage}.{last}.block.0.0.weight" in layout
        assert f"features.{stage}.{last + 1}.block.0.0.weight" not in layout
    assert tuple(layout["features.0.0.weight"]) == (64, 3, 3, 3)
    assert tuple(layout["features.8.0.weight"]) == (2560, 640, 1, 1)
    norms = {n.attrs["eps"] for n in net.graph.nodes if n.op == "BatchNorm2d"}
    momenta = {n.attrs["momentum"] for n in net.graph.nodes if n.op == "BatchNorm2d"}
    assert norms == {0.001} and momenta == {0.01}


def test_stochastic_depth_probabilities_are_torchvisions(nets):
    """0.2 * k / 16 for the k-th block (k from 0), on the blocks with a residual connection only;
    dropout 0.2 before the classifier."""
    graph = nets("EfficientNet_B0").graph
    got = [n.attrs["p"] for n in graph.nodes if n.op == "StochasticDepth"]
    residual = [2, 4, 6, 7, 9, 10, 12, 13, 14]     # blocks whose stride is 1 and width unchanged
    assert got == pytest.approx([0.2 * k / 16 for k in residual], abs=1e-12)
    assert [n.attrs["p"] for n in graph.nodes if n.op == "Dropout"] == [0.2]


def test_shufflenet_layout(nets):
    layout = nets("ShuffleNetV2_x1_0").state_layout()
    want = {
        "conv1.0.weight": (24, 3, 3, 3), "conv1.1.bias": (24,),
        "stage2.0.branch1.0.weight": (24, 1, 3, 3), "stage2.0.branch1.1.weight": (24,),
        "stage2.0.branch1.2.weight": (58, 24, 1, 1), "stage2.0.branch1.3.running_var": (58,),
        "stage2.0.branch2.0.weight": (58, 24, 1, 1), "stage2.0.branch2.3.weight": (58, 1, 3, 3),
        "stage2.0.branch2.5.weight": (58, 58, 1, 1), "stage2.0.branch2.6.weight": (58,),
        "stage2.1.branch2.0.weight": (58, 58, 1, 1), "stage3.7.branch2.6.bias": (116,),
        "stage4.0.branch1.2.weight": (232, 232, 1, 1),
        "conv5.0.weight": (1024, 464, 1, 1), "fc.weight": (1000, 1024),
    }
    for key, shape in want.items():
        assert tuple(layout[key]) == shape, key
    assert "stage2.1.branch1.0.weight" not in layout and "stage3.8.branch2.0.weight" not in layout


# ---- PyTorch and onnxruntime ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["EfficientNet_B0", "ShuffleNetV2_x1_0"])
def test_torch_and_onnxruntime_agree(nets, name):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    net = nets(name)
    model = net.to_torch(seed=1).eval()
    randomise(model, seed=2)
    shapes = [(2, 3, 64, 64), (1, 3, 96, 80)]
    assert_parity(net, model, shapes, dims=["N", 3, "H", "W"], label=name)


def test_shufflenet_needs_even_channels_and_any_size(nets):
    """The stride-1 units split their input in two: fine for every width; the net accepts any
    size (the strided convs and the pool pad), down to 1x1."""
    net = nets("ShuffleNetV2_x1_0")
    assert net.summary(inputs=(1, 3, 1, 1))["outputs"][0]["shape"] == [1, 1000]
    assert net.summary(inputs=(1, 3, 33, 47))["outputs"][0]["shape"] == [1, 1000]


# ---- training ------------------------------------------------------------------------------------

def test_efficientnet_dropout_and_stochastic_depth_act_only_in_training(nets):
    torch = pytest.importorskip("torch")
    net = nets("EfficientNet_B0")
    model = net.to_torch(seed=1)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a, b)                                     # eval: deterministic
    model.train()
    torch.manual_seed(0)
    y1 = model(x)
    y2 = model(x)
    assert not torch.allclose(y1, y2)                            # a fresh draw per call
    torch.manual_seed(0)
    assert torch.equal(model(x), y1)                             # ... from torch's generator
    y1.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert all(float(g.abs().sum()) > 0 for g in grads[:3])      # the stem learns
    assert float(model.state_dict()["features.0.1.num_batches_tracked"]) == 3


def test_efficientnet_sd_training_drops_whole_samples():
    """StochasticDepth 'row' zeroes the residual branch per sample: with p = 1 every residual
    block is the identity on its input, so a network of residual blocks only gives its stem's
    output (dropout 0)."""
    torch = pytest.importorskip("torch")
    net = netdsl.loads("""import "std/efficientnet.net"
        network T { input x: f32[N, 8, H, W]
            output y = x -> a: MBConv(4, 3, 1, 8, sd_prob = 1.0) -> b: FusedMBConv(4, 3, 1, 8, sd_prob = 1.0) }""")
    model = net.to_torch(seed=0).train()
    x = torch.randn(3, 8, 5, 5)
    assert torch.equal(model(x), x)
    model.eval()
    assert not torch.allclose(model(x), x)
