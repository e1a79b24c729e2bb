"""Issue 9's language growth: anonymous nested groups, sequential blocks, splices, hyphenated
names, the math built-ins and constant-initialised params. State_dict keys come out as
torchvision names them; the tests marked torchvision load torchvision's own modules' weights
(strict) and compare outputs, and skip without torchvision."""
from __future__ import annotations

import math

import numpy as np
import pytest

import netdsl
from netdsl import errors as E
from netdsl.errors import NetDSLError

torch = pytest.importorskip("torch")


def keys(src: str, **kw) -> list:
    return list(netdsl.loads(src, name="t.net", **kw).state_layout())


def fail(src: str, **kw) -> NetDSLError:
    with pytest.raises(NetDSLError) as info:
        netdsl.loads(src, name="t.net", **kw).graph
    err = info.value
    assert err.span is not None and err.span.source.name == "t.net", err.render()
    assert "^" in err.render()
    return err


def at(err: NetDSLError) -> str:
    return f"{err.span.line}:{err.span.col}"


def value(expr: str):
    """A compile-time expression's value (a network parameter's default)."""
    return netdsl.loads(f"network T(v: any = {expr}) {{ input x: f32[1] output y = x }}").graph.params["v"]


CNA = """
block CNA(out: int, kernel: int = 3, stride: int = 1, groups: int = 1, act: block = ReLU6) [
    "torchvision's Conv2dNormActivation: conv, batch norm, activation, numbered 0, 1, 2."
    Conv2d(out, kernel, stride = stride, padding = (kernel - 1) // 2, groups = groups, bias = false)
    BatchNorm2d
    act
]
"""


# ---- 1. anonymous nested groups -------------------------------------------------------------------
def test_anonymous_groups_take_the_next_index():
    src = """network T { input x: f32[1, 3, 8, 8]
    output y = x -> features: [
        [ Conv2d(4, 3) BatchNorm2d ReLU ]
        for c in [5, 6] { [ Conv2d(c, 1) [ BatchNorm2d ] ] }
        if true { [ Conv2d(7, 1) ] } else { [ Conv2d(9, 1) ] }
        Conv2d(8, 1)
    ] }"""
    assert keys(src) == [
        "features.0.0.weight", "features.0.0.bias", "features.0.1.weight", "features.0.1.bias",
        "features.0.1.running_mean", "features.0.1.running_var", "features.0.1.num_batches_tracked",
        "features.1.0.weight", "features.1.0.bias", "features.1.1.0.weight", "features.1.1.0.bias",
        "features.1.1.0.running_mean", "features.1.1.0.running_var", "features.1.1.0.num_batches_tracked",
        "features.2.0.weight", "features.2.0.bias", "features.2.1.0.weight", "features.2.1.0.bias",
        "features.2.1.0.running_mean", "features.2.1.0.running_var", "features.2.1.0.num_batches_tracked",
        "features.3.0.weight", "features.3.0.bias", "features.4.weight", "features.4.bias"]


def test_assignment_then_group_needs_a_semicolon():
    body = "for s in [[2, 3]] { c = s[1]SEP\n [ Conv2d(c, 1) Conv2d(c, 1) ] }"
    src = "network T { input x: f32[1, 3, 8, 8]\n output y = x -> f: [ " + body + " ] }"
    assert keys(src.replace("SEP", ";")) == ["f.0.0.weight", "f.0.0.bias", "f.0.1.weight", "f.0.1.bias"]
    err = fail(src.replace("SEP", ""))            # s[1][Conv2d(c, 1) Conv2d ...]: does not parse
    assert isinstance(err, E.ParseError) and at(err) == "3:2"    # at the '[' that reads as an index
    assert "this '[' indexes the expression before it" in err.message and "with ';'" in err.message
    # a group of one layer does parse as an index; the elaborator says what happened
    err = fail("network T { input x: f32[1, 3]\n output y = x -> f: [ c = [2]\n [ ReLU ] ] }")
    assert at(err) == "3:4" and err.message.startswith("an index must be an int, got layer; a '[' on the line")


def test_groups_keep_assignments_pipelines_and_semicolons():
    src = """network T { input x: f32[1, 3, 8, 8]
    output y = x -> f: [ c = 4; ; Conv2d(c, 1)  t = x -> [ Conv2d(2, 1) ]  q = 1; [ ReLU ] ] }"""
    assert keys(src) == ["f.0.weight", "f.0.bias", "f.1.0.weight", "f.1.0.bias"]


def test_semicolon_is_only_a_group_separator():
    err = fail("network T { input x: f32[1]\n y = x; output z = y }")
    assert isinstance(err, E.ParseError) and at(err) == "2:7"


# ---- 2. sequential blocks -------------------------------------------------------------------------
def test_sequential_block_numbers_its_items():
    net = netdsl.loads(CNA + """network T { input x: f32[1, 3, 8, 8]
        output y = x -> stem: CNA(8, stride = 2) -> features: [ CNA(16)  CNA(16, groups = 16, act = Identity) ]
                     -> CNA(4, 1) }""", name="t.net")
    layout = net.state_layout()
    assert list(layout)[:6] == ["stem.0.weight", "stem.1.weight", "stem.1.bias", "stem.1.running_mean",
                                "stem.1.running_var", "stem.1.num_batches_tracked"]
    assert "features.0.0.weight" in layout and "features.1.1.running_var" in layout
    assert layout["features.1.0.weight"] == (16, 1, 3, 3)
    assert "cna.0.weight" in layout              # unnamed outside a group: an automatic name
    assert net.graph.outputs[0][1].shape == (1, 4, 4, 4)
    assert "Conv2dNormActivation" in net.program.blocks["CNA"].doc


def test_sequential_block_with_nested_groups_and_docstring_only():
    src = """block S(c: int) [ "doc" [ Conv2d(c, 1) ]  for i in range(2) { [ ReLU  Conv2d(c, 1) ] } ]
    block Empty() [ "nothing" ]
    network T { input x: f32[1, 3, 4, 4]  output y = x -> s: S(2) -> e: Empty }"""
    assert keys(src) == ["s.0.0.weight", "s.0.0.bias", "s.1.1.weight", "s.1.1.bias", "s.2.1.weight",
                         "s.2.1.bias"]


# ---- 3. splices -----------------------------------------------------------------------------------
def test_splice_continues_the_group_numbering():
    src = CNA + """network T { input x: f32[1, 3, 8, 8]
        output y = x -> g: [ ...CNA(64, 1)  Conv2d(8, 1) ] }"""
    assert keys(src) == ["g.0.weight", "g.1.weight", "g.1.bias", "g.1.running_mean", "g.1.running_var",
                         "g.1.num_batches_tracked", "g.3.weight", "g.3.bias"]


def test_splice_of_chain_block_names_its_layers_in_the_enclosing_scope():
    src = """block Stem(c: int) { "two convs" conv1: Conv2d(c, 3)  ReLU  conv2: Conv2d(c, 1) }
    block Body(c: int) { ...Stem(c)  head: Conv2d(2, 1) }
    network T { input x: f32[1, 3, 8, 8]
        output y = x -> b: Body(4) -> g: [ ...Stem(3)  Conv2d(2, 1) ] }"""
    assert keys(src) == ["b.conv1.weight", "b.conv1.bias", "b.conv2.weight", "b.conv2.bias", "b.head.weight",
                         "b.head.bias", "g.conv1.weight", "g.conv1.bias", "g.conv2.weight", "g.conv2.bias",
                         "g.3.weight", "g.3.bias"]     # every item counts, labelled or not


def test_splice_of_a_block_parameter_and_an_alias():
    src = CNA + """block CNA1 = CNA(kernel = 1)
    block Wrap(unit: block) [ ...unit(4)  ...CNA1(5) ]
    network T { input x: f32[1, 3, 8, 8]  output y = x -> w: Wrap(CNA) }"""
    layout = netdsl.loads(src).state_layout()
    assert layout["w.0.weight"] == (4, 3, 3, 3) and layout["w.3.weight"] == (5, 4, 1, 1)
    assert "w.4.running_mean" in layout and len(layout) == 12


@pytest.mark.parametrize("src, where, message, cls", [
    (CNA + "network T { input x: f32[1, 3, 8, 8]\n output y = x -> [ ...ReLU ] }", "9:20",
     "'...' splices a block's layers into this scope; 'ReLU' is the layer ReLU: apply it without '...'",
     E.TypeMismatchError),
    ("block D() (a) -> b { b = a }\nnetwork T { input x: f32[1, 3]\n output y = x -> [ ...D() ] }", "3:20",
     "block D has named inputs (a); only a chain block (one input, x) can be spliced", E.TypeMismatchError),
    ("block B(n: int) [ ...n ]\nnetwork T { input x: f32[1, 3]\n output y = x -> B(2) }", "1:19",
     "'...' splices a block, not an int", E.TypeMismatchError),
    ("network T { input x: f32[1, 3]\n output y = x -> [ ...Nope ] }", "2:23",
     "unknown layer or block 'Nope'", E.NameLookupError),
    ("block S() { a: ReLU }\nnetwork T { input x: f32[1, 3]\n output y = x -> [ a: ReLU ...S ] }", "1:16",
     "the name 'a' is already used in this scope (first used at t.net:3:23)", E.NameLookupError),
    ("block S() [ ReLU ]\nnetwork T { ...S  input x: f32[1, 3]\n output y = x }", "2:13",
     "no tensor flows into this splice: declare an input first", E.ShapeError),
    ("block S() [ ...S ]\nnetwork T { input x: f32[1, 3]\n output y = x -> S }", "1:16",
     "block instantiation nested deeper than 64 levels...", E.RecursionLimitError),
])
def test_splice_errors(src, where, message, cls):
    err = fail(src)
    assert isinstance(err, cls) and at(err) == where, err.render()
    if message.endswith("..."):
        assert err.message.startswith(message[:-3]), err.message
    else:
        assert err.message.startswith(message), err.message


# ---- 4. hyphens in names ----------------------------------------------------------------------------
HYPHENS = """block Scale(v: float) (x) -> y {
    param layer_scale: f32[x.channels, 1, 1] = constant(v)
    y = x * layer_scale
}
network T { input x: f32[N, 3, H, W]
    y = x -> trunk: [ for i in [1, 2] { for j in range(2) { block{i}-{j}: Conv2d(3, 3, padding = 1) } } ]
         -> s-{1}x-2_b: Conv2d(4, 1) -> sc-1: Scale(0.5)
    output out = y }"""


def test_hyphenated_labels_name_keys():
    layout = netdsl.loads(HYPHENS, name="t.net").state_layout()
    assert list(layout) == ["trunk.block1-0.weight", "trunk.block1-0.bias", "trunk.block1-1.weight",
                            "trunk.block1-1.bias", "trunk.block2-0.weight", "trunk.block2-0.bias",
                            "trunk.block2-1.weight", "trunk.block2-1.bias", "s-1x-2_b.weight", "s-1x-2_b.bias",
                            "sc-1.layer_scale"]


def test_hyphenated_names_in_torch_and_onnx():
    from parity_util import assert_parity, randomise
    net = netdsl.loads(HYPHENS, name="t.net")
    model = net.to_torch()
    assert sorted(model.state_dict()) == sorted(net.state_layout())
    randomise(model, 0)
    names = {i.name for i in net.to_onnx(weights=model).graph.initializer}
    assert {"trunk.block1-0.weight", "s-1x-2_b.weight", "sc-1.layer_scale"} <= names
    assert_parity(net, model.eval(), [(2, 3, 6, 6), (2, 3, 9, 7)], dims=["N", 3, "H", "W"])


@pytest.mark.parametrize("label, where, message", [
    ('a{"."}', "2:18", "'a.' is not a valid layer name (ASCII letters, digits, _ and - only)"),
    ('a{"\\u00e9"}', "2:18", "'a\u00e9' is not a valid layer name (ASCII letters, digits, _ and - only)"),
    ('a{"b c"}', "2:18", "'ab c' is not a valid layer name (ASCII letters, digits, _ and - only)"),
])
def test_bad_label_characters(label, where, message):
    err = fail(f"network T {{ input x: f32[1, 3]\n output y = x -> {label}: ReLU }}")
    assert isinstance(err, E.NameLookupError) and at(err) == where and err.message == message


def test_hyphenated_param_name_is_an_error():
    err = fail("network T { input x: f32[1, 3]\n param p-1: f32[3] = zeros()  output y = x }")
    assert isinstance(err, E.NameLookupError) and at(err) == "2:8"
    assert err.message.startswith("'p-1' cannot name a param")


def test_hyphen_must_join_two_parts():
    for bad in ("a-: ReLU", "a-{1}-: ReLU", "a--b: ReLU"):
        err = fail(f"network T {{ input x: f32[1, 3]\n output y = x -> [ {bad} ] }}")
        assert isinstance(err, E.ParseError) and err.span.line == 2


# ---- 5. built-in functions ----------------------------------------------------------------------------
def _make_divisible(v, divisor=8, min_value=None):
    """torchvision.models._utils._make_divisible, verbatim."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


@pytest.mark.parametrize("expr, want", [
    ("round(2.5)", 2), ("round(3.5)", 4), ("round(-2.5)", -2), ("round(0.49999999999999994)", 0),
    ("round(7)", 7), ("ceil(2.1)", 3), ("ceil(-2.1)", -2), ("floor(-2.1)", -3), ("floor(2.9)", 2),
    ("ceil(1 * 1.2)", 2), ("log(8, 2)", 3.0), ("log(1)", 0.0), ("sqrt(16)", 4.0), ("sqrt(2.0)", math.sqrt(2)),
    ("make_divisible(32 * 0.75)", 24), ("make_divisible(10)", 16), ("make_divisible(3, 8)", 8),
    ("make_divisible(3, 8, min_value = 1)", 9), ("make_divisible(88, divisor = 16)", 96),
    ("make_divisible(v = 20, divisor = 8, min_value = 32)", 32),
])
def test_builtin_values(expr, want):
    got = value(expr)
    assert got == want and type(got) is type(want)


def test_make_divisible_matches_torchvision_rule():
    for v in [x / 4 for x in range(1, 2000, 7)] + [1, 7, 8, 12, 16, 20, 36, 44, 100, 1280 * 0.35]:
        for divisor, min_value in [(8, None), (4, None), (16, 1), (8, 24)]:
            mv = "" if min_value is None else f", min_value = {min_value}"
            assert value(f"make_divisible({v!r}, {divisor}{mv})") == _make_divisible(v, divisor, min_value), v


def test_make_divisible_is_torchvisions():
    tv = pytest.importorskip("torchvision.models._utils")
    for v in [x / 3 for x in range(1, 1500, 11)]:
        assert value(f"make_divisible({v!r})") == tv._make_divisible(v, 8)


@pytest.mark.parametrize("expr, col, message, cls", [
    ("round(1, 2)", 20, "round() takes 1 argument, got 2", E.TypeMismatchError),
    ("ceil('a')", 20, "ceil(): its argument must be a number, got str", E.TypeMismatchError),
    ("floor(true)", 20, "floor(): its argument must be a number, got bool", E.TypeMismatchError),
    ("round(1e400)", 20, "round() of inf is not an integer", E.ValueRangeError),
    ("log()", 20, "log() takes 1 or 2 arguments, got 0", E.TypeMismatchError),
    ("log(0)", 20, "log() of a number that is not positive (0)", E.ValueRangeError),
    ("log(8, 1)", 20, "log(): the base must be positive and not 1, got 1", E.ValueRangeError),
    ("sqrt(-1)", 20, "sqrt() of a negative number (-1)", E.ValueRangeError),
    ("sqrt(x = 1)", 20, "sqrt() takes no keyword arguments", E.TypeMismatchError),
    ("make_divisible()", 20, "make_divisible() needs its argument 'v' (a number)", E.TypeMismatchError),
    ("make_divisible(8, 0)", 20, "make_divisible(): 'divisor' must be positive, got 0", E.ValueRangeError),
    ("make_divisible(8, 2.5)", 20, "make_divisible(): 'divisor' must be an int, got float", E.TypeMismatchError),
    ("make_divisible(8, div = 2)", 20, "make_divisible() has no argument 'div' (did you mean 'divisor'?)...",
     E.NameLookupError),
    ("make_divisible(8, 8, 8, 8)", 20, "make_divisible() takes at most 3 arguments, got 4", E.TypeMismatchError),
])
def test_builtin_errors(expr, col, message, cls):
    err = fail(f"network T(v: any = {expr}) {{ input x: f32[1] output y = x }}")
    assert isinstance(err, cls) and at(err) == f"1:{col}", err.render()
    if message.endswith("..."):
        assert err.message.startswith(message[:-3]), err.message
    else:
        assert err.message == message


def test_builtin_on_symbolic_size_is_located():
    err = fail("network T { input x: f32[1, C]\n output y = x -> Linear(ceil(x.channels + 1)) }")
    assert isinstance(err, E.TypeMismatchError) and at(err) == "2:25"
    assert err.message.startswith("ceil(): its argument depends on the input size 'C + 1', which is not known")


# ---- 6. constant-initialised params ---------------------------------------------------------------------
def test_param_constant_in_torch_and_weights():
    src = """network T { input x: f32[2, 4, 3, 3]
        param layer_scale: f32[x.channels, 1, 1] = constant(1e-6)
        param shift: f32[2] = constant(-2)
        output y = x * layer_scale }"""
    net = netdsl.loads(src)
    assert net.state_layout() == {"layer_scale": (4, 1, 1), "shift": (2,)}
    model = net.to_torch()
    state = model.state_dict()
    assert torch.equal(state["layer_scale"], torch.full((4, 1, 1), 1e-6))
    assert torch.equal(state["shift"], torch.full((2,), -2.0))
    weights = net.init_weights()
    assert np.array_equal(weights["layer_scale"], np.full((4, 1, 1), 1e-6, np.float32))
    assert np.array_equal(weights["shift"], np.full((2,), -2.0, np.float32))
    assert "torch.full((4, 1, 1,), 1e-06)" in net.torch_source()


def test_param_rejects_other_initialisers():
    err = fail("network T { input x: f32[1]\n param p: f32[1] = kaiming_normal()  output y = x }")
    assert isinstance(err, E.TypeMismatchError) and at(err) == "2:20"
    assert err.message == ("a param starts from zeros(), ones(), constant(value), normal(std) or "
                           "uniform(bound), got kaiming_normal()")


# ---- torchvision's layout: a small MobileNetV2 ---------------------------------------------------------
MOBILENET = CNA + """
block InvertedResidual(out: int, stride: int, expand: int) (x) -> y {
    "torchvision's InvertedResidual: conv.0 ... conv.3 (no expansion CNA when expand is 1)."
    hidden = round(x.channels * expand)
    y = x -> conv: [
        if expand != 1 { CNA(hidden, 1) }
        CNA(hidden, stride = stride, groups = hidden)
        Conv2d(out, 1, bias = false)
        BatchNorm2d
    ]
    if stride == 1 and x.channels == out { y = x + y }
}

network TinyMobileNetV2(width: float = 1.0, settings: list = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 1, 2]],
                        num_classes: int = 10) {
    input image: f32[N, 3, H, W]
    c = make_divisible(32 * width)
    output logits = image
        -> features: [
            CNA(c, stride = 2)
            for s in settings {
                oc = make_divisible(s[1] * width);
                for i in range(s[2]) { InvertedResidual(oc, (s[3] if i == 0 else 1), s[0]) }
            }
            CNA(make_divisible(1280 * max(1.0, width)), 1)
        ]
        -> AdaptiveAvgPool2d(1) -> Flatten -> classifier: [ Dropout(0.2)  Linear(num_classes) ]
}
"""


@pytest.fixture(scope="module")
def mobilenet():
    return netdsl.loads(MOBILENET, name="mobilenet.net")


def test_mobilenet_keys_are_torchvisions(mobilenet):
    layout = mobilenet.state_layout()
    for k in ["features.0.0.weight", "features.0.1.running_mean", "features.1.conv.0.0.weight",
              "features.1.conv.0.1.weight", "features.1.conv.1.weight", "features.1.conv.2.running_var",
              "features.2.conv.0.0.weight", "features.2.conv.1.0.weight", "features.2.conv.2.weight",
              "features.2.conv.3.bias", "features.5.0.weight", "classifier.1.weight"]:
        assert k in layout, k
    assert layout["features.2.conv.1.0.weight"] == (96, 1, 3, 3)
    assert not any(k.startswith("features.6") for k in layout)


def test_mobilenet_matches_torchvision(mobilenet):
    tvm = pytest.importorskip("torchvision.models")
    from parity_util import randomise_batchnorm
    ref = tvm.MobileNetV2(num_classes=10, inverted_residual_setting=[[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 1, 2]])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    randomise_batchnorm(ref, g)
    assert mobilenet.param_count() == sum(p.numel() for p in ref.parameters())
    model = mobilenet.to_torch(weights=ref.state_dict())
    model.load_state_dict(ref.state_dict(), strict=True)
    model.eval()
    x = torch.randn(2, 3, 40, 40, generator=g)
    with torch.no_grad():
        want, got = ref(x), model(x)
    assert (want[0] - want[1]).abs().max() > 1e-3
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spec,where,message", [
    ('import "std/swin.net"\nnetwork T { input x: f32[N, 8, 8, 16]\noutput y = x -> PatchMerging(3) }',
     "std/swin.net", "PatchMerging: version is 1 or 2, got 3"),
    ('import "std/swin.net"\nnetwork T { input x: f32[N, 8, 8, 16]\noutput y = x -> SwinBlock(2, version = 0) }',
     "std/swin.net", "SwinBlock: version is 1 or 2, got 0"),
])
def test_std_blocks_refuse_configurations_they_do_not_have(spec, where, message):
    """A configuration string or number a block does not know is the block's own located
    error (`error("...")`), not a silent fall into its `else` branch."""
    with pytest.raises(NetDSLError) as info:
        netdsl.loads(spec, name="t.net").graph
    text = info.value.render()
    assert message in text and where in text and "^" in text and "instantiated at t.net:3" in text


@pytest.mark.parametrize("network,key,value,message", [
    ("SqueezeNet", "version", "2_0", 'SqueezeNet: version is "1_0" or "1_1", got "2_0"'),
    ("MobileNetV3", "arch", "tiny", 'MobileNetV3: arch is "large" or "small", got "tiny"'),
])
def test_examples_refuse_configurations_they_do_not_have(network, key, value, message):
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "examples" / ("squeezenet.net" if network == "SqueezeNet"
                                                             else "mobilenetv3.net")
    with pytest.raises(NetDSLError) as info:
        netdsl.load(path, network=network, **{key: value}).graph
    assert message in info.value.render()


def test_error_builtin_reports_the_specs_message_where_it_is_called():
    src = """network T(k: int = 5) {
    input x: f32[N, 4]
    c = (4 if k < 3 else error("k must be below 3, got " + str(k)))
    output y = x -> Linear(c)
}"""
    with pytest.raises(NetDSLError) as info:
        netdsl.loads(src, name="t.net").graph
    err = info.value
    assert err.message == "k must be below 3, got 5" and (err.line, err.col) == (3, 26)
    assert netdsl.loads(src, name="t.net", k=2).graph is not None
    with pytest.raises(NetDSLError, match="error\\(\\) takes one argument"):
        netdsl.loads(src.replace('error("k must be below 3, got " + str(k))', "error(3)"), name="t.net").graph
