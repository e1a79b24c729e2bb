"""`crop` with fixed offsets, and FCN-32s / 16s / 8s on VGG16 (examples/fcn.net).

The nets are checked against a hand-written PyTorch FCN in the layout of the widely used
port of the reference Caffe nets (same state_dict, same outputs), for their parameter counts
(trainable and frozen, computed here from the layer shapes), their output size (the input's,
for every H and W), their fixed bilinear upsamplers, and torch vs onnxruntime through one ONNX
file at two input sizes. Shrunk copies (`width`, `num_classes`) keep the runs fast.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import netdsl
from netdsl.errors import NetDSLError

torch = pytest.importorskip("torch")
F = torch.nn.functional

ROOT = Path(__file__).resolve().parent.parent
FCN_FILE = ROOT / "examples" / "fcn.net"
VARIANTS = ("FCN32s", "FCN16s", "FCN8s")
SMALL = dict(width=16, num_classes=5)          # channels 4, 8, 16, 32, 32; fc6/fc7 256
SIZES = ((1, 3, 37, 51), (2, 3, 64, 48))        # odd and even, H < W and H > W


# ---- crop ----------------------------------------------------------------------------------

CROP = """network C {{
    input x: f32[{x}]
    input t: f32[{t}]
    output y = crop(x, like = t{kw})
}}"""


def crop_net(x="N, 3, H, W", t="N, 2, P, Q", kw=""):
    return netdsl.loads(CROP.format(x=x, t=t, kw=kw), name="c.net")


@pytest.mark.parametrize("kw,oh,ow", [("", 0, 0), (", offset = 3", 3, 3), (", offset = [2, 5]", 2, 5)])
def test_crop_takes_the_window_at_the_offset(kw, oh, ow):
    net = crop_net(kw=kw)
    m = net.to_torch()
    x, t = torch.randn(2, 3, 11, 13), torch.randn(2, 2, 6, 7)
    y = m(x, t)
    assert torch.equal(y, x[:, :, oh:oh + 6, ow:ow + 7])
    assert not torch.equal(y, x[:, :, 1:7, 1:8])          # the offset matters
    assert net.summary(inputs={"x": (2, 3, 11, 13), "t": (2, 2, 6, 7)})["outputs"][0]["shape"] == [2, 3, 6, 7]


def test_crop_symbolic_sizes_give_derived_constraints():
    net = netdsl.loads("""network C {
        input x: f32[N, 3, H, W]
        output y = crop(x, like = x -> MaxPool2d(2), offset = [3, 5]) }""", name="c.net")
    # H // 2 + 3 <= H  <=>  H >= 5;  W // 2 + 5 <= W  <=>  W >= 9
    assert net.constraints == ["H ≥ 5", "W ≥ 9"]
    with pytest.raises(NetDSLError) as e:
        net.summary(inputs=(1, 3, 4, 20))
    assert "crop" in str(e.value)


@pytest.mark.parametrize("x,t,kw,line_col,needle", [
    ("N, 3, 10, 10", "N, 2, 6, 6", ", offset = [4, 5]", "c.net:4:16", "dim 3: cannot take 6 from 10 at offset 5"),
    ("N, 3, 10, 10", "N, 2, 11, 6", "", "c.net:4:16", "dim 2: cannot take 11 from 10 at offset 0"),
    ("N, 3, 10, 10", "N, 2, 6, 6", ", offset = -1", "c.net:4:16", "'offset' must be non-negative"),
    ("N, 3, 10, 10", "N, 2, 6, 6", ", offset = [1, -2]", "c.net:4:16", "'offset' must be non-negative"),
    ("N, 3, 10, 10", "N, 2, 6, 6", ", offset = [1, 1, 1]", "c.net:4:16", "offset needs one value or 2"),
    ("N, 3, 10", "N, 2, 6, 6", "", "c.net:4:16", "same rank"),
])
def test_crop_errors_are_located(x, t, kw, line_col, needle):
    with pytest.raises(NetDSLError) as e:
        crop_net(x, t, kw).graph
    text = str(e.value)
    assert text.startswith(line_col + ": error: crop"), text
    assert needle in text, text
    assert "    output y = crop(x, like = t" in e.value.render() and "^" in e.value.render()


# ---- FCN: structure and counts -------------------------------------------------------------

def fcn(name, **params):
    return netdsl.load(FCN_FILE, network=name, **params)


def _conv(cin, cout, k, bias=True):
    return cin * cout * k * k + (cout if bias else 0)


def expected_counts(variant, num_classes=21, width=1):
    """(trainable, frozen) from the layer shapes of the reference nets."""
    nc = num_classes
    chans = [c // width for c in (64, 128, 256, 512, 512)]
    trainable, cin = 0, 3
    for c, n in zip(chans, (2, 2, 3, 3, 3)):
        for _ in range(n):
            trainable += _conv(cin, c, 3)
            cin = c
    fc = 4096 // width
    trainable += _conv(cin, fc, 7) + _conv(fc, fc, 1) + _conv(fc, nc, 1)
    kernels = {"FCN32s": [64], "FCN16s": [4, 32], "FCN8s": [4, 4, 16]}[variant]
    frozen = sum(nc * nc * k * k for k in kernels)          # ConvTranspose2d(nc, nc, k), no bias
    trainable += {"FCN32s": 0, "FCN16s": _conv(chans[3], nc, 1),
                  "FCN8s": _conv(chans[3], nc, 1) + _conv(chans[2], nc, 1)}[variant]
    return trainable, frozen


def test_fcn32s_has_the_papers_parameter_count():
    assert expected_counts("FCN32s") == (134_346_581, 1_806_336)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("params", [{}, SMALL], ids=["full", "small"])
def test_fcn_parameter_counts(variant, params):
    net = fcn(variant, **params)
    trainable, frozen = expected_counts(variant, **params)
    assert net.param_count() == trainable + frozen
    assert net.trainable_param_count() == trainable
    assert net.frozen_param_count() == frozen
    s = net.summary()
    assert (s["trainable_params"], s["frozen_params"]) == (trainable, frozen)


def reference_keys(variant):
    keys = [f"conv{s}_{j}" for s, n in enumerate((2, 2, 3, 3, 3), 1) for j in range(1, n + 1)]
    keys += ["fc6", "fc7", "score_fr"]
    keys += {"FCN32s": [], "FCN16s": ["score_pool4"], "FCN8s": ["score_pool3", "score_pool4"]}[variant]
    out = [f"{k}.{p}" for k in keys for p in ("weight", "bias")]
    ups = {"FCN32s": ["upscore"], "FCN16s": ["upscore2", "upscore16"],
           "FCN8s": ["upscore2", "upscore8", "upscore_pool4"]}[variant]
    return sorted(out + [f"{u}.weight" for u in ups])


@pytest.mark.parametrize("variant", VARIANTS)
def test_fcn_state_dict_layout(variant):
    layout = fcn(variant).state_layout()
    assert sorted(layout) == reference_keys(variant)
    assert layout["conv1_1.weight"] == (64, 3, 3, 3)
    assert layout["conv5_3.weight"] == (512, 512, 3, 3)
    assert layout["fc6.weight"] == (4096, 512, 7, 7)
    assert layout["fc7.weight"] == (4096, 4096, 1, 1)
    assert layout["score_fr.weight"] == (21, 4096, 1, 1)
    final = {"FCN32s": ("upscore", 64), "FCN16s": ("upscore16", 32), "FCN8s": ("upscore8", 16)}[variant]
    assert layout[f"{final[0]}.weight"] == (21, 21, final[1], final[1])
    if variant != "FCN32s":
        assert layout["upscore2.weight"] == (21, 21, 4, 4)
        assert layout["score_pool4.weight"] == (21, 512, 1, 1)
    if variant == "FCN8s":
        assert layout["score_pool3.weight"] == (21, 256, 1, 1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_fcn_output_is_the_input_size_for_all_sizes(variant):
    net = fcn(variant)
    assert net.constraints == []                         # nothing beyond H, W >= 1
    s = net.summary()
    assert s["outputs"][0]["shape"] == ["N", 21, "H", "W"]
    for h, w in ((1, 1), (2, 3), (37, 51), (500, 375), (1023, 64)):
        assert fcn(variant, **SMALL).summary(inputs=(1, 3, h, w))["outputs"][0]["shape"] == [1, 5, h, w]


def test_netdsl_check_reports_no_size_condition():
    out = subprocess.run([sys.executable, "-m", "netdsl", "check", str(FCN_FILE), "--network", "FCN8s"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "outputs out [N, 21, H, W]" in out.stdout
    assert "input sizes" not in out.stdout + out.stderr


def test_unknown_variant_is_a_located_error():
    with pytest.raises(NetDSLError) as e:
        fcn("FCN", variant=4).graph
    assert "fcn.net:" in str(e.value) and "'full'" in str(e.value)


# ---- FCN: against a hand-written PyTorch FCN -----------------------------------------------

def reference_forward(sd, variant, x):
    """The forward pass of the PyTorch port of voc-fcn{32,16,8}s, on a state_dict (eval)."""
    def conv(h, name, padding=0):
        return F.conv2d(h, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=padding)

    def up(h, name, stride):
        return F.conv_transpose2d(h, sd[f"{name}.weight"], stride=stride)

    h, pools = x, {}
    for s, n in enumerate((2, 2, 3, 3, 3), 1):
        for j in range(1, n + 1):
            h = F.relu(conv(h, f"conv{s}_{j}", padding=100 if (s, j) == (1, 1) else 1))
        h = pools[s] = F.max_pool2d(h, 2, stride=2, ceil_mode=True)
    h = F.relu(conv(h, "fc6"))
    h = F.relu(conv(h, "fc7"))
    h = conv(h, "score_fr")
    if variant == "FCN32s":
        h = up(h, "upscore", 32)
        return h[:, :, 19:19 + x.size(2), 19:19 + x.size(3)].contiguous()
    up2 = up(h, "upscore2", 2)
    p4 = conv(pools[4], "score_pool4")[:, :, 5:5 + up2.size(2), 5:5 + up2.size(3)]
    h = up2 + p4
    if variant == "FCN16s":
        h = up(h, "upscore16", 16)
        return h[:, :, 27:27 + x.size(2), 27:27 + x.size(3)].contiguous()
    up4 = up(h, "upscore_pool4", 2)
    p3 = conv(pools[3], "score_pool3")[:, :, 9:9 + up4.size(2), 9:9 + up4.size(3)]
    h = up(up4 + p3, "upscore8", 8)
    return h[:, :, 31:31 + x.size(2), 31:31 + x.size(3)].contiguous()


@pytest.fixture(scope="module")
def small_models():
    from parity_util import randomise
    out = {}
    for i, v in enumerate(VARIANTS):
        net = fcn(v, **SMALL)
        model = net.to_torch().eval()
        randomise(model, seed=10 + i)
        out[v] = (net, model)
    return out


@pytest.mark.parametrize("variant", VARIANTS)
def test_fcn_matches_the_reference_forward(variant, small_models):
    net, model = small_models[variant]
    sd = model.state_dict()
    g = torch.Generator().manual_seed(1)
    for shape in SIZES:
        x = torch.randn(shape, generator=g)
        with torch.no_grad():
            got, want = model(x), reference_forward(sd, variant, x)
        assert got.shape == (shape[0], 5) + shape[2:]
        assert float(want.abs().max()) > 0
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
        if shape[0] > 1:
            assert not torch.allclose(got[0], got[1])


@pytest.mark.parametrize("variant", VARIANTS)
def test_fcn_torch_onnxruntime_parity_one_file_two_sizes(variant, small_models):
    pytest.importorskip("onnxruntime")
    from parity_util import assert_parity
    net, model = small_models[variant]
    assert_parity(net, model, SIZES, dims=["N", 3, "H", "W"], label=variant)


# ---- FCN: fixed bilinear upsamplers --------------------------------------------------------

def bilinear_kernel(channels, k):
    """The reference's upsampling weight (surgery.upsample_filt on the diagonal)."""
    factor = (k + 1) // 2
    center = factor - 1 if k % 2 == 1 else factor - 0.5
    og = np.ogrid[:k, :k]
    filt = (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)
    w = np.zeros((channels, channels, k, k), dtype=np.float64)
    w[range(channels), range(channels), :, :] = filt
    return torch.from_numpy(w).float()


UPSAMPLERS = {"FCN32s": {"upscore": 64}, "FCN16s": {"upscore2": 4, "upscore16": 32},
              "FCN8s": {"upscore2": 4, "upscore_pool4": 4, "upscore8": 16}}


@pytest.mark.parametrize("variant", VARIANTS)
def test_fcn_upsamplers_are_fixed_bilinear(variant):
    model = fcn(variant, **SMALL).to_torch(seed=5)
    params = dict(model.named_parameters())
    for name, k in UPSAMPLERS[variant].items():
        w = params[f"{name}.weight"]
        assert not w.requires_grad
        assert torch.equal(w.detach(), bilinear_kernel(5, k)), name
    trainable = [n for n, p in params.items() if p.requires_grad]
    assert sorted(trainable) == sorted(k for k in reference_keys(variant)
                                       if k.split(".")[0] not in UPSAMPLERS[variant])
    # the same weights in the ONNX file
    proto = fcn(variant, **SMALL).to_onnx(seed=5)
    from onnx import numpy_helper
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for name, k in UPSAMPLERS[variant].items():
        np.testing.assert_array_equal(inits[f"{name}.weight"], bilinear_kernel(5, k).numpy())


def test_bilinear_upsampler_interpolates():
    """upscore2 on its own doubles a smooth ramp into a smooth ramp (not a copy, not zeros)."""
    w = bilinear_kernel(1, 4)
    ramp = torch.arange(6.0).reshape(1, 1, 1, 6).expand(1, 1, 6, 6)
    out = F.conv_transpose2d(ramp, w, stride=2)[:, :, 1:-1, 1:-1]   # the reference's crops drop the edge
    inner = out[0, 0, 2:-2, 2:-2]
    steps = inner[:, 1:] - inner[:, :-1]
    torch.testing.assert_close(steps, torch.full_like(steps, 0.5))
