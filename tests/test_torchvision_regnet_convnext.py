"""examples/regnet.net and examples/convnext.net against torchvision itself: every RegNet and
ConvNeXt size has torchvision's parameter count, state_dict keys and shapes, and MACs (within
0.5% of its weights metadata); for RegNetX-400MF, RegNetY-400MF and ConvNeXt-Tiny a torchvision
model's state_dict loads (strictly) into netdsl's module, and the two compute the same logits, in
PyTorch and through the ONNX model built from the same weights.

Needs torchvision (skipped without it):
    python -m pytest -q tests/test_torchvision_regnet_convnext.py
"""
from pathlib import Path

import numpy as np
import pytest

import netdsl
from parity_util import assert_torchvision_agrees, randomise, randomise_batchnorm  # tests/ is on sys.path (no package)

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
ort = pytest.importorskip("onnxruntime")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
REGNET_FILE = EXAMPLES / "regnet.net"
CONVNEXT_FILE = EXAMPLES / "convnext.net"
RTOL = 1e-4          # max |difference| relative to the largest |logit|

REGNETS = {f"regnet_{v}_{s}": f"RegNet{v.upper()}_{s.upper()}"
           for v, sizes in (("y", ["400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf",
                                   "128gf"]),
                            ("x", ["400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf"]))
           for s in sizes}
CONVNEXTS = {f"convnext_{s}": f"ConvNeXt_{s.capitalize()}"
             for s in ("tiny", "small", "base", "large")}
MODELS = {**{k: (REGNET_FILE, v) for k, v in REGNETS.items()},
          **{k: (CONVNEXT_FILE, v) for k, v in CONVNEXTS.items()}}


def _structure(tv_name):
    """torchvision's model on the meta device: its structure without memory or init. RegNet
    computes its widths with tensors while it is built, which the meta device cannot give
    values for: those few run on the CPU."""
    from torchvision.models import regnet
    original = regnet.BlockParams.from_init_params.__func__

    def on_cpu(cls, *args, **kwargs):
        with torch.device("cpu"):
            return original(cls, *args, **kwargs)

    regnet.BlockParams.from_init_params = classmethod(on_cpu)
    try:
        with torch.device("meta"):
            return getattr(torchvision.models, tv_name)()
    finally:
        regnet.BlockParams.from_init_params = classmethod(original)


def test_every_regnet_and_convnext_in_torchvision_is_here():
    listed = {n for n in torchvision.models.list_models(torchvision.models)
              if n.startswith(("regnet_", "convnext_"))}
    assert listed == set(MODELS)


@pytest.mark.parametrize("tv_name", sorted(MODELS))
def test_structure_and_macs_match_torchvision(tv_name):
    path, name = MODELS[tv_name]
    tv = _structure(tv_name)
    net = netdsl.load(path, network=name)
    want = {k: tuple(v.shape) for k, v in tv.state_dict().items()}
    got = {k: tuple(v) for k, v in net.state_layout().items()}
    assert list(got) == list(want)                                   # same keys, same order
    assert got == want                                               # same shapes
    assert net.param_count() == sum(p.numel() for p in tv.parameters())
    # every weights entry's figures: parameters, and _ops (GFLOPs in torchvision's metadata,
    # which are GMACs in its convention) at the entry's crop size (224, or 384 for SWAG E2E)
    entries = list(torchvision.models.get_model_weights(tv_name))
    macs = {}
    for weights in entries:
        assert net.param_count() == weights.meta["num_params"]
        size = weights.transforms().crop_size[0]
        if size not in macs:
            macs[size] = net.summary(inputs=(1, 3, size, size))["macs"]
        assert macs[size] == pytest.approx(weights.meta["_ops"] * 1e9, rel=5e-3), weights


def _reference(tv_name, seed):
    """torchvision's model, initialised by torchvision, with what it starts at constants made
    random so that a wrong wiring shows in the logits: BatchNorm statistics and affine
    parameters (RegNet), the classifier's zero bias, and for ConvNeXt every weight (its biases
    start at zero and its layer scales at 1e-6, which leaves each block nearly the identity)
    with layer scales N(0, 0.5)."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, tv_name)(weights=None)
    with torch.no_grad():
        if tv_name.startswith("convnext"):
            randomise(model, seed + 1)
            g = torch.Generator().manual_seed(seed + 2)
            for name, p in model.named_parameters():
                if name.endswith("layer_scale"):
                    p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        else:
            randomise_batchnorm(model, torch.Generator().manual_seed(seed + 1))
            model.fc.bias.normal_(0, 0.1)
    return model.eval()


@pytest.mark.parametrize("tv_name", ["regnet_x_400mf", "regnet_y_400mf", "convnext_tiny"])
def test_torchvision_weights_load_and_agree(tv_name):
    path, name = MODELS[tv_name]
    reference = _reference(tv_name, seed=0)
    net = netdsl.load(path, network=name)
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64), dtype=np.float32)
    assert_torchvision_agrees(reference, net, x, RTOL)


def test_convnext_stochastic_depth_probabilities_are_torchvisions():
    """The drop probability of every block (linear in the block's index) as torchvision's."""
    from torchvision.ops import StochasticDepth
    for tv_name, name in CONVNEXTS.items():
        tv = _structure(tv_name)
        want = [m.p for m in tv.modules() if isinstance(m, StochasticDepth)]
        graph = netdsl.load(CONVNEXT_FILE, network=name).graph
        got = [n.attrs["p"] for n in graph.nodes if n.op == "StochasticDepth"]
        assert got == pytest.approx(want, rel=1e-12, abs=0), name
