"""AlexNet, SqueezeNet, MobileNetV2, MobileNetV3 and MNASNet (examples/alexnet.net,
squeezenet.net, mobilenetv2.net, mobilenetv3.net, mnasnet.net) against torchvision itself:
torchvision's state_dict loads strictly into netdsl's module and the two compute the same
logits, in PyTorch and through the ONNX model built from the same weights; parameter counts,
state_dict keys and shapes, and MACs (torchvision's weights metadata) agree. Skipped where
torchvision is not installed."""
from pathlib import Path

import numpy as np
import pytest

import netdsl
from parity_util import calibrate_batchnorm  # tests/ is on sys.path (no package)

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
ort = pytest.importorskip("onnxruntime")

EX = Path(__file__).resolve().parents[1] / "examples"
RTOL = 1e-4          # max |difference| relative to the largest |logit|

# torchvision builder -> (example file, network, input size for the logits test or None)
MODELS = {
    "alexnet": ("alexnet.net", "AlexNet", 64),
    "squeezenet1_0": ("squeezenet.net", "SqueezeNet1_0", 64),
    "squeezenet1_1": ("squeezenet.net", "SqueezeNet1_1", 64),
    "mobilenet_v2": ("mobilenetv2.net", "MobileNetV2", 64),
    "mobilenet_v3_large": ("mobilenetv3.net", "MobileNetV3_Large", 64),
    "mobilenet_v3_small": ("mobilenetv3.net", "MobileNetV3_Small", 64),
    "mnasnet0_5": ("mnasnet.net", "MNASNet0_5", None),
    "mnasnet0_75": ("mnasnet.net", "MNASNet0_75", None),
    "mnasnet1_0": ("mnasnet.net", "MNASNet1_0", 64),
    "mnasnet1_3": ("mnasnet.net", "MNASNet1_3", None),
}

# other settings of the parametric networks: (builder, kwargs, file, network, netdsl params)
VARIANTS = [
    ("mobilenet_v2", dict(width_mult=0.5), "mobilenetv2.net", "MobileNetV2", dict(width_mult=0.5)),
    ("mobilenet_v2", dict(width_mult=1.4), "mobilenetv2.net", "MobileNetV2", dict(width_mult=1.4)),
    ("mobilenet_v3_large", dict(reduced_tail=True, dilated=True), "mobilenetv3.net", "MobileNetV3",
     dict(arch="large", reduced_tail=True, dilated=True)),
    ("mobilenet_v3_small", dict(width_mult=0.75), "mobilenetv3.net", "MobileNetV3",
     dict(arch="small", width_mult=0.75)),
]


def _torchvision_model(name, seed, **kwargs):
    """torchvision's model (its own init) with random values in place of its zero-initialised
    tensors (conv and Linear biases, SE biases), so that every parameter matters to the
    comparison, and random BatchNorm affine parameters and perturbed running statistics
    (calibrated on random images first: under arbitrary statistics, 17 blocks of ReLU6 lose
    all dependence on the input)."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None, **kwargs)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return calibrate_batchnorm(model, torch.randn(8, 3, 64, 64, generator=g), g)


def _conv_linear_macs(model, size=224):
    """Multiply-accumulates of the model's Conv2d and Linear layers on one size x size image,
    counted from the layers' outputs (torchvision's convention, without element-wise ops)."""
    total = []

    def hook(m, inputs, out):
        if isinstance(m, torch.nn.Conv2d):
            total.append(out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1])
        elif isinstance(m, torch.nn.Linear):
            total.append(out.numel() * m.in_features)
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return sum(total)


def _layout(state):
    return [(k, tuple(v.shape)) for k, v in state.items()]


@pytest.mark.parametrize("tv_name", list(MODELS))
def test_counts_layout_and_macs_match_torchvision(tv_name):
    file, network, _ = MODELS[tv_name]
    torch.manual_seed(0)
    reference = getattr(torchvision.models, tv_name)(weights=None)
    net = netdsl.load(EX / file, network=network)
    assert net.param_count() == sum(p.numel() for p in reference.parameters())
    meta = torchvision.models.get_model_weights(tv_name).DEFAULT.meta
    assert net.param_count() == meta["num_params"]
    assert [(k, tuple(s)) for k, s in net.state_layout().items()] == _layout(reference.state_dict())
    macs = net.summary(inputs=(1, 3, 224, 224))["macs"]
    assert macs == _conv_linear_macs(reference)
    # _ops: GMACs rounded to 3 digits; 0.5% plus half a unit of the last digit
    assert abs(macs / 1e9 - meta["_ops"]) <= 5e-3 * meta["_ops"] + 5e-4, (macs, meta["_ops"])


@pytest.mark.parametrize("builder, kwargs, file, network, params", VARIANTS,
                         ids=[f"{v[0]}-{'-'.join(f'{k}={w}' for k, w in v[1].items())}" for v in VARIANTS])
def test_variants_match_torchvision(builder, kwargs, file, network, params):
    reference = getattr(torchvision.models, builder)(weights=None, **kwargs)
    net = netdsl.load(EX / file, network=network, **params)
    assert [(k, tuple(s)) for k, s in net.state_layout().items()] == _layout(reference.state_dict())
    assert net.param_count() == sum(p.numel() for p in reference.parameters())


def _agree(reference, net, size, check_onnx=True):
    state = reference.state_dict()
    model = net.to_torch(weights=state).eval()                     # loads strictly
    x = np.random.default_rng(1).standard_normal((2, 3, size, size), dtype=np.float32)
    with torch.no_grad():
        want = reference(torch.from_numpy(x)).numpy()
        got = model(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape == (2, 1000)
    scale = float(np.abs(want).max())
    assert scale > 0
    assert float(np.abs(want[0] - want[1]).max()) > 1e-2 * scale   # the logits depend on x
    assert float(np.abs(got - want).max()) <= RTOL * scale
    if check_onnx:
        proto = net.to_onnx(weights=state)
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        del proto
        onnx_out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        assert float(np.abs(onnx_out - want).max()) <= RTOL * scale


@pytest.mark.parametrize("tv_name", [n for n, v in MODELS.items() if v[2]])
def test_torchvision_weights_load_and_agree(tv_name):
    file, network, size = MODELS[tv_name]
    reference = _torchvision_model(tv_name, seed=0)
    _agree(reference, netdsl.load(EX / file, network=network), size)


def test_dilated_reduced_tail_mobilenet_v3_agrees():
    """torchvision's segmentation backbone setting: the last stage dilated, not strided."""
    reference = _torchvision_model("mobilenet_v3_large", seed=3, reduced_tail=True, dilated=True)
    net = netdsl.load(EX / "mobilenetv3.net", network="MobileNetV3", reduced_tail=True,
                      dilated=True)
    _agree(reference, net, 64, check_onnx=False)


def test_train_mode_matches_torchvision():
    """Training-mode BatchNorm (batch statistics; MobileNetV3's eps 0.001) and gradients:
    with dropout off, one training forward and backward give torchvision's outputs and
    gradients."""
    reference = _torchvision_model("mobilenet_v3_small", seed=5, dropout=0.0)
    net = netdsl.load(EX / "mobilenetv3.net", network="MobileNetV3_Small", dropout=0.0)
    model = net.to_torch(weights=reference.state_dict())
    reference.train()
    model.train()
    x = torch.from_numpy(np.random.default_rng(2).standard_normal((4, 3, 64, 64), dtype=np.float32))
    want, got = reference(x), model(x)
    scale = float(want.detach().abs().max())
    assert float((got - want).detach().abs().max()) <= RTOL * scale
    want.square().sum().backward()
    got.square().sum().backward()
    ref_grads = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        g0 = ref_grads[name].grad
        assert float((p.grad - g0).abs().max()) <= 1e-3 * float(g0.abs().max()) + 1e-6, name
    state = model.state_dict()
    for k, v in reference.state_dict().items():                  # running statistics move alike
        if k.endswith("running_mean"):
            assert torch.allclose(state[k], v, rtol=1e-4, atol=1e-5), k
