"""examples/fcn.net's ResNet segmentation nets (and resnet.net's dilated ResNet) against
torchvision itself: torchvision's state_dicts load strictly into netdsl's modules (the same keys
in the same order), and the two compute the same outputs (`out`, and `aux` with aux = true) in
PyTorch and through the ONNX model built from the same weights. Skipped where torchvision is
not installed (run it in a virtualenv with torchvision, see the README)."""
from pathlib import Path

import numpy as np
import pytest

import netdsl
from parity_util import randomise_batchnorm  # tests/ is on sys.path (no package)

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
FCN_FILE = ROOT / "examples" / "fcn.net"
RESNET_FILE = ROOT / "examples" / "resnet.net"
RTOL = 1e-4          # max |difference| relative to the largest |output|
SIZE = (2, 3, 75, 53)  # non-square, odd: the stride-2 stages round up, the resize is not 8x

# torchvision builder, netdsl network, aux
CASES = [
    ("fcn_resnet50", "FCN_ResNet50", False),
    ("fcn_resnet50", "FCN_ResNet50", True),
    ("fcn_resnet101", "FCN_ResNet101", True),
    ("deeplabv3_resnet50", "DeepLabV3_ResNet50", False),
    ("deeplabv3_resnet50", "DeepLabV3_ResNet50", True),
]


def _randomise_bn(model, seed):
    return randomise_batchnorm(model, torch.Generator().manual_seed(seed))


def _segmentation_model(builder, aux, seed):
    torch.manual_seed(seed)
    model = getattr(torchvision.models.segmentation, builder)(
        weights=None, weights_backbone=None, aux_loss=aux)
    return _randomise_bn(model, seed + 1)


def _check_close(got, want, label):
    scale = float(np.abs(want).max())
    err = float(np.abs(got - want).max())
    assert err <= RTOL * scale, f"{label}: max error {err:.3g} vs output scale {scale:.3g}"


@pytest.mark.parametrize("builder, network, aux", CASES,
                         ids=[f"{n}-aux" if a else n for _, n, a in CASES])
def test_torchvision_weights_load_and_agree(builder, network, aux):
    reference = _segmentation_model(builder, aux, seed=0)
    state = reference.state_dict()
    net = netdsl.load(FCN_FILE, network=network, aux=aux)
    assert list(net.state_layout()) == list(state)                 # same keys, same order
    assert net.param_count() == sum(p.numel() for p in reference.parameters())
    model = net.to_torch(weights=state).eval()                     # loads strictly

    x = np.random.default_rng(1).standard_normal(SIZE, dtype=np.float32)
    with torch.no_grad():
        ref = reference(torch.from_numpy(x))
        got = model(torch.from_numpy(x))
    names = ["out", "aux"] if aux else ["out"]
    assert list(ref) == names
    want = [ref[k].numpy() for k in names]
    got = [g.numpy() for g in (got if isinstance(got, tuple) else (got,))]
    assert len(got) == len(want)
    for k, g, w in zip(names, got, want):
        assert g.shape == w.shape == (SIZE[0], 21, *SIZE[2:]), k
        scale = float(np.abs(w).max())
        # not vacuous: the output depends on the input, and varies over the image
        assert float(np.abs(w[0] - w[1]).max()) > 1e-2 * scale, k
        assert float(np.abs(w[0, :, 10:, :] - w[0, :, :-10, :]).max()) > 1e-2 * scale, k
        _check_close(g, w, f"{network} {k} (torch)")

    proto = net.to_onnx(weights=state)
    assert [o.name for o in proto.graph.output] == names
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    del proto
    onnx_out = sess.run(None, {sess.get_inputs()[0].name: x})
    for k, g, w in zip(names, onnx_out, want):
        _check_close(g, w, f"{network} {k} (onnxruntime)")


def test_comparison_could_fail():
    """The same check tells models apart: a torchvision model with other weights (fcn_resnet50
    reseeded) does not pass for netdsl's module loaded from the first one's state_dict."""
    a = _segmentation_model("fcn_resnet50", False, seed=0)
    b = _segmentation_model("fcn_resnet50", False, seed=5)
    model = netdsl.load(FCN_FILE, network="FCN_ResNet50").to_torch(weights=a.state_dict()).eval()
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 3, 41, 57), dtype=np.float32))
    with torch.no_grad():
        got, want = model(x).numpy(), b(x)["out"].numpy()
    with pytest.raises(AssertionError):
        _check_close(got, want, "other weights")


def test_dilated_resnet50_classifier():
    """resnet.net's ResNet with replace_stride_with_dilation is torchvision's
    resnet50(replace_stride_with_dilation=[False, True, True]), head included."""
    torch.manual_seed(0)
    reference = _randomise_bn(torchvision.models.resnet50(
        weights=None, replace_stride_with_dilation=[False, True, True]), seed=1)
    state = reference.state_dict()
    net = netdsl.load(RESNET_FILE, network="ResNet50",
                      replace_stride_with_dilation=[False, True, True])
    assert list(net.state_layout()) == list(state)
    model = net.to_torch(weights=state).eval()
    x = torch.from_numpy(np.random.default_rng(2).standard_normal((2, 3, 45, 61), dtype=np.float32))
    with torch.no_grad():
        want, got = reference(x).numpy(), model(x).numpy()
        plain = torchvision.models.resnet50(weights=None)
        plain.load_state_dict(state)
        undilated = plain.eval()(x).numpy()
    scale = float(np.abs(want).max())
    assert float(np.abs(undilated - want).max()) > 1e-2 * scale   # dilation changes the logits
    _check_close(got, want, "dilated ResNet50")
