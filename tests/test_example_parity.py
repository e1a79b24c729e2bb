"""Every example network computes the same outputs in PyTorch (eval mode) and in onnxruntime,
for the same weights, at two input sizes run through one ONNX model with symbolic N, H and W.

Full-size networks (550 MB of VGG weights) are marked `slow`: they run by default and take
most of this file's time; `-m "not slow"` leaves them out. The other VGG variants are shrunk
through their network parameters (width, hidden, num_classes), which keeps their layer
structure exactly.
"""
from pathlib import Path

import numpy as np
import pytest

import netdsl

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
VGG_FILE = ROOT / "examples" / "vgg.net"
UNET_FILE = ROOT / "examples" / "unet.net"
RTOL = 1e-4          # max |torch - onnxruntime| relative to the largest |output|

SMALL_VGG = dict(width=8, hidden=64, num_classes=10)
VGG_NAMES = ["VGG11", "VGG13", "VGG16", "VGG19", "VGG11_BN", "VGG13_BN", "VGG16_BN", "VGG19_BN",
             "VGG_A", "VGG_A_LRN", "VGG_B", "VGG_C", "VGG_D", "VGG_E"]
FULL_SIZE = {"VGG11": (224, 256), "VGG16_BN": (224, 160), "VGG_A_LRN": (224, 192)}

slow = pytest.mark.slow

# (id, file, network, parameter overrides, [(N, H, W), (N, H, W)])
CASES = [pytest.param(VGG_FILE, name, SMALL_VGG, [(2, 3, 64, 64), (1, 3, 80, 48)], id=f"{name}-small")
         for name in VGG_NAMES]
CASES += [pytest.param(VGG_FILE, name, {}, [(1, 3, s, s) for s in sizes], id=f"{name}-full",
                       marks=slow)
          for name, sizes in FULL_SIZE.items()]
CASES += [
    pytest.param(UNET_FILE, "UNet", {}, [(1, 1, 188, 188), (1, 1, 204, 220)], id="UNet-full",
                 marks=slow),
    pytest.param(UNET_FILE, "UNet", dict(base=8), [(2, 1, 188, 188), (1, 1, 220, 204)],
                 id="UNet-base8"),
    pytest.param(UNET_FILE, "UNet", dict(pad=1, bn=True, base=8, in_ch=3, classes=4),
                 [(2, 3, 32, 32), (1, 3, 48, 64)], id="UNet-padded-bn"),
]


def _randomise(model, seed):
    """Weights under which the output really depends on the input, and real BatchNorm statistics.

    torch's default init shrinks activations layer by layer: a deep VGG's logits are then its
    last biases plus ~1e-7 of signal, and comparing them would test nothing. He-normal weights
    keep the signal's scale through every layer; BatchNorm gets non-trivial running statistics
    and affine parameters, so that eval mode is really exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.ConvTranspose2d)):
                w = m.weight
                # inputs summed into one output: ConvTranspose2d(k = stride) takes one tap per input channel
                fan_in = w.shape[0] if isinstance(m, torch.nn.ConvTranspose2d) else w[0].numel()
                w.copy_(torch.randn(w.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


@pytest.mark.parametrize("path, network, params, shapes", CASES)
def test_torch_and_onnxruntime_agree(path, network, params, shapes):
    net = netdsl.load(path, network=network, **params)
    model = net.to_torch(seed=1).eval()
    _randomise(model, seed=2)

    proto = net.to_onnx(weights=model)            # the torch module's weights, BN stats included
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in proto.graph.input]
    assert dims == [["N", shapes[0][1], "H", "W"]]          # one model for every input size
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    del proto
    input_name = sess.get_inputs()[0].name

    rng = np.random.default_rng(3)
    for shape in shapes:
        x = rng.standard_normal(shape, dtype=np.float32)
        with torch.no_grad():
            want = model(torch.from_numpy(x))
        want = want.numpy()
        got = sess.run(None, {input_name: x})[0]
        expected_shape = net.summary(inputs=shape)["outputs"][0]["shape"]
        assert list(want.shape) == expected_shape
        assert got.shape == want.shape
        scale = float(np.abs(want).max())
        if shape[0] > 1:    # the output depends on the input, not only on the last biases
            assert float(np.abs(want[0] - want[1]).max()) > 1e-2 * scale
        err = float(np.abs(got - want).max())
        assert err <= RTOL * scale, f"{network} {shape}: max error {err:.3g} vs output scale {scale:.3g}"
