"""DenseNet, GoogLeNet and Inception-v3 (examples/densenet.net, googlenet.net, inception.net,
built on netdsl/std/dense.net and std/inception.net): parameter counts, MACs, state_dict layout
and PyTorch / onnxruntime parity.

Expected figures come from outside the compiler: torchvision's published parameter counts and
GFLOPS (its model docs), and arithmetic done here from the architectures' tables, never from
netdsl's own output.
"""
from pathlib import Path

import pytest

import netdsl
from parity_util import RTOL, assert_parity, randomise

ROOT = Path(__file__).resolve().parents[1]
DENSENET_FILE = ROOT / "examples" / "densenet.net"
GOOGLENET_FILE = ROOT / "examples" / "googlenet.net"
INCEPTION_FILE = ROOT / "examples" / "inception.net"

# torchvision 0.29 model docs: num_params, and GFLOPS (MACs) at 224x224 (299x299 for Inception-v3)
TORCHVISION_PARAMS = {
    "DenseNet121": 7_978_856, "DenseNet169": 14_149_480, "DenseNet201": 20_013_928,
    "GoogLeNet": 6_624_904, "InceptionV3": 23_834_568,
}
TORCHVISION_GMACS = {"DenseNet121": 2.834, "GoogLeNet": 1.498}

FILES = {"DenseNet121": DENSENET_FILE, "DenseNet169": DENSENET_FILE, "DenseNet201": DENSENET_FILE,
         "GoogLeNet": GOOGLENET_FILE, "InceptionV3": INCEPTION_FILE}


def load(name, **params):
    return netdsl.load(FILES[name], network=name, **params)


# ---- DenseNet-BC: Huang et al., Table 1 (k = 32, theta = 0.5, bottleneck 4k) ----------------------

DENSE_BLOCKS = {"DenseNet121": [6, 12, 24, 16], "DenseNet169": [6, 12, 32, 32],
                "DenseNet201": [6, 12, 48, 32]}


def densenet_figures(blocks, k=32, init=None, size=224, classes=1000):
    """(params, conv + linear MACs) of DenseNet-BC from its configuration (init: stem width, 2k)."""
    c, s = init or 2 * k, size // 2                  # conv0: 7x7/2 -> 112
    params, macs = 3 * c * 49 + 2 * c, 3 * c * 49 * s * s
    s //= 2                                          # pool0: 3x3/2, padding 1 -> 56
    for i, n in enumerate(blocks):
        for _ in range(n):                           # BN, 1x1 to 4k, BN, 3x3 to k
            params += 2 * c + c * 4 * k + 2 * 4 * k + 9 * 4 * k * k
            macs += (c * 4 * k + 9 * 4 * k * k) * s * s
            c += k
        if i < len(blocks) - 1:                      # BN, 1x1 to c // 2, 2x2 average pool
            params += 2 * c + c * (c // 2)
            macs += c * (c // 2) * s * s
            c, s = c // 2, s // 2
    params += 2 * c + c * classes + classes          # norm5, classifier
    return params, macs + c * classes


def densenet_keys(blocks):
    """torchvision.models.DenseNet's state_dict keys."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = ["features.conv0.weight"] + [f"features.norm0.{p}" for p in bn]
    for i, n in enumerate(blocks):
        for j in range(n):
            pre = f"features.denseblock{i + 1}.denselayer{j + 1}"
            keys += [f"{pre}.norm1.{p}" for p in bn] + [f"{pre}.conv1.weight"]
            keys += [f"{pre}.norm2.{p}" for p in bn] + [f"{pre}.conv2.weight"]
        if i < len(blocks) - 1:
            keys += [f"features.transition{i + 1}.norm.{p}" for p in bn]
            keys += [f"features.transition{i + 1}.conv.weight"]
    return keys + [f"features.norm5.{p}" for p in bn] + ["classifier.weight", "classifier.bias"]


# ---- GoogLeNet: Szegedy et al. 2015, Table 1, as torchvision builds it ------------------------------
# (name, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5 (a 3x3 in torchvision), pool proj, grid size)
GOOGLENET_TABLE = [
    ("inception3a", 64, 96, 128, 16, 32, 32, 28), ("inception3b", 128, 128, 192, 32, 96, 64, 28),
    ("inception4a", 192, 96, 208, 16, 48, 64, 14), ("inception4b", 160, 112, 224, 24, 64, 64, 14),
    ("inception4c", 128, 128, 256, 24, 64, 64, 14), ("inception4d", 112, 144, 288, 32, 64, 64, 14),
    ("inception4e", 256, 160, 320, 32, 128, 128, 14),
    ("inception5a", 256, 160, 320, 32, 128, 128, 7), ("inception5b", 384, 192, 384, 48, 128, 128, 7),
]


def basic_conv(cin, cout, kh, kw=None):
    """params of BasicConv2d (conv without bias, BatchNorm's weight and bias), MACs per pixel."""
    kw = kh if kw is None else kw
    return cin * cout * kh * kw + 2 * cout, cin * cout * kh * kw


def googlenet_figures(classes=1000):
    params = macs = 0
    # stem: conv1 7x7/2 -> 112, maxpool -> 56, conv2 1x1, conv3 3x3 at 56, maxpool -> 28
    for cin, cout, k, s in [(3, 64, 7, 112), (64, 64, 1, 56), (64, 192, 3, 56)]:
        p, m = basic_conv(cin, cout, k)
        params, macs = params + p, macs + m * s * s
    cin = 192
    for _, c1, r3, c3, r5, c5, pp, s in GOOGLENET_TABLE:
        for p, m in [basic_conv(cin, c1, 1), basic_conv(cin, r3, 1), basic_conv(r3, c3, 3),
                     basic_conv(cin, r5, 1), basic_conv(r5, c5, 3), basic_conv(cin, pp, 1)]:
            params, macs = params + p, macs + m * s * s
        cin = c1 + c3 + c5 + pp
    return params + cin * classes + classes, macs + cin * classes


def googlenet_keys():
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

    def basic(pre):
        return [f"{pre}.conv.weight"] + [f"{pre}.bn.{p}" for p in bn]

    keys = basic("conv1") + basic("conv2") + basic("conv3")
    for name, *_ in GOOGLENET_TABLE:
        keys += basic(f"{name}.branch1") + basic(f"{name}.branch2.0") + basic(f"{name}.branch2.1")
        keys += basic(f"{name}.branch3.0") + basic(f"{name}.branch3.1") + basic(f"{name}.branch4.1")
    return keys + ["fc.weight", "fc.bias"]


# ---- Inception-v3: the convolutions of torchvision's inception.py, module by module ---------------
# (cin, cout, kh, kw) for every BasicConv2d, from the module's input channels

def inception_a(cin, pool):
    return [(cin, 64, 1, 1), (cin, 48, 1, 1), (48, 64, 5, 5), (cin, 64, 1, 1), (64, 96, 3, 3),
            (96, 96, 3, 3), (cin, pool, 1, 1)], 64 + 64 + 96 + pool


def inception_b(cin):
    return [(cin, 384, 3, 3), (cin, 64, 1, 1), (64, 96, 3, 3), (96, 96, 3, 3)], 384 + 96 + cin


def inception_c(cin, c7):
    return [(cin, 192, 1, 1), (cin, c7, 1, 1), (c7, c7, 1, 7), (c7, 192, 7, 1), (cin, c7, 1, 1),
            (c7, c7, 7, 1), (c7, c7, 1, 7), (c7, c7, 7, 1), (c7, 192, 1, 7), (cin, 192, 1, 1)], 768


def inception_d(cin):
    return [(cin, 192, 1, 1), (192, 320, 3, 3), (cin, 192, 1, 1), (192, 192, 1, 7),
            (192, 192, 7, 1), (192, 192, 3, 3)], 320 + 192 + cin


def inception_e(cin):
    return [(cin, 320, 1, 1), (cin, 384, 1, 1), (384, 384, 1, 3), (384, 384, 3, 1),
            (cin, 448, 1, 1), (448, 384, 3, 3), (384, 384, 1, 3), (384, 384, 3, 1),
            (cin, 192, 1, 1)], 320 + 768 + 768 + 192


def inception_v3_params(classes=1000):
    convs = [(3, 32, 3, 3), (32, 32, 3, 3), (32, 64, 3, 3), (64, 80, 1, 1), (80, 192, 3, 3)]
    c = 192
    for module, args in [(inception_a, (32,)), (inception_a, (64,)), (inception_a, (64,)),
                         (inception_b, ()), (inception_c, (128,)), (inception_c, (160,)),
                         (inception_c, (160,)), (inception_c, (192,)), (inception_d, ()),
                         (inception_e, ()), (inception_e, ())]:
        more, c = module(c, *args)
        convs += more
    return sum(basic_conv(*conv)[0] for conv in convs) + c * classes + classes


# ---- figures ------------------------------------------------------------------------------------

def test_arithmetic_matches_torchvision():
    # the arithmetic is the oracle for the layout-independent checks: check it first
    for name, blocks in DENSE_BLOCKS.items():
        assert densenet_figures(blocks)[0] == TORCHVISION_PARAMS[name], name
    assert googlenet_figures()[0] == TORCHVISION_PARAMS["GoogLeNet"]
    assert inception_v3_params() == TORCHVISION_PARAMS["InceptionV3"]
    assert densenet_figures(DENSE_BLOCKS["DenseNet121"])[1] == pytest.approx(2.834e9, rel=5e-4)
    assert googlenet_figures()[1] == pytest.approx(1.498e9, rel=5e-4)


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_param_counts_match_torchvision(name):
    net = load(name)
    assert net.param_count() == TORCHVISION_PARAMS[name]
    assert net.summary()["params"] == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name", sorted(TORCHVISION_GMACS))
def test_macs_match_torchvision(name):
    s = load(name).summary(inputs=(1, 3, 224, 224))
    assert s["outputs"] == [{"name": "logits", "shape": [1, 1000]}]
    assert s["macs"] == pytest.approx(TORCHVISION_GMACS[name] * 1e9, rel=5e-3)
    want = (densenet_figures(DENSE_BLOCKS[name]) if name in DENSE_BLOCKS else googlenet_figures())[1]
    assert s["macs"] == pytest.approx(want, rel=5e-3)


@pytest.mark.parametrize("name", sorted(DENSE_BLOCKS))
def test_densenet_macs_and_params_match_the_table(name):
    params, macs = densenet_figures(DENSE_BLOCKS[name])
    net = load(name)
    assert net.param_count() == params
    assert net.summary(inputs=(1, 3, 224, 224))["macs"] == pytest.approx(macs, rel=5e-3)


def test_inception_v3_shapes_at_299():
    s = load("InceptionV3").summary(inputs=(1, 3, 299, 299))
    assert s["outputs"] == [{"name": "logits", "shape": [1, 1000]}]
    shapes = {layer["path"]: layer["output_shape"] for layer in s["layers"]}
    # the paper's Table 1: 35x35x288 after the 35x35 modules, 17x17x768, 8x8x2048
    assert shapes["Conv2d_4a_3x3.conv"] == [1, 192, 71, 71]
    assert shapes["Mixed_5d.branch_pool.conv"][2:] == [35, 35]
    assert shapes["Mixed_6e.branch_pool.conv"] == [1, 192, 17, 17]
    assert shapes["Mixed_7c.branch_pool.conv"] == [1, 192, 8, 8]
    assert tuple(load("InceptionV3").state_layout()["Mixed_6b.branch7x7_2.conv.weight"]) == \
        (128, 128, 1, 7)


def test_input_size_constraints():
    # Inception-v3 needs 75x75 (torchvision's documented minimum); 74 leaves an empty grid
    assert load("InceptionV3").summary()["constraints"] == ["H ≥ 75", "W ≥ 75"]
    with pytest.raises(netdsl.NetDSLError):
        load("InceptionV3").summary(inputs=(1, 3, 74, 299))
    # DenseNet: four halvings after the stem keep at least one pixel (29 -> 15 -> 8 -> 4 -> 2 -> 1)
    assert load("DenseNet121").summary()["constraints"] == ["H ≥ 29", "W ≥ 29"]
    # GoogLeNet's ceil-mode pools: 15 -> 8 -> 4 -> 2 -> 1 -> 1
    assert load("GoogLeNet").summary()["constraints"] == ["H ≥ 15", "W ≥ 15"]


# ---- state_dict layouts (torchvision's key order) ----------------------------------------------------

@pytest.mark.parametrize("name", sorted(DENSE_BLOCKS))
def test_densenet_state_dict_layout_is_torchvisions(name):
    layout = load(name).state_layout()
    assert list(layout) == densenet_keys(DENSE_BLOCKS[name])
    assert tuple(layout["features.denseblock1.denselayer1.conv1.weight"]) == (128, 64, 1, 1)
    assert tuple(layout["features.denseblock1.denselayer6.conv2.weight"]) == (32, 128, 3, 3)
    assert tuple(layout["features.transition1.conv.weight"]) == (128, 256, 1, 1)


def test_googlenet_state_dict_layout_is_torchvisions():
    layout = load("GoogLeNet").state_layout()
    assert list(layout) == googlenet_keys()
    assert tuple(layout["inception3a.branch3.1.conv.weight"]) == (32, 16, 3, 3)   # "5x5" is 3x3
    assert tuple(layout["fc.weight"]) == (1000, 1024)


def test_std_blocks_are_documented_and_parametric():
    from netdsl.ir.program import STD_DIR, load_program
    for f, names in [("dense.net", {"DenseLayer", "DenseBlock", "Transition"}),
                     ("inception.net", {"BasicConv2d", "Inception", "InceptionA", "InceptionB",
                                        "InceptionC", "InceptionD", "InceptionE"})]:
        program = load_program(path=STD_DIR / f)
        assert names <= set(program.blocks)
        for name, block in program.blocks.items():
            assert block.doc, f"std block {name} has no docstring"
    net = netdsl.loads("""import "std/dense.net"
        network T { input x: f32[1, 10, 16, 16]
            output y = x -> b: DenseBlock(3, 8, bn_size = 2) -> t: Transition(12) }""")
    assert net.summary()["outputs"][0]["shape"] == [1, 12, 8, 8]          # 10 + 3 * 8 = 34 -> 12
    layout = net.state_layout()
    assert tuple(layout["b.denselayer3.conv1.weight"]) == (16, 26, 1, 1)   # 10 + 2 * 8 in
    assert tuple(layout["t.conv.weight"]) == (12, 34, 1, 1)
    assert "b.denselayer1.conv1.bias" not in layout and "t.pool.weight" not in layout


def test_parameters_can_be_overridden():
    net = netdsl.load(DENSENET_FILE, network="DenseNet", blocks=[2, 2], growth=8, init=16,
                      num_classes=10)
    assert net.summary(inputs=(2, 3, 32, 32))["outputs"][0]["shape"] == [2, 10]
    assert net.param_count() == densenet_figures([2, 2], k=8, init=16, size=32, classes=10)[0]
    assert tuple(net.state_layout()["features.transition1.conv.weight"]) == (16, 32, 1, 1)
    assert load("GoogLeNet", num_classes=10).summary(inputs=(1, 3, 64, 64))["outputs"][0]["shape"] == [1, 10]


# ---- PyTorch and onnxruntime agree --------------------------------------------------------------

PARITY = [("DenseNet121", [(2, 3, 64, 64), (1, 3, 96, 80)]),
          ("DenseNet169", [(2, 3, 32, 32), (1, 3, 48, 40)]),       # 29x29 is the smallest input
          ("DenseNet201", [(2, 3, 32, 32), (1, 3, 48, 40)]),
          ("GoogLeNet", [(2, 3, 64, 64), (1, 3, 96, 80)]),
          ("InceptionV3", [(2, 3, 75, 75), (1, 3, 107, 91)])]




@pytest.mark.parametrize("name, shapes", PARITY, ids=[p[0] for p in PARITY])
def test_torch_and_onnxruntime_agree(name, shapes):
    pytest.importorskip("torch")
    net = load(name)
    model = net.to_torch(seed=1).eval()
    randomise(model, seed=2)
    assert_parity(net, model, shapes, dims=["N", 3, "H", "W"], rtol=RTOL, label=name)
