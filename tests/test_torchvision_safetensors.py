"""A torchvision state_dict saved with safetensors.torch.save_file loads as is into the spec's
network (the keys are the spec's state_dict paths), and netdsl's ONNX model computes what
torchvision's module computes. Needs torchvision (a virtualenv with it, see the README):
`python -m pytest tests/test_torchvision_safetensors.py` there; skipped without it."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
ort = pytest.importorskip("onnxruntime")
from safetensors.torch import save_file  # noqa: E402

import netdsl  # noqa: E402

SIZES = [(2, 3, 64, 64), (1, 3, 80, 96)]      # two sizes through one ONNX file (symbolic H, W)


@pytest.fixture(scope="module")
def resnet18():
    """torchvision's ResNet-18 with random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.num_batches_tracked.fill_(3)
    return model


@pytest.fixture(scope="module")
def net():
    return netdsl.load("examples/resnet.net", "ResNet18")


def _inputs():
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s).astype(np.float32) for s in SIZES]


def _onnx_logits(model, xs):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return [sess.run(None, {name: x})[0] for x in xs]


def _torch_logits(module, xs):
    with torch.no_grad():
        return [module(torch.from_numpy(x)).numpy() for x in xs]


def test_torchvision_safetensors_loads_as_is(resnet18, net, tmp_path):
    path = tmp_path / "resnet18.safetensors"
    save_file(resnet18.state_dict(), str(path))
    model = net.to_onnx(weights=str(path))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[2:] == ["H", "W"], dims            # one file for both sizes
    xs = _inputs()
    ours, theirs = _onnx_logits(model, xs), _torch_logits(resnet18, xs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
        assert np.abs(b).max() > 1e-2
    assert not np.allclose(theirs[0][0], theirs[0][1])     # two images, two answers
    # not vacuous: netdsl's own random weights give other logits
    other = _onnx_logits(net.to_onnx(seed=1), xs[:1])[0]
    assert not np.allclose(other, theirs[0], rtol=1e-3, atol=1e-4)


def test_torchvision_half_precision_checkpoint(resnet18, net, tmp_path):
    """An F16 checkpoint: converted to float32 on load, matching torchvision's module with the
    same (rounded) weights."""
    half = {k: v.half() if v.is_floating_point() else v for k, v in resnet18.state_dict().items()}
    path = tmp_path / "resnet18-f16.safetensors"
    save_file(half, str(path))
    rounded = torchvision.models.resnet18(weights=None).eval()
    rounded.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in half.items()})
    xs = _inputs()[:1]
    ours = _onnx_logits(net.to_onnx(weights=str(path)), xs)[0]
    np.testing.assert_allclose(ours, _torch_logits(rounded, xs)[0], rtol=1e-3, atol=1e-4)


def test_netdsl_safetensors_load_into_torchvision(resnet18, net, tmp_path):
    """The other way: netdsl's save_safetensors loads strictly into torchvision's module."""
    from safetensors.torch import load_file
    path = tmp_path / "from-netdsl.safetensors"
    net.save_safetensors(path, seed=4)
    tv = torchvision.models.resnet18(weights=None).eval()
    tv.load_state_dict(load_file(str(path)), strict=True)
    xs = _inputs()[:1]
    np.testing.assert_allclose(_onnx_logits(net.to_onnx(seed=4), xs)[0], _torch_logits(tv, xs)[0],
                               rtol=1e-3, atol=1e-4)
