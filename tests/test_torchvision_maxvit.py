"""examples/maxvit.net against torchvision itself: MaxViT_T has maxvit_t's state_dict keys and
shapes (in order), parameter count and MACs (its weights metadata); maxvit_t's state_dict loads
strictly and gives the same logits, in PyTorch and through onnxruntime; a small MaxViT of the
same file matches torchvision's MaxVit built with the same configuration, also in training
(the same stochastic depth draws from the same seed). Skipped where torchvision is not
installed:

    python -m pytest -q tests/test_torchvision_maxvit.py
"""
from pathlib import Path

import numpy as np
import pytest

import netdsl
from parity_util import randomise  # tests/ is on sys.path (no package)

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
ort = pytest.importorskip("onnxruntime")
from torchvision.models import maxvit as tv_maxvit  # noqa: E402 (after importorskip)

FILE = Path(__file__).resolve().parents[1] / "examples" / "maxvit.net"
SMALL = dict(stem_channels=8, block_channels=[16, 32], block_layers=[1, 2], head_dim=8, num_classes=10)


@pytest.fixture(scope="module")
def net():
    return netdsl.load(FILE, network="MaxViT_T")


@pytest.fixture(scope="module")
def tv():
    """maxvit_t with its own init, then random weights everywhere (He-normal matrices,
    BatchNorm statistics, biases, and a relative position bias far from its N(0, 0.02)), so
    that every parameter affects the logits."""
    torch.manual_seed(0)
    model = torchvision.models.maxvit_t(weights=None)
    randomise(model, seed=1)
    return model.eval()


def test_layout_parameters_and_macs_are_torchvisions(net):
    with torch.device("meta"):                      # structure only: no memory, no init
        meta = torchvision.models.maxvit_t()
    want = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    got = {k: tuple(v) for k, v in net.state_layout().items()}
    assert list(got) == list(want) and got == want
    assert net.param_count() == sum(p.numel() for p in meta.parameters()) == 30_919_624
    ops = torchvision.models.get_model_weights("maxvit_t").DEFAULT.meta["_ops"]      # GFLOPs = GMACs
    assert abs(net.graph.macs() / 1e9 - ops) <= 0.005 * ops, (net.graph.macs(), ops)


def test_relative_position_index_is_torchvisions():
    from netdsl.weights import relative_position_index
    for h, w in ((7, 7), (2, 5), (1, 3)):
        assert np.array_equal(relative_position_index(h, w),
                              tv_maxvit._get_relative_position_index(h, w).numpy())


def test_torchvision_weights_give_the_same_logits_in_torch_and_onnxruntime(net, tv):
    state = tv.state_dict()
    model = net.to_torch(weights=state).eval()
    model.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = tv(x)
        got = model(x)
    scale = float(want.abs().max())
    assert got.shape == want.shape == (2, 1000)
    assert float((want[0] - want[1]).abs().max()) > 0.1 * scale      # the logits depend on the image
    assert float((got - want).abs().max()) <= 1e-4 * scale
    sess = ort.InferenceSession(net.to_onnx(weights=state).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    # 1e-3: under these weights torch's own float32 logits are 4e-4 (of the largest) from float64
    assert float(np.abs(out - want.numpy()).max()) <= 1e-3 * scale


def test_small_maxvit_matches_torchvision_also_in_training():
    """torchvision's MaxVit at 56x56 with two small blocks, against the same configuration in
    netdsl: strict load, equal logits in eval, and in train mode (batch statistics, stochastic
    depth up to 0.5 drawn from torch's global generator in the same order) equal outputs from
    the same seed, which differ from those of another seed."""
    torch.manual_seed(0)
    ref = tv_maxvit.MaxVit(input_size=(56, 56), partition_size=7, stochastic_depth_prob=0.5, **SMALL)
    randomise(ref, seed=3)
    net = netdsl.load(FILE, network="MaxViT", image_size=56, stochastic_depth_prob=0.5, **SMALL)
    model = net.to_torch(weights=ref.state_dict())
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(8, 3, 56, 56, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want, got = ref.eval()(x), model.eval()(x)
        assert float((got - want).abs().max()) <= 1e-4 * float(want.abs().max())
        ref.train(), model.train()
        outs = []
        for seed in (5, 5, 6):
            torch.manual_seed(seed)
            want = ref(x)
            torch.manual_seed(seed)
            got = model(x)
            assert float((got - want).abs().max()) <= 1e-4 * float(want.abs().max())
            outs.append(got)
    assert torch.equal(outs[0], outs[1]) and float((outs[0] - outs[2]).abs().max()) > 1e-3
