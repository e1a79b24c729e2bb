"""Training features: layer initialisers (`init =`, `bias_init =`), frozen parameters
(`frozen = true`, `freeze`), FrozenBatchNorm2d, and their counts in the API and `summary`.

Initialisers are checked in both backends: the torch target's generated module initialises
its own weights (torch.nn.init, built here WITHOUT loading netdsl's weights), and the ONNX
target's weights come from netdsl.weights (numpy). Deterministic kinds must agree exactly;
random kinds must have torch.nn.init's std / bound (computed with torch's own fan and gain
functions) in both."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import netdsl
from netdsl.backends.torch.live import build_module
from netdsl.errors import NetDSLError
from netdsl.frontend.parser import parse
from netdsl.frontend.printer import to_source
from netdsl.passes.summary import format_text, summarize
from netdsl.weights import _CHUNK, LazyUniform, init_weights

torch = pytest.importorskip("torch")


def own_module(net):
    """The torch module as its generated source initialises it (no weights loaded)."""
    torch.manual_seed(0)
    return build_module(net.graph, None, net.torch_source())


def state(module) -> dict:
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def fcn_upsample_filt(size):
    """The FCN reference (shelhamer/fcn.berkeleyvision.org, surgery.py), verbatim."""
    factor = (size + 1) // 2
    if size % 2 == 1:
        center = factor - 1
    else:
        center = factor - 0.5
    og = np.ogrid[:size, :size]
    return (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)


# ---- deterministic initialisers: exactly torch's values ---------------------------------
DETERMINISTIC = """
network Det {
    input x: f32[1, 6, 9, 9]
    output y = x -> z: Conv2d(6, 3, padding = 1, init = zeros(), bias_init = ones())
        -> o: Conv2d(6, 1, init = ones(), bias_init = zeros())
        -> c: Conv2d(6, 1, init = constant(0.25), bias_init = constant(-1.5))
        -> up4: ConvTranspose2d(6, 4, stride = 2, padding = 1, init = bilinear(), bias = false)
        -> up3: ConvTranspose2d(6, 3, stride = 2, init = bilinear(), bias_init = constant(0.5))
        -> dw: ConvTranspose2d(6, [3, 4], groups = 6, init = bilinear(), bias = false)
        -> fc: Linear(5, init = constant(2.0), bias_init = zeros())
}
"""


@pytest.fixture(scope="module")
def det():
    return netdsl.loads(DETERMINISTIC, name="det.net")


def test_deterministic_inits_are_torch_values(det):
    mine = det.init_weights()
    theirs = state(own_module(det))
    assert set(mine) == set(theirs)
    for k in mine:
        assert mine[k].dtype == theirs[k].dtype
        assert np.array_equal(mine[k], theirs[k]), k
    assert (mine["z.weight"] == 0).all() and (mine["z.bias"] == 1).all()
    assert (mine["c.weight"] == 0.25).all() and (mine["c.bias"] == -1.5).all()
    assert (mine["fc.weight"] == 2).all()


def test_bilinear_is_the_fcn_reference_kernel(det):
    w = det.init_weights()
    for name, k in (("up4", 4), ("up3", 3)):
        ref = np.zeros((6, 6, k, k), dtype=np.float32)
        ref[range(6), range(6)] = fcn_upsample_filt(k)
        assert np.array_equal(w[f"{name}.weight"], ref)
        assert w[f"{name}.weight"][2, 2].max() > 0 and w[f"{name}.weight"][2, 3].max() == 0
    # depthwise (groups = channels): every channel's only kernel; a non-square kernel is the
    # outer product of the two axes' filters
    dw = w["dw.weight"]
    assert dw.shape == (6, 1, 3, 4)
    rows = np.sqrt(np.diag(fcn_upsample_filt(3)))      # the 1-D filters: the 2-D ones are f[i] f[j]
    cols = np.sqrt(np.diag(fcn_upsample_filt(4)))
    for i in range(6):
        assert np.allclose(dw[i, 0], np.outer(rows, cols))


def test_bilinear_upsamples_a_constant_image_to_a_constant(det):
    """FCN's use: stride-2 kernel-4 padding-1 deconv of a constant map is constant inside."""
    net = netdsl.loads("network U { input x: f32[1, 3, 5, 5]\n output y = x -> "
                       "ConvTranspose2d(3, 4, stride = 2, padding = 1, init = bilinear(), bias = false) }")
    y = own_module(net)(torch.ones(1, 3, 5, 5)).detach().numpy()
    assert np.allclose(y[:, :, 1:-1, 1:-1], 1.0)


def test_onnx_initializers_are_the_numpy_weights(det):
    from onnx import numpy_helper
    model = det.to_onnx()
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    w = det.init_weights()
    for k in w:
        assert np.array_equal(inits[k], w[k]), k


# ---- random initialisers: torch.nn.init's distributions ---------------------------------
def _fan(shape, mode):
    return torch.nn.init._calculate_correct_fan(torch.empty(shape), mode)


def _kaiming_std(shape, a, mode, nl):
    return torch.nn.init.calculate_gain(nl, a) / math.sqrt(_fan(shape, mode))


def _xavier_std(shape, gain):
    fi, fo = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    return gain * math.sqrt(2.0 / (fi + fo))


# (label, layer text on an input [1, 32, 12, 12] or [1, 12, 384], param, weight shape,
#  "normal"/"uniform", expected std)
RANDOM = [
    ("conv_kn_fan_out_relu", 'Conv2d(64, 3, init = kaiming_normal(mode = "fan_out", nonlinearity = "relu"))',
     "weight", (64, 32, 3, 3), "normal", _kaiming_std((64, 32, 3, 3), 0, "fan_out", "relu")),
    ("conv_kn_default", "Conv2d(64, 3, init = kaiming_normal())",
     "weight", (64, 32, 3, 3), "normal", _kaiming_std((64, 32, 3, 3), 0, "fan_in", "leaky_relu")),
    ("conv_ku_a", "Conv2d(64, 3, init = kaiming_uniform(0.2, 'fan_in', 'leaky_relu'))",
     "weight", (64, 32, 3, 3), "uniform", _kaiming_std((64, 32, 3, 3), 0.2, "fan_in", "leaky_relu")),
    ("deconv_kn_fan_in", "ConvTranspose2d(16, 4, groups = 2, init = kaiming_normal(nonlinearity = 'tanh'))",
     "weight", (32, 8, 4, 4), "normal", _kaiming_std((32, 8, 4, 4), 0, "fan_in", "tanh")),
    ("deconv_ku_fan_out", "ConvTranspose2d(96, 3, init = kaiming_uniform(mode = 'fan_out'))",
     "weight", (32, 96, 3, 3), "uniform", _kaiming_std((32, 96, 3, 3), 0, "fan_out", "leaky_relu")),
    ("deconv_xn", "ConvTranspose2d(64, 3, init = xavier_normal(0.5))",
     "weight", (32, 64, 3, 3), "normal", _xavier_std((32, 64, 3, 3), 0.5)),
    ("conv_xu", "Conv2d(64, 3, init = xavier_uniform(gain = 2.0))",
     "weight", (64, 32, 3, 3), "uniform", _xavier_std((64, 32, 3, 3), 2.0)),
    ("conv1d_kn", "Conv1d(64, 5, init = kaiming_normal(mode = 'fan_out'), bias_init = normal(0.3))",
     "weight", (64, 32, 5), "normal", _kaiming_std((64, 32, 5), 0, "fan_out", "leaky_relu")),
    ("conv1d_bias_normal", "Conv1d(2000, 1, bias_init = normal(0.3))",
     "bias", (2000,), "normal", 0.3),
    ("linear_kn_fan_out", "Linear(512, init = kaiming_normal(mode = 'fan_out', nonlinearity = 'selu'))",
     "weight", (512, 384), "normal", _kaiming_std((512, 384), 0, "fan_out", "selu")),
    ("linear_xn", "Linear(256, init = xavier_normal())",
     "weight", (256, 384), "normal", _xavier_std((256, 384), 1.0)),
    ("linear_xu", "Linear(256, init = xavier_uniform(3))",
     "weight", (256, 384), "uniform", _xavier_std((256, 384), 3.0)),
    ("linear_normal", "Linear(256, init = normal(0.01), bias_init = uniform(0.5))",
     "weight", (256, 384), "normal", 0.01),
    ("linear_uniform_bias", "Linear(3000, bias_init = uniform(0.5))",
     "bias", (3000,), "uniform", 0.5 / math.sqrt(3)),
]


def _random_net(layer):
    shape = "[1, 12, 384]" if layer.startswith("Linear") else (
        "[1, 32, 40]" if layer.startswith("Conv1d") else "[1, 32, 12, 12]")
    return netdsl.loads(f"network R {{ input x: f32{shape}\n output y = x -> layer: {layer} }}")


@pytest.mark.parametrize("label,layer,pname,shape,dist,std", RANDOM, ids=[r[0] for r in RANDOM])
def test_random_inits_match_torch_statistics(label, layer, pname, shape, dist, std):
    net = _random_net(layer)
    key = f"layer.{pname}"
    mine = net.init_weights()[key]
    theirs = state(own_module(net))[key]
    assert mine.shape == theirs.shape == shape
    assert not np.array_equal(mine, theirs)       # two generators, one distribution
    for arr in (mine, theirs):
        assert abs(arr.mean()) < 4 * std / math.sqrt(arr.size) + 1e-7
        assert arr.std() == pytest.approx(std, rel=0.06)
        if dist == "uniform":
            bound = std * math.sqrt(3)
            assert np.abs(arr).max() <= bound * (1 + 1e-6)
            assert np.abs(arr).max() > 0.97 * bound
        else:
            assert np.abs(arr).max() > 2.5 * std     # not a uniform of that std (max sqrt(3) std)


def test_torch_source_calls_torch_init():
    src = _random_net('Conv2d(8, 3, init = kaiming_normal(mode = "fan_out", nonlinearity = "relu"), '
                      "bias_init = zeros())").torch_source()
    assert "nn.init.kaiming_normal_(self.layer.weight, mode='fan_out', nonlinearity='relu')" in src
    assert "nn.init.zeros_(self.layer.bias)" in src
    assert "import" not in src.replace("import torch\n", "").replace("from torch import nn\n", "") \
        .replace("import torch.nn.functional as F\n", "")


@pytest.mark.parametrize("name", ["bilinear_init_", "FrozenBN"])
def test_network_named_like_a_training_helper(name):
    """Regression: the helper `bilinear_init_` was registered as "bilinear_init", so a network
    named `bilinear_init_` got that class name and replaced the helper (TypeError on build)."""
    net = netdsl.loads(f"network {name} {{ input x: f32[N, 4, H, W]\n output y = x -> FrozenBatchNorm2d "
                       "-> up: ConvTranspose2d(4, 4, stride = 2, bias = false, init = bilinear()) }")
    module = own_module(net)
    assert float(module.up.weight.detach().abs().sum()) > 0
    assert module(torch.ones(1, 4, 3, 3)).shape == (1, 4, 8, 8)


def test_large_layer_keeps_the_streaming_path(tmp_path):
    """kaiming_uniform on a large weight is a LazyUniform, streamed into the ONNX file with the
    values init_weights gives."""
    net = netdsl.loads("network L { input x: f32[1, 256, 6, 6]\n output y = x -> "
                       "c: Conv2d(256, 3, init = kaiming_uniform(nonlinearity = 'relu')) -> "
                       "n: Conv2d(256, 3, init = kaiming_normal(mode = 'fan_out')) -> "
                       "s: Conv2d(8, 1, init = xavier_normal()) }")
    assert 256 * 256 * 9 >= _CHUNK // 8
    lazy = net._weights(None, 0, wait=False, lazy=True)
    assert isinstance(lazy["c.weight"], LazyUniform) and isinstance(lazy["n.weight"], LazyUniform)
    assert not isinstance(lazy["s.weight"], LazyUniform)       # small: made at once
    eager = init_weights(net.graph)
    for k in ("c.weight", "n.weight"):
        assert np.array_equal(lazy[k].result(), eager[k])
    bound = math.sqrt(6 / (256 * 9))
    assert 0.97 * bound < np.abs(eager["c.weight"]).max() <= bound
    assert eager["n.weight"].std() == pytest.approx(math.sqrt(2 / (256 * 9)), rel=0.02)
    assert not np.array_equal(eager["n.weight"].reshape(-1)[:1000], eager["n.weight"].reshape(-1)[-1000:])
    import onnx
    from onnx import numpy_helper
    path = tmp_path / "l.onnx"
    net.save_onnx(path)
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
    for k in eager:
        assert np.array_equal(inits[k], eager[k]), k


def test_default_source_is_unchanged_and_has_no_init_lines():
    net = netdsl.loads("network D { input x: f32[1, 3, 8, 8]\n output y = x -> Conv2d(4, 3) "
                       "-> BatchNorm2d -> Flatten -> Linear(2) }")
    src = net.torch_source()
    assert "nn.init" not in src and "requires_grad" not in src and "def bilinear_init_" not in src


def test_param_uniform_zero_is_zeros():
    """Regression: `uniform(0)` on a param gave torch's default bound instead of zeros."""
    net = netdsl.loads("network P { input x: f32[1, 4]\n param p: f32[1, 4] = uniform(0)\n"
                       " param q: f32[1, 4] = uniform(0.5)\n output y = x + p + q }")
    w = net.init_weights()
    assert (w["p"] == 0).all()
    assert np.abs(w["q"]).max() > 0


# ---- freezing --------------------------------------------------------------------------
FROZEN = """
block Unit(c: int) {
    conv: Conv2d(c, 3, padding = 1)
    bn: BatchNorm2d
    ReLU
    freeze bn
}
network F {
    input x: f32[2, 3, 8, 8]
    param scale: f32[1, 4, 1, 1] = ones()
    y = x -> stem: Conv2d(4, 3, padding = 1, frozen = true) -> a: Unit(4) -> g: [Conv2d(4, 1) ReLU Conv2d(4, 1)]
        -> b: Unit(4) -> c: Unit(4) -> ReLU
    freeze g.0, b, scale, head.bias
    output out = y * scale -> Flatten -> head: Linear(3)
}
"""
FROZEN_KEYS = {"stem.weight", "stem.bias", "a.bn.weight", "a.bn.bias", "g.0.weight", "g.0.bias",
               "b.conv.weight", "b.conv.bias", "b.bn.weight", "b.bn.bias", "c.bn.weight", "c.bn.bias",
               "scale", "head.bias"}


@pytest.fixture(scope="module")
def frozen():
    return netdsl.loads(FROZEN, name="f.net")


def test_frozen_parameters_in_the_ir_and_counts(frozen):
    layout = frozen.graph.state_layout()
    assert {k for k, s in layout.items() if not s.buffer and not s.trainable} == FROZEN_KEYS
    sizes = {k: int(np.prod(s.shape)) for k, s in layout.items() if not s.buffer}
    want_frozen = sum(sizes[k] for k in FROZEN_KEYS)
    assert frozen.frozen_param_count() == want_frozen > 0
    assert frozen.trainable_param_count() == sum(sizes.values()) - want_frozen > 0
    assert frozen.param_count() == sum(sizes.values())
    s = summarize(frozen.graph)
    assert (s["params"], s["trainable_params"], s["frozen_params"]) == (
        frozen.param_count(), frozen.trainable_param_count(), frozen.frozen_param_count())
    assert sum(x["frozen_params"] for x in s["layers"]) == want_frozen
    json.dumps(s)
    text = format_text(s)
    assert (f"parameters: {frozen.param_count():,} (trainable {frozen.trainable_param_count():,}, "
            f"frozen {want_frozen:,})") in text


def test_summary_cli_reports_frozen(tmp_path):
    from netdsl.cli import main
    import contextlib
    import io
    spec = tmp_path / "f.net"
    spec.write_text(FROZEN)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["summary", str(spec), "--json"]) == 0
    s = json.loads(out.getvalue())
    assert s["frozen_params"] > 0 and s["trainable_params"] + s["frozen_params"] == s["params"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["check", str(spec)]) == 0
    assert f"{s['params']:,} params ({s['frozen_params']:,} frozen)" in out.getvalue()


NO_TORCH_SPEC = """\
network Feat {
    input x: f32[N, 3, H, W]
    y = x -> stem: Conv2d(8, 3, padding = 1, init = kaiming_normal(mode = "fan_out"), bias_init = zeros())
          -> FrozenBatchNorm2d -> ReLU -> StochasticPool2d(2)
    up = y -> up: ConvTranspose2d(8, 4, stride = 2, bias = false, init = bilinear(), frozen = true)
    freeze stem
    output a = crop(up, like = y, offset = 1) -> SpatialPyramidPool2d([2, 1], bins = "paper") -> Linear(4)
    output b = y -> LPPool2d(2, 2)
}
"""


def test_check_summary_and_onnx_of_the_new_features_never_import_torch(tmp_path):
    """`netdsl check`, `summary --json` and the ONNX target on a spec using every issue-7
    addition (initialisers, freezing, FrozenBatchNorm2d, the new pools, crop) stay torch-free."""
    import os
    import subprocess
    import sys
    spec = tmp_path / "f.net"
    spec.write_text(NO_TORCH_SPEC)
    script = ("import sys\nfrom netdsl.cli import main\n"
              "for args in (['check', sys.argv[1]], ['summary', sys.argv[1], '--json'],\n"
              "             ['compile', sys.argv[1], '--target', 'onnx', '-o', sys.argv[2]]):\n"
              "    assert main(args) == 0, args\n"
              "assert 'torch' not in sys.modules, 'torch was imported'\n")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(netdsl.__file__)))
    r = subprocess.run([sys.executable, "-c", script, str(spec), str(tmp_path / "f.onnx")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "1,412 params (1,248 frozen)" in r.stdout and (tmp_path / "f.onnx").stat().st_size > 0


def test_frozen_through_bound_arguments_and_function_calls():
    net = netdsl.loads("""
block Head(conv: block = Conv2d(2, 1, frozen = true)) { c: conv }
block FrozenLinear = Linear(3, frozen = true, init = zeros())
network N {
    input x: f32[1, 2, 4, 4]
    y = x -> h: Head -> Conv2d(2, 1, frozen = false)
    z = Conv2d(y, 2, 1, frozen = true)
    output out = z -> Flatten -> fl: FrozenLinear
}""")
    frozen = {k for k, s in net.graph.state_layout().items() if not s.trainable}
    assert frozen == {"h.c.weight", "h.c.bias", "conv2d_1.weight", "conv2d_1.bias", "fl.weight", "fl.bias"}
    assert (net.init_weights()["fl.weight"] == 0).all()


def test_torch_requires_grad_and_optimizer_step(frozen):
    module = frozen.to_torch()
    flags = {k: p.requires_grad for k, p in module.named_parameters()}
    assert {k for k, f in flags.items() if not f} == FROZEN_KEYS
    assert sum(p.numel() for p in module.parameters() if p.requires_grad) == frozen.trainable_param_count()
    before = {k: v.detach().clone() for k, v in module.named_parameters()}
    opt = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.1)
    module.train()
    loss = module(torch.randn(2, 3, 8, 8)).square().sum()
    loss.backward()
    opt.step()
    for k, p in module.named_parameters():
        if k in FROZEN_KEYS:
            assert p.grad is None and torch.equal(p, before[k]), k
        else:
            assert not torch.equal(p, before[k]), k
    # a plain optimizer over all parameters leaves them alone as well (no grad)
    opt2 = torch.optim.Adam(module.parameters(), lr=0.1)
    module(torch.randn(2, 3, 8, 8)).sum().backward()
    opt2.step()
    for k, p in module.named_parameters():
        if k in FROZEN_KEYS:
            assert torch.equal(p, before[k]), k


def test_onnx_unaffected_by_freezing(frozen):
    plain = netdsl.loads(FROZEN.replace(", frozen = true", "").replace("    freeze bn\n", "")
                         .replace("    freeze g.0, b, scale, head.bias\n", ""))
    assert plain.frozen_param_count() == 0
    a, b = frozen.to_onnx(), plain.to_onnx()
    assert a.graph.node == b.graph.node
    assert [t.name for t in a.graph.initializer] == [t.name for t in b.graph.initializer]


def test_freeze_in_a_loop_body_and_before_definition():
    net = netdsl.loads("""
network L {
    input x: f32[1, 2, 4, 4]
    freeze conv2d_1, late
    y = x -> Conv2d(2, 1) -> Conv2d(2, 1) -> late: Conv2d(2, 1)
    for i in range(2) { y = y -> blk{i}: [Conv2d(2, 1) ReLU] }
    freeze blk1
    output y
}""")
    layout = net.graph.state_layout()
    frozen = {k for k, s in layout.items() if not s.trainable}
    assert frozen == {"conv2d_1.weight", "conv2d_1.bias", "late.weight", "late.bias",
                      "blk1.0.weight", "blk1.0.bias"}


# ---- the statement's syntax ----------------------------------------------------------------
def test_freeze_statement_round_trips():
    text = "network N { input x: f32[1, 2]\n y = x -> a: [Linear(2)]\n freeze a.0, a\n freeze a.0.bias\n output y }"
    ast = parse(text)
    printed = to_source(ast)
    assert "freeze a.0, a" in printed and "freeze a.0.bias" in printed
    assert parse(printed) == ast


def test_freeze_statement_fast_and_reference_parsers_agree():
    from netdsl.errors import Source
    from netdsl.frontend import fastparse
    from netdsl.frontend import parser as P
    text = "block B() { freeze x, y.z\n  x: ReLU }\nnetwork N { input x: f32[1]\n freeze 0.a, b.1 output y = x }"
    source = Source("t.net", text)
    fast = fastparse.parse(P._fast_tables(), text, source, "start", P._ToAST(source))
    ref = P._parse_reference(text, source, "start")
    assert fast is not None and fast == ref
    paths = [p.parts for p in ref.items[1].body[1].paths]
    assert paths == [["0", "a"], ["b", "1"]]
    assert (ref.items[1].body[1].paths[1].span.line, ref.items[1].body[1].paths[1].span.col) == (4, 14)


# ---- FrozenBatchNorm2d --------------------------------------------------------------------
def test_frozen_batchnorm_state_and_train_eval():
    net = netdsl.loads("network B { input x: f32[N, 4, H, W]\n output y = x -> fbn: FrozenBatchNorm2d(eps = 0.001) }")
    layout = net.graph.state_layout()
    assert list(layout) == ["fbn.weight", "fbn.bias", "fbn.running_mean", "fbn.running_var"]
    assert all(s.buffer for s in layout.values()) and net.param_count() == 0
    rng = np.random.default_rng(0)
    w = {"fbn.weight": rng.uniform(0.5, 1.5, 4), "fbn.bias": rng.normal(size=4),
         "fbn.running_mean": rng.normal(size=4), "fbn.running_var": rng.uniform(0.5, 2, 4)}
    w = {k: v.astype(np.float32) for k, v in w.items()}
    m = net.to_torch(weights=w)
    assert list(m.state_dict()) == list(layout) and not list(m.parameters())
    x = torch.randn(2, 4, 3, 5)
    m.train()
    yt = m(x)
    m.eval()
    ye = m(x)
    assert torch.equal(yt, ye)
    ref = torch.nn.functional.batch_norm(x, torch.from_numpy(w["fbn.running_mean"]),
                                         torch.from_numpy(w["fbn.running_var"]), torch.from_numpy(w["fbn.weight"]),
                                         torch.from_numpy(w["fbn.bias"]), False, 0.0, 0.001)
    assert torch.allclose(ye, ref, atol=1e-5) and not torch.allclose(ye, x, atol=0.1)
    # a BatchNorm2d's state_dict (with num_batches_tracked) loads strictly
    bn = torch.nn.BatchNorm2d(4, eps=0.001).eval()
    with torch.no_grad():
        for k in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn, k).copy_(torch.from_numpy(w[f"fbn.{k}"]))
    m.load_state_dict({f"fbn.{k}": v for k, v in bn.state_dict().items()}, strict=True)
    assert torch.allclose(m(x), bn(x), atol=1e-5)


def test_batchnorm_state_dict_loads_through_the_weights_api():
    """Regression: the module's load_state_dict takes a BatchNorm2d's state (dropping
    num_batches_tracked, as torchvision's FrozenBatchNorm2d), but to_torch(weights=) and
    to_onnx(weights=) refused the same dict ("unexpected fbn.num_batches_tracked")."""
    import onnxruntime as ort
    net = netdsl.loads("network B { input x: f32[N, 4, H, W]\n output y = x -> fbn: FrozenBatchNorm2d }")
    bn = torch.nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5), bn.bias.normal_(), bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2)
    bn.eval()
    sd = {f"fbn.{k}": v for k, v in bn.state_dict().items()}
    assert "fbn.num_batches_tracked" in sd
    x = torch.randn(2, 4, 3, 5)
    want = bn(x).detach()
    assert torch.allclose(net.to_torch(weights=sd)(x), want, atol=1e-5)
    sess = ort.InferenceSession(net.to_onnx(weights=sd).SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.allclose(sess.run(None, {"x": x.numpy()})[0], want.numpy(), atol=1e-5)
    with pytest.raises(netdsl.errors.UsageError, match="unexpected fbn.num_batches_tracked_x"):
        net.to_onnx(weights={**sd, "fbn.num_batches_tracked_x": torch.tensor(0)})   # others still refused


def test_torchvision_frozen_batchnorm_loads_and_agrees():
    tv_ops = pytest.importorskip("torchvision.ops")
    ref = tv_ops.FrozenBatchNorm2d(6, eps=1e-5)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.normal_()
        ref.running_mean.normal_()
        ref.running_var.uniform_(0.5, 2.0)
    net = netdsl.loads("network B { input x: f32[N, 6, H, W]\n output y = x -> bn: FrozenBatchNorm2d }")
    m = net.to_torch()
    m.load_state_dict({f"bn.{k}": v for k, v in ref.state_dict().items()}, strict=True)
    x = torch.randn(2, 6, 5, 7)
    assert torch.allclose(m(x), ref(x), atol=1e-6)
    assert list(m.state_dict()) == [f"bn.{k}" for k in ref.state_dict()]


# ---- errors ---------------------------------------------------------------------------------
def _net(body):
    return f"network T {{ input x: f32[1, 4, 8, 8]\n{body}\n}}\nblock B() {{ Conv2d(4, 1) }}\n"


ERRORS = [
    ("bilinear on Conv2d", "output y = x -> Conv2d(4, 3, init = bilinear())", "2:17",
     "only ConvTranspose2d's weight"),
    ("bilinear as bias_init", "output y = x -> ConvTranspose2d(4, 4, bias_init = bilinear())", "2:17",
     "only ConvTranspose2d's weight"),
    ("bilinear in != out", "output y = x -> ConvTranspose2d(8, 4, init = bilinear())", "2:17",
     "as many output channels as input channels, got 4 in and 8 out"),
    ("unknown init kwarg", 'output y = x -> Conv2d(4, 3, init = kaiming_normal(mdoe = "fan_out"))', "2:37",
     "kaiming_normal() has no argument 'mdoe' (did you mean 'mode'?)"),
    ("bad mode", 'output y = x -> Conv2d(4, 3, init = kaiming_uniform(mode = "fan_avg"))', "2:37",
     "kaiming_uniform(): 'mode' must be one of 'fan_in', 'fan_out'"),
    ("bad nonlinearity", "output y = x -> Linear(4, init = kaiming_normal(nonlinearity = 'Relu'))", "2:34",
     "(did you mean 'relu'?)"),
    ("negative std", "output y = x -> Linear(4, init = normal(-1))", "2:34", "non-negative"),
    ("constant without value", "output y = x -> Linear(4, init = constant())", "2:34",
     "constant() needs its argument 'value'"),
    ("kaiming on a bias", "output y = x -> Linear(4, bias_init = kaiming_normal())", "2:17",
     "needs the fans of a weight of 2 or more dims"),
    ("init not an initialiser", "output y = x -> Linear(4, init = 3)", "2:17",
     "Linear: 'init' must be an initialiser"),
    ("init not called", "output y = x -> Linear(4, init = zeros)", "2:17", "got function (call it: zeros())"),
    ("frozen on a block", "output y = x -> b: B(frozen = true)", "2:20",
     "B has no parameter 'frozen'; to freeze a block instance's parameters, label it and write `freeze NAME`"),
    ("init positionally", "output y = x -> Linear(4, true, zeros())", "2:17",
     "Linear takes at most 2 positional arguments, got 3"),
    ("bias_init without bias", "output y = x -> Linear(4, bias = false, bias_init = zeros())", "2:17",
     "bias_init is given but the layer has no bias"),
    ("param with a layer init", "param p: f32[4, 4] = kaiming_normal()\noutput y = x + p", "2:22",
     "a param starts from zeros(), ones(), constant(value), normal(std) or uniform(bound), got kaiming_normal()"),
    ("frozen on ReLU", "output y = x -> ReLU(frozen = true)", "2:17", "ReLU has no parameters to freeze"),
    ("frozen on FrozenBatchNorm2d", "output y = x -> FrozenBatchNorm2d(frozen = true)", "2:17",
     "FrozenBatchNorm2d has no parameters to freeze (it holds buffers only)"),
    ("frozen not a bool", "output y = x -> Conv2d(4, 1, frozen = 1)", "2:17",
     "Conv2d: 'frozen' must be true or false, got int"),
    ("freeze nothing", "y = x -> conv1: Conv2d(4, 1)\nfreeze nothing_here\noutput y", "3:8",
     "nothing named 'nothing_here' in this network has parameters to freeze"),
    ("freeze misspelt", "y = x -> conv1: Conv2d(4, 1)\nfreeze conv1, conv\noutput y", "3:15",
     "(did you mean 'conv1'?)"),
    ("freeze parameterless", "y = x -> r: ReLU -> c: Conv2d(4, 1)\nfreeze c, r\noutput y", "3:11",
     "'r' has no parameters to freeze"),
    ("freeze in a block", "block B() { Conv2d(4, 1)\n freeze conv }\n" + "network T { input x: f32[1, 4, 8, 8]\n"
     "output y = x -> b: B }", "2:9", "nothing named 'conv' in b has parameters to freeze"),
]


@pytest.mark.parametrize("body,where,message", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_are_located(body, where, message):
    src = body if body.startswith("block") else _net(body)
    with pytest.raises(NetDSLError) as info:
        netdsl.loads(src, name="t.net").graph
    err = info.value
    assert message in err.message
    assert f"{err.span.line}:{err.span.col}" == where, err.render()
    assert "^" in err.render()


# ---- both backends on one network: torch's own init, then onnxruntime on those weights ------
def test_initialised_frozen_network_parity():
    from parity_util import assert_parity
    net = netdsl.loads("""
network P {
    input x: f32[N, 3, H, W]
    y = x -> c: Conv2d(8, 3, padding = 1, init = kaiming_normal(mode = "fan_out", nonlinearity = "relu"),
                       bias_init = normal(0.1), frozen = true)
        -> fbn: FrozenBatchNorm2d -> ReLU
        -> up: ConvTranspose2d(8, 4, stride = 2, padding = 1, init = bilinear(), bias_init = constant(0.2))
        -> d: Conv2d(4, 3, stride = 2, padding = 1, init = xavier_uniform(gain = 1.5), bias_init = uniform(0.3))
    freeze up
    output out = y -> GlobalAvgPool2d -> Flatten -> fc: Linear(5, init = kaiming_uniform(a = 0.1), bias_init = ones())
}""")
    model = own_module(net).eval()
    with torch.no_grad():       # FrozenBatchNorm2d starts as the identity: give it statistics
        model.fbn.running_mean.normal_()
        model.fbn.running_var.uniform_(0.5, 2.0)
        model.fbn.weight.uniform_(0.5, 1.5)
    assert_parity(net, model, [(2, 3, 8, 10), (1, 3, 13, 7)], dims=["N", 3, "H", "W"], label="init")


def test_param_declarations_start_as_declared_in_torch():
    """A `param`'s initialiser reaches the generated source too (it started every param at
    zeros there, whatever its declaration said; only netdsl's numpy weights followed it)."""
    net = netdsl.loads("""network P {
        input x: f32[N, 4096]
        param a: f32[1, 4096] = normal(0.5)
        param b: f32[1, 4096] = uniform(0.25)
        param c: f32[1, 4096] = ones()
        param d: f32[1, 4096] = zeros()
        output y = x + a + b + c + d
    }""")
    state = own_module(net).state_dict()
    assert abs(float(state["a"].std()) - 0.5) < 0.03 and abs(float(state["a"].mean())) < 0.03
    b = state["b"]
    assert float(b.abs().max()) <= 0.25 and float(b.std()) > 0.25 / 3 ** 0.5 * 0.9
    assert torch.equal(state["c"], torch.ones(1, 4096))
    assert torch.equal(state["d"], torch.zeros(1, 4096))
