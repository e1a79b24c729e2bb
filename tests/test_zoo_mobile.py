"""The small torchvision classifiers as netdsl examples: AlexNet, SqueezeNet, MobileNetV2,
MobileNetV3, MNASNet (examples/alexnet.net, squeezenet.net, mobilenetv2.net, mobilenetv3.net,
mnasnet.net; blocks from netdsl/std/mobile.net).

Expected figures come from torchvision 0.29's weights metadata (`num_params`, `_ops` in GMACs at
224x224), not from netdsl's output; key layouts from torchvision's module structure.
tests/test_torchvision_mobile.py checks the same networks against torchvision itself."""
from pathlib import Path

import numpy as np
import pytest

import netdsl

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples"

# network -> (file, torchvision num_params, torchvision _ops in GMACs at 224x224)
NETWORKS = {
    "AlexNet": ("alexnet.net", 61_100_840, 0.714),
    "SqueezeNet1_0": ("squeezenet.net", 1_248_424, 0.819),
    "SqueezeNet1_1": ("squeezenet.net", 1_235_496, 0.349),
    "MobileNetV2": ("mobilenetv2.net", 3_504_872, 0.301),
    "MobileNetV3_Large": ("mobilenetv3.net", 5_483_032, 0.217),
    "MobileNetV3_Small": ("mobilenetv3.net", 2_542_856, 0.057),
    "MNASNet0_5": ("mnasnet.net", 2_218_512, 0.104),
    "MNASNet0_75": ("mnasnet.net", 3_170_208, 0.215),
    "MNASNet1_0": ("mnasnet.net", 4_383_312, 0.314),
    "MNASNet1_3": ("mnasnet.net", 6_282_256, 0.526),
}


def load(name, **params):
    return netdsl.load(EX / NETWORKS[name][0], network=name, **params)


@pytest.fixture(scope="module")
def nets():
    """Every network, elaborated once (elaboration is cheap; no weights are made)."""
    return {name: load(name) for name in NETWORKS}


@pytest.mark.parametrize("name", NETWORKS)
def test_parameter_count_and_macs_match_torchvision(nets, name):
    _, params, gmacs = NETWORKS[name]
    net = nets[name]
    assert net.param_count() == params
    s = net.summary(inputs=(1, 3, 224, 224))
    assert s["outputs"][0]["shape"] == [1, 1000]
    # torchvision rounds to 3 digits: allow 0.5% plus half a unit of the last digit
    assert abs(s["macs"] / 1e9 - gmacs) <= 5e-3 * gmacs + 5e-4, s["macs"]


# a few keys and shapes per network, in torchvision's layout, and the number of entries
LAYOUTS = {
    "AlexNet": (16, {"features.0.weight": (64, 3, 11, 11), "features.10.bias": (256,),
                     "classifier.1.weight": (4096, 9216), "classifier.6.weight": (1000, 4096)}),
    "SqueezeNet1_0": (52, {"features.3.squeeze.weight": (16, 96, 1, 1),
                           "features.12.expand3x3.weight": (256, 64, 3, 3),
                           "classifier.1.weight": (1000, 512, 1, 1)}),
    "SqueezeNet1_1": (52, {"features.0.weight": (64, 3, 3, 3),
                           "features.12.expand1x1.bias": (256,)}),
    "MobileNetV2": (314, {"features.0.0.weight": (32, 3, 3, 3), "features.0.1.running_var": (32,),
                          "features.1.conv.0.0.weight": (32, 1, 3, 3),
                          "features.1.conv.1.weight": (16, 32, 1, 1),
                          "features.1.conv.2.bias": (16,),
                          "features.2.conv.0.0.weight": (96, 16, 1, 1),
                          "features.2.conv.1.0.weight": (96, 1, 3, 3),
                          "features.2.conv.2.weight": (24, 96, 1, 1),
                          "features.2.conv.3.num_batches_tracked": (),
                          "features.18.0.weight": (1280, 320, 1, 1),
                          "classifier.1.weight": (1000, 1280)}),
    "MobileNetV3_Large": (312, {"features.0.0.weight": (16, 3, 3, 3),
                                "features.1.block.0.0.weight": (16, 1, 3, 3),
                                "features.1.block.1.0.weight": (16, 16, 1, 1),
                                "features.4.block.2.fc1.weight": (24, 72, 1, 1),
                                "features.4.block.2.fc2.bias": (72,),
                                "features.4.block.3.1.running_mean": (40,),
                                "features.16.0.weight": (960, 160, 1, 1),
                                "classifier.0.weight": (1280, 960),
                                "classifier.3.weight": (1000, 1280)}),
    "MobileNetV3_Small": (244, {"features.1.block.1.fc1.weight": (8, 16, 1, 1),
                                "features.12.0.weight": (576, 96, 1, 1),
                                "classifier.0.weight": (1024, 576)}),
    "MNASNet1_0": (314, {"layers.0.weight": (32, 3, 3, 3), "layers.3.weight": (32, 1, 3, 3),
                         "layers.6.weight": (16, 32, 1, 1), "layers.7.running_var": (16,),
                         "layers.8.0.layers.0.weight": (48, 16, 1, 1),
                         "layers.8.0.layers.3.weight": (48, 1, 3, 3),
                         "layers.8.2.layers.7.bias": (24,),
                         "layers.12.3.layers.6.weight": (192, 1152, 1, 1),
                         "layers.14.weight": (1280, 320, 1, 1), "layers.15.bias": (1280,),
                         "classifier.1.weight": (1000, 1280)}),
    "MNASNet0_5": (314, {"layers.0.weight": (16, 3, 3, 3), "layers.6.weight": (8, 16, 1, 1),
                         "layers.14.weight": (1280, 160, 1, 1)}),
}


@pytest.mark.parametrize("name", LAYOUTS)
def test_state_dict_layout_is_torchvisions(nets, name):
    count, some = LAYOUTS[name]
    layout = nets[name].state_layout()
    assert len(layout) == count
    for key, shape in some.items():
        assert tuple(layout[key]) == shape, key
    # BatchNorm buffers and no conv bias where a norm follows (ConvNormAct's default)
    if "MobileNet" in name:
        assert "features.0.0.bias" not in layout


def test_mobilenet_v3_batchnorm_eps_and_blocks():
    """BatchNorm eps 0.001 everywhere in MobileNetV3 (torchvision's norm_layer), residuals only
    where stride 1 and channels are kept, SE with a hard-sigmoid gate."""
    net = load("MobileNetV3_Large")
    src = net.torch_source()
    assert "eps=0.001" in src.replace(" ", "") and "eps=1e-05" not in src.replace(" ", "")
    assert "hardsigmoid" in src.lower() and "hardswish" in src.lower()


def test_width_and_tail_options():
    """The parametric networks' other settings (torchvision's arithmetic, done here):
    MobileNetV2 at width 0.5 keeps the last conv at 1280 channels; MobileNetV3's reduced tail
    halves the last stage."""
    v2 = load("MobileNetV2", width_mult=0.5).state_layout()
    assert tuple(v2["features.0.0.weight"]) == (16, 3, 3, 3)
    assert tuple(v2["features.18.0.weight"]) == (1280, 160, 1, 1)
    v3 = netdsl.load(EX / "mobilenetv3.net", network="MobileNetV3", reduced_tail=True,
                     dilated=True).state_layout()
    assert tuple(v3["features.16.0.weight"]) == (480, 80, 1, 1)
    assert tuple(v3["classifier.0.weight"]) == (640, 480)
    # dilated: the last stage keeps stride 16 (output 14x14 at 224) with dilation 2
    net = netdsl.load(EX / "mobilenetv3.net", network="MobileNetV3", dilated=True)
    assert net.param_count() == NETWORKS["MobileNetV3_Large"][1]


# ---- torch vs onnxruntime: one ONNX file, two input sizes, random weights ----------------------

# network -> (parameter overrides, two input shapes); AlexNet's fully connected layers are
# narrowed (hidden = 256: the same layers, 1/16 of the 58M weights)
PARITY = {
    "MobileNetV3_Large": ({}, [(2, 3, 64, 64), (1, 3, 96, 80)]),
    "MobileNetV2": ({}, [(2, 3, 64, 64), (1, 3, 48, 80)]),
    "MNASNet1_0": ({}, [(2, 3, 64, 64), (1, 3, 96, 64)]),
    "SqueezeNet1_1": ({}, [(2, 3, 64, 64), (1, 3, 80, 96)]),
    "AlexNet": (dict(hidden=256), [(2, 3, 64, 64), (1, 3, 96, 112)]),
}


@pytest.mark.parametrize("name", PARITY)
def test_torch_and_onnxruntime_agree(nets, name):
    pytest.importorskip("torch")
    from parity_util import assert_parity, randomise
    params, shapes = PARITY[name]
    net = load(name, **params) if params else nets[name]
    model = net.to_torch(seed=1).eval()
    randomise(model, seed=2)
    assert_parity(net, model, shapes, dims=["N", 3, "H", "W"], label=name)


# ---- train / eval: dropout acts only in training ------------------------------------------------

def test_dropout_acts_only_in_training():
    torch = pytest.importorskip("torch")
    net = load("MobileNetV3_Small", num_classes=10, dropout=0.5)
    model = net.to_torch(seed=0)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32))
    model.train()
    a, b = model(x), model(x)
    assert not torch.allclose(a, b)                       # dropout draws differ between calls
    a.square().sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert float(sum(g.abs().sum() for g in grads)) > 0
    assert float(next(model.parameters()).grad.abs().sum()) > 0   # reaches the stem conv
    model.eval()
    with torch.no_grad():
        c, d = model(x), model(x)
    assert torch.equal(c, d)


# ---- the standard library blocks ---------------------------------------------------------------

def test_std_mobile_blocks_are_documented_and_named_as_torchvision():
    from netdsl.ir.program import STD_DIR, load_program
    program = load_program(path=STD_DIR / "mobile.net")
    assert {"ConvNormAct", "SqueezeExcitation", "InvertedResidual", "InvertedResidualV3",
            "MNASBlock"} <= set(program.blocks)
    for name, block in program.blocks.items():
        assert block.doc, f"std block {name} has no docstring"
    net = netdsl.loads("""import "std/mobile.net"
        network T { input x: f32[1, 8, 16, 16]
            output y = x -> a: ConvNormAct(16, stride = 2, act = Hardswish)
                         -> b: ConvNormAct(16, 5, groups = 16, dilation = 2, norm = Identity, bias = true)
                         -> se: SqueezeExcitation(4, gate = Hardsigmoid)
                         -> f: [ ...ConvNormAct(24, 1)  Conv2d(8, 1) ] }""")
    assert net.summary()["outputs"][0]["shape"] == [1, 8, 8, 8]
    layout = {k: tuple(v) for k, v in net.state_layout().items()}
    assert layout == {
        "a.0.weight": (16, 8, 3, 3), "a.1.weight": (16,), "a.1.bias": (16,),
        "a.1.running_mean": (16,), "a.1.running_var": (16,), "a.1.num_batches_tracked": (),
        "b.0.weight": (16, 1, 5, 5), "b.0.bias": (16,),
        "se.fc1.weight": (4, 16, 1, 1), "se.fc1.bias": (4,),
        "se.fc2.weight": (16, 4, 1, 1), "se.fc2.bias": (16,),
        "f.0.weight": (24, 16, 1, 1), "f.1.weight": (24,), "f.1.bias": (24,),
        "f.1.running_mean": (24,), "f.1.running_var": (24,), "f.1.num_batches_tracked": (),
        "f.3.weight": (8, 24, 1, 1), "f.3.bias": (8,)}
