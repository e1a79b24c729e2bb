"""The PyTorch target: generated source (golden snapshot, standalone), live module,
training step, torch.compile(fullgraph=True) and torch.export."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import netdsl

torch = pytest.importorskip("torch")

GOLDEN = Path(__file__).parent / "golden"
SPEC = """
block DoubleConv(c: int) {
    "Two 3x3 convolutions with ReLU."
    conv1: Conv2d(c, 3, padding = 1)
    bn1: BatchNorm2d
    ReLU
    conv2: Conv2d(c, 3, padding = 1)
    ReLU
}
network Tiny(width: int = 4) {
    "A two-level encoder-decoder for tests."
    input image: f32[N, 3, H, W]
    skip = image -> enc: DoubleConv(width)
    deep = skip -> MaxPool2d(2) -> mid: DoubleConv(2 * width) -> up: ConvTranspose2d(width, 2, stride = 2)
    fused = concat(center_crop(skip, like = deep), deep, dim = 1)
    output mask = fused -> dec: DoubleConv(width) -> head: Conv2d(2, 1)
    output score = deep -> GlobalAvgPool2d -> Flatten -> fc: Linear(1)
}
"""


@pytest.fixture(scope="module")
def net():
    return netdsl.loads(SPEC, name="tiny.net")


def test_source_matches_golden(net):
    source = net.torch_source()
    golden = GOLDEN / "tiny_torch.py.txt"
    if os.environ.get("NETDSL_UPDATE_GOLDEN"):
        golden.write_text(source)
    assert source == golden.read_text()


def test_source_is_standalone_and_its_module_has_the_spec_state_dict(net, tmp_path):
    path = tmp_path / "tiny_model.py"
    path.write_text(net.torch_source())
    probe = (f"import sys, runpy; ns = runpy.run_path({str(path)!r}); m = ns['Tiny']();"
             "bad = [k for k in sys.modules if k.split('.')[0] in ('netdsl', 'onnx', 'lark', 'onnxruntime')];"
             "assert not bad, bad; print(len(m.state_dict()))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    spec = importlib.util.spec_from_file_location("tiny_model", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    keys = list(mod.Tiny().state_dict())
    assert keys == list(net.state_layout())
    assert int(out.stdout) == len(keys)


def test_live_module_uses_the_given_weights_and_trains(net):
    weights = net.init_weights(seed=3)
    model = net.to_torch(weights)
    assert np.array_equal(model.state_dict()["enc.conv1.weight"].numpy(), weights["enc.conv1.weight"])
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(2, 3, 16, 16)
    mask, score = model(x)
    loss = mask.square().mean() + score.square().mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    before = model.head.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, model.head.weight)
    assert model.enc.bn1.num_batches_tracked.item() == 1


def test_torch_compile_fullgraph(net):
    model = net.to_torch().eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
        got = torch.compile(model, fullgraph=True, backend="eager")(x)
    for a, b in zip(ref, got):
        torch.testing.assert_close(a, b)


def test_torch_export_with_dynamic_dims(net):
    model = net.to_torch().eval()
    dims = {"image": {0: torch.export.Dim("N", max=64), 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}}
    ep = torch.export.export(model, (torch.randn(2, 3, 16, 16),), dynamic_shapes=dims)
    x = torch.randn(3, 3, 24, 32)
    with torch.no_grad():
        for a, b in zip(model(x), ep.module()(x)):
            torch.testing.assert_close(a, b)


def test_dilation_along_a_size_1_kernel_is_left_out(tmp_path):
    """torch's CPU convolution segfaulted on a 1x1 kernel with dilation 3, stride 3 and padding
    on a transposed [N, 1, 5, 1] view (found by tests/fuzz/diff_fuzz.py); the dilation changes
    nothing there, so the generated module leaves it out. Run in a subprocess: the old module
    took the interpreter down."""
    import subprocess
    import sys
    spec = tmp_path / "d.net"
    spec.write_text("network D {\n    input x: f32[N, 5, H, W]\n"
                    "    output y = x -> GlobalAvgPool2d -> transpose(1, 2)\n"
                    "        -> Conv2d(11, 1, stride = 3, dilation = 3, padding = [1, 2])\n}\n")
    code = ("import sys, torch, netdsl\n"
            "net = netdsl.load(sys.argv[1])\n"
            "torch.manual_seed(0)\n"
            "y = net.to_torch()(torch.randn(2, 5, 11, 28))\n"
            "assert tuple(y.shape) == (2, 11, 3, 2), y.shape\n"
            "assert 'dilation' not in net.torch_source()\n")
    proc = subprocess.run([sys.executable, "-c", code, str(spec)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])


def test_transposed_conv_keeps_a_dilation_that_allows_its_output_padding():
    """A 1-wide transposed conv keeps dilation 2: torch accepts output_padding 1 at stride 1 only
    because of it (dropping it, as for plain convs, broke these modules; found by the fuzzer)."""
    net = netdsl.loads("network T {\n    input x: f32[N, 3, H, W]\n"
                       "    output y = x -> ConvTranspose2d(4, 1, dilation = 2, output_padding = [1, 1])\n}\n")
    torch.manual_seed(0)
    y = net.to_torch()(torch.randn(2, 3, 5, 6))
    assert tuple(y.shape) == (2, 4, 6, 7)


RESIDUAL = """network Res {
    input x: f32[N, 4, H, W]
    h = x -> Conv2d(4, 3, padding = 1) -> BatchNorm2d
    body = x -> Conv2d(4, 3, padding = 1) -> BatchNorm2d -> Identity
    y = (body + (x -> Conv2d(4, 1))) -> ReLU
    z = (h -> Conv2d(4, 1)) + h
    output out = y + z
}
"""


def test_residual_add_overwrites_a_dead_operand_as_torchvision_does():
    """`body + short`, where body is a BatchNorm's output (through an Identity) read nowhere
    else, is `body.add_(short)` (torchvision's `out += identity`); so is `conv(h) + h`, which
    overwrites conv(h), never h (read twice); `y + z` is not (y is a ReLU's output). Forward and
    every gradient equal those of the out-of-place source."""
    import torch
    net = netdsl.loads(RESIDUAL)
    src = net.torch_source()
    assert src.count(".add_(") == 2, src          # body + short, and conv(h) + h
    assert "body.add_(" in src and " y.add_(" not in src and "out = y + z" in src, src
    _assert_same_training_step(src, src.replace(".add_(", ".__add__("), "Res", torch.randn(2, 4, 5, 6))


def _assert_same_training_step(src: str, plain: str, cls: str, x) -> None:
    """The modules of two generated sources (one with in-place ops, one without), given the same
    weights, compute the same output and every gradient the same in training."""
    import torch
    mods = []
    for text in (src, plain):
        ns: dict = {}
        exec(compile(text, f"<{cls}>", "exec"), ns)
        mods.append(ns[cls]())
    mods[1].load_state_dict(mods[0].state_dict())
    outs, grads = [], []
    for m in mods:
        m.train()
        xi = x.clone().requires_grad_()
        out = m(xi)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append([xi.grad] + [p.grad for p in m.parameters()])
    assert torch.equal(outs[0], outs[1])
    assert float(outs[0].abs().max()) > 0
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()


ACTIVATIONS_IN_PLACE = """network Acts {
    input x: f32[N, 4, H, W]
    a = x -> Conv2d(4, 3, padding = 1) -> BatchNorm2d -> SiLU
    b = a -> Conv2d(4, 1) -> ReLU6
    c = b -> Conv2d(4, 1) -> BatchNorm2d -> Hardswish
    d = c -> SiLU
    output out = concat(d, c -> Conv2d(2, 1) -> Hardswish, dim = 1)
}
"""


def test_activations_overwrite_a_dead_conv_or_batchnorm_output():
    """SiLU, ReLU6 and Hardswish run in place on a conv's or BatchNorm's output read nowhere
    else, as torchvision's Conv2dNormActivation (inplace=True) does; `c -> SiLU` is not in place
    (c is read twice, and its producer is an activation). Forward and every gradient in training
    equal those of the out-of-place source."""
    import torch
    net = netdsl.loads(ACTIVATIONS_IN_PLACE)
    src = net.torch_source()
    assert src.count("inplace=True") == 4, src
    assert "F.silu(c)" in src, src
    _assert_same_training_step(src, src.replace(", inplace=True)", ")"), "Acts", torch.randn(2, 4, 5, 6) * 3)
