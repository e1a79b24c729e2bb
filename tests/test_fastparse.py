"""The parser's fast path (netdsl/frontend/fastparse.py) against the reference lark parser:
the same AST, spans included, for every spec shipped and for generated ones; and its table
cache: used, written atomically, harmless when unwritable."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netdsl.errors import NetDSLError, Source
from netdsl.frontend import ast as A
from netdsl.frontend import fastparse
from netdsl.frontend import parser as P

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(ROOT.glob("examples/*.net")) + sorted((ROOT / "netdsl" / "std").glob("*.net"))


def dump(node):
    """A comparable structure of an AST: node types, fields and spans."""
    if isinstance(node, A.Node):
        s = node.span
        return (type(node).__name__, (s.line, s.col, s.end_line, s.end_col),
                tuple((k, dump(v)) for k, v in sorted(vars(node).items()) if k != "span"))
    if isinstance(node, (list, tuple)):
        return tuple(dump(x) for x in node)
    return (type(node).__name__, node)


def both(text: str, start: str = "start"):
    source = Source("t.net", text)
    fast = fastparse.parse(P._fast_tables(), text, source, start, P._ToAST(source))
    try:
        ref = P._parse_reference(text, source, start)
    except NetDSLError as e:
        ref = e
    return fast, ref


def test_fast_path_is_available():
    assert P._fast_tables() is not None


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_same_ast_as_lark(path):
    fast, ref = both(path.read_text(encoding="utf-8"))
    assert fast is not None, "a valid spec fell back to the reference parser"
    assert dump(fast) == dump(ref)


TRICKY = [
    "network N { input x: f32[N, 3] \n output y = x -> ( (Linear(2)) ) }",
    "network N(a: int = (1 + 2) * 3, b: list = [1, (2), [3,]], ) { input x: f32[1] output y = x }",
    "block B() (a, b) -> (c, d) { c = a + b\n d = (a if true else b) }\nnetwork N = B",
    "network N { 'doc' input x: f32[1, 2] x = x -> [ReLU\n r{1 + 1}x: ReLU] output y }",
    "network N { input x: f32[1] if a { ReLU } elif not b or c and d { ReLU } else { ReLU } output y = x }",
    "network N { input x: f32[1] for i in range(3) { x = x -> l{i}: ReLU } output y = x.shape[0] }",
    "block S = B(1, k = 2)\nnetwork N { param p: f32[1, 2] = normal(0.02) input x: f32[2]"
    " a, b = f(x)  return x, -x ** 2 // 3 % 4 }",
    "",
    "   # only a comment\n",
    "import \"std/blocks.net\"\nnetwork N { input x: f32[1] output y = x -> [] }",
    "network N { input x: f32[1] y = x -> a: [ReLU] freeze a.0, a\n freeze 1.b_2 . c output y }",
    # issue 9: anonymous groups (after an assignment, behind a ';'), sequential blocks, splices,
    # hyphenated labels, output and param with and without a value
    "block S(c: int = 2) [ 'doc' Conv2d(c, 3) [BatchNorm2d ReLU] ...T(1) ]\nblock E() [ ]\n"
    "network N { input x: f32[1] y = x -> f: [ [ReLU [ReLU]] for i in [1] { c = i * 2; ; [Conv2d(c, 1)]"
    " if c { [ReLU] } elif 1 { a = 1 } else { ...S(c) } } b{1}-{2}x-3: ReLU  t = x[0] ] ...S "
    "param p-{1}: f32[1] = constant(1.0)  param q: f32[2] output z = y output y }",
    "network N { y = x -> [ return x; [ ReLU ] output o = x;  param w: f32[1] = ones(); [] ] }",
]


@pytest.mark.parametrize("text", TRICKY)
def test_same_ast_on_tricky_syntax(text):
    fast, ref = both(text)
    if isinstance(ref, NetDSLError):
        assert fast is None
    else:
        assert fast is not None and dump(fast) == dump(ref)


@pytest.mark.parametrize("text", ["1 + 2 * x", "[1, 2, (3, 4)]", "B(c = 2) ", "'s' if a else (1,)"])
def test_same_ast_for_values(text):
    fast, ref = both(text, "value")
    assert fast is not None and dump(fast) == dump(ref)


@pytest.mark.parametrize("text", [
    "network N { input x: f32[1] output y = x -> }",      # syntax error
    "network N { x = \"\\q\" }",                            # a literal the builders reject
    "network N { x = 99999999999999999999999 }",
    "network N { x = 1 }}",
    "network N { x = \u201cs\u201d }",                       # a character no terminal matches
    "network N { y = x -> [ c = 1\n [ for i in [1] { ReLU } ] ] }",    # a group right after `c = 1`
    "network N { x = 1; }",                                 # ';' ends statements in groups only
    "block B() [ ...f(1)(2) ]",
])
def test_errors_fall_back_to_lark(text):
    fast, ref = both(text)
    assert fast is None and isinstance(ref, NetDSLError)


_ATOMS = st.sampled_from(["x", "1", "2.5", "'s'", "true", "x.shape[1]", "f(1, k = 2)", "[1, 2]",
                          "(1, 2)", "-x", "not x"])
_OPS = st.sampled_from(["+", "-", "*", "//", "%", "**", "==", "<", "and", "or"])


@st.composite
def expressions(draw, depth=3):
    if depth == 0 or draw(st.booleans()):
        return draw(_ATOMS)
    kind = draw(st.integers(0, 3))
    a, b = draw(expressions(depth - 1)), draw(expressions(depth - 1))
    if kind == 0:
        return f"{a} {draw(_OPS)} {b}"
    if kind == 1:
        return f"({a})"
    if kind == 2:
        return f"({a} if {b} else {a})"
    return f"{a} -> {draw(st.sampled_from(['ReLU', 'Conv2d(3, 1)', 'l: Linear(2)', '[ReLU]']))}"


@st.composite
def specs(draw):
    lines = ["network N(p: int = 1) {", "    input x: f32[N, 3, H, W]"]
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 4))
        ws = draw(st.sampled_from([" ", "\n", "  # c\n", "\t"]))
        if kind == 0:
            lines.append(f"    y{ws}={ws}{draw(expressions())}")
        elif kind == 1:
            lines.append(f"    c{draw(st.integers(0, 9))}:{ws}Conv2d(4,{ws}3, padding = 1)")
        elif kind == 2:
            lines.append(f"    if {draw(expressions(1))} {{ ReLU }} else {{ x = ({draw(expressions())}) }}")
        elif kind == 3:
            lines.append("    for i in range(2) { x = x -> l{i}: ReLU }")
        else:       # a group of group statements (issue 9), ';' or not between them
            items = draw(st.lists(st.sampled_from(
                ["[ReLU]", "t = x", "...B(1)", "a{1}-2: ReLU", "[ [ReLU] ]", "for i in [1] { [ReLU] c = 1 }",
                 "if c { m = s[0]; [ReLU] }", ";", "[]", "q = x -> [ReLU]"]), max_size=5))
            lines.append(f"    x = x -> g: [{ws}{ws.join(items)}{ws}]")
    lines += ["    output out = x", "}"]
    return "\n".join(lines)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_same_ast_on_generated_specs(text):
    fast, ref = both(text)
    if isinstance(ref, NetDSLError):
        assert fast is None
    else:
        assert fast is not None and dump(fast) == dump(ref)


# ---- the table cache -------------------------------------------------------------------------

def _run(code: str, cache: Path, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "NETDSL_CACHE_DIR": str(cache), **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env,
                          cwd=ROOT, timeout=120)


PARSE_AND_REPORT_LARK = (
    "import sys, netdsl.frontend.parser as P\n"
    "P.parse('network N { input x: f32[1, 3] output y = x -> Linear(2) }')\n"
    "print('lark' in sys.modules)\n")


def test_table_cache_is_written_then_used_without_lark(tmp_path):
    cache = tmp_path / "cache"
    first = _run(PARSE_AND_REPORT_LARK, cache)
    assert first.returncode == 0, first.stderr
    files = list(cache.glob("parser-*.marshal"))
    assert len(files) == 1 and not list(cache.glob(".*tmp"))     # written, no temporary left
    second = _run(PARSE_AND_REPORT_LARK, cache)
    assert second.stdout.strip() == "False"       # the cached tables: lark is not even imported


def test_unwritable_cache_dir_still_parses(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = _run(PARSE_AND_REPORT_LARK, blocker / "cache")
    assert out.returncode == 0, out.stderr


def test_corrupt_cache_file_is_replaced(tmp_path):
    cache = tmp_path / "cache"
    assert _run(PARSE_AND_REPORT_LARK, cache).returncode == 0
    (path,) = cache.glob("parser-*.marshal")
    path.write_bytes(b"garbage")
    assert _run(PARSE_AND_REPORT_LARK, cache).returncode == 0
    assert _run(PARSE_AND_REPORT_LARK, cache).stdout.strip() == "False"


def test_cache_is_keyed_to_the_grammar():
    assert fastparse.cache_path("a: b") != fastparse.cache_path("a: c")


def test_tables_from_a_freshly_built_lark_are_cached(tmp_path, monkeypatch):
    # a grammar lark has just analysed (no cache of its own) names things with Tokens
    from lark import Lark
    from netdsl.frontend.grammar_path import grammar_file
    monkeypatch.setenv("NETDSL_CACHE_DIR", str(tmp_path))
    fresh = lambda: Lark.open(str(grammar_file()), parser="lalr", strict=True,  # noqa: E731
                              start=["start", "value"], propagate_positions=True, maybe_placeholders=True)
    tables = fastparse.load_tables(grammar_file().read_text(encoding="utf-8"), fresh)
    assert len(list(tmp_path.glob("parser-*.marshal"))) == 1
    text = "network N { input x: f32[1, 3] output y = x -> Linear(2) }"
    source = Source("t.net", text)
    assert dump(fastparse.parse(tables, text, source, "start", P._ToAST(source))) == dump(P.parse(text, "t.net"))
