"""Tensor arithmetic (`a - b`, `a / b`, tensor-and-number `+ - * /`, unary `-`) and the mobile
networks' activations (ReLU6, Hardswish, Hardsigmoid, Mish, PReLU): numbers against torch's own
modules and operators, both backends (the ONNX fallbacks of older opsets too), the IR form, the
generated torch code, costs, and located errors for what tensors do not support."""
from __future__ import annotations

import numpy as np
import pytest

import netdsl
from netdsl import errors as E
from netdsl.errors import NetDSLError

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")


def spec(body: str, decl: str = "[N, 3, H, W]", extra: str = "") -> str:
    return f"network T {{\n    input x: f32{decl}\n{extra}    output y = {body}\n}}\n"


def run_both(net, weights, xs: dict, opset: int = 17):
    """(torch output, onnxruntime output) of one-output `net` on the inputs `xs` (numpy)."""
    module = net.to_torch(weights).eval()
    with torch.no_grad():
        ref = module(*[torch.from_numpy(v) for v in xs.values()]).numpy()
    sess = ort.InferenceSession(net.to_onnx(weights, opset=opset).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    return ref, sess.run(None, xs)[0]


@pytest.fixture(scope="module")
def wide():
    """[2, 3, 5, 7] values over about [-10, 10]: past every kink (-3, 0, 3, 6)."""
    x = np.random.default_rng(5).uniform(-10, 10, (2, 3, 5, 7)).astype(np.float32)
    x[0, 0, 0, :4] = [-3.0, 0.0, 3.0, 6.0]       # exactly on the kinks as well
    return x


# ---- activations against torch.nn ---------------------------------------------------------------
ACTS = [("ReLU6", torch.nn.ReLU6), ("Hardswish", torch.nn.Hardswish), ("Hardsigmoid", torch.nn.Hardsigmoid),
        ("Mish", torch.nn.Mish)]


@pytest.mark.parametrize("opset", [13, 14, 17, 18])
@pytest.mark.parametrize("layer,cls", ACTS, ids=[a[0] for a in ACTS])
def test_activation_matches_torch_nn(layer, cls, opset, wide):
    """The generated module and the ONNX model (native ops or, below opset 14 (HardSwish) / 18
    (Mish), their decompositions) equal torch.nn's module on values past every kink."""
    net = netdsl.loads(spec(f"x -> {layer}"))
    want = cls()(torch.from_numpy(wide)).numpy()
    ref, got = run_both(net, {}, {"x": wide}, opset)
    np.testing.assert_allclose(ref, want, rtol=0, atol=0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert len(np.unique(np.round(want, 4))) > 50            # not a constant or a clamp only
    if layer in ("ReLU6", "Hardsigmoid"):                     # both flat sides are reached
        top = 6.0 if layer == "ReLU6" else 1.0
        assert (want == 0).any() and (want == top).any()


def test_activation_onnx_ops_by_opset():
    def ops(layer, opset):
        return {n.op_type for n in netdsl.loads(spec(f"x -> {layer}")).to_onnx(opset=opset).graph.node}
    assert ops("ReLU6", 17) == {"Clip"}
    assert ops("Hardsigmoid", 13) == {"HardSigmoid"}
    assert ops("Hardswish", 14) == {"HardSwish"} and ops("Hardswish", 13) == {"HardSigmoid", "Mul"}
    assert ops("Mish", 18) == {"Mish"} and ops("Mish", 17) == {"Softplus", "Tanh", "Mul"}


def test_activations_generate_torch_functions():
    src = netdsl.loads(spec("x -> ReLU6 -> Hardswish -> Hardsigmoid -> Mish")).torch_source()
    for call in ("F.relu6(x)", "F.hardswish(", "F.hardsigmoid(", "F.mish("):
        assert call in src


# ---- PReLU --------------------------------------------------------------------------------------
@pytest.mark.parametrize("layer,n,init", [("PReLU", 1, 0.25), ("PReLU(3, init = 0.1)", 3, 0.1),
                                          ("PReLU(init = -0.5)", 1, -0.5)])
def test_prelu_params_and_default_init(layer, n, init):
    net = netdsl.loads(spec(f"x -> {layer}"))
    (node,) = net.graph.nodes
    assert node.params["weight"].shape == (n,)
    assert net.param_count() == net.summary()["params"] == n and net.summary()["macs"] == 0
    module = net.to_torch()
    assert list(module.state_dict()) == ["prelu.weight"]
    assert torch.equal(module.state_dict()["prelu.weight"], torch.full((n,), init))
    np.testing.assert_array_equal(net.init_weights(0)["prelu.weight"], np.full(n, init, np.float32))


@pytest.mark.parametrize("decl,shape", [("[N, 3, H, W]", (2, 3, 4, 5)), ("[N, 3]", (16, 3)),
                                         ("[N, 3, L]", (2, 3, 6))])
def test_prelu_per_channel_matches_torch_nn(decl, shape):
    """One slope per channel (dim 1) whatever the rank: torch.nn.PReLU's state_dict loads strictly,
    and both backends give its output (the slopes differ, so a wrong axis would show)."""
    net = netdsl.loads(spec("x -> PReLU(3)", decl))
    ref_mod = torch.nn.PReLU(3)
    with torch.no_grad():
        ref_mod.weight.copy_(torch.tensor([0.1, -0.7, 2.0]))
    module = net.to_torch()
    module.load_state_dict({"prelu." + k: v for k, v in ref_mod.state_dict().items()}, strict=True)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    want = ref_mod(torch.from_numpy(x)).detach().numpy()
    ref, got = run_both(net, {"prelu.weight": ref_mod.weight.detach().numpy()}, {"x": x})
    np.testing.assert_allclose(ref, want, atol=1e-6)
    np.testing.assert_allclose(got, want, atol=1e-6)
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), want, atol=1e-6)
    neg = x < 0                     # channels really get different slopes
    ratios = {round(float(r), 4) for r in (want[neg] / x[neg])}
    assert ratios == {0.1, -0.7, 2.0}


def test_prelu_trains_its_slope():
    net = netdsl.loads(spec("x -> Conv2d(4, 1) -> PReLU(4)"))
    module = net.to_torch().train()
    module(torch.randn(2, 3, 4, 4)).sum().backward()
    assert float(module.state_dict(keep_vars=True)["prelu.weight"].grad.abs().max()) > 0


# ---- arithmetic ---------------------------------------------------------------------------------
ARITH = [
    ("x - z", lambda x, z: x - z),
    ("z - x", lambda x, z: z - x),
    ("x / (z -> Sigmoid)", lambda x, z: x / torch.sigmoid(z)),
    ("x * 2", lambda x, z: x * 2),
    ("2 * x", lambda x, z: 2 * x),
    ("3 + x", lambda x, z: 3 + x),
    ("x + 0.25", lambda x, z: x + 0.25),
    ("1 - x", lambda x, z: 1 - x),
    ("x - 1.5", lambda x, z: x - 1.5),
    ("x / 6", lambda x, z: x / 6),
    ("6 / (x -> Sigmoid)", lambda x, z: 6 / torch.sigmoid(x)),
    ("-x", lambda x, z: -x),
    ("+x - -z", lambda x, z: x + z),
    ("-(x * z) / 3 + 1 - x * 0.1", lambda x, z: -(x * z) / 3 + 1 - x * 0.1),
    ("x * ((x + 3) -> ReLU6) / 6", lambda x, z: torch.nn.functional.hardswish(x)),
    ("x * x.channels - x.shape[3]", lambda x, z: x * 3 - 7),
]


@pytest.mark.parametrize("expr,fn", ARITH, ids=[a[0] for a in ARITH])
def test_arithmetic_matches_torch(expr, fn):
    net = netdsl.loads(spec(expr, "[N, 3, H, 7]", "    input z: f32[N, 1, H, 1]\n"))
    rng = np.random.default_rng(3)
    x = rng.uniform(-5, 5, (2, 3, 4, 7)).astype(np.float32)
    z = rng.uniform(-5, 5, (2, 1, 4, 1)).astype(np.float32)
    want = fn(torch.from_numpy(x), torch.from_numpy(z)).numpy()
    ref, got = run_both(net, {}, {"x": x, "z": z})
    assert ref.shape == got.shape == want.shape
    np.testing.assert_allclose(ref, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(want, x)


def test_ir_form_and_natural_torch_code():
    net = netdsl.loads(spec("1 - (3 + -(x * 2)) / 6.5"))
    nodes = [(n.op, n.attrs.get("scalar"), n.attrs.get("reverse")) for n in net.graph.nodes]
    assert nodes == [("mul", 2.0, False), ("neg", None, None), ("add", 3.0, True), ("div", 6.5, False),
                     ("sub", 1.0, True)]
    assert all(isinstance(n.attrs["scalar"], float) for n in net.graph.nodes if n.op != "neg")
    src = net.torch_source()
    for line in ("= x * 2.0", "= -h", "= 3.0 + h", "= h / 6.5", "= 1.0 - h"):
        assert line in src, src
    assert all(n.macs == 0 for n in net.graph.nodes)
    assert net.summary()["macs"] == 0 and net.summary()["params"] == 0


def test_onnx_scalars_are_float32_constants():
    model = netdsl.loads(spec("(2 - x) * 3")).to_onnx()
    consts = {i.name: i for i in model.graph.initializer}
    sub, mul = [n for n in model.graph.node if n.op_type in ("Sub", "Mul")]
    left = consts[sub.input[0]]
    assert left.data_type == 1 and list(left.dims) == [] and sub.input[1] == "x"      # 2 on the left
    right = consts[mul.input[1]]
    assert right.data_type == 1 and list(right.dims) == []


def test_int_and_float_numbers_give_one_graph():
    a = netdsl.loads(spec("x * 2 + 1")).torch_source()
    b = netdsl.loads(spec("x * 2.0 + 1.0")).torch_source()
    assert a == b


def test_scalar_add_in_place_after_a_conv():
    """`conv(x) + 1 -> ReLU` adds in place (the conv's output is dead), as x += 1, and trains."""
    net = netdsl.loads(spec("(x -> Conv2d(3, 1)) + 1 -> ReLU"))
    src = net.torch_source()
    assert ".add_(1.0)" in src
    module = net.to_torch().train()
    x = torch.randn(2, 3, 4, 4)
    y = module(x)
    y.sum().backward()
    conv = module.state_dict(keep_vars=True)["conv2d.weight"]
    assert float(conv.grad.abs().max()) > 0
    with torch.no_grad():
        want = torch.relu(torch.nn.functional.conv2d(x, conv, module.state_dict()["conv2d.bias"]) + 1)
    torch.testing.assert_close(y.detach(), want)


def test_sub_and_div_broadcast_and_record_constraints():
    net = netdsl.loads("network T {\n input a: f32[N, 3, H, W]\n input b: f32[N, 3, P, 1]\n"
                       " output y = a / ((b -> Sigmoid) + 0.5) - b\n}\n")
    (_, y), = net.graph.outputs
    assert [str(d) for d in y.shape] == ["N", "3", "H", "W"]
    assert net.summary()["constraints"]       # P == H (or H == P) recorded


def test_arithmetic_through_the_cli_check(tmp_path):
    """`netdsl check` accepts the operators (no torch import on that path is the CLI's test)."""
    from netdsl.cli import main
    f = tmp_path / "t.net"
    f.write_text(spec("1 - (x -> Hardswish) / 6 * -x"))
    assert main(["check", str(f)]) == 0


# ---- errors -------------------------------------------------------------------------------------
def fail(src: str) -> NetDSLError:
    with pytest.raises(NetDSLError) as info:
        netdsl.loads(src, name="t.net").graph
    err = info.value
    assert "^" in err.render()
    return err


BAD = [
    ("x // 2", "3:16", "'//' is not defined on tensors (tensors support + - * /, with a tensor or a number, "
                       "and unary -)", E.TypeMismatchError),
    ("x % 2", "3:16", "'%' is not defined on tensors...", E.TypeMismatchError),
    ("x ** 2", "3:16", "'**' is not defined on tensors...", E.TypeMismatchError),
    ("x < 1", "3:16", "'<' is not defined on tensors...", E.TypeMismatchError),
    ("x == x", "3:16", "'==' is not defined on tensors...", E.TypeMismatchError),
    ('x + "a"', "3:16", "'+' needs two tensors or a tensor and a number, got a tensor and a str",
     E.TypeMismatchError),
    ("[1, 2] * x", "3:16", "'*' needs two tensors or a tensor and a number, got a tensor and a list",
     E.TypeMismatchError),
    ("x * true", "3:16", "'*' needs two tensors or a tensor and a number, got a tensor and a bool",
     E.TypeMismatchError),
    ("x * x.shape[2]", "3:16", "'*' needs two tensors or a tensor and a number, got a tensor and a symbolic "
                               "size (known only at run time)", E.TypeMismatchError),
    ("x / 0", "3:16", "div: division by zero", E.ValueRangeError),
    ("x * 1e39", "3:16", "mul: the number 1e+39 is out of float32's range...", E.ValueRangeError),
    ("(x -> Conv2d(2, 1)) - x", "3:16", "sub: dim 1 does not match: 2 vs 3 (shapes [N, 2, H, W] and "
                                        "[N, 3, H, W])", E.ShapeError),
    ("x / (x -> Conv2d(2, 1))", "3:16", "div: dim 1 does not match: 3 vs 2...", E.ShapeError),
    ("-(x -> Conv2d(2, 1)) + x", "3:16", "add: dim 1 does not match: 2 vs 3...", E.ShapeError),
    ('-"a"', "3:16", "unary '-' needs a number or a tensor, got str", E.TypeMismatchError),
    ("add(x, x, scalar = 2)", "3:16", "add: takes two tensors, or one tensor and a number (scalar =), not both",
     E.ShapeError),
    ("sub(x)", "3:16", "sub: takes two tensors, or one tensor and a number (scalar =), not one tensor alone",
     E.ShapeError),
    ("mul(x, x, reverse = true)", "3:16", "mul: reverse = true applies to a number (scalar =) only", E.ShapeError),
    ("x -> PReLU(4)", "3:21", "PReLU: num_parameters = 4 must be 1 or the input's channel count (dim 1), "
                              "which is 3", E.ShapeError),
    ("x -> PReLU(0)", "3:21", "PReLU: 'num_parameters' must be positive, got 0", E.ValueRangeError),
    ("x -> Flatten(0) -> PReLU(3)", "3:35", "PReLU: num_parameters = 3 needs a channel dim (dim 1), but the "
                                           "input has rank 1; use num_parameters = 1", E.ShapeError),
    ("x -> PReLU(init = 'a')", "3:21", "PReLU: 'init' must be a number, got str 'a'", E.TypeMismatchError),
    ("x -> ReLU6(1)", "3:21", "ReLU6 takes at most 0 positional arguments, got 1", E.TypeMismatchError),
]


@pytest.mark.parametrize("body,where,message,cls", BAD, ids=[b[0] for b in BAD])
def test_located_errors(body, where, message, cls):
    err = fail(spec(body))
    assert isinstance(err, cls), (type(err), err.render())
    header = err.header()
    if message.endswith("..."):
        assert header.startswith(f"t.net:{where}: error: {message[:-3]}"), header
    else:
        assert header == f"t.net:{where}: error: {message}", header


def test_symbolic_channels_for_prelu():
    err = fail("network T {\n    input x: f32[N, C, H, W]\n    output y = x -> PReLU(3)\n}\n")
    assert err.header() == ("t.net:3:21: error: PReLU: num_parameters = 3 must be 1 or the input's channel "
                            "count (dim 1), which is C")


INT64 = [("i * 2", "16", "mul: input 1"), ("2 - i", "16", "sub: input 1"), ("-i", "16", "neg: input 1"),
         ("v / i", "16", "div: input 2"), ("i -> Hardswish", "21", "Hardswish: input 1"),
         ("i -> PReLU", "21", "PReLU: input 1")]


@pytest.mark.parametrize("body,col,message", INT64, ids=[b[0] for b in INT64])
def test_int64_tensors_are_refused(body, col, message):
    err = fail(f"network T {{\n    input x: f32[N, 8]\n    v, i = topk(x, k = 3)\n    output y = {body}\n}}\n")
    assert isinstance(err, E.TypeMismatchError)
    assert err.header().startswith(f"t.net:4:{col}: error: {message} is an int64 tensor"), err.header()


# ---- stochastic pooling's sign analysis knows the new ops -------------------------------------------
@pytest.mark.parametrize("body,ok", [
    ("(x -> ReLU) * 2 + 1", True),
    ("(x -> ReLU6) / 6", True),
    ("x -> Hardsigmoid", True),
    ("(x -> ReLU) - -1", True),
    ("6 / ((x -> Sigmoid) + 1)", True),
    ("(x -> ReLU) / (x -> Sigmoid)", True),
    ("(x -> ReLU) - 1", False),
    ("1 - (x -> ReLU)", False),
    ("(x -> ReLU) * -2", False),
    ("-(x -> ReLU)", False),
    ("(x -> ReLU) - (x -> Sigmoid)", False),
    ("x -> Hardswish", False),
    ("x -> Mish", False),
    ("x -> ReLU -> PReLU", False),
])
def test_stochastic_pool_sign_analysis(body, ok):
    src = spec(f"({body}) -> StochasticPool2d(2)")
    if ok:
        assert netdsl.loads(src).graph
    else:
        err = fail(src)
        assert isinstance(err, E.ValueRangeError) and "its input can be negative" in err.header()
