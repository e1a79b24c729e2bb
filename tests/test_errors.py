"""Bad inputs: each is reported at its exact file:line:col with a precise message, as a
`netdsl.NetDSLError` subclass that renders the source line and a caret -- never a traceback."""
from __future__ import annotations

import pytest

import netdsl
from netdsl import errors as E
from netdsl.errors import NetDSLError
from netdsl.ir.elaborate import parse_override


def fail(src: str, **kw) -> NetDSLError:
    """The error compiling `src` (as file t.net) raises, through graph and summary."""
    with pytest.raises(NetDSLError) as info:
        net = netdsl.loads(src, name="t.net", **kw)
        net.graph
        net.summary()
    err = info.value
    text = err.render()                       # rendering never fails, and shows the caret
    if err.span is not None and err.span.source.line(err.span.line):
        assert "^" in text
    return err


def net(body: str, params: str = "") -> str:
    """A network T around `body`, with input x: f32[1, 3, 8, 8] on line 1."""
    return f"network T{params} {{ input x: f32[1, 3, 8, 8]\n{body}\n}}\n"


SYM = "network T {{ input x: f32[N, 3, H, W]\n{}\n}}\n"

# (id, source, "line:col", exact message or message prefix ending in "...", error class)
CASES = [
    # ---- syntax ----------------------------------------------------------------------------
    ("unclosed call", net("output y = x -> Conv2d(4, 3"), "3:1",
     "unexpected '}' (expected ')' or ',')", E.ParseError),
    ("extra paren", net("output y = x -> Conv2d(4, 3))"), "2:29", "unexpected ')'", E.ParseError),
    ("bad character", net("output y = x -> Conv2d(4, 3) $"), "2:30", "unexpected character '$'", E.ParseError),
    ("unterminated string", net('output y = x -> Conv2d(4, "3)'), "2:27",
     "unterminated string literal (a \"...\" or '...' string ends on its line; \"\"\"...\"\"\" may span lines)",
     E.ParseError),
    ("smart quotes", net("output y = x -> Conv2d(4, \u201c3\u201d)"), "2:27",
     "unexpected character '\u201c'; strings use plain quotes (\" or ')", E.ParseError),
    ("missing closing brace", "network T { input x: f32[1, 3, 8, 8]\n  output y = x -> ReLU\n", "2:23",
     "unexpected end of file", E.ParseError),
    ("network without name", "network { input x: f32[1, 3] }", "1:9", "unexpected '{' (expected a name)",
     E.ParseError),
    ("dangling arrow", net("output y = x -> ReLU ->"), "3:1", "unexpected '}' (expected '[' or a name)",
     E.ParseError),
    ("missing comma", net("output y = x -> Conv2d(4 3)"), "2:26", "unexpected '3'", E.ParseError),
    ("bare conditional", net("k = 3 if true else 1\noutput y = x", "(big: bool = true)"), "2:15",
     "unexpected 'else' (expected 'or' or '{'); a conditional expression at statement level needs "
     "brackets: x = (a if c else b)", E.ParseError),
    ("arrow at statement start", "block B(c: int) {\n  Conv2d(c, 3) -> ReLU\n}\n", "2:16",
     "unexpected '->'; a statement cannot continue with '->': the layer statements of a body already "
     "form a chain (put each layer on its own), or bind the pipeline: y = x -> A -> B", E.ParseError),
    ("block inputs without parameter list", "block B (x) -> y { y = x -> ReLU }\n", "1:13",
     "unexpected '->' (expected '(', '[' or '{'); a block with named inputs lists its parameters first, "
     "even when it has none: block B() (x) -> y { ... }", E.ParseError),
    ("invalid escape", net('output y = x -> Linear(len("a\\qb"))'), "2:30",
     "invalid string literal: invalid escape sequence '\\q' (escapes: \\\\ \\\" \\' \\n \\t \\r \\xHH "
     "\\uHHHH \\UHHHHHHHH)", E.ParseError),
    ("NUL in string", net('output y = x -> Linear(len("a\0b"))'), "2:30",
     "a string cannot contain a NUL character", E.ParseError),
    ("integer literal too large", net("output y = x -> Linear(99999999999999999999)"), "2:24",
     "integer literal too large (compile-time integers are limited to 64 bits)", E.ParseError),
    ("nested too deeply", net("output y = x -> Linear(" + "-" * 300 + "1)"), "2:217",
     "nested too deeply (more than 200 levels of expressions, groups and statements); split it up "
     "using intermediate names", E.ParseError),

    # ---- names ---------------------------------------------------------------------------------
    ("unknown layer", net("output y = x -> Conv2D(4, 3)"), "2:17",
     "unknown layer or block 'Conv2D' (did you mean 'Conv2d'?)", E.NameLookupError),
    ("unknown layer, no close match", net("output y = x -> Frobnicate"), "2:17",
     "unknown layer or block 'Frobnicate'", E.NameLookupError),
    ("unknown argument", net("output y = x -> Conv2d(4, 3, strides = 2)"), "2:17",
     "Conv2d has no argument 'strides' (did you mean 'stride'?)", E.NameLookupError),
    ("unknown variable", net("output y = x -> Conv2d(widht, 3)", "(width: int = 4)"), "2:24",
     "unknown name 'widht' (did you mean 'width'?)", E.NameLookupError),
    ("unknown block parameter", "block B(width: int) { ReLU }\n" + net("output y = x -> B(widht = 3)"),
     "3:17", "B has no parameter 'widht' (did you mean 'width'?)", E.NameLookupError),
    ("unknown tensor attribute", net("output y = x -> Linear(x.chanels)"), "2:24",
     "tensors have no attribute 'chanels' (did you mean 'channels'?) (they have: shape, channels, rank)",
     E.NameLookupError),
    ("unknown parameter type", "network T(d: integer = 3) { input x: f32[1] output y = x }", "1:11",
     "unknown type 'integer' (did you mean 'int'?) (types: int, float, bool, str, list, block, any)",
     E.NameLookupError),
    ("unknown element type", "network T { input x: f64[1, 3] output y = x }", "1:13",
     "unknown element type 'f64' (supported: f32)", E.NameLookupError),
    ("duplicate layer names", net("a = x -> c: Conv2d(4, 3)\nb = x -> c: Conv2d(4, 3)\noutput y = a + b"),
     "3:13", "the name 'c' is already used in this scope (first used at t.net:2:13)", E.NameLookupError),
    ("block defined twice", "block B(c: int) { ReLU }\nblock B(c: int) { Tanh }\n" + net("output y = x"),
     "2:1", "'B' is already defined at t.net:1:1", E.NameLookupError),
    ("block without parentheses", "block ReLU { Tanh }", "1:12", "unexpected '{' (expected '(' or '=')", E.ParseError),
    ("block shadowing a layer", "block ReLU() { Tanh }\n" + net("output y = x"), "1:1",
     "'ReLU' is a built-in layer; give the block another name", E.NameLookupError),
    ("parameter declared twice", "network T(a: int = 1, a: int = 2) { input x: f32[1] output y = x }", "1:23",
     "parameter 'a' of T is declared twice", E.NameLookupError),
    ("assign to a built-in", net("ReLU = 3\noutput y = x"), "2:1",
     "cannot assign to 'ReLU': it names a built-in", E.NameLookupError),
    ("output of unknown tensor", net("output z"), "2:1", "no tensor named 'z' to output", E.NameLookupError),
    ("wrong case", net("output y = x -> relu"), "2:17", "unknown layer or block 'relu' (did you mean 'ReLU'?)",
     E.NameLookupError),
    ("misspelled built-in function", net("output y = x -> Linear(lenght([1]))"), "2:24",
     "unknown name 'lenght' (did you mean 'len'?)", E.NameLookupError),
    ("block input listed twice", "block B() (a, a) -> y { y = a }\n" + net("output y = x"), "1:1",
     "input 'a' of block B is listed twice", E.NameLookupError),
    ("block never sets its output", "block B() (a) -> y { z = a }\n" + net("output y = x -> B"), "1:1",
     "block B never sets its output 'y'", E.NameLookupError),
    ("input declared twice", net("input x: f32[1, 3]\noutput y = x"), "2:1", "input 'x' declared twice",
     E.NameLookupError),
    ("output declared twice", net("output y = x\noutput y = x -> ReLU"), "3:1", "output 'y' declared twice",
     E.NameLookupError),

    # ---- types and arity --------------------------------------------------------------------
    ("wrong argument type", net('output y = x -> Conv2d("4", 3)'), "2:17",
     "Conv2d: 'out_channels' must be an int, got str '4'", E.TypeMismatchError),
    ("bool expected", net("output y = x -> Conv2d(4, 3, bias = 1)"), "2:17",
     "Conv2d: 'bias' must be true or false, got int 1", E.TypeMismatchError),
    ("missing argument", net("output y = x -> Conv2d(kernel_size = 3)"), "2:17",
     "Conv2d: missing argument 'out_channels'", E.TypeMismatchError),
    ("missing argument, bare layer", net("output y = x -> Linear"), "2:17",
     "Linear: missing argument 'out_features'", E.TypeMismatchError),
    ("too many arguments", net("output y = x -> Conv2d(4, 3, 1, 1, 1, 1, true, 7)"), "2:17",
     "Conv2d takes at most 7 positional arguments, got 8", E.TypeMismatchError),
    ("argument given twice", net("output y = x -> Conv2d(4, 3, kernel_size = 2)"), "2:17",
     "Conv2d: argument 'kernel_size' given twice", E.TypeMismatchError),
    ("positional after keyword", net("output y = x -> Conv2d(out_channels = 4, 3)"), "2:42",
     "positional argument after keyword argument", E.TypeMismatchError),
    ("block: too many arguments", "block B(c: int) { ReLU }\n" + net("output y = x -> B(1, 2)"), "3:17",
     "B takes 1 argument, got 2", E.TypeMismatchError),
    ("block: missing argument", "block B(c: int) { ReLU }\n" + net("output y = x -> B"), "3:17",
     "B: missing argument 'c'", E.TypeMismatchError),
    ("block: wrong argument type", "block B(c: int) { ReLU }\n" + net("output y = x -> B(c = 1.5)"), "3:17",
     "B: parameter 'c' must be an int, got float", E.TypeMismatchError),
    ("block: wrong number of tensors", "block B() (a, b) -> y { y = a + b }\n" + net("output y = x -> B"),
     "3:17", "block B takes 2 input tensors, got 1", E.TypeMismatchError),
    ("tensor as a condition", net("if x { x = x -> ReLU }\noutput y = x"), "2:4",
     "a tensor is not a compile-time condition", E.TypeMismatchError),
    ("symbolic size as a condition", SYM.format("if x.shape[2] > 3 { x = x -> ReLU }\noutput y = x"), "2:4",
     "'>' on the symbolic size 'H' and '3' is not computable at compile time", E.TypeMismatchError),
    ("symbolic size as an argument", SYM.format("output y = x -> Linear(x.shape[2] * 2)"), "2:17",
     "Linear: 'out_features' must be known at compile time, but it depends on the input size (2 * H)",
     E.TypeMismatchError),
    ("for over an int", net("for i in 5 { x = x -> ReLU }\noutput y = x"), "2:10",
     "for needs a list to loop over, got int", E.TypeMismatchError),
    ("arrow from a number", net("y = 3 -> ReLU\noutput z = x"), "2:10",
     "'->' needs a tensor on its left, got int", E.TypeMismatchError),
    ("calling a number", net("f = 3\noutput y = x -> f"), "3:17", "an int is not a layer or block",
     E.TypeMismatchError),
    ("tensor among arguments", net("output y = x -> add(x)"), "2:17",
     "add: a tensor cannot be passed among its other arguments; tensor inputs come first in a call, "
     "add(a, b, ...), or from the left of '->'", E.TypeMismatchError),
    ("return in a network", net("output y = x\nreturn y"), "3:1",
     "'return' is for blocks; a network declares 'output's", E.TypeMismatchError),
    ("input in a block", "block B(c: int) {\n  input z: f32[1, 3]\n  ReLU\n}\n" + net("output y = x -> B(3)"),
     "2:3", "'input' declarations belong in a network; a block lists its inputs in its signature",
     E.TypeMismatchError),
    ("output in a block", "block B() { output z = x }\n" + net("output y = x -> B"), "1:13",
     "'output' declarations belong in a network; a block returns its results", E.TypeMismatchError),
    ("block returns a number", "block B() { return 3 }\n" + net("output y = x -> B"), "1:20",
     "a block returns tensors, got int", E.TypeMismatchError),
    ("output is not a tensor", net("output y = (x, x)"), "2:1", "an output must be a tensor, got list",
     E.TypeMismatchError),
    ("unpacking the wrong count", net("a, b = (x, x, x)\noutput y = a"), "2:1",
     "cannot unpack 3 values into 2 names", E.TypeMismatchError),
    ("indexing a number", net("output y = x -> Linear(3[0])"), "2:24", "an int cannot be indexed",
     E.TypeMismatchError),
    ("comparing a list with a number", net("output y = x -> Linear(([1] < 2) and 1)"), "2:25",
     "cannot compare list and int with '<'", E.TypeMismatchError),

    # ---- values ---------------------------------------------------------------------------------
    ("kernel size 0", net("output y = x -> Conv2d(4, 0)"), "2:17",
     "Conv2d: 'kernel_size' must be positive, got [0, 0]", E.ValueRangeError),
    ("negative channels", net("output y = x -> Conv2d(-4, 3)"), "2:17",
     "Conv2d: 'out_channels' must be positive, got -4", E.ValueRangeError),
    ("dropout out of range", net("output y = x -> Dropout(1.5)"), "2:17",
     "Dropout: 'p' must be in [0, 1), got 1.5", E.ValueRangeError),
    ("non-finite float", net("output y = x -> LeakyReLU(1e400)"), "2:17",
     "LeakyReLU: 'negative_slope' must be a finite number, got inf", E.ValueRangeError),
    ("huge size", net("output y = x -> Linear(2 ** 40)"), "2:17",
     "Linear: 'out_features' is 1099511627776, which is out of range (at most 2,147,483,647)",
     E.ValueRangeError),
    ("division by zero", net("output y = x -> Linear(3 // 0)"), "2:24", "division by zero", E.ValueRangeError),
    ("index out of range", net("output y = x -> Linear([1, 2][5])"), "2:31",
     "index 5 is out of range for a list of length 2", E.ValueRangeError),
    ("range too long", net("for i in range(1000000) { x = x }\noutput y = x"), "2:10",
     "range() of 1000000 items is too long to unroll (at most 100,000)", E.ValueRangeError),
    ("integer overflow", net("v = 3\nfor i in range(10) { v = v * v }\noutput y = x"), "3:26",
     "integer out of range: compile-time integers are limited to 64 bits", E.ValueRangeError),
    ("input dim zero", "network T { input x: f32[0, 3] output y = x }", "1:26",
     "input dims must be positive, got 0", E.ValueRangeError),

    # ---- shapes ---------------------------------------------------------------------------------
    ("add mismatch", net("a = x -> Conv2d(4, 3)\noutput y = a + x"), "3:12",
     "add: dim 1 does not match: 4 vs 3 (shapes [1, 4, 6, 6] and [1, 3, 8, 8])", E.ShapeError),
    ("concat mismatch", net("a = x -> Conv2d(4, 3)\noutput y = concat(a, x, dim = 1)"), "3:12",
     "concat: input 1 has size 8 in dim 2, input 0 has 6 (shapes [1, 4, 6, 6] and [1, 3, 8, 8])",
     E.ShapeError),
    ("concat rank mismatch", net("output y = concat(x, x -> Flatten, dim = 1)"), "2:12",
     "concat: input 1 has rank 2, input 0 has rank 4", E.ShapeError),
    ("input too small", net("output y = x -> Conv2d(4, 9)"), "2:17",
     "Conv2d: output dim 2 would be 0, which is not positive", E.ShapeError),
    ("wrong rank", net("output y = x -> Flatten -> Conv2d(3, 3)"), "2:28",
     "Conv2d: expects a [N, C, H, W] input of rank 4, got rank 2 [1, 192]", E.ShapeError),
    ("symbolic features", SYM.format("output y = x -> Flatten -> Linear(10)"), "2:28",
     "Linear: the number of input features (last dim) must be known at compile time, but it is "
     "'3 * H * W'; declare that input dim as a number", E.ShapeError),
    ("unsatisfiable constraint", SYM.format("y = x -> Conv2d(3, 3)\noutput z = concat(x, y, dim = 1)"), "3:12",
     "concat: input 1 has size H - 2 in dim 2, input 0 has H (shapes [N, 3, H, W] and "
     "[N, 3, H - 2, W - 2]) for every size of input dim H", E.ShapeError),
    ("odd crop margin", SYM.format("output y = center_crop(x, like = x -> Conv2d(4, 2))"), "2:12",
     "center_crop: dim 2: cropping H to H - 1 leaves an odd margin, so the crop cannot be centred",
     E.ShapeError),
    ("layer before any input", "network T {\n  ReLU\n  input x: f32[1, 3]\n  output y = x\n}", "2:3",
     "no tensor flows into this layer: declare an input first", E.ShapeError),
    ("no output", "network T { input x: f32[1, 3] }", "1:1", "network T declares no output", E.NameLookupError),

    # ---- recursion and limits ----------------------------------------------------------------
    ("recursion without base case", "block Loop(c: int) { Loop(c) }\n" + net("output y = x -> Loop(4)"), "1:22",
     "block instantiation nested deeper than 64 levels (is a recursion missing its base case?)",
     E.RecursionLimitError),
    ("branching recursion", "block B(n: int) { if n > 0 { B(n - 1) B(n - 1) } }\n" + net("output y = x -> B(30)"),
     "1:30", "elaboration takes too long: more than 50,000 block instances, or a loop far too large "
     "(a recursion that branches?)", E.ValueRangeError),
    ("list grows exponentially", net("v = [1]\nfor i in range(40) { v = [v, v] }\noutput y = x"), "3:26",
     "this list holds more than 1,000,000 values (counting those of nested lists), which is too many",
     E.ValueRangeError),
    ("import not found", 'import "nope.net"\n' + net("output y = x"), "1:1",
     "cannot find 'nope.net' to import (looked beside this file and in std/)", E.ImportFailure),
]


@pytest.mark.parametrize("src, where, message, cls", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error(src, where, message, cls):
    err = fail(src)
    assert isinstance(err, cls), (type(err), err.render())
    if message.endswith("..."):
        assert err.header().startswith(f"t.net:{where}: error: {message[:-3]}"), err.render()
    else:
        assert err.header() == f"t.net:{where}: error: {message}", err.render()


def test_enough_cases():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


# ---- rendering -----------------------------------------------------------------------------------

def test_render_shows_line_caret_and_trace():
    src = ("block Inner(c: int) {\n"
           "    Conv2d(c, 9)\n"
           "}\n"
           "block Outer() { inner: Inner(4) }\n"
           + net("output y = x -> outer: Outer()"))
    err = fail(src)
    assert err.render() == (
        "t.net:2:5: error: Conv2d: output dim 2 would be 0, which is not positive\n"
        "        Conv2d(c, 9)\n"
        "        ^^^^^^^^^^^^\n"
        "  in block Inner, instantiated at t.net:4:24\n"
        "      block Outer() { inner: Inner(4) }\n"
        "                             ^^^^^^^^\n"
        "  in block Outer, instantiated at t.net:6:24\n"
        "      output y = x -> outer: Outer()\n"
        "                             ^^^^^^^")


def test_recursion_trace_is_folded():
    err = fail("block Loop(c: int) { Loop(c) }\n" + net("output y = x -> Loop(4)"))
    text = err.render()
    assert "  in block Loop, instantiated at t.net:1:22 (63 nested instances)" in text
    assert "  in block Loop, instantiated at t.net:3:17" in text
    assert len(text.splitlines()) == 9


def test_form_feed_does_not_shift_lines():
    err = fail("network T {\f input x: f32[1, 3]\n  output y = x -> Frob\n}")
    assert err.header().startswith("t.net:2:19: error: unknown layer or block 'Frob'")
    assert "    output y = x -> Frob" in err.render()


def test_byte_order_mark_is_ignored():
    net_ = netdsl.loads("\ufeffnetwork T { input x: f32[1, 3] output y = x -> ReLU }")
    assert net_.graph.outputs[0][0] == "y"
    err = fail("\ufeffnetwork T { input x: f32[1, 3] output y = x -> Frob }")
    assert err.header().startswith("t.net:1:49: error: unknown layer or block 'Frob'")


# ---- imports --------------------------------------------------------------------------------------

def test_cyclic_import(tmp_path):
    (tmp_path / "a.net").write_text('import "b.net"\nblock A() { ReLU }\n')
    (tmp_path / "b.net").write_text('# b imports a\nimport "a.net"\nblock B() { ReLU }\n')
    (tmp_path / "main.net").write_text('import "a.net"\n' + net("output y = x -> A"))
    with pytest.raises(E.ImportFailure) as info:
        netdsl.load(tmp_path / "main.net").graph
    err = info.value
    assert err.header() == f"{tmp_path / 'b.net'}:2:1: error: cyclic import: a.net -> b.net -> a.net"
    assert 'import "a.net"' in err.render()


def test_self_import(tmp_path):
    (tmp_path / "self.net").write_text('import "self.net"\n' + net("output y = x"))
    with pytest.raises(E.ImportFailure) as info:
        netdsl.load(tmp_path / "self.net")
    assert info.value.header() == f"{tmp_path / 'self.net'}:1:1: error: cyclic import: self.net -> self.net"


def test_error_inside_imported_file(tmp_path):
    (tmp_path / "lib.net").write_text("block A() {\n  Conv2d(4, 3, strides = 2)\n}\n")
    (tmp_path / "main.net").write_text('import "lib.net"\n' + net("output y = x -> A"))
    with pytest.raises(E.NameLookupError) as info:
        netdsl.load(tmp_path / "main.net").graph
    err = info.value
    assert err.header() == (f"{tmp_path / 'lib.net'}:2:3: error: Conv2d has no argument 'strides' "
                            "(did you mean 'stride'?)")
    assert f"in block A, instantiated at {tmp_path / 'main.net'}:3:17" in err.render()


def test_syntax_error_in_imported_file(tmp_path):
    (tmp_path / "lib.net").write_text("block A() {\n  ReLU\n")
    (tmp_path / "main.net").write_text('import "lib.net"\n' + net("output y = x -> A"))
    with pytest.raises(E.ParseError) as info:
        netdsl.load(tmp_path / "main.net")
    assert info.value.header() == f"{tmp_path / 'lib.net'}:2:7: error: unexpected end of file"


def test_missing_main_file(tmp_path):
    with pytest.raises(E.ImportFailure) as info:
        netdsl.load(tmp_path / "missing.net")
    assert info.value.header() == f"netdsl: error: cannot read '{tmp_path / 'missing.net'}': No such file or directory"


def test_not_utf8(tmp_path):
    (tmp_path / "bin.net").write_bytes(b"network \xff\xfe {}")
    with pytest.raises(E.ImportFailure) as info:
        netdsl.load(tmp_path / "bin.net")
    assert "not readable as UTF-8 text" in info.value.message


# ---- choosing a network -----------------------------------------------------------------------

TWO = "network A { input x: f32[1, 4] output y = x -> Linear(2) }\nnetwork B = A\n"


def test_two_networks_and_no_choice():
    with pytest.raises(E.UsageError) as info:
        netdsl.loads(TWO, name="t.net")
    assert info.value.header() == "netdsl: error: t.net defines 2 networks; choose one with --network: A, B"


def test_unknown_network():
    with pytest.raises(E.NameLookupError) as info:
        netdsl.loads(TWO, network="a", name="t.net").graph
    assert info.value.header() == "netdsl: error: no network 'a' (did you mean 'A'?); networks here: A, B"


def test_no_network_at_all():
    with pytest.raises(E.NameLookupError) as info:
        netdsl.loads("block B() { ReLU }", name="t.net")
    assert info.value.header() == "netdsl: error: t.net defines no network"


def test_alias_of_unknown_network():
    err = fail("network A = Unet(3)\nnetwork UNet { input x: f32[1] output y = x }", network="A")
    assert err.header() == "t.net:1:1: error: no network 'Unet' (did you mean 'UNet'?); networks here: A, UNet"


# ---- --set overrides --------------------------------------------------------------------------

PARAMS = "network T(depth: int = 2, width: int = 4) { input x: f32[1, 3, 8, 8]\n output y = x -> Conv2d(width, 1) }"


def override_error(key, value) -> NetDSLError:
    return fail(PARAMS, **{key: parse_override(value, key)})


def test_set_unknown_key():
    err = override_error("dpeth", "3")
    assert isinstance(err, E.UsageError)
    assert err.header() == ("t.net:1:1: error: T has no parameter 'dpeth' (did you mean 'depth'?) "
                            "(its parameters: depth, width)")


def test_set_wrong_type():
    err = override_error("depth", "true")
    assert err.header() == "t.net:1:11: error: --set depth must be an int, got bool"


def test_set_unparsable():
    err = override_error("depth", "(3")
    assert isinstance(err, E.ParseError)
    assert err.header() == "--set depth:1:3: error: unexpected end of file (expected ')' or ',')"


def test_set_unknown_name():
    err = override_error("width", "wdith")
    assert isinstance(err, E.UsageError)
    assert err.header() == "--set width:1:1: error: unknown name 'wdith'"
    assert err.render().splitlines()[1:] == ["    wdith", "    ^^^^^"]


def test_set_value_error():
    err = override_error("width", "1 // 0")
    assert err.header() == "--set width:1:1: error: division by zero"


def test_set_bad_value_reaches_the_layer():
    err = override_error("width", "0")
    assert err.header() == "t.net:2:18: error: Conv2d: 'out_channels' must be positive, got 0"


def test_set_plain_python_value_of_wrong_type():
    err = fail(PARAMS, depth="3")
    assert err.header() == "t.net:1:11: error: --set depth must be an int, got str"


# ---- --input shapes ----------------------------------------------------------------------------

INPUTS = "network T { input x: f32[N, 3, H, W]\n input z: f32[N, 3, H, 4]\n output y = (x -> MaxPool2d(2)) + (z -> MaxPool2d(2)) }"


def input_error(shapes, src=INPUTS) -> NetDSLError:
    with pytest.raises(NetDSLError) as info:
        netdsl.loads(src, name="t.net").with_inputs(shapes).graph
    info.value.render()
    return info.value


def test_input_wrong_rank():
    err = input_error({"x": (1, 3, 8)})
    assert isinstance(err, E.UsageError)
    assert err.header() == "t.net:1:13: error: --input x: the network declares 4 dims ([N, 3, H, W]), got 3"


def test_input_fixed_dim_mismatch():
    err = input_error({"z": (1, 3, 8, 5)})
    assert err.header() == "t.net:2:2: error: --input z: dim 3 is fixed to 4 by the network, got 5"


def test_input_unknown_name():
    err = input_error({"q": (1, 3, 8, 8)})
    assert err.header() == "t.net:1:1: error: network T has no input 'q' (its inputs: x, z)"


def test_input_inconsistent_symbol():
    err = input_error({"x": (1, 3, 8, 8), "z": (1, 3, 10, 4)})
    assert err.header() == "t.net:2:2: error: --input z: dim H is 8 in another input, got 10"


def test_input_not_positive():
    err = input_error({"x": (1, 3, 0, 8)})
    assert err.header() == "netdsl: error: input 'x': dims must be positive, got [1, 3, 0, 8]"


def test_input_one_shape_for_two_inputs():
    err = input_error((1, 3, 8, 8))
    assert err.header() == "netdsl: error: network T has 2 inputs (x, z): give shapes by name"


def test_input_too_small_for_the_network():
    src = "network T { input x: f32[N, 3, H, W]\n output y = x -> Conv2d(4, 5) }"
    err = input_error({"x": (1, 3, 4, 8)}, src)
    assert err.header() == "t.net:2:18: error: Conv2d: output dim 2 would be 0, which is not positive"


def test_input_size_violating_constraint():
    src = ("network T { input x: f32[N, 3, H, W]\n"
           " output y = concat(x -> MaxPool2d(2) -> resize(scale = 2), x, dim = 1) }")
    assert netdsl.loads(src).summary()["constraints"] == ["H ≡ 0 (mod 2), H ≥ 2", "W ≡ 0 (mod 2), W ≥ 2"]
    err = input_error({"x": (1, 3, 9, 8)}, src)
    assert err.header() == ("t.net:2:13: error: concat: input 1 has size 9 in dim 2, input 0 has 8 "
                            "(shapes [1, 3, 8, 8] and [1, 3, 9, 8])")


# ---- no Python exception escapes the CLI for these either -------------------------------------

@pytest.mark.parametrize("src, where, message, cls", [c[1:] for c in CASES[:: 7]],
                         ids=[c[0] for c in CASES[:: 7]])
def test_cli_reports_the_same(tmp_path, capsys, src, where, message, cls):
    from netdsl.cli import main
    f = tmp_path / "t.net"
    f.write_text(src)
    assert main(["check", str(f)]) == 1
    err = capsys.readouterr().err
    head = err.splitlines()[0]
    assert head.startswith(f"{f}:{where}: error: {message.rstrip('.')}")
    assert "Traceback" not in err


# ---- constraints between two input symbols ----------------------------------------------------

def test_relation_between_symbols_is_reported_not_narrowed():
    src = "network T { input x: f32[N, 3, H, W] input w: f32[N, 3, W, H]\n output y = x + w }"
    assert netdsl.loads(src).summary()["constraints"] == ["H = W"]
    src = ("network T { input a: f32[1, 3, H, 8] input b: f32[1, 3, W, 8]\n"
           " output y = concat(a, a, dim = 2) + concat(b, b, b, dim = 2) }")
    assert netdsl.loads(src).summary()["constraints"] == ["2 * H = 3 * W"]


def test_single_admissible_size():
    src = "network T { input x: f32[N, 3, H, W]\n output y = (x -> MaxPool2d(2)) + (x -> MaxPool2d(3)) }"
    assert netdsl.loads(src).summary()["constraints"] == ["H = 3", "W = 3"]


def test_unsatisfiable_relation_between_symbols():
    src = ("network T { input a: f32[1, 3, H, 8] input b: f32[1, 3, W, 8]\n"
           " output y = concat(a, a, dim = 2) + concat(b, b, b -> AdaptiveAvgPool2d([1, 8]), dim = 2) }")
    err = fail(src)
    assert isinstance(err, E.ShapeError)
    assert err.header() == ("t.net:2:13: error: add: dim 2 does not match: 2 * H vs 2 * W + 1 (shapes "
                            "[1, 3, 2 * H, 8] and [1, 3, 2 * W + 1, 8]) for every size of input dims H and W")


def test_import_chain_too_deep(tmp_path):
    for i in range(150):
        (tmp_path / f"m{i}.net").write_text(f'import "m{i + 1}.net"\n' if i < 149 else "block Z() { ReLU }\n")
    (tmp_path / "main.net").write_text('import "m0.net"\n' + net("output y = x -> Z"))
    with pytest.raises(E.ImportFailure) as info:
        netdsl.load(tmp_path / "main.net")
    assert info.value.header() == f"{tmp_path / 'm98.net'}:1:1: error: imports nested more than 100 files deep"
