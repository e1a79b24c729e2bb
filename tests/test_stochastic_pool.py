"""StochasticPool2d (Zeiler & Fergus 2013): the eval form against a plain reference in torch and
onnxruntime, the training draw's distribution, its gradient and seeding, and its errors."""
from __future__ import annotations

import math
import re

import numpy as np
import onnx
import pytest

import netdsl
from netdsl.errors import NetDSLError, ValueRangeError

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")


def net_of(layer: str, decl: str = "[N, C, H, W]", pre: str = "") -> netdsl.Network:
    return netdsl.loads(f"network sp {{\n    input x: f32{decl}\n    output y = x -> {pre}{layer}\n}}\n")


def reference(x: np.ndarray, k, s, p) -> np.ndarray:
    """sum(a^2) / sum(a) over each zero-padded window, 0 for an all-zero one: plain loops."""
    n, c, h, w = x.shape
    xp = np.zeros((n, c, h + 2 * p[0], w + 2 * p[1]), np.float64)
    xp[:, :, p[0]:p[0] + h, p[1]:p[1] + w] = x
    oh, ow = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1
    out = np.zeros((n, c, oh, ow))
    for b in range(n):
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    a = xp[b, ch, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]]
                    total = a.sum()
                    out[b, ch, i, j] = (a * a).sum() / total if total > 0 else 0.0
    return out


def nonneg_input(shape, seed) -> np.ndarray:
    """ReLU of normal values (many zeros), with a block of zeros so that some windows are all zero."""
    x = np.maximum(np.random.default_rng(seed).standard_normal(shape), 0).astype(np.float32)
    x[:, :, :4, :4] = 0
    return x


# (layer text, kernel, stride, padding, two input sizes)
EVAL_CASES = [
    ("StochasticPool2d(2)", (2, 2), (2, 2), (0, 0), ((2, 3, 9, 11), (1, 3, 12, 6))),
    ("StochasticPool2d(3, stride = 2, padding = 1)", (3, 3), (2, 2), (1, 1), ((2, 3, 9, 11), (1, 3, 6, 13))),
    ("StochasticPool2d([3, 2], stride = [1, 3], padding = [1, 0])", (3, 2), (1, 3), (1, 0),
     ((2, 2, 7, 10), (1, 2, 10, 5))),
]


@pytest.mark.parametrize("layer,k,s,p,sizes", EVAL_CASES, ids=[c[0] for c in EVAL_CASES])
def test_eval_form_matches_reference_in_torch_and_onnx(layer, k, s, p, sizes):
    net = net_of(layer)
    module = net.to_torch().eval()
    model = net.to_onnx()
    onnx.checker.check_model(model, full_check=True)
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input]
    assert dims == [["N", "C", "H", "W"]]          # one file serves both sizes
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for seed, shape in enumerate(sizes):
        x = nonneg_input(shape, seed)
        want = reference(x, k, s, p)
        with torch.no_grad():
            got_torch = module(torch.from_numpy(x)).numpy()
        got_onnx = sess.run(None, {"x": x})[0]
        assert got_torch.shape == got_onnx.shape == want.shape
        np.testing.assert_allclose(got_torch, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_onnx, want, rtol=1e-5, atol=1e-6)
        # not vacuous: all-zero windows give 0, the others neither the mean nor the max
        assert (want[:, :, 0, 0] == 0).all() and (got_onnx[:, :, 0, 0] == 0).all()
        assert (want > 0).mean() > 0.5
        xt = torch.from_numpy(x)
        mean = torch.nn.functional.avg_pool2d(xt, k, s, p).numpy()
        biggest = torch.nn.functional.max_pool2d(xt, k, s, p).numpy()
        assert np.abs(want - mean).max() > 0.1 and np.abs(want - biggest).max() > 0.1


def test_eval_has_no_nan_gradient_on_zero_windows():
    module = net_of("StochasticPool2d(2)").to_torch().eval()
    x = torch.from_numpy(nonneg_input((1, 2, 6, 6), 0)).requires_grad_()
    module(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad[:, :, :4, :4] == 0).all() and (x.grad != 0).any()


# ---- training: the draw
WINDOW = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 6.0]], np.float32)    # p = a / 16; 0 never drawn


def chi2_sf_df4(stat: float) -> float:
    """P(chi-square with 4 degrees of freedom > stat) (closed form for even df)."""
    return math.exp(-stat / 2) * (1 + stat / 2)


def chi2_stat(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def draw_counts(seed: int, batch: int = 4000, channels: int = 5) -> np.ndarray:
    """How often each nonzero element of WINDOW is drawn, over batch * channels windows."""
    module = net_of("StochasticPool2d([2, 3])", "[N, C, 2, 3]").to_torch().train()
    x = torch.from_numpy(np.broadcast_to(WINDOW, (batch, channels, 2, 3)).copy())
    torch.manual_seed(seed)
    with torch.no_grad():
        y = module(x).numpy().ravel()
    assert y.size == batch * channels
    values = WINDOW.ravel()
    assert np.isin(y, values).all()
    return np.array([(y == v).sum() for v in values])


def test_training_draws_elements_with_probability_proportional_to_value():
    counts = draw_counts(seed=7)
    values = WINDOW.ravel()
    assert counts[values == 0].sum() == 0               # a zero is never drawn
    nz = values > 0
    stat = chi2_stat(counts[nz], values[nz] / values.sum())
    assert chi2_sf_df4(stat) > 1e-3, (counts, stat)
    # the test can fail: the same counts judged against a uniform draw, and an argmax draw's
    # counts against the right distribution, are far outside the threshold
    uniform = chi2_stat(counts[nz], np.full(nz.sum(), 1 / nz.sum()))
    argmax = np.where(values[nz] == values.max(), counts.sum(), 0)
    assert chi2_sf_df4(uniform) < 1e-100
    assert chi2_sf_df4(chi2_stat(argmax, values[nz] / values.sum())) < 1e-100


def test_training_output_is_an_element_and_gradient_reaches_only_drawn_elements():
    k, s, p = (3, 3), (2, 2), (1, 1)                     # overlapping windows, zero padding
    module = net_of("StochasticPool2d(3, stride = 2, padding = 1)").to_torch().train()
    x = nonneg_input((2, 3, 7, 8), 3)
    xt = torch.from_numpy(x).requires_grad_()
    torch.manual_seed(0)
    y = module(xt)
    y.sum().backward()
    y = y.detach().numpy()
    # the element each window drew, found by value (the nonzero values are distinct)
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    want = np.zeros_like(xp)
    zero_windows = 0
    for idx in np.ndindex(*y.shape):
        b, c, i, j = idx
        win = xp[b, c, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]]
        if win.max() == 0:
            zero_windows += 1
            assert y[idx] == 0
            continue
        assert y[idx] > 0                                # a zero has probability 0
        (pos,) = np.argwhere(win == y[idx])
        want[b, c, i * s[0] + pos[0], j * s[1] + pos[1]] += 1
    want = want[:, :, p[0]:p[0] + x.shape[2], p[1]:p[1] + x.shape[3]]
    got = xt.grad.numpy()
    assert zero_windows > 0 and want.sum() > 20 and want.max() >= 2    # overlaps counted twice
    zero_grad = got[x == 0]                              # an all-zero window may pass its gradient to a zero
    np.testing.assert_array_equal(got[x > 0], want[x > 0])
    assert zero_grad.sum() <= zero_windows


def test_training_is_reproducible_under_manual_seed():
    module = net_of("StochasticPool2d(2)").to_torch().train()
    x = torch.from_numpy(nonneg_input((2, 4, 8, 8), 1))

    def run(seed):
        torch.manual_seed(seed)
        return module(x)

    a, b, c = run(5), run(5), run(6)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, module.eval()(x))


def test_training_refuses_negative_input_at_run_time():
    module = net_of("StochasticPool2d(2)").to_torch().train()
    x = torch.ones(1, 1, 4, 4)
    x[0, 0, 1, 2] = -0.5
    with pytest.raises(ValueError, match=r"StochasticPool2d: its input must be finite and non-negative "
                                         r"\(as after a ReLU\), but its smallest value is -0.5"):
        module(x)
    x[0, 0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="non-negative"):
        module(x)


def test_training_under_torch_compile_fullgraph():
    """The run-time input check is a data-dependent branch, which torch.compile(fullgraph=True)
    cannot trace: a training step must still compile (as dropout and batch norm do) and draw
    what eager mode draws under the same seed."""
    module = net_of("Conv2d(4, 3, padding = 1) -> ReLU -> StochasticPool2d(2)", "[N, 3, H, W]").to_torch().train()
    x = torch.rand(2, 3, 8, 8)
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    torch.manual_seed(3)
    got = compiled(x)
    torch.manual_seed(3)
    want = module(x)
    assert torch.equal(got, want) and float(want.detach().abs().max()) > 0
    got.sum().backward()
    assert module.conv2d.weight.grad is not None and float(module.conv2d.weight.grad.abs().max()) > 0


def test_generated_source_needs_only_torch():
    src = net_of("StochasticPool2d(2)", pre="ReLU -> ").torch_source()
    imports = {line for line in src.splitlines() if line.startswith(("import ", "from "))}
    assert imports == {"import torch", "from torch import nn", "import torch.nn.functional as F"}
    assert "stochastic_pool2d(" in src and "self.training)" in src


# ---- the compile-time sign analysis
@pytest.mark.parametrize("pre", [
    "Conv2d(4, 3) -> ",
    "Conv2d(4, 1) -> MaxPool2d(2) -> Flatten(2) -> reshape(shape = [0, 0, 2, -1]) -> ",
    "BatchNorm2d -> ",
    "Tanh -> ",
    "LeakyReLU -> ",
    "GELU -> ",
    "LogSoftmax -> ",
    "permute(dims = [0, 1, 3, 2]) -> Linear(4) -> ",
])
def test_inputs_known_to_be_negative_are_a_located_error(pre):
    with pytest.raises(ValueRangeError) as e:
        net_of("StochasticPool2d(2)", "[N, 3, 8, 8]", pre)
    err = e.value
    assert err.line == 3 and err.col == 21 + len(pre)
    assert str(err).startswith(f"<string>:3:{err.col}: error: StochasticPool2d: ")
    assert "its input can be negative" in err.message and "put a ReLU" in err.message
    assert "note: the negative values come from the " in err.render()


SIGN_CASES = [
    # (body, accepted)
    ("output y = x -> Conv2d(4, 3) -> ReLU -> MaxPool2d(2) -> StochasticPool2d(2)", True),
    ("output y = x -> StochasticPool2d(2)", True),                       # a network input: unknown
    ("output y = x -> Sigmoid -> resize(scale = 2) -> StochasticPool2d(2)", True),
    ("output y = x -> Softmax -> AvgPool2d(2) -> StochasticPool2d(2)", True),
    ("a = x -> Conv2d(3, 1) -> ReLU\nb = x -> ReLU\noutput y = (a + b) -> StochasticPool2d(2)", True),
    ("a = x -> Conv2d(3, 1)\noutput y = (a * a) -> StochasticPool2d(2)", True),
    ("a = x -> Conv2d(3, 1)\nb = x -> ReLU\noutput y = (a + b) -> StochasticPool2d(2)", False),
    ("a = x -> Conv2d(3, 1) -> ReLU\nb = x -> ELU\noutput y = concat(a, b) -> StochasticPool2d(2)", False),
    ("a = x -> ReLU\nb = x -> SiLU\noutput y = (a * b) -> StochasticPool2d(2)", False),
    ("param s: f32[1, 3, 1, 1] = normal(1.0)\noutput y = (x * s) -> StochasticPool2d(2)", True),
]


@pytest.mark.parametrize("body,accepted", SIGN_CASES, ids=range(len(SIGN_CASES)))
def test_sign_analysis(body, accepted):
    text = "network sp {\ninput x: f32[N, 3, 8, 8]\n" + body + "\n}\n"
    if accepted:
        netdsl.loads(text)
        return
    with pytest.raises(ValueRangeError, match="its input can be negative"):
        netdsl.loads(text)


def test_sign_error_inside_a_block_names_the_instance_and_the_source():
    text = """block Head(c: int) {
    Conv2d(c, 1)
    StochasticPool2d(2)
}
network sp {
    input x: f32[N, 3, 8, 8]
    output y = x -> h: Head(4)
}
"""
    with pytest.raises(ValueRangeError) as e:
        netdsl.loads(text, name="head.net")
    out = e.value.render()
    assert out.startswith("head.net:3:5: error: StochasticPool2d: its input can be negative "
                          "(it comes from a Conv2d)")
    assert "in block Head, instantiated at head.net:7:24" in out
    assert "note: the negative values come from the Conv2d at head.net:2:5" in out


def test_a_long_chain_is_analysed_without_recursion():
    body = " -> ".join(["ReLU", "Conv2d(2, 1)"] + ["Identity"] * 3000 + ["StochasticPool2d(2)"])
    with pytest.raises(ValueRangeError):
        net_of(body, "[N, 3, 8, 8]")


# ---- shapes
def test_shape_rule_and_constraints():
    net = net_of("StochasticPool2d(3, stride = 2, padding = 1)")
    out = net.summary(inputs=(2, 3, 9, 11))["outputs"][0]["shape"]
    assert out == [2, 3, 5, 6]
    bad = [("StochasticPool2d(3, padding = 2)", "[N, C, H, W]",
            "padding 2 must be at most half the kernel size 3"),
           ("StochasticPool2d(5)", "[N, C, 4, 9]", "output dim 2 would be 0"),
           ("StochasticPool2d(2)", "[N, C, L]", "expects a [N, C, H, W] input of rank 4")]
    for layer, decl, msg in bad:
        with pytest.raises(NetDSLError, match=re.escape(msg)) as e:
            net_of(layer, decl)
        assert e.value.line == 3
    net = net_of("StochasticPool2d(5, padding = 1)")                    # symbolic: a constraint
    assert net.constraints == ["H ≥ 3", "W ≥ 3"]
    with pytest.raises(NetDSLError, match="output dim 2 would be 0") as e:
        net.summary(inputs=(1, 3, 2, 8))
    assert e.value.line == 3
