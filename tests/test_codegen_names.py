"""Generated PyTorch source is valid for every name the language accepts.

A spec either gets a located error, or torch source that compiles, builds, loads a
state_dict keyed exactly by the spec's names, and runs -- whatever its names are: Python
keywords, builtins, attributes of nn.Module at any depth, dunders, the generated module's
own globals (issue 6, section 2).
"""
from __future__ import annotations

import ast
import builtins
import keyword
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netdsl
from netdsl.backends.torch import pynames
from netdsl.errors import NetDSLError
from netdsl.ir.naming import TORCH_ASSIGNED
from netdsl.ir.values import BUILTINS

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def build(src: str):
    """Compile `src` to a live module; check its state_dict and run it on random inputs.
    Returns the network, or the NetDSLError (which must be located)."""
    try:
        net = netdsl.loads(src, name="t.net")
        source = net.torch_source()
    except NetDSLError as err:
        assert err.span is not None, err.render()
        assert err.span.source.name == "t.net", err.render()
        return err
    compile(source, "generated.py", "exec")
    module = net.to_torch()                      # loads the spec-keyed weights strictly
    layout = net.state_layout()
    state = module.state_dict()
    assert sorted(state) == sorted(layout), source
    assert all(tuple(state[k].shape) == tuple(layout[k]) for k in layout)
    module.load_state_dict(state, strict=True)
    module.eval()                                # torch sets attributes of its own: still works
    module.train()
    torch.manual_seed(0)
    inputs = [torch.randn(*v.shape) for v in net.graph.inputs]
    with torch.no_grad():
        out = module(*inputs)
    for o in (out if isinstance(out, tuple) else (out,)):
        assert torch.isfinite(o).all()
    return net


def ok(src: str):
    result = build(src)
    assert not isinstance(result, NetDSLError), result.render()
    return result


def one_layer(label: str, network: str = "N") -> str:
    return f"network {network} {{ input x: f32[1, 4, 3, 3]\n output y = x -> {label}: Conv2d(4, 1) }}\n"


# ---- the cases of the issue, one by one --------------------------------------------------------

MODULE_NAMES = ["forward", "cpu", "keys", "items", "_modules", "_parameters", "_buffers",
                "__dict__", "__class__", "__init__", "__call__", "_version", "_apply", "T_destination",
                "__w", "__w__", "_", "__", "type", "to", "float"]


@pytest.mark.parametrize("name", ["class", "def", "lambda", "None", "self", "torch", "F", "nn"]
                         + MODULE_NAMES)
def test_layer_names_at_every_depth(name):
    src = f"""
block B() {{ {name}: Conv2d(4, 1) }}
network N {{
    input x: f32[1, 4, 3, 3]
    y = x -> {name}: Conv2d(4, 1)
    y = y -> g: [ {name}: Conv2d(4, 1)  ReLU  inner: [ {name}: Conv2d(4, 1) ] ]
    output z = y -> b: B -> g2: [ B ]
}}
"""
    net = ok(src)
    keys = set(net.state_layout())
    assert {f"{name}.weight", f"g.{name}.weight", f"g.inner.{name}.weight", f"b.{name}.weight",
            f"g2.0.{name}.weight"} <= keys


@pytest.mark.parametrize("name", ["def", "class", "__w", "_parameters", "keys", "forward"])
def test_param_names(name):
    src = f"""
network N {{
    input x: f32[1, 4]
    param {name}: f32[4] = ones()
    g: [ param {name}: f32[4] = ones() ]
    output y = x + {name}
}}
"""
    net = ok(src)
    assert {name, f"g.{name}"} <= set(net.state_layout())


@pytest.mark.parametrize("name", ["torch", "F", "nn", "range", "super", "len", "center_crop", "ValueError",
                                  "self", "object", "Net_torch", "__x", "_", "type", "print"])
def test_network_block_and_tensor_names(name):
    """Networks, blocks, inputs, outputs and tensors named like the generated module's globals
    or builtins shadow none of them."""
    block = "block {}() (a, b) -> c {{ c = center_crop(concat(a, b, dim = 1), like = a) -> Conv2d(4, 1) }}\n"
    # the language keeps its own built-ins (range, len, center_crop) from being redefined
    check = build if name in ("range", "len", "center_crop") else ok
    check(block.format(name) + """
network M {
    input x: f32[1, 4, 6, 6]
    t = x -> MaxPool2d(2) -> resize(scale = 2)
    output out = (x, t) -> %s
}
""" % name)
    check(block.format("B") + f"""
network {name} {{
    input {name}: f32[1, 4, 6, 6]
    t = {name} -> MaxPool2d(2) -> resize(scale = 2)
    output out = ({name}, t) -> B
}}
""")
    build(f"network N {{ input x: f32[1, 4, 6, 6]\n {name} = x -> ReLU\n output {name}_ = {name} + x }}")


def test_dunder_tensor_names_keep_their_values():
    """Python would mangle `__x` inside the class body: locals are derived (t__x)."""
    net = ok("network N { input __x: f32[1, 4]\n __y = __x -> Linear(4)\n output __z = __y + __x }")
    assert "def forward(self, t__x):" in net.torch_source()
    module, x = net.to_torch(), torch.randn(1, 4)
    torch.testing.assert_close(module(x), module._modules["linear"](x) + x)


def test_class_name_never_shadows_a_global():
    for name in ["torch", "nn", "F", "super", "range", "class", "center_crop", "__init__"]:
        cls = pynames.class_name(name)
        assert cls.isidentifier() and not keyword.iskeyword(cls)
        assert cls not in dir(builtins) and cls not in pynames.IMPORTS and not cls.startswith("__")
    assert pynames.class_name("Tiny") == "Tiny"


def test_label_with_trailing_newline_is_an_error():
    err = build(one_layer('a{"\\n"}'))
    assert isinstance(err, NetDSLError)
    assert (err.line, err.col) == (2, 18)
    assert "is not a valid layer name" in err.message and "\n" not in err.message


@pytest.mark.parametrize("part", ['"\\n"', '" "', '"é"', '"a.b"', '"+"', '"\\t"', '"ℌ"'])
def test_label_templates_outside_the_name_alphabet_are_errors(part):
    err = build(one_layer(f"a{{{part}}}"))
    assert isinstance(err, NetDSLError) and "is not a valid layer name" in err.message


@pytest.mark.parametrize("name", ["block1-0", "a-b", "class-1", "forward-", "_-_", "0-0", "x--", "-"])
def test_hyphenated_layer_names_at_every_depth(name):
    """Names with '-' (RegNet's block1-0): not identifiers, so reached through `[...]` and
    `_modules[...]`, at the top, in groups, in block instances and as block instance names."""
    literal = re.fullmatch(r"[A-Za-z_]\w*(-(\d+|[A-Za-z_]\w*))+", name)    # written as it is: a-b, block1-0
    label = name if literal else f'n{{"{name}"}}'
    full = name if literal else "n" + name
    src = f"""
block B() {{ {label}: Conv2d(4, 1) }}
network N {{
    input x: f32[1, 4, 3, 3]
    y = x -> {label}: Conv2d(4, 1)
    y = y -> g: [ {label}: Conv2d(4, 1)  ReLU  inner: [ {label}: Conv2d(4, 1) ] ]
    output z = y -> b: B -> g2: [ B  {label}: B ]
}}
"""
    net = ok(src)
    assert {f"{full}.weight", f"g.{full}.weight", f"g.inner.{full}.weight", f"b.{full}.weight",
            f"g2.0.{full}.weight", f"g2.{full}.{full}.weight"} <= set(net.state_layout())
    assert pynames.member_ref(f"g.{full}") in (f"self.g[{full!r}]", f"self.g._modules[{full!r}]")


@pytest.mark.parametrize("label", ["training", "a{'ining'}", "_compiled_call_impl"])
def test_names_torch_assigns_itself_are_errors(label):
    err = build(one_layer(label.replace("a{", "tra{")))
    assert isinstance(err, NetDSLError) and (err.line, err.col) == (2, 18)
    assert "torch's modules set an attribute of that name themselves" in err.message


def test_automatic_names_skip_names_torch_assigns():
    net = ok("block Training() { Conv2d(4, 1) }\n"
             "network N { input x: f32[1, 4, 3, 3]\n output y = x -> Training -> Training }")
    assert sorted(net.state_layout()) == ["training_1.conv2d.bias", "training_1.conv2d.weight",
                                          "training_2.conv2d.bias", "training_2.conv2d.weight"]


def test_torch_assigned_names_match_torch_source():
    """The names nn.Module assigns on itself after __init__ (self.X = ... in its other methods)."""
    import inspect
    tree = ast.parse(inspect.getsource(nn.Module))
    assigned = {t.attr for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
                and f.name not in ("__init__", "__setstate__")
                for a in ast.walk(f) if isinstance(a, ast.Assign)
                for t in a.targets if isinstance(t, ast.Attribute)
                and isinstance(t.value, ast.Name) and t.value.id == "self"}
    assert assigned == TORCH_ASSIGNED


def test_module_attrs_cover_installed_torch():
    """Attribute access is used only for names that no nn.Module / ModuleDict attribute takes."""
    public = {a for a in dir(nn.ModuleDict()) if not a.startswith("_")}
    assert public <= pynames.MODULE_ATTRS, sorted(public - pynames.MODULE_ATTRS)


def test_ordinary_names_read_as_attributes():
    assert pynames.member_ref("layer1.0.conv1") == "self.layer1['0'].conv1"
    assert pynames.member_ref("enc.conv1") == "self.enc.conv1"
    assert pynames.member_ref("g.keys") == "self.g._modules['keys']"
    assert pynames.member_ref("class.def") == "self._modules['class']['def']"
    assert pynames.member_ref("g.training", parameter=True) == "self.g._parameters['training']"


def test_hostile_names_under_torch_compile():
    """Reaching children through _modules/_parameters keeps torch.compile(fullgraph=True) working."""
    src = """
network N {
    input x: f32[1, 4, 3, 3]
    param def: f32[1, 4, 1, 1] = ones()
    y = (x + def) -> class: Conv2d(4, 1) -> g: [ _modules: Conv2d(4, 1)  __w: Conv2d(4, 1)  keys: BatchNorm2d ]
    output out = y -> forward: Conv2d(4, 1)
}
"""
    net = ok(src)
    module = net.to_torch().eval()
    x = torch.randn(1, 4, 3, 3)
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), module(x))


# ---- property: random names in every naming position --------------------------------------------

POOL = sorted(set(
    keyword.kwlist + keyword.softkwlist
    + ["range", "len", "super", "print", "ValueError", "int", "type", "object", "self", "__import__",
       "__name__", "__builtins__", "__doc__", "__build_class__"]
    + ["torch", "nn", "F", "center_crop", "h", "h_1", "Net_N", "t__w", "class_", "y"]
    + sorted(pynames.MODULE_ATTRS)
    + MODULE_NAMES + ["_non_persistent_buffers_set", "__slots__", "__getattr__", "_forward_hooks",
                      "_state_dict_hooks", "__x__", "___"]
    + ["a", "conv1", "N", "H", "Net", "b0"]))


def netdsl_string(text: str) -> str:
    """`text` as a netdsl string literal, escaping what must be."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=4)
# names that are errors for netdsl itself (its keywords and built-ins, names torch assigns):
# drawn less often, so that most examples reach the torch target
RESERVED = set("import block network if elif else for in return input output param and or not true false "
               "center_crop".split()) | set(BUILTINS) | set(TORCH_ASSIGNED)
NAME = st.one_of(*[st.sampled_from([n for n in POOL if n not in RESERVED])] * 8, st.sampled_from(POOL))
INT_SUFFIX = st.one_of(*[st.just("")] * 3, st.integers(0, 12).map(lambda i: f"{{{i}}}"),
                       st.integers(0, 12).map(lambda i: f"-{{{i}}}-{i}"))
TEXT_SUFFIX = st.one_of(TEXT.map(netdsl_string), st.sampled_from(['"\\n"', '"_"', '"9"', '"é"', '" "'])
                        ).map(lambda t: f"{{{t}}}")

SPEC = """\
block {blk}({bp}: int = 4) (x) -> y {{
    param {pb}: f32[1, 4, 1, 1] = zeros()
    y = (x + {pb}) -> {l1}: Conv2d({bp}, 1) -> {l2}: [ {l3}: Conv2d(4, 1)  ReLU ]
}}
network {net} {{
    {doc}
    input {inp}: f32[1, 4, 3, 3]
    param {pt}: f32[1, 4, 1, 1] = ones()
    {t1} = {inp} -> {l4}: Conv2d(4, 1) -> {l5}: {blk}
    {t2} = ({t1} + {pt}) -> {l6}: [ {l7}: Conv2d(4, 1)  {l8}: [ Conv2d(4, 1) ]  param {l9}: f32[2] ]
    output {out} = {t2} -> {blk}()
}}
"""
NAMED = ["blk", "bp", "pb", "net", "inp", "pt", "t1", "t2", "out"]   # referenced: plain names
LABELS = [f"l{i}" for i in range(1, 10)]                                # layer and param labels


def check_spec(names: list, suffixes: list, doc: str):
    chosen = dict(zip(NAMED + LABELS, names))
    chosen.update({k: chosen[k] + sfx for k, sfx in zip(LABELS, suffixes)}, doc=doc)
    result = build(SPEC.format(**chosen))
    if isinstance(result, NetDSLError):
        return False
    # the class docstring is the spec's, whatever characters it holds
    tree = ast.parse(result.torch_source())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    assert ast.get_docstring(cls, clean=False).startswith(result.graph.doc.strip())
    return True


NAMES = st.lists(NAME, min_size=len(NAMED + LABELS), max_size=len(NAMED + LABELS), unique=True)


@settings(max_examples=100, **SETTINGS)
@given(NAMES, st.lists(INT_SUFFIX, min_size=len(LABELS), max_size=len(LABELS)), TEXT.map(netdsl_string))
def test_random_names_in_every_position(names, suffixes, doc):
    """Distinct random names (keywords, builtins, nn.Module attributes, dunders, the generated
    module's globals) in every naming position, labels with numbered templates, any docstring."""
    check_spec(names, suffixes, doc)


@settings(max_examples=40, **SETTINGS)
@given(NAMES, st.integers(0, len(LABELS) - 1), TEXT_SUFFIX)
def test_random_text_in_label_templates(names, where, suffix):
    """Labels whose template parts are any text (unicode, newlines, spaces): a located error
    unless the result is a name."""
    suffixes = [""] * len(LABELS)
    suffixes[where] = suffix
    check_spec(names, suffixes, '"doc"')
