"""examples/efficientnet.net and examples/shufflenet.net against torchvision itself: every
network has torchvision's state_dict keys and shapes (in order), parameter count and MACs
(its weights metadata); for EfficientNet-B0, EfficientNetV2-S and the ShuffleNet V2s,
torchvision's state_dict loads strictly and gives the same logits, in PyTorch and through
onnxruntime; in training, EfficientNet-B0 drops the same blocks and units as torchvision's from
the same seed. Skipped where torchvision is not installed:

    python -m pytest -q tests/test_torchvision_efficient.py
"""
from pathlib import Path

import numpy as np
import pytest

import netdsl
from parity_util import assert_torchvision_agrees, randomise_batchnorm  # tests/ is on sys.path (no package)

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
EFFICIENTNET = ROOT / "examples" / "efficientnet.net"
SHUFFLENET = ROOT / "examples" / "shufflenet.net"
RTOL = 1e-4          # max |difference| relative to the largest |logit|

# torchvision's name -> (file, netdsl's network)
MODELS = {f"efficientnet_b{i}": (EFFICIENTNET, f"EfficientNet_B{i}") for i in range(8)}
MODELS.update({f"efficientnet_v2_{s}": (EFFICIENTNET, f"EfficientNetV2_{s.upper()}") for s in "sml"})
MODELS.update({f"shufflenet_v2_{w}": (SHUFFLENET, f"ShuffleNetV2_{w}")
               for w in ("x0_5", "x1_0", "x1_5", "x2_0")})
BY_LOGITS = ["efficientnet_b0", "efficientnet_v2_s", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
             "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"]


def _load(tv_name):
    path, network = MODELS[tv_name]
    return netdsl.load(path, network=network)


def _torchvision_model(name, seed):
    """torchvision's model with its own random init, random BatchNorm affine parameters and
    statistics, and random values in place of the biases it zeroes (the SE convs', the
    classifier's), so that every parameter affects the logits.

    parity_util.randomise_batchnorm's statistics (variances near 1) are far from these deep
    nets' activations (variances ~1e-2 under torchvision's init): each BatchNorm then shrinks
    the signal, and after a few stages the logits no longer depend on the image. So the
    statistics are measured on a random batch instead (each BatchNorm's own input), then
    perturbed: variances at least 1% of the layer's mean (a near-constant channel would
    amplify rounding errors), means shifted by N(0, 0.1) standard deviations, variances scaled
    by U(0.8, 1.25) (wider ranges compound over EfficientNet's 49 BatchNorms into logits ~1e4
    whose float32 values are off by 1e-2 of float64's: no comparison could hold)."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None)
    g = torch.Generator().manual_seed(seed + 1)
    randomise_batchnorm(model, g)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        model.eval()
        norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None                       # running stats = this batch's
            m.train()
        model(torch.randn(8, 3, 64, 64, generator=g))
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
            m.num_batches_tracked.zero_()
            var = torch.maximum(m.running_var, 0.01 * m.running_var.mean())
            m.running_mean.add_(torch.randn(var.shape, generator=g) * 0.1 * var.sqrt())
            m.running_var.copy_(var * (torch.rand(var.shape, generator=g) * 0.45 + 0.8))
    return model.eval()


@pytest.mark.parametrize("tv_name", sorted(MODELS))
def test_layout_parameters_and_macs_are_torchvisions(tv_name):
    with torch.device("meta"):                      # structure only: no memory, no init
        tv = getattr(torchvision.models, tv_name)()
    net = _load(tv_name)
    want = {k: tuple(v.shape) for k, v in tv.state_dict().items()}
    got = {k: tuple(v) for k, v in net.state_layout().items()}
    assert list(got) == list(want)                  # same keys, same order
    assert got == want
    assert net.param_count() == sum(p.numel() for p in tv.parameters())
    weights = torchvision.models.get_model_weights(tv_name).DEFAULT
    assert net.param_count() == weights.meta["num_params"]
    size = weights.transforms().crop_size[0]
    macs = net.summary(inputs=(1, 3, size, size))["macs"]
    # _ops is in GFLOPs, GMACs in torchvision's convention, rounded to 3 decimals: within 0.5%,
    # or half a unit of the last decimal for shufflenet_v2_x0_5's 0.04 (1.25% of it)
    assert macs == pytest.approx(weights.meta["_ops"] * 1e9, rel=5e-3, abs=0.0005e9)


@pytest.mark.parametrize("tv_name", BY_LOGITS)
def test_torchvision_weights_load_and_agree(tv_name):
    reference = _torchvision_model(tv_name, seed=0)
    net = _load(tv_name)
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64), dtype=np.float32)
    assert_torchvision_agrees(reference, net, x, RTOL)


def test_training_mode_draws_as_torchvision():
    """EfficientNet-B0 in training: from the same seed, torchvision and netdsl drop the same
    samples' residual branches (stochastic depth) and the same features (dropout), so the
    outputs, the updated BatchNorm statistics and the gradients agree; a second draw differs."""
    reference = _torchvision_model("efficientnet_b0", seed=0).train()
    net = _load("efficientnet_b0")
    model = net.to_torch(weights=reference.state_dict()).train()
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    want = reference(x)
    torch.manual_seed(5)
    got = model(x)
    scale = float(want.detach().abs().max())
    assert float((got - want).detach().abs().max()) <= RTOL * scale
    ref_state = reference.state_dict()
    for key, value in model.state_dict().items():
        if "running" in key:                                       # batch statistics folded in
            assert torch.allclose(value, ref_state[key], rtol=1e-4, atol=1e-5), key
    torch.manual_seed(6)
    assert float((model(x) - want).detach().abs().max()) > 1e-2 * scale   # another draw
    want.square().mean().backward()
    got.square().mean().backward()
    ref_grads = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        g, r = p.grad, ref_grads[name].grad
        assert float((g - r).abs().max()) <= 1e-3 * max(float(r.abs().max()), 1e-6), name
