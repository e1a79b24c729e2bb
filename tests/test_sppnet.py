"""examples/sppnet.net: SPP-net with the ZF-5 trunk (He et al. 2014).

One ONNX file with dynamic H and W runs at 180x180, 224x224 and 131x157 (sizes the pyramid's
levels do not divide), gives the same output size at each and matches the torch module; the
parameter count is computed here from the layer shapes; the paper's conv5 map sizes come out;
with the paper's bins the network reports the sizes it accepts and refuses 180x180.
"""
from pathlib import Path

import pytest

import netdsl
from netdsl.errors import NetDSLError
from parity_util import assert_parity, randomise

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

SPPNET = Path(__file__).resolve().parents[1] / "examples" / "sppnet.net"
SIZES = [(2, 3, 180, 180), (1, 3, 224, 224), (1, 3, 131, 157)]


def conv(c_in, c_out, k):
    return c_out * c_in * k * k + c_out


def linear(f_in, f_out):
    return f_out * f_in + f_out


def expected_params(width=1.0, num_classes=1000, levels=(6, 3, 2, 1)):
    c1, c2, c3, c4, c5 = (int(c * width) for c in (96, 256, 384, 384, 256))
    fc = int(4096 * width)
    features = c5 * sum(n * n for n in levels)
    return (conv(3, c1, 7) + conv(c1, c2, 5) + conv(c2, c3, 3) + conv(c3, c4, 3) + conv(c4, c5, 3)
            + linear(features, fc) + linear(fc, fc) + linear(fc, num_classes))


def test_full_size_parameters_and_shapes():
    net = netdsl.load(SPPNET)
    assert expected_params() == 77_037_672          # the sum above, written out once
    assert net.param_count() == expected_params()
    layout = net.state_layout()
    assert tuple(layout["fc6.weight"]) == (4096, 12_800)        # 256 * (36 + 9 + 4 + 1) features
    assert tuple(layout["conv1.weight"]) == (96, 3, 7, 7) and tuple(layout["fc8.weight"]) == (1000, 4096)
    for (n, c, h, w), conv5 in zip(SIZES, [(10, 10), (13, 13), (7, 9)]):   # 13 and 10: the paper's
        layers = {row["path"]: row for row in net.summary(inputs=(1, c, h, w))["layers"]}
        assert layers["conv5"]["output_shape"][2:] == list(conv5)
        assert net.summary(inputs=(n, c, h, w))["outputs"][0]["shape"] == [n, 1000]
    assert net.summary()["constraints"] == ["H ≥ 105", "W ≥ 105"]


def test_one_onnx_file_at_three_sizes_matches_torch():
    params = dict(width=0.125, num_classes=10)
    net = netdsl.load(SPPNET, **params)
    assert net.param_count() == expected_params(**params)
    model = net.to_torch(seed=1).eval()
    randomise(model, seed=2)
    assert_parity(net, model, SIZES, dims=["N", 3, "H", "W"], label="SPPNet_ZF5")


def test_the_papers_bins_refuse_180():
    net = netdsl.load(SPPNET, bins="paper")
    assert net.summary()["constraints"][0] == "H ≥ 489, or H ∈ {105–136, 201–248, 297–360, 393–472}"
    assert net.summary(inputs=(1, 3, 224, 224))["outputs"][0]["shape"] == [1, 1000]
    with pytest.raises(NetDSLError) as e:
        net.summary(inputs=(1, 3, 180, 180))
    assert "level 6" in e.value.message and "dim 2 of size 10 gives 9 bins, not 6" in e.value.message
