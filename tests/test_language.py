"""The language's capabilities, one behaviour per test (shapes, names, values)."""
import pytest

import netdsl
from netdsl.errors import NetDSLError


def graph(text, network=None, **params):
    return netdsl.loads(text, network=network, name="t.net", **params).graph


def shapes(g):
    return {n: list(v.shape) for n, v in g.outputs}


def paths(g):
    return [n.path for n in g.nodes]


def test_layers_infer_input_channels_and_chain():
    g = graph("""network T { input x: f32[2, 3, 32, 32]
        output y = x -> conv: Conv2d(8, 3, padding = 1) -> ReLU -> MaxPool2d(2) -> Flatten -> fc: Linear(10) }""")
    assert shapes(g) == {"y": [2, 10]}
    conv = g.nodes[0]
    assert conv.attrs["in_channels"] == 3
    assert conv.params["weight"].shape == (8, 3, 3, 3)
    assert g.nodes[-1].params["weight"].shape == (10, 8 * 16 * 16)


def test_named_tensors_dag_and_multi_input_ops():
    g = graph("""network T { input x: f32[1, 4, 16, 16]
        a = x -> Conv2d(4, 3, padding = 1)
        b = x -> Conv2d(4, 1)
        s = a + b
        m = a * b
        c = concat(s, m, x, dim = 1)
        small = c -> MaxPool2d(2)
        up = resize(small, scale = 2, mode = 'bilinear', align_corners = true)
        like = resize(small, like = c)
        cropped = center_crop(c, like = small)
        output y = up + like
        output z = cropped }""")
    assert shapes(g) == {"y": [1, 12, 16, 16], "z": [1, 12, 8, 8]}
    assert [n.op for n in g.nodes].count("add") == 2


def test_multi_output_block_and_tuple_assign():
    g = graph("""
    block Split(c: int) (x) -> (left, right) {
        left = x -> Conv2d(c, 1)
        right = x -> Conv2d(2 * c, 1)
    }
    network T { input x: f32[1, 3, 8, 8]
        l, r = x -> parts: Split(4)
        output a = l
        output b = r }""")
    assert shapes(g) == {"a": [1, 4, 8, 8], "b": [1, 8, 8, 8]}
    assert paths(g) == ["parts.conv2d", "parts.conv2d_1"]


def test_multi_input_block_with_tuple_head():
    g = graph("""
    block Fuse() (a, b) -> y {
        y = concat(a, b) -> Conv2d(4, 1)
    }
    network T { input p: f32[1, 2, 8, 8]
        input q: f32[1, 3, 8, 8]
        output y = (p, q) -> fuse: Fuse() }""")
    assert shapes(g) == {"y": [1, 4, 8, 8]}
    assert g.nodes[-1].attrs["in_channels"] == 5


def test_named_instances_groups_and_loops_set_state_dict_paths():
    g = graph("""
    block Basic(c: int, stride: int = 1) {
        conv1: Conv2d(c, 3, stride = stride, padding = 1, bias = false)
        bn1: BatchNorm2d
        ReLU
    }
    network T(layers: list = [2, 1]) { input x: f32[1, 3, 32, 32]
        for i in range(len(layers)) {
            x = x -> layer{i + 1}: [ for j in range(layers[i]) { Basic(8 * 2 ** i, stride = (2 if (i > 0 and j == 0) else 1)) } ]
        }
        output y = x -> features: [ Conv2d(4, 1) ReLU Conv2d(2, 1) ] }""")
    names = list(g.state_layout())
    assert names[:3] == ["layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias"]
    assert "layer1.1.conv1.weight" in names and "layer2.0.conv1.weight" in names
    assert "features.0.weight" in names and "features.2.weight" in names
    assert "features.1.weight" not in names
    assert shapes(g) == {"y": [1, 2, 16, 16]}


def test_unnamed_layers_get_readable_names_that_avoid_explicit_ones():
    g = graph("""network T { input x: f32[1, 3, 8, 8]
        x = x -> Conv2d(4, 1) -> ReLU -> Conv2d(4, 1)
        output y = x -> conv2d: Conv2d(2, 1) }""")
    assert paths(g) == ["conv2d_1", "relu", "conv2d_2", "conv2d"]


def test_block_parameters_typed_defaults_and_higher_order_blocks():
    g = graph("""
    block Unit(c: int, act: block = ReLU) { conv: Conv2d(c, 3, padding = 1)  act }
    block Stack(n: int, unit: block, width: int = 4) {
        for i in range(n) { u{i}: unit(width * (i + 1)) }
    }
    network T(k: float = 0.2) { input x: f32[1, 1, 8, 8]
        output y = x -> s: Stack(3, Unit(act = LeakyReLU(k))) }""")
    assert shapes(g) == {"y": [1, 12, 8, 8]}
    leaky = [n for n in g.nodes if n.op == "LeakyReLU"]
    assert len(leaky) == 3 and leaky[0].attrs["negative_slope"] == pytest.approx(0.2)
    assert "s.u2.conv.weight" in g.state_layout()


def test_recursion_with_base_case_and_depth_limit():
    text = """
    block Tower(n: int) {
        conv: Conv2d(4, 1)
        if n > 0 { inner: Tower(n - 1) }
    }
    network T(n: int = 3) { input x: f32[1, 2, 4, 4]
        output y = x -> t: Tower(n) }"""
    g = graph(text)
    assert "t.inner.inner.inner.conv.weight" in g.state_layout()
    with pytest.raises(NetDSLError, match="deeper than 64"):
        graph(text, n=100)


def test_network_specialisation_and_overrides():
    text = """
    network Base(width: int = 4, classes: int = 10) { input x: f32[N, 3, 8, 8]
        output y = x -> Conv2d(width, 1) -> GlobalAvgPool2d -> Flatten -> Linear(classes) }
    network Wide = Base(16)
    network WideFew = Wide(classes = 2)"""
    assert shapes(graph(text, "Wide"))["y"][1] == 10
    g = graph(text, "WideFew")
    assert g.nodes[0].attrs["out_channels"] == 16 and shapes(g)["y"][1] == 2
    assert shapes(graph(text, "Wide", classes=3))["y"][1] == 3


def test_compile_time_expressions():
    g = graph("""network T(xs: list = [1, 2, 3]) { input x: f32[1, 1, 4, 4]
        a = len(xs) * 2 ** 3 - xs[-1] // 2 + 7 % 4
        b = (1.5 if a > 20 else 2.5)
        c = "w" + str(a)
        d = max(xs) + min(1, 2) + int(b) + sum(xs)
        flag = not (a == 0 or false) and true
        output y = x -> Conv2d((a if flag else 1), 1) -> named{c}: Conv2d(d, 1) }""")
    # a = 3 * 8 - 1 + 3 = 26; d = 3 + 1 + 1 + 6 = 11
    assert g.nodes[0].attrs["out_channels"] == 26
    assert g.nodes[1].path == "namedw26" and g.nodes[1].attrs["out_channels"] == 11


def test_shape_queries():
    g = graph("""network T { input x: f32[N, 3, H, W]
        y = x -> Conv2d(8, 3)
        c = y.channels
        output z = concat(y, x -> Conv2d(c * 2, 3), dim = 1) -> Conv2d(x.shape[1], 1)
        output r = y -> Conv2d(len(y.shape), 1) }""")
    z = dict(g.outputs)["z"]
    assert [str(d) for d in z.shape] == ["N", "3", "H - 2", "W - 2"]
    assert dict(g.outputs)["r"].shape[1] == 4


def test_if_elif_else_and_for_over_lists():
    text = """network T(mode: str = "a") { input x: f32[1, 1, 4, 4]
        if mode == "a" { x = x -> Conv2d(2, 1) }
        elif mode == "b" { x = x -> Conv2d(3, 1) }
        else { for c in [5, 6] { x = x -> Conv2d(c, 1) } }
        output y = x }"""
    assert shapes(graph(text))["y"][1] == 2
    assert shapes(graph(text, mode="b"))["y"][1] == 3
    assert shapes(graph(text, mode="c"))["y"][1] == 6


def test_imports_and_standard_library(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "parts.net").write_text("""
    block Pair(c: int) { "Two 1x1 convs."  a: Conv2d(c, 1)  b: Conv2d(c, 1) }""")
    (tmp_path / "main.net").write_text("""import "lib/parts.net"
    network T { input x: f32[1, 1, 4, 4]
        output y = x -> p: Pair(3) }""")
    g = netdsl.load(tmp_path / "main.net").graph
    assert list(g.state_layout())[:2] == ["p.a.weight", "p.a.bias"]


def test_docstrings_reach_the_graph():
    net = netdsl.loads('''network T { "Tiny test network."
        input x: f32[1, 1, 4, 4]
        output y = x -> ReLU }''')
    assert net.graph.doc == "Tiny test network."
    assert "Tiny test network." in net.summary_text()


def test_symbolic_constraints_are_derived():
    net = netdsl.loads("""network T { input x: f32[N, 3, H, W]
        a = x -> MaxPool2d(2) -> MaxPool2d(2)
        output y = concat(x, resize(a, scale = 4), dim = 1) }""")
    assert net.constraints == ["H ≡ 0 (mod 4), H ≥ 4", "W ≡ 0 (mod 4), W ≥ 4"]
    assert net.summary(inputs=(1, 3, 8, 12))["outputs"][0]["shape"] == [1, 6, 8, 12]
    with pytest.raises(NetDSLError) as e:
        net.summary(inputs=(1, 3, 8, 10))
    assert (e.value.line, e.value.col) == (3, 20)
    assert "dim 3" in e.value.message


def test_comments_are_ignored():
    g = graph("""# leading comment
    network T { # after brace
        input x: f32[1, 1, 2, 2]  # trailing
        output y = x -> ReLU # end
    }""")
    assert shapes(g) == {"y": [1, 1, 2, 2]}


def test_own_definitions_shadow_imports_and_blocks_see_their_own_file(tmp_path):
    (tmp_path / "lib.net").write_text("""
    block Unit() { conv: Conv2d(3, 1) }
    block UsesUnit() { u: Unit() }""")
    (tmp_path / "main.net").write_text("""import "lib.net"
    block Unit() { conv: Conv2d(5, 1) }
    network T { input x: f32[1, 1, 4, 4]
        a = x -> mine: Unit()
        output y = x -> theirs: UsesUnit() }""")
    g = netdsl.load(tmp_path / "main.net").graph
    layout = g.state_layout()
    assert layout["mine.conv.weight"].shape[0] == 5
    assert layout["theirs.u.conv.weight"].shape[0] == 3


def test_two_imports_defining_one_name_is_an_error(tmp_path):
    (tmp_path / "a.net").write_text("block U() { ReLU }")
    (tmp_path / "b.net").write_text("block U() { ReLU }")
    (tmp_path / "main.net").write_text('import "a.net"\nimport "b.net"\n'
                                       "network T { input x: f32[1]\n output y = x }")
    with pytest.raises(NetDSLError) as e:
        netdsl.load(tmp_path / "main.net")
    assert (e.value.line, e.value.col) == (2, 1)
    assert "'U' is defined both at" in e.value.message


def test_type_builtin_multiline_docstrings_and_bare_aliases():
    text = '''
    block Pick(v) {
        """Conv with an optional kernel.

        v is a width, or [width, kernel]."""
        if type(v) == "list" { Conv2d(v[0], v[1]) } else { Conv2d(v, 3, padding = 1) }
    }
    network T(cfg: list = [4, [6, 1]]) { input x: f32[1, 2, 8, 8]
        output y = x -> [ for v in cfg { Pick(v) } ] }
    network U = T'''
    net = netdsl.loads(text, network="U")
    assert dict(net.graph.outputs)["y"].shape == (1, 6, 8, 8)
    program_block = net.program.blocks["Pick"]
    assert program_block.doc == "Conv with an optional kernel.\n\nv is a width, or [width, kernel]."
    assert [type_ for type_ in ("int", "float", "bool", "str", "list")]
    g = graph('network T { input x: f32[1, 1, H, 2]\n'
              ' output y = x -> Conv2d(len([type(1), type(1.5), type(true), type("s"), type(x), type(x.shape[2])]), 1) }')
    assert dict(g.outputs)["y"].shape[1] == 6


def test_param_declares_a_learned_tensor_at_the_scope_path():
    net = netdsl.loads("""
    block Embed(d: int) (x) -> y {
        param pos_embedding: f32[1, 4, d] = normal(0.02)
        y = x + pos_embedding
    }
    network T { input x: f32[N, 4, 8]
        param class_token: f32[1, 1, 8]
        x = x -> Linear(8)
        y = x -> ReLU          # the chain continues from x, not from the param
        output o = y -> encoder: Embed(8)
        output c = class_token }""")
    layout = net.graph.state_layout()
    assert layout["class_token"].shape == (1, 1, 8) and layout["class_token"].init == "zeros"
    assert layout["encoder.pos_embedding"].init == "normal"
    w = net.init_weights(seed=1)
    assert 0.01 < w["encoder.pos_embedding"].std() < 0.04
    assert not w["class_token"].any()
    assert dict(net.graph.outputs)["o"].shape[1:] == (4, 8)
    with pytest.raises(NetDSLError, match="a param starts from zeros"):
        netdsl.loads("network T { input x: f32[1]\n param p: f32[2] = 3\n output y = x }").graph


def test_block_aliases_bind_arguments_and_can_name_layers():
    g = graph("""
    block Unit(c: int, act: block = Identity) { conv: Conv2d(c, 1)  act }
    block LeakyUnit = Unit(act = Leaky)
    block Leaky = LeakyReLU(0.2)
    block Wide = LeakyUnit(16)
    network T { input x: f32[1, 3, 4, 4]
        output y = x -> a: Unit(4) -> b: LeakyUnit(8) -> c: Wide }""")
    assert [n.op for n in g.nodes] == ["Conv2d", "Identity", "Conv2d", "LeakyReLU", "Conv2d", "LeakyReLU"]
    assert [n.path for n in g.nodes][:2] == ["a.conv", "a.identity"]
    assert g.nodes[3].attrs["negative_slope"] == pytest.approx(0.2)
    assert shapes(g) == {"y": [1, 16, 4, 4]}
    with pytest.raises(NetDSLError, match="defined in terms of itself"):
        graph("block A = B\nblock B = A\nnetwork T { input x: f32[1]\n output y = x -> A }")
