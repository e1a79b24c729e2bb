"""String literals: the escapes the language defines, located errors for the rest, a size
limit, cheap lexing, and docstrings that reach every target intact (issue 6, sections 2, 5)."""
from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netdsl
from netdsl.errors import NetDSLError, ParseError
from netdsl.frontend.parser import parse_value
from netdsl.frontend.strings import MAX_STRING_CHARS

SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def value(literal: str) -> str:
    return parse_value(literal, "v").value


def error(literal: str) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_value(literal, "v")
    assert info.value.span is not None
    return info.value


@pytest.mark.parametrize("literal, expected", [
    (r'"a\\b"', "a\\b"), (r'"\""', '"'), (r"'\''", "'"), (r'"\'"', "'"), (r"'\"'", '"'),
    (r'"\n\t\r"', "\n\t\r"), (r'"\x41\xe9"', "Aé"), (r'"\u00e9\u20AC"', "é€"),
    (r'"\U0001F600"', "\U0001F600"), (r'"\U0010FFFF"', "\U0010FFFF"), (r'"\x410"', "A0"),
    (r'"\u00410"', "A0"), ('"""a\n  "b" ""c\\""""', 'a\n  "b" ""c"'), (r'""', ""),
])
def test_escapes(literal, expected):
    assert value(literal) == expected


@pytest.mark.parametrize("literal, col, width, message", [
    (r'"ab\qc"', 4, 2, r"invalid escape sequence '\q'"),
    (r'"\0"', 2, 2, r"invalid escape sequence '\0'"),
    (r'"\a"', 2, 2, r"invalid escape sequence '\a'"),
    (r'"x\N{BULLET}"', 3, 2, r"named escapes (\N{...}) are not supported"),
    (r'"\x4"', 2, 3, r"'\x' needs exactly 2 hex digits"),
    (r'"\x"', 2, 2, r"'\x' needs exactly 2 hex digits"),
    (r'"a\u12"', 3, 4, r"'\u' needs exactly 4 hex digits"),
    (r'"\U0001F60"', 2, 9, r"'\U' needs exactly 8 hex digits"),
    (r'"\U0011FFFF"', 2, 10, r"\U0011FFFF is beyond the last Unicode character"),
    (r'"\ud800"', 2, 6, "a string cannot contain U+D800: it is a surrogate code point"),
    (r'"..\uDFFF"', 4, 6, "a string cannot contain U+DFFF"),
    (r'"\U0000d83d"', 2, 10, "a string cannot contain U+D83D"),
    (r'"\x00"', 2, 4, "a string cannot contain a NUL character"),
    (r'"\u0000"', 2, 6, "a string cannot contain a NUL character"),
])
def test_bad_escapes_are_located_at_the_escape(literal, col, width, message):
    err = error(literal)
    assert message in err.message
    assert (err.span.line, err.span.col, err.span.end_col - err.span.col) == (1, col, width)


def test_error_inside_a_multiline_docstring_is_located():
    src = 'network N {\n    """first\n    second \\q\n    """\n    input x: f32[1]\n    output y = x\n}\n'
    with pytest.raises(ParseError) as info:
        netdsl.loads(src, name="t.net").graph
    assert (info.value.line, info.value.col) == (3, 12)


def test_raw_surrogate_and_nul_are_errors():
    """Only `loads` can pass them raw (a file decoded as UTF-8 has no surrogates)."""
    for raw, col in (('"ab\ud800"', 4), ('"a\0"', 3)):
        err = error(raw)
        assert err.span.col == col


def test_literal_size_limit():
    assert len(value('"' + "a" * MAX_STRING_CHARS + '"')) == MAX_STRING_CHARS
    err = error('"' + "a" * (MAX_STRING_CHARS + 1) + '"')
    assert err.message == f"string literal too long (at most {MAX_STRING_CHARS:,} characters)"
    assert err.span.col == 1
    # counted after decoding, checked before decoding a huge one
    assert len(value('"' + "\\x41" * MAX_STRING_CHARS + '"')) == MAX_STRING_CHARS
    assert "too long" in error('"' + "\\n" * (6 * MAX_STRING_CHARS) + '"').message


def test_a_long_literal_costs_little_memory():
    """A 5 MB literal took 1.5 GB of RSS to lex (a regex backtracking state per character).
    In a fresh process: parsing it (and rejecting it as too long) stays within 200 MB."""
    code = textwrap.dedent("""
        import resource
        from netdsl.errors import ParseError
        from netdsl.frontend.parser import parse
        parse("network A { input x: f32[1]\\n output y = x }")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for body in ("a" * 5_000_000, "\\\\n" * 1_000_000 + "a" * 3_000_000):
            try:
                parse('network N { "' + body + '"\\n input x: f32[1]\\n output y = x }')
            except ParseError as e:
                assert "too long" in e.message, e.message
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) < 200, f"{out.stdout.strip()} MiB"


# ---- property: any text round-trips through a literal, and a docstring through every target ----

CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")
SIMPLE = {"\\": "\\\\", '"': '\\"', "'": "\\'", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


@st.composite
def encoded(draw, triple: bool = False):
    """(text, a literal spelling it, each character written raw or as one of its escapes)."""
    text = draw(st.text(CHARS, max_size=30))
    out = []
    for ch in text:
        code = ord(ch)
        ways = [f"\\U{code:08x}", f"\\U{code:08X}"]
        if code < 0x10000:
            ways.append(f"\\u{code:04x}")
        if code < 0x100:
            ways.append(f"\\x{code:02X}")
        if ch in SIMPLE:
            ways.append(SIMPLE[ch])
        if ch not in '\\"' and (triple or ch not in "\n"):
            ways.append(ch)
        out.append(draw(st.sampled_from(ways)))
    q = '"""' if triple else '"'
    return text, q + "".join(out) + q


@settings(max_examples=200, **SETTINGS)
@given(encoded())
def test_literals_decode_to_their_text(case):
    text, literal = case
    assert value(literal) == text
    if "\r" not in literal:                         # (Python reads a raw CR as a line end)
        assert ast.literal_eval(literal) == text   # the same as Python, where both accept it


@settings(max_examples=60, **SETTINGS)
@given(encoded(triple=True))
def test_any_docstring_reaches_every_target(case):
    text, literal = case
    if text.endswith('"'):                          # would close the literal early: not a literal
        return
    src = f"network N {{\n {literal}\n input x: f32[1, 4]\n output y = x -> fc: Linear(2)\n}}\n"
    try:
        net = netdsl.loads(src, name="t.net")
        doc = net.graph.doc
    except NetDSLError as err:                      # e.g. a raw CR: not the lexer's newline
        assert err.span is not None
        return
    assert doc == inspect.cleandoc(text)
    source = net.torch_source()
    tree = ast.parse(source)
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    assert ast.get_docstring(cls, clean=False).startswith(doc.strip())
    source.encode("utf-8")
    net.summary_text().encode("utf-8")
    assert net.to_onnx().graph.doc_string == doc


def _cli(*args, cwd):
    import os
    from pathlib import Path
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "netdsl", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_cli_docstrings_with_backslashes_compile_and_surrogates_are_errors(tmp_path):
    """`compile --target torch` wrote unimportable files for docstrings holding `\\x`, `\\N{..}`,
    `\\u12` (escaped backslashes), and exited 3 on a lone surrogate."""
    spec = tmp_path / "d.net"
    spec.write_text('network D {\n    "x \\\\x \\\\N{BULLET} \\\\u12 \\\\U0011FFFF \\"\\"\\" \\x07 end\\\\"\n'
                    '    input x: f32[1, 4]\n    output y = x -> fc: Linear(2)\n}\n')
    out = tmp_path / "d.py"
    r = _cli("compile", str(spec), "--target", "torch", "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    namespace: dict = {}
    exec(compile(out.read_text(encoding="utf-8"), str(out), "exec"), namespace)
    assert namespace["D"].__doc__.startswith('x \\x \\N{BULLET} \\u12 \\U0011FFFF """ \x07 end\\')
    spec.write_text('network D {\n    "a \\ud800 b"\n    input x: f32[1, 4]\n    output y = x\n}\n')
    for cmd in (("compile", str(spec), "--target", "torch", "-o", str(out)), ("summary", str(spec))):
        r = _cli(*cmd, cwd=tmp_path)
        assert r.returncode == 1, r.stderr
        assert "d.net:2:8: error: a string cannot contain U+D800" in r.stderr


@pytest.mark.parametrize("literal", ['"""doc \\\n more"""', '"doc \\\n more"', '"""a \\\\\\\n b"""'])
def test_a_backslash_at_the_end_of_a_line_is_named(literal):
    with pytest.raises(ParseError) as info:
        netdsl.loads("network A {\n    " + literal + "\n    input x: f32[1]\n    output y = x\n}\n")
    assert info.value.message.startswith("a backslash cannot end a line inside a string")


def test_an_escaped_backslash_may_end_a_line_in_a_docstring():
    net = netdsl.loads('network A {\n    """a \\\\\n b"""\n    input x: f32[1]\n    output y = x\n}\n')
    assert net.doc == "a \\\nb"       # docstrings are dedented
