"""Input-size constraints checked everywhere they apply: jointly across symbols by the
checker, at the start of the torch module's forward(), in the ONNX file's metadata, and by
`netdsl run` before anything runs."""
from __future__ import annotations

import json
import time

import pytest

import netdsl
from netdsl import errors as E
from netdsl.ir import dims as D
from netdsl.passes.constraints import Constraint, solve

CROSSED = """\
network T {
    input x: f32[N, 3, H, W]
    output y = center_crop(transpose(x -> MaxPool2d(2), 2, 3), like = x)
}
"""

PADDED = """\
block DoubleConv(c: int) {
    Conv2d(c, 3, padding = 1)
    ReLU
}
block Level(c: int, depth: int) (x) -> y {
    skip = x -> enc: DoubleConv(c)
    if depth == 0 { return skip }
    up = skip -> MaxPool2d(2) -> inner: Level(2 * c, depth - 1) -> up: ConvTranspose2d(c, 2, stride = 2)
    return concat(center_crop(skip, like = up), up, dim = 1) -> dec: DoubleConv(c)
}
network FCN(depth: int = 2) {
    input image: f32[N, 1, H, W]
    output mask = image -> body: Level(4, depth) -> head: Conv2d(2, 1)
}
"""

TWO_INPUTS = """\
network Two {
    input x: f32[N, 2, H, W]
    input w: f32[N, 2, W, H]
    output y = x + w
}
"""


# ---- the checker: constraints over several symbols are solved together --------------------

def test_relations_unsatisfiable_together_are_an_error():
    with pytest.raises(E.ShapeError) as info:
        netdsl.loads(CROSSED, name="t.net").summary()
    err = info.value
    assert err.header() == (
        "t.net:3:16: error: center_crop: dim 3: cannot crop H // 2 to the larger W: no sizes of "
        "input dims H and W satisfy H // 2 - W ≥ 0 together with W // 2 - H ≥ 0")
    assert err.notes == ("W // 2 - H ≥ 0 is required by center_crop: dim 2: cannot crop W // 2 to "
                         "the larger H at t.net:3:16",)


def test_relations_satisfiable_together_are_reported():
    src = ("network T { input x: f32[N, 3, H, W]\n"
           " output y = center_crop(transpose(x, 2, 3), like = x -> MaxPool2d(2)) }")
    assert netdsl.loads(src).summary()["constraints"] == [
        "H ≥ 2", "W ≥ 2", "-(H // 2) + W ≥ 0", "-(H // 2) + W ≡ 0 (mod 2)", "-(W // 2) + H ≥ 0",
        "-(W // 2) + H ≡ 0 (mod 2)"]


def _size_rules():
    from netdsl.passes import size_rules     # imported here: each test fails on its own without it
    return size_rules


def _c(kind, a, b, r=0):
    return Constraint(kind, a, b, r, f"rule {kind}", None, ())


def test_three_symbols_are_checked_jointly():
    """H = W, W = K and K = H + 1: each pair is satisfiable, the three together are not."""
    H, W, K = D.sym("H"), D.sym("W"), D.sym("K")
    bounds = [_c("ge", 200, s) for s in (H, W, K)]          # small masks: an exact joint search
    relations = [_c("eq", H, W), _c("eq", W, K), _c("eq", K, D.add(H, 1))]
    with pytest.raises(E.ShapeError) as info:
        solve(bounds + relations, ["H", "W", "K"])
    assert info.value.message == ("rule eq: no sizes of input dims H and K and W satisfy K = H + 1 "
                                  "together with H = W, W = K")
    masks = solve(bounds + relations[:2], ["H", "W", "K"])   # without the third: fine
    assert masks["H"][1:201].all()


def test_a_group_too_large_to_enumerate_falls_back_quickly():
    H, W, K = D.sym("H"), D.sym("W"), D.sym("K")
    t0 = time.perf_counter()
    solve([_c("eq", H, W), _c("eq", W, K), _c("ge", D.add(K, H), 10)], ["H", "W", "K"])
    assert time.perf_counter() - t0 < 30     # a blow-up takes minutes; 30 s spares a loaded machine


def test_an_unsatisfiable_pair_is_found_fast_enough():
    t0 = time.perf_counter()
    with pytest.raises(E.ShapeError):
        netdsl.loads(CROSSED).summary()
    assert time.perf_counter() - t0 < 30     # a blow-up takes minutes; 30 s spares a loaded machine


# ---- the rules the artefacts check --------------------------------------------------------

def test_rules_drop_what_always_holds_and_what_others_imply():
    size_rules = _size_rules()
    graph = netdsl.loads(PADDED).graph
    rules = size_rules.size_rules(graph)
    assert len(graph.constraints) > 2 * len(rules)
    assert [r.relation for r in rules] == [
        "H // 2 - 2 * (H // 4) ≡ 0 (mod 2)", "W // 2 - 2 * (W // 4) ≡ 0 (mod 2)",
        "-4 * (H // 4) + H ≡ 0 (mod 2)", "-4 * (W // 4) + W ≡ 0 (mod 2)"]
    resnet_like = "network R { input x: f32[N, 3, H, W]\n output y = x -> Conv2d(4, 3, stride = 2, padding = 1) }"
    assert size_rules.size_rules(netdsl.loads(resnet_like).graph) == []


@pytest.mark.parametrize("text, expected", [
    ("(H - 1) // 2 + 1", 64), ("-4 * (H // 4) + H", 0), ("H * W // 3", 1365), ("-H", -128), ("7", 7)])
def test_expression_format(text, expected):
    size_rules = _size_rules()
    assert size_rules.evaluate(text, {"H": 128, "W": 32}) == expected


@pytest.mark.parametrize("text", ["__import__('os')", "H ** 2", "H / 2", "H.real", "f(H)", "1.5", "'a'",
                                  "H if W else 1", "H; W", ""])
def test_expression_format_rejects_anything_else(text):
    size_rules = _size_rules()
    with pytest.raises(size_rules.RecordError):
        size_rules.evaluate(text, {"H": 1, "W": 1})


# ---- the torch module ------------------------------------------------------------------------

def test_torch_module_rejects_sizes_the_checker_rejects():
    torch = pytest.importorskip("torch")
    net = netdsl.loads(PADDED, name="fcn.net")
    assert net.constraints == ["H ≡ 0 (mod 4), H ≥ 4", "W ≡ 0 (mod 4), W ≥ 4"]
    model = net.to_torch().eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 2, 32, 32)
        with pytest.raises(ValueError) as info:
            model(torch.randn(1, 1, 33, 32))
    message = str(info.value)
    assert message.startswith("FCN: input sizes do not fit: -4 * (H // 4) + H ≡ 0 (mod 2) does not hold "
                              "(center_crop: dim 2: cropping H to 4 * (H // 4) leaves an odd margin")
    assert "at fcn.net:9:19" in message
    assert "input sizes that work: H ≡ 0 (mod 4), H ≥ 4; W ≡ 0 (mod 4), W ≥ 4" in message
    assert message.endswith("where H is dim 2 of image")


def test_torch_module_checks_a_symbol_shared_by_two_inputs():
    torch = pytest.importorskip("torch")
    model = netdsl.loads(TWO_INPUTS).to_torch()
    assert model(torch.ones(1, 2, 3, 3), torch.ones(1, 2, 3, 3)).shape == (1, 2, 3, 3)
    with pytest.raises(ValueError, match="H = W does not hold"):
        model(torch.ones(1, 2, 3, 5), torch.ones(1, 2, 5, 3))
    with pytest.raises(ValueError, match="H is dim 2 of x and dim 3 of w, which must be equal"):
        model(torch.ones(1, 2, 3, 3), torch.ones(1, 2, 3, 4))


def test_size_checks_stay_compilable_and_exportable():
    torch = pytest.importorskip("torch")
    model = netdsl.loads(PADDED, depth=1).to_torch().eval()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        for size in (16, 24):        # the second size recompiles with dynamic sizes
            x = torch.randn(1, 1, size, size)
            torch.testing.assert_close(compiled(x), model(x))
        with pytest.raises(Exception, match="input sizes do not fit"):
            compiled(torch.randn(1, 1, 17, 16))
    dims = {"image": {0: torch.export.Dim("N", max=8), 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}}
    ep = torch.export.export(model, (torch.randn(2, 1, 16, 16),), dynamic_shapes=dims)
    x = torch.randn(1, 1, 32, 20)
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), model(x))
        with pytest.raises(Exception):
            ep.module()(torch.randn(1, 1, 31, 20))



def test_size_checked_module_exports_with_the_torchscript_exporter(tmp_path):
    """torch.onnx.export(dynamo=False) traces forward(): its sizes are tensors there, which
    torch._check_with refused ("cond must be a bool"), so no checked module could be exported.
    The checks now step aside while tracing, and still run in eager mode."""
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    model = netdsl.loads(PADDED, depth=1).to_torch().eval()
    x = torch.randn(1, 1, 16, 16)
    path = tmp_path / "traced.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["image"], opset_version=17, dynamo=False)
    got = ort.InferenceSession(str(path)).run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert abs(want).max() > 0
    assert abs(got - want).max() < 1e-5
    with pytest.raises(ValueError, match="input sizes do not fit"):
        model(torch.randn(1, 1, 17, 16))

# ---- the ONNX file and `netdsl run` -----------------------------------------------------------

def test_onnx_metadata_records_the_rules():
    size_rules = _size_rules()
    proto = netdsl.loads(PADDED, name="fcn.net").to_onnx()
    meta = {p.key: p.value for p in proto.metadata_props}
    record = json.loads(meta["netdsl.constraints"])
    assert record["format"] == 1
    assert record["symbols"] == {"N": [["image", 0]], "H": [["image", 2]], "W": [["image", 3]]}
    assert record["sizes_that_work"] == ["H ≡ 0 (mod 4), H ≥ 4", "W ≡ 0 (mod 4), W ≥ 4"]
    assert record["constraints"][2] == {
        "kind": "mod", "a": "-4 * (H // 4) + H", "b": "2", "r": 0, "relation": "-4 * (H // 4) + H ≡ 0 (mod 2)",
        "message": "center_crop: dim 2: cropping H to 4 * (H // 4) leaves an odd margin, so the crop cannot "
                   "be centred", "at": "fcn.net:9:19"}
    assert size_rules.violation(record, {"image": (1, 1, 128, 64)}) is None
    problem = size_rules.violation(record, {"image": (1, 1, 128, 66)}, "fcn.onnx")
    assert problem.startswith("fcn.onnx: input sizes do not fit: W // 2 - 2 * (W // 4) ≡ 0 (mod 2) does not hold")
    assert problem.endswith("; got W = 66")


def _run(argv, capfd):
    from netdsl.cli import main
    code = main(argv)
    out, err = capfd.readouterr()
    return code, out, err


def test_run_checks_recorded_sizes_before_running_an_onnx_file(tmp_path, capfd):
    pytest.importorskip("onnxruntime")
    spec, model = tmp_path / "fcn.net", tmp_path / "fcn.onnx"
    spec.write_text(PADDED)
    assert _run(["compile", str(spec), "--target", "onnx", "-o", str(model)], capfd)[0] == 0
    code, out, err = _run(["run", str(model), "--input", "image=1x1x129x129", "--repeat", "1"], capfd)
    assert code == 1
    assert err.startswith(f"netdsl: error: {model}: input sizes do not fit: ")
    assert "input sizes that work: H ≡ 0 (mod 4), H ≥ 4; W ≡ 0 (mod 4), W ≥ 4; got H = 129" in err
    assert out == ""
    code, out, err = _run(["run", str(model), "--input", "image=1x1x128x128", "--repeat", "1"], capfd)
    assert code == 0, err
    assert "output mask: [1, 2, 128, 128]" in out


def test_run_of_a_spec_reports_the_located_constraint(tmp_path, capfd):
    pytest.importorskip("onnxruntime")
    spec = tmp_path / "fcn.net"
    spec.write_text(PADDED)
    code, out, err = _run(["run", str(spec), "--input", "image=1x1x129x129"], capfd)
    assert code == 1
    assert err.startswith(f"{spec}:9:19: error: center_crop: dim 2: cropping 129 to 128 leaves an odd margin")
    assert "note: input sizes that work: H ≡ 0 (mod 4), H ≥ 4" in err


def test_onnxruntime_errors_come_without_colour_codes(tmp_path, capfd):
    pytest.importorskip("onnxruntime")
    import onnx
    from onnx import TensorProto, helper
    # an .onnx made elsewhere, with no recorded sizes: onnxruntime fails while running it
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["c"])], "g",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, "H"]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, "W"])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, "H"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "add.onnx"
    onnx.save(model, path)
    code, out, err = _run(["run", str(path), "--input", "a=1x3", "--input", "b=1x4"], capfd)
    assert code == 1
    assert "\x1b" not in err
    # `run` fixes H and W when it opens the session, so onnxruntime now refuses the sizes there
    assert err.startswith(f"netdsl: error: onnxruntime cannot load {path}: ") and "Incompatible dimensions" in err


def test_ort_message_strips_colour_codes_and_status_prefix():
    from netdsl.cli import _ort_message
    e = RuntimeError("\x1b[1;31m[ONNXRuntimeError] : 1 : FAIL : boom\x1b[m\nmore")
    assert _ort_message(e) == "boom"
