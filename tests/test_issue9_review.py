"""Regressions found reviewing issue 9's language growth and ops: each test failed before its fix.

- window_partition / window_departition on a symbolic channel count: the ONNX emitters took
  int() of the size (an internal error, a Python traceback);
- a rank-0 `param p: f32[] = constant(2)` passed `check`, then broke both targets (torch source
  `torch.full((,), 2.0)`, an unlocated ONNX weight error): now a located error;
- `c = s[0]` then `[ Conv2d(c, 1) ]` (a forgotten ';') said only "unknown name 'c'";
- a name used twice by a block spliced twice gave no instantiation trace (both "uses" were the
  same line of the block);
- LayerNorm2d(elementwise_affine = false) below opset 17 left two unused initializers;
- `freeze` could not name a hyphenated layer (`block1-0`, RegNet's keys): a syntax error.
"""
from __future__ import annotations

import numpy as np
import pytest

import netdsl
from netdsl import errors as E
from netdsl.errors import NetDSLError, Source
from netdsl.frontend import fastparse
from netdsl.frontend import parser as P


def fail(src: str) -> NetDSLError:
    with pytest.raises(NetDSLError) as info:
        netdsl.loads(src, name="t.net").graph
    err = info.value
    assert err.span is not None and err.span.source.name == "t.net", err.render()
    return err


@pytest.mark.parametrize("opset", [13, 17])
def test_window_partition_with_a_symbolic_channel_count(opset):
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    net = netdsl.loads("""network W {
    input x: f32[N, C, H, W]
    t = window_partition(x, 2)
    output y = window_departition(t * 3 - (t -> ReLU), 2, like = x)
    output z = t
}""")
    model = net.to_torch().eval()
    proto = net.to_onnx(opset=opset)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", "C", "H", "W"]
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for shape in ((2, 3, 4, 6), (1, 5, 2, 8)):          # two channel counts through one file
        x = rng.standard_normal(shape, dtype=np.float32)
        with torch.no_grad():
            want = [t.numpy() for t in model(torch.from_numpy(x))]
        got = sess.run(None, {"x": x})
        b, c, h, w = shape
        assert want[1].shape == (b, (h // 2) * (w // 2), 4, c)
        for g, t in zip(got, want):
            assert g.shape == t.shape and np.abs(t).max() > 0.1
            np.testing.assert_allclose(g, t, rtol=1e-5, atol=1e-5)
        # the windows really are x's 2 x 2 patches, channels last
        np.testing.assert_array_equal(want[1][:, 0, :, :], x[:, :, :2, :2].reshape(b, c, 4).transpose(0, 2, 1))


@pytest.mark.parametrize("init", ["constant(2)", "zeros()", "normal(0.1)"])
def test_a_rank0_param_is_a_located_error(init):
    err = fail(f"network N {{\n    input x: f32[N, 3]\n    param p: f32[] = {init}\n    output y = x * p\n}}")
    assert isinstance(err, E.ValueRangeError)
    assert (err.span.line, err.span.col) == (3, 5)
    assert "at least one dim" in err.message and "f32[1]" in err.message
    # one dim is fine
    net = netdsl.loads("network N {\n    input x: f32[N, 3]\n    param p: f32[1] = constant(2)\n"
                       "    output y = x * p\n}")
    assert net.param_count() == 1


def test_a_forgotten_semicolon_before_a_group_that_uses_the_name():
    err = fail("""network N {
    input x: f32[N, 3, H, W]
    output y = x -> f: [
        for s in [[4, 1]] {
            c = s[0]
            [ Conv2d(c, 1) ]
        }
    ]
}""")
    assert isinstance(err, E.NameLookupError)
    assert (err.span.line, err.span.col) == (6, 22)
    assert "unknown name 'c'" in err.message and "end the assignment with ';'" in err.message
    assert "end the assignment with ';'" in err.render()
    # an unknown name inside an index on the same line gets no such advice
    err = fail("network N {\n    input x: f32[N, 3]\n    v = [1, 2][k]\n    output y = x\n}")
    assert "unknown name 'k'" in err.message and ";" not in err.message


def test_a_name_clash_from_splicing_twice_shows_the_splice():
    err = fail("""block P() {
    param s: f32[1] = constant(2.0)
    y = x * s
}
network N {
    input x: f32[N, 3, H, W]
    output y = x -> f: [ ...P  ...P ]
}""")
    assert "the name 's' is already used" in err.message
    # the trace names the second splice (its block name's column)
    assert [(name, span.line, span.col) for name, span in err.trace] == [("P", 7, 35)]
    assert "in block P" in err.render()


@pytest.mark.parametrize("layer,dims", [("LayerNorm2d", "N, 4, H, W"), ("LayerNorm", "N, 5, 4")])
def test_layernorm_without_affine_below_opset_17_leaves_no_unused_initializers(layer, dims):
    """Also LayerNorm's, the same defect in the older twin, mended with one shared emitter part."""
    net = netdsl.loads(f"network N {{\n    input x: f32[{dims}]\n"
                       f"    output y = x -> {layer}(elementwise_affine = false)\n}}")
    for opset in (13, 17):
        g = net.to_onnx(opset=opset).graph
        used = {i for n in g.node for i in n.input}
        assert [t.name for t in g.initializer if t.name not in used] == []
        assert any(n.op_type == ("LayerNormalization" if opset == 17 else "ReduceMean") for n in g.node)


FREEZE = """network N {
    input x: f32[N, 3, H, W]
    y = x -> f: [ a-1: Conv2d(3, 1)  b: Conv2d(3, 1)  block1-0: Conv2d(3, 1)  c-d-2: Conv2d(3, 1) ]
    freeze f.a-1, f.block1-0.weight, f . c - d-2
    output y
}"""


def test_freeze_names_hyphenated_layers():
    net = netdsl.loads(FREEZE)
    layout = net.state_layout()
    assert "f.block1-0.weight" in layout and "f.c-d-2.bias" in layout
    assert net.param_count() == 48 and net.frozen_param_count() == 12 + 9 + 12
    # the fast parser and lark's agree, and the printer writes a path that parses back
    source = Source("t.net", FREEZE)
    fast = fastparse.parse(P._fast_tables(), FREEZE, source, "start", P._ToAST(source))
    ref = P._parse_reference(FREEZE, source, "start")
    assert fast == ref
    (freeze,) = [s for s in ref.items[0].body if type(s).__name__ == "Freeze"]
    assert [p.parts for p in freeze.paths] == [["f", "a-1"], ["f", "block1-0", "weight"], ["f", "c-d-2"]]
    from netdsl.frontend.printer import to_source
    assert "freeze f.a-1, f.block1-0.weight, f.c-d-2" in to_source(ref)
    assert P.parse(to_source(ref)) == ref
    pytest.importorskip("torch")
    model = net.to_torch()
    frozen = sorted(k for k, p in model.named_parameters() if not p.requires_grad)
    assert frozen == ["f.a-1.bias", "f.a-1.weight", "f.block1-0.weight", "f.c-d-2.bias", "f.c-d-2.weight"]
    # a path naming nothing is still an error at the path
    err = fail(FREEZE.replace("f.a-1,", "f.a-2,"))
    assert isinstance(err, E.NameLookupError) and (err.span.line, err.span.col) == (4, 12)


def test_anonymous_group_outside_a_group_says_where_groups_stand():
    # the parser: a '[' where a { } body's statement starts
    for body, where in (("    [ Conv2d(4, 1) ]", (3, 5)), ("    if true { [ ReLU ] }", (3, 15))):
        err = fail(f"network N {{\n    input x: f32[N, 3, H, W]\n{body}\n    output y = x\n}}")
        assert isinstance(err, E.ParseError) and (err.span.line, err.span.col) == where
        assert "stands only inside a group" in err.message and "g: [ ... ]" in err.message
    # the elaborator: `y = x` then `[ ReLU ]` in a { } body reads as x[ReLU]; ';' would not parse
    # there, so the advice is to name the group, while inside a group it is the ';'
    err = fail("network N {\n    input x: f32[N, 3, H, W]\n    y = x\n    [ ReLU ]\n    output y\n}")
    assert "a tensor cannot be indexed" in err.message and "stands only inside a group" in err.message
    assert "';'" not in err.message
    err = fail("network N {\n    input x: f32[N, 3, H, W]\n    output y = x -> f: [ t = x\n [ ReLU ] ]\n}")
    assert "a tensor cannot be indexed" in err.message and "end the assignment with ';'" in err.message


def test_a_group_right_after_a_pipeline_in_a_group_gets_the_semicolon_advice():
    # `q = x -> ReLU` cannot be indexed, so the '[' is a syntax error: inside a group the advice is
    # the ';' (not "anonymous groups stand only inside a group", which it is)
    err = fail("network N {\n    input x: f32[N, 3, H, W]\n    output y = x -> f: [ q = x -> ReLU\n [ ReLU ] ]\n}")
    assert isinstance(err, E.ParseError) and (err.span.line, err.span.col) == (4, 2)
    assert "end that statement with ';'" in err.message and "only inside a group" not in err.message
    assert len(netdsl.loads("network N {\n    input x: f32[N, 3, H, W]\n"
                            "    output y = x -> f: [ q = x -> ReLU;\n [ ReLU ] ]\n}").graph.nodes) == 2
