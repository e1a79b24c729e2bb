"""examples/fcn.net's ResNet segmentation nets (FCN_ResNet50 / 101, DeepLabV3_ResNet50 / 101, in
torchvision's layout) and resnet.net's dilated ResNet (replace_stride_with_dilation).

Expected parameter counts come from outside the compiler: arithmetic on the layers done here,
checked against torchvision 0.29's published `num_params` of its pretrained models (which have
the auxiliary head), and the brief's 32,957,013 for FCN_ResNet50 without it. These counts were
also measured on torchvision's own modules, in tests/test_torchvision_segmentation.py, which
loads torchvision's state_dicts strictly. The parity tests run PyTorch (eval mode) and
onnxruntime on the same random weights at two non-square sizes through one ONNX model with
symbolic N, H, W. No torchvision needed here.
"""
from pathlib import Path

import numpy as np
import pytest

import netdsl
from parity_util import RTOL, randomise

ROOT = Path(__file__).resolve().parents[1]
FCN_FILE = ROOT / "examples" / "fcn.net"
RESNET_FILE = ROOT / "examples" / "resnet.net"
LAYERS = {"50": [3, 4, 6, 3], "101": [3, 4, 23, 3]}


def load(name, **params):
    return netdsl.load(FCN_FILE, network=name, **params)


# ---- parameter counts ------------------------------------------------------------------------

def _bn(c):
    return 2 * c


def _backbone_params(layers):
    """ResNet (Bottleneck, torchvision v1.5) without fc; dilation changes no parameter count."""
    total = 3 * 64 * 49 + _bn(64)
    inplanes = 64
    for i, n in enumerate(layers):
        planes = 64 * 2 ** i
        for j in range(n):
            total += inplanes * planes + _bn(planes) + planes * planes * 9 + _bn(planes)
            total += planes * planes * 4 + _bn(planes * 4)
            if j == 0:                                  # every stage's first block projects
                total += inplanes * planes * 4 + _bn(planes * 4)
            inplanes = planes * 4
    return total


def _fcn_head(c_in, classes=21):
    mid = c_in // 4
    return c_in * mid * 9 + _bn(mid) + mid * classes + classes


def _deeplab_head(c_in=2048, classes=21, c=256):
    aspp = (c_in * c + _bn(c)                       # 1x1 branch
            + 3 * (c_in * c * 9 + _bn(c))           # three dilated 3x3 branches
            + c_in * c + _bn(c)                     # image pooling branch
            + 5 * c * c + _bn(c))                   # project
    return aspp + c * c * 9 + _bn(c) + c * classes + classes


def expected_params(name, aux):
    kind, depth = name.split("_ResNet")
    head = _fcn_head(2048) if kind == "FCN" else _deeplab_head()
    return _backbone_params(LAYERS[depth]) + head + (_fcn_head(1024) if aux else 0)


# torchvision 0.29's model docs (num_params of the COCO-VOC weights, which include the aux head)
TORCHVISION_AUX_PARAMS = {"FCN_ResNet50": 35_322_218, "FCN_ResNet101": 54_314_346,
                          "DeepLabV3_ResNet50": 42_004_074, "DeepLabV3_ResNet101": 60_996_202}


def test_arithmetic_matches_the_reference_figures():
    assert _backbone_params(LAYERS["50"]) + 2048 * 1000 + 1000 == 25_557_032    # resnet50
    assert _backbone_params(LAYERS["101"]) + 2048 * 1000 + 1000 == 44_549_160   # resnet101
    assert expected_params("FCN_ResNet50", aux=False) == 32_957_013
    for name, want in TORCHVISION_AUX_PARAMS.items():
        assert expected_params(name, aux=True) == want, name


@pytest.mark.parametrize("name", sorted(TORCHVISION_AUX_PARAMS))
@pytest.mark.parametrize("aux", [False, True])
def test_param_counts(name, aux):
    net = load(name, aux=aux)
    assert net.param_count() == expected_params(name, aux)
    if aux:
        assert net.param_count() == TORCHVISION_AUX_PARAMS[name]


def test_fcn_resnet50_param_count():
    assert load("FCN_ResNet50").param_count() == 32_957_013


# torchvision 0.29's model docs, "GFLOPS" (multiply-accumulates, aux head included) at 520x520
TORCHVISION_GMACS = {"FCN_ResNet50": 152.717, "FCN_ResNet101": 232.738,
                     "DeepLabV3_ResNet50": 178.722, "DeepLabV3_ResNet101": 258.743}


@pytest.mark.parametrize("name", sorted(TORCHVISION_GMACS))
def test_macs_match_torchvision(name):
    macs = load(name, aux=True).summary(inputs=(1, 3, 520, 520))["macs"]
    assert macs == pytest.approx(TORCHVISION_GMACS[name] * 1e9, abs=1e6)


# ---- shapes, dilation, layout ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["FCN_ResNet50", "DeepLabV3_ResNet50", "FCN_ResNet101"])
def test_output_has_the_input_size(name):
    net = load(name, aux=True)
    s = net.summary()
    assert s["outputs"] == [{"name": "out", "shape": ["N", 21, "H", "W"]},
                            {"name": "aux", "shape": ["N", 21, "H", "W"]}]
    assert s["constraints"] == []                   # every H, W >= 1
    for shape in [(1, 3, 65, 97), (2, 3, 97, 31), (1, 3, 7, 1)]:
        s = net.summary(inputs=shape)
        assert [o["shape"] for o in s["outputs"]] == [[shape[0], 21, *shape[2:]]] * 2
        layers = {x["path"]: x["output_shape"] for x in s["layers"]}
        stride8 = [(d + 7) // 8 for d in shape[2:]]
        assert layers["backbone.layer4.2.relu_2"][2:] == stride8        # output stride 8
        assert layers["backbone.layer3.5.relu_2"] == [shape[0], 1024, *stride8]
        assert layers["classifier.4"] == [shape[0], 21, *stride8]
    assert load(name).summary()["outputs"] == [{"name": "out", "shape": ["N", 21, "H", "W"]}]


def _nodes(net):
    return {n.path: n for n in net.graph.nodes}


def test_dilated_backbone_follows_torchvision():
    """torchvision's _make_layer: a dilated stage's first block keeps the previous dilation (and
    projects its shortcut with a stride-1 1x1 conv); the others use the stage's."""
    nodes = _nodes(load("FCN_ResNet50"))
    want = {"layer2.0": (2, 1), "layer2.3": (1, 1), "layer3.0": (1, 1), "layer3.1": (1, 2),
            "layer3.5": (1, 2), "layer4.0": (1, 2), "layer4.1": (1, 4), "layer4.2": (1, 4)}
    for block, (stride, dilation) in want.items():
        conv2 = nodes[f"backbone.{block}.conv2"].attrs
        assert conv2["stride"] == (stride, stride), block
        assert conv2["dilation"] == (dilation, dilation), block
        assert conv2["padding"] == (dilation, dilation), block
    for stage in (3, 4):
        down = nodes[f"backbone.layer{stage}.0.downsample.0"].attrs
        assert down["stride"] == (1, 1) and down["kernel_size"] == (1, 1)
    aspp = _nodes(load("DeepLabV3_ResNet50"))
    for i, rate in enumerate([12, 24, 36], start=1):
        assert aspp[f"classifier.0.convs.{i}.0"].attrs["dilation"] == (rate, rate)
    assert aspp["classifier.0.convs.4.0"].op == "AdaptiveAvgPool2d"


def test_resnet_replace_stride_with_dilation():
    plain = netdsl.load(RESNET_FILE, network="ResNet50")
    dilated = netdsl.load(RESNET_FILE, network="ResNet50",
                          replace_stride_with_dilation=[False, True, True])
    assert list(plain.state_layout()) == list(dilated.state_layout())
    assert plain.param_count() == dilated.param_count() == 25_557_032
    shapes = {x["path"]: x["output_shape"] for x in
              dilated.summary(inputs=(1, 3, 224, 224))["layers"]}
    assert shapes["layer2.0.conv2"] == [1, 128, 28, 28]
    assert shapes["layer4.2.conv3"] == [1, 2048, 28, 28]
    # the default leaves ResNet unchanged: every conv undilated
    assert all(n.attrs["dilation"] == (1, 1) for n in plain.graph.nodes if n.op == "Conv2d")
    only4 = _nodes(netdsl.load(RESNET_FILE, network="ResNet50",
                               replace_stride_with_dilation=[False, False, True]))
    assert only4["layer3.0.conv2"].attrs["stride"] == (2, 2)
    assert only4["layer4.0.conv2"].attrs["dilation"] == (1, 1)
    assert only4["layer4.1.conv2"].attrs["dilation"] == (2, 2)


def test_state_dict_layout():
    layout = load("DeepLabV3_ResNet50", aux=True).state_layout()
    keys = list(layout)
    assert keys[0] == "backbone.conv1.weight"
    assert not any(k.startswith(("backbone.fc", "backbone.avgpool", "fc.")) for k in keys)
    want = {
        "backbone.conv1.weight": (64, 3, 7, 7),
        "backbone.layer3.0.downsample.0.weight": (1024, 512, 1, 1),
        "backbone.layer4.2.conv3.weight": (2048, 512, 1, 1),
        "classifier.0.convs.0.0.weight": (256, 2048, 1, 1),
        "classifier.0.convs.1.0.weight": (256, 2048, 3, 3),
        "classifier.0.convs.3.1.running_var": (256,),
        "classifier.0.convs.4.1.weight": (256, 2048, 1, 1),
        "classifier.0.convs.4.2.bias": (256,),
        "classifier.0.project.0.weight": (256, 1280, 1, 1),
        "classifier.0.project.1.num_batches_tracked": (),
        "classifier.1.weight": (256, 256, 3, 3),
        "classifier.2.running_mean": (256,),
        "classifier.4.weight": (21, 256, 1, 1),
        "classifier.4.bias": (21,),
        "aux_classifier.0.weight": (256, 1024, 3, 3),
        "aux_classifier.4.weight": (21, 256, 1, 1),
    }
    for k, shape in want.items():
        assert tuple(layout[k]) == shape, k
    assert keys[-1] == "aux_classifier.4.bias"
    assert keys.index("classifier.4.bias") < keys.index("aux_classifier.0.weight")
    fcn = load("FCN_ResNet101").state_layout()
    assert tuple(fcn["classifier.0.weight"]) == (512, 2048, 3, 3)
    assert tuple(fcn["classifier.4.weight"]) == (21, 512, 1, 1)
    assert "backbone.layer3.22.conv3.weight" in fcn and "backbone.layer3.23.conv1.weight" not in fcn
    assert not any(k.startswith("aux_classifier") for k in fcn)
    assert list(fcn)[-1] == "classifier.4.bias"


def test_num_classes_and_rates_can_be_set():
    net = load("DeepLabV3_ResNet50", num_classes=3, atrous_rates=[6, 12, 18])
    assert net.summary(inputs=(1, 3, 33, 47))["outputs"][0]["shape"] == [1, 3, 33, 47]
    assert _nodes(net)["classifier.0.convs.1.0"].attrs["dilation"] == (6, 6)


# ---- PyTorch and onnxruntime agree -----------------------------------------------------------

SHAPES = [(2, 3, 65, 97), (1, 3, 49, 35)]


def _assert_parity(net, model, names):
    import onnxruntime as ort
    import torch
    proto = net.to_onnx(weights=model)
    assert [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in proto.graph.input] == [["N", 3, "H", "W"]]          # one file, any size
    assert [o.name for o in proto.graph.output] == names
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    del proto
    rng = np.random.default_rng(3)
    for shape in SHAPES:
        x = rng.standard_normal(shape, dtype=np.float32)
        with torch.no_grad():
            want = model(torch.from_numpy(x))
        want = [w.numpy() for w in (want if isinstance(want, tuple) else (want,))]
        got = sess.run(None, {"image": x})
        assert len(got) == len(want) == len(names)
        for name, g, w in zip(names, got, want):
            assert g.shape == w.shape == (shape[0], 21, *shape[2:])
            scale = float(np.abs(w).max())
            if shape[0] > 1:
                assert float(np.abs(w[0] - w[1]).max()) > 1e-2 * scale, name
            assert float(np.abs(w[..., 1:, :] - w[..., :-1, :]).max()) > 1e-3 * scale, name
            err = float(np.abs(g - w).max())
            assert err <= RTOL * scale, f"{name} {shape}: max error {err:.3g} vs scale {scale:.3g}"


def test_deeplabv3_resnet50_torch_and_onnxruntime_agree():
    """Full size with the aux head: the dilated backbone, ASPP and its pooled branch, the FCN head."""
    pytest.importorskip("torch")
    net = load("DeepLabV3_ResNet50", aux=True)
    model = net.to_torch(seed=1).eval()
    randomise(model, seed=2)
    _assert_parity(net, model, ["out", "aux"])


def test_fcn_torch_and_onnxruntime_agree():
    """FCNResNet with fewer blocks (two per dilated stage, so both of their dilations run)."""
    pytest.importorskip("torch")
    net = load("FCNResNet", layers=[1, 1, 2, 2], aux=True)
    model = net.to_torch(seed=1).eval()
    randomise(model, seed=2)
    _assert_parity(net, model, ["out", "aux"])
