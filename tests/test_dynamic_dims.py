"""Data-dependent dims (dims.Dyn): arithmetic and printing, constraints that mention one are
dropped while the others are still solved and enforced, unique names per graph, how `check`,
`summary` and the ONNX file show them, and the ops that make them (topk) or carry them (take).
The numeric torch <-> onnxruntime parity of topk and take is in test_ops_parity."""
from __future__ import annotations

import json

import numpy as np
import pytest

import netdsl
from netdsl.cli import main
from netdsl.errors import NetDSLError, ShapeError
from netdsl.ir import dims as D
from netdsl.passes.constraints import ShapeCtx

# A network whose topk makes K (bound 8) in the H position; a later reshape would need
# K % 4 == 0 (dropped: K is known at run time only), while the pool-and-upsample residual
# needs H and W even (kept, solved, enforced).
DYN = """\
network Dyn {
    input x: f32[N, 3, H, W]
    v, i = x -> sel: topk(k = 8, dim = 2)
    output blocks = v -> permute(dims = [0, 1, 3, 2]) -> reshape(shape = [0, 0, 0, -1, 4])
    output rows = i
    output z = x + (x -> MaxPool2d(2) -> resize(scale = 2))
}
"""


@pytest.fixture(scope="module")
def dyn():
    return netdsl.loads(DYN)


# ---- the Dyn dim itself ------------------------------------------------------------------------
def test_dyn_arithmetic_and_printing():
    k = D.dyn("K", 5)
    (atom,) = D.dyn_atoms(k)
    assert isinstance(atom, D.Dyn) and atom.bound == 5 and str(k) == "K"
    e = D.add(D.mul(k, 2), 1)
    assert D.fmt(e) == "2 * K + 1" and D.fmt_shape((k, 4)) == "[K, 4]"
    assert D.fmt(D.floordiv(D.add(k, D.sym("H")), 2)) == "(H + K) // 2"    # sorted as symbols
    assert D.same(D.sub(e, 1), D.mul(k, 2)) is True          # canonical, as symbols are
    assert D.same(k, D.dyn("K2", 5)) is None
    assert D.is_dynamic(e) and D.is_dynamic(D.mul(k, D.sym("H")))
    assert not D.is_dynamic(D.sym("H")) and not D.is_dynamic(7)
    assert D.evaluate(e, {"K": 3}) == 7                       # evaluates once the run knows K
    # substituting input symbols keeps a Dyn a Dyn (not a plain symbol of the same name)
    sub = D.substitute(D.add(k, D.sym("H")), {"H": 4})
    assert D.fmt(sub) == "K + 4" and D.is_dynamic(sub)
    # a symbol and a Dyn with one name are different atoms
    assert D.same(D.sym("K"), k) is None


def test_shape_ctx_makes_unique_names_and_drops_constraints():
    sink, dynamic = [], {}
    ctx = ShapeCtx("op", None, (), sink, dynamic, taken={"K"})
    a, b = ctx.dynamic("K", bound=3), ctx.dynamic("K", bound=D.mul(D.sym("N"), 100))
    assert (str(a), str(b)) == ("K2", "K3") and list(dynamic) == ["K2", "K3"]
    assert D.fmt(dynamic["K3"].bound) == "100 * N" and dynamic["K2"].op == "op"
    ctx.require_mod(a, 4, 0, "never recorded")
    ctx.require_eq(D.add(a, 1), 2, "never an error")
    ctx.require_ge(D.add(D.sym("H"), b), 10**9, "never an error")
    assert sink == []
    ctx.require_mod(D.sym("H"), 4, 0, "kept")          # one over input symbols only is kept
    assert [c.message for c in sink] == ["op: kept"]
    with pytest.raises(ShapeError, match="^op: concrete ones are still checked$"):
        ctx.require_eq(1, 2, "concrete ones are still checked")
    with pytest.raises(ValueError, match="identifier"):
        ctx.dynamic("not a name")


# ---- constraints --------------------------------------------------------------------------------
def test_constraints_on_dyn_are_dropped_and_the_rest_still_solved(dyn):
    g = dyn.graph
    assert list(g.dynamic) == ["K"] and g.dynamic["K"].bound == 8
    shapes = {name: D.fmt_shape(v.shape) for name, v in g.outputs}
    assert shapes == {"blocks": "[N, 3, W, K // 4, 4]", "rows": "[N, 3, K, W]", "z": "[N, 3, H, W]"}
    assert g.constraints and not any(D.is_dynamic(c.a) or D.is_dynamic(c.b) for c in g.constraints)
    assert dyn.constraints == ["H ≡ 0 (mod 2), H ≥ 2", "W ≡ 0 (mod 2), W ≥ 2"]
    from netdsl.passes.size_rules import to_record
    record = json.dumps(to_record(g))
    assert '"H"' in record and "K" not in record             # the run-time checks: no K


def test_real_input_constraints_still_fail(dyn):
    # concrete sizes: K is then min(8, H) = 8, known, and H = 9 (odd) breaks the residual
    with pytest.raises(ShapeError, match=r"^<string>:6:\d+: error: add: dim 2 does not match"):
        dyn.summary(inputs={"x": (1, 3, 9, 6)})
    ok = dyn.with_inputs({"x": (1, 3, 8, 4)}).graph
    assert [tuple(v.shape) for _, v in ok.outputs] == [(1, 3, 4, 2, 4), (1, 3, 8, 4), (1, 3, 8, 4)]
    assert ok.dynamic == {}
    # with K known, its constraint is a real one: min(8, 6) = 6 does not divide by 4
    with pytest.raises(ShapeError, match=r"^<string>:4:\d+: error: reshape: .* do not divide by 4"):
        dyn.summary(inputs={"x": (1, 3, 6, 4)})
    # and a constraint that no size satisfies, in a graph with a Dyn, is the usual located error
    bad = DYN.replace("output z = x + (x -> MaxPool2d(2) -> resize(scale = 2))",
                      "output z = center_crop(x, like = x -> Conv2d(3, 2))")
    with pytest.raises(ShapeError, match=r"^<string>:6:16: error: center_crop: .* odd margin"):
        netdsl.loads(bad).summary()


def test_dyn_sizes_meeting_are_left_to_run_time():
    net = netdsl.loads("""network M {
    input x: f32[N, 6]
    a, i = topk(x, k = 4, dim = 0)
    b, j = topk(x, k = 3, dim = 0)
    output y = a + b
}""")
    assert [str(s) for s in net.graph.dynamic] == ["K", "K2"]     # two topk's: K and K2
    assert D.fmt_shape(net.graph.outputs[0][1].shape) == "[K, 6]"     # the first operand's
    assert net.constraints == []


def test_torch_guards_ignore_dyn(dyn):
    guards = [line.strip() for line in dyn.torch_source().splitlines() if "_check_with" in line]
    conditions = [line.split(", lambda")[0] for line in guards]
    assert conditions == ["torch._check_with(ValueError, x.shape[2] == 2 * (x.shape[2] // 2)",
                          "torch._check_with(ValueError, x.shape[3] == 2 * (x.shape[3] // 2)"]
    assert not any("K" in line for line in guards)


# ---- names ----------------------------------------------------------------------------------------
def test_names_are_unique_per_graph_and_avoid_input_symbols():
    net = netdsl.loads("""network U {
    input x: f32[N, K, L]
    a, i = topk(x, k = 2)
    b, j = topk(x, k = 3, dim = 1)
    c, m = topk(a, k = 1, dim = 0)
    output y = take(b, select(select(j, 2, 0), 0, 0))
    output w = c
}""")
    assert list(net.graph.dynamic) == ["K2", "K3"]          # K is an input symbol; k = 1: static
    assert [D.fmt_shape(v.shape) for _, v in net.graph.outputs] == ["[K3, K3, L]", "[1, K, K2]"]
    # each graph counts afresh
    assert list(netdsl.loads(DYN).graph.dynamic) == ["K"]


def test_an_input_symbol_may_not_reuse_a_dyn_name():
    with pytest.raises(NetDSLError, match=r"<string>:4:\d+: .*'K'.*data-dependent"):
        netdsl.loads("""network V {
    input x: f32[N, 5]
    v, i = topk(x, k = 2, dim = 0)
    input z: f32[K, 5]
    output y = v + z
}""")


# ---- check and summary ---------------------------------------------------------------------------
def test_summary_lists_dyn_with_bound_and_origin(dyn, tmp_path, capsys):
    s = dyn.summary()
    assert s["dynamic_dims"] == [{"name": "K", "bound": 8, "op": "topk", "path": "sel"}]
    assert "data-dependent size K ≤ 8: topk at sel, known at run time" in dyn.summary_text()
    spec = tmp_path / "dyn.net"
    spec.write_text(DYN)
    assert main(["summary", str(spec), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dynamic_dims"] == s["dynamic_dims"]
    assert {"network", "inputs", "outputs", "params", "macs", "constraints", "layers"} <= set(out)
    assert main(["check", str(spec)]) == 0
    text = capsys.readouterr().out
    assert "outputs blocks [N, 3, W, K // 4, 4], rows [N, 3, K, W]" in text
    assert "input sizes that work: H ≡ 0 (mod 2), H ≥ 2" in text
    assert "data-dependent size K ≤ 8: topk at sel, known at run time" in text
    # MACs that depend on one say so (no --input could fix them)
    cols = netdsl.loads("""network C {
    input x: f32[N, C, 16]
    s, keep = x -> best: topk(k = 4, dim = 1)
    output rows = s -> head: Linear(8)
}""")
    assert "MACs per sample: 128 * K, with K known at run time" in cols.summary_text()
    # a network without one says nothing of them
    plain = netdsl.loads("network P { input x: f32[N, 3]  output y = x -> Linear(2) }")
    assert plain.summary()["dynamic_dims"] == [] and "data-dependent" not in plain.summary_text()


# ---- ONNX --------------------------------------------------------------------------------------------
def test_onnx_writes_dyn_as_dim_param_and_int64_indices(dyn):
    import onnx
    from onnx import TensorProto
    model = dyn.to_onnx()
    onnx.checker.check_model(model, full_check=True)

    def dims(vi):
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
    outs = {o.name: o for o in model.graph.output}
    assert dims(outs["rows"]) == ["N", 3, "K", "W"]
    assert outs["rows"].type.tensor_type.elem_type == TensorProto.INT64
    assert dims(outs["blocks"]) == ["N", 3, "W", "K // 4", 4]
    assert outs["blocks"].type.tensor_type.elem_type == TensorProto.FLOAT
    inner = {v.name: v for v in model.graph.value_info}
    assert dims(inner["v"]) == ["N", 3, "K", "W"] and inner["v"].type.tensor_type.elem_type == TensorProto.FLOAT
    meta = {p.key: p.value for p in model.metadata_props}
    assert "K" not in meta["netdsl.constraints"]


def test_onnx_runs_with_dyn_outputs_at_two_sizes(dyn):
    ort = pytest.importorskip("onnxruntime")
    torch = pytest.importorskip("torch")
    weights = dyn.init_weights()
    sess = ort.InferenceSession(dyn.to_onnx(weights).SerializeToString(), providers=["CPUExecutionProvider"])
    module = dyn.to_torch(weights).eval()
    rng = np.random.default_rng(0)
    for shape, k in (((2, 3, 12, 4), 8), ((1, 3, 4, 6), 4)):      # K = min(8, H)
        x = rng.standard_normal(shape).astype(np.float32)
        got = sess.run(None, {"x": x})
        with torch.no_grad():
            ref = [t.numpy() for t in module(torch.from_numpy(x))]
        assert got[1].shape == ref[1].shape == (shape[0], 3, k, shape[3]) and got[1].dtype == np.int64
        assert got[0].shape == (shape[0], 3, shape[3], k // 4, 4)
        for a, b in zip(got, ref):
            assert a.dtype == b.dtype and np.allclose(a, b, atol=1e-5)
        assert np.ptp(got[1]) > 0                                    # not a constant


def test_run_never_asks_for_a_dyn_size(dyn, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    spec = tmp_path / "dyn.net"
    spec.write_text(DYN)
    assert main(["run", str(spec), "--input", "x=1x3x4x6", "--repeat", "1"]) == 0
    assert "output rows: [1, 3, 4, 6] int64" in capsys.readouterr().out
    model = tmp_path / "dyn.onnx"
    assert main(["compile", str(spec), "--target", "onnx", "-o", str(model)]) == 0
    capsys.readouterr()
    assert main(["run", str(model), "--input", "x=2x3x10x4", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "output rows: [2, 3, 8, 4] int64" in out and "output blocks: [2, 3, 4, 2, 4] float32" in out


# ---- topk / take errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("body,message", [
    ("v, i = topk(x, k = 0)\n    output y = v", r"topk: 'k' must be positive, got 0"),
    ("v, i = topk(x, k = 2, dim = 4)\n    output y = v", r"topk: dim=4 is out of range for a rank-4 input"),
    ("v, i = topk(x, k = 2, dim = -5)\n    output y = v", r"topk: dim=-5 is out of range"),
    ("output y = take(x, x)", r"take: indices must be a rank-1 tensor .* got rank 4"),
    ("output y = take(x, select(select(select(x, 1, 0), 1, 0), 1, 0))",
     r"take: indices must be int64 \(as topk's indices are\), got float32"),
    ("v, i = topk(x, k = 2)\n    output y = take(x, i)", r"take: indices must be a rank-1 tensor"),
    ("v, i = topk(x, k = 3)\n    output y = v -> Linear(2)",
     r"must be known at compile time, but it is 'K', a size known only at run time"),
])
def test_topk_take_errors_are_located(body, message):
    text = f"network E {{\n    input x: f32[N, 3, H, W]\n    {body}\n}}"
    with pytest.raises(NetDSLError, match=r"^<string>:[34]:\d+: error: .*" + message) as e:
        netdsl.loads(text).summary()
    assert "^" in e.value.render()


def test_topk_sizes():
    net = netdsl.loads("""network S {
    input x: f32[N, 3, H, 10]
    a, i = topk(x, k = 5, dim = 1)
    b, j = topk(x, k = 4)
    c, m = topk(x, k = 1, dim = 2)
    output y = a
    output z = b
    output w = c
}""")
    shapes = [D.fmt_shape(v.shape) for _, v in net.graph.outputs]
    assert shapes == ["[N, 3, H, 10]", "[N, 3, H, 4]", "[N, 3, 1, 10]"]     # static: min(k, size)
    assert net.graph.dynamic == {}
    assert [v.dtype for n in net.graph.nodes for v in n.outputs] == ["float32", "int64"] * 3
