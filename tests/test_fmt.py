"""`netdsl fmt` (netdsl.frontend.formatter): one layout, idempotent, every comment and docstring
kept, and never a change of meaning: the formatted text parses to the same AST and elaborates
to the same IR, on every example, the standard library, the .net files under tests/ and the
differential fuzzer's corpus; the repo's own .net files stay formatted."""
from __future__ import annotations

import io
import random
import sys
from pathlib import Path

import pytest

import netdsl
from netdsl.cli import main
from netdsl.errors import NetDSLError, ParseError
from netdsl.frontend.formatter import LIMIT, format_text
from netdsl.frontend.parser import parse
from netdsl.ir import dims as D

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.net"))
STD = sorted((ROOT / "netdsl" / "std").glob("*.net"))
TEST_SPECS = sorted((ROOT / "tests").rglob("*.net"))
REPO_FILES = EXAMPLES + STD + TEST_SPECS
FUZZ_SEEDS = range(150)

sys.path.insert(0, str(ROOT / "tests" / "fuzz"))
import spec_gen  # noqa: E402


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


# ---- independent witnesses: comments as lark's lexer sees them, tokens, a whitespace scrambler --

_lexer = None


def _comments(text: str) -> list[str]:
    """Every comment, in order, as the grammar's lexer reports it (not the formatter's scan)."""
    global _lexer
    if _lexer is None:
        from lark import Lark

        from netdsl.frontend.grammar_path import grammar_file
        found: list = []
        _lexer = (Lark.open(str(grammar_file()), parser="lalr",
                            lexer_callbacks={"COMMENT": found.append}), found)
    lark, found = _lexer
    found.clear()
    lark.parse(text.lstrip("\ufeff"))
    return [str(c).rstrip() for c in found]


def _tokens(text: str) -> list[str]:
    from netdsl.frontend.parser import _parser
    return [str(t) for t in _parser().lex(text.lstrip("\ufeff"))]


def _scramble(text: str, seed: int) -> str:
    """The same tokens and comments with other whitespace between them: any layout of a spec
    means the same, so formatting it must give the same AST and IR."""
    from netdsl.frontend.parser import _parser
    rng = random.Random(seed)
    out, pos = [], 0
    for tok in _parser().lex(text):
        gap = text[pos:tok.start_pos]
        if "#" in gap:
            out.append(gap)
        elif gap:
            out.append(rng.choice([" ", "   ", "\n", "\n\n\t  ", "\n" + " " * rng.randint(0, 12)]))
        else:
            out.append(rng.choice(["", "", " ", "\n  "]))
        out.append(text[tok.start_pos:tok.end_pos])
        pos = tok.end_pos
    out.append(text[pos:])
    return "".join(out)


def _ir(graph) -> dict:
    """What a network means, span-free: nodes (op, path, attrs, input and output shapes, param
    specs), graph inputs and outputs, constraints."""
    return {
        "inputs": [(v.name, D.fmt_shape(v.shape)) for v in graph.inputs],
        "outputs": [(name, D.fmt_shape(v.shape)) for name, v in graph.outputs],
        "nodes": [(n.op, n.path, repr(sorted(n.attrs.items())), [D.fmt_shape(v.shape) for v in n.inputs],
                   [D.fmt_shape(v.shape) for v in n.outputs], sorted(n.params.items()), str(n.macs))
                  for n in graph.nodes],
        "constraints": sorted((c.kind, str(c.a), str(c.b), c.r, c.message) for c in graph.constraints),
        "doc": graph.doc,
    }


# ---- the repo's files ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def repo_formatted():
    """path -> (text, format_text(text), a scrambled layout of text, format_text of that)."""
    out = {}
    for i, p in enumerate(REPO_FILES):
        text = p.read_text(encoding="utf-8")
        scrambled = _scramble(text, i)
        out[p] = (text, format_text(text, _rel(p)), scrambled, format_text(scrambled, _rel(p)))
    return out


def test_the_repo_has_comments_and_docstrings_to_keep(repo_formatted):
    """The checks below are not vacuous: the files hold many comments, trailing ones too, and
    docstrings; and the scrambled layouts really differ from the originals."""
    comments = sum(len(_comments(t)) for t, *_ in repo_formatted.values())
    assert comments > 300
    trailing = sum(1 for t, *_ in repo_formatted.values() for line in t.splitlines()
                   if "#" in line and line.split("#")[0].strip() and '"' not in line)
    assert trailing > 20
    docs = sum(1 for t, *_ in repo_formatted.values() for it in parse(t).items if getattr(it, "doc", None))
    assert docs > 30
    assert all(s != t for t, _, s, _ in repo_formatted.values())


@pytest.mark.parametrize("path", REPO_FILES, ids=_rel)
def test_repo_file_formatting_is_idempotent_and_keeps_comments(path, repo_formatted):
    text, out, scrambled, out2 = repo_formatted[path]
    assert format_text(out, _rel(path)) == out
    assert format_text(out2, _rel(path)) == out2
    assert _comments(out) == _comments(text) == _comments(out2)
    assert parse(out) == parse(text) == parse(out2)          # docstrings included (AST equality)
    assert _tokens(out) == _tokens(text)
    assert all(not line.endswith((" ", "\t")) for line in out.splitlines())


def test_repo_files_are_kept_formatted(repo_formatted):
    """`netdsl fmt --check examples/ netdsl/std/ tests/` would change nothing."""
    unformatted = [_rel(p) for p, (text, out, *_) in repo_formatted.items() if out != text]
    assert not unformatted, ("these .net files are not in the canonical layout; run "
                             "`netdsl fmt " + " ".join(unformatted) + "`")


@pytest.fixture(scope="module")
def formatted_tree(tmp_path_factory, repo_formatted):
    """A copy of examples/ and std/ with every file replaced by format_text of a scrambled
    layout of it; std/ imports resolve into the copy."""
    root = tmp_path_factory.mktemp("formatted")
    (root / "examples").mkdir()
    (root / "std").mkdir()
    for p in EXAMPLES + STD:
        target = root / ("examples" if p in EXAMPLES else "std") / p.name
        target.write_text(repo_formatted[p][3], encoding="utf-8")
    return root


def test_examples_elaborate_to_the_same_ir(formatted_tree, monkeypatch):
    """Every network of every example, with the standard library it imports, elaborates to the
    same IR from the formatted (scrambled, then formatted) files as from the originals."""
    import netdsl.ir.program as program
    from netdsl.ir.program import load_program
    originals = {}
    for p in EXAMPLES:
        for name in load_program(path=p).main_networks:
            originals[(p.name, name)] = _ir(netdsl.load(p, name).graph)
    monkeypatch.setattr(program, "STD_DIR", formatted_tree / "std")
    compared = 0
    for (file, name), expected in originals.items():
        got = _ir(netdsl.load(formatted_tree / "examples" / file, name).graph)
        assert got == expected, (file, name)
        compared += 1
    assert compared >= 100
    assert sum(len(ir["nodes"]) for ir in originals.values()) > 5000


# ---- the differential fuzzer's corpus ----------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_corpus():
    out = []
    for seed in FUZZ_SEEDS:
        text = spec_gen.generate(seed).text
        try:
            parse(text)
        except ParseError:
            continue            # the generator writes some invalid specs on purpose
        out.append((seed, text))
    assert len(out) >= 120
    return out


def test_fuzz_corpus_formats_idempotently_to_the_same_ast(fuzz_corpus):
    changed = overlong = lines = 0
    for seed, text in fuzz_corpus:
        for variant in (text, _scramble(text, seed)):
            out = format_text(variant)
            if variant is not text:
                assert format_text(out) == out, seed
            else:
                changed += out != text
            assert parse(out) == parse(text), seed
            assert _comments(out) == _comments(text), seed
            overlong += sum(len(line) > LIMIT for line in out.splitlines())
            lines += out.count("\n")
    assert changed > 50
    assert overlong < lines / 500, overlong       # lines too long only where nothing can break


def test_fuzz_corpus_elaborates_to_the_same_ir(fuzz_corpus):
    compared = 0
    for seed, text in fuzz_corpus[:60]:
        try:
            expected = _ir(netdsl.loads(text).graph)
        except NetDSLError:
            continue
        assert _ir(netdsl.loads(format_text(_scramble(text, seed))).graph) == expected, seed
        compared += 1
    assert compared >= 30


# ---- layout --------------------------------------------------------------------------------------

def test_canonical_spacing_and_indentation():
    src = ('network  N{input x:f32[N,3,H,W]\n'
           '  y=x->c1:Conv2d(8,3,stride=2,padding=1)->ReLU\n'
           '\n\n\n'
           '       z = -y*2 + y.shape[1]**2   \n'
           'output o=(y if true else z)->[ BatchNorm2d ReLU ]->f{1}-a: Flatten}')
    assert format_text(src) == (
        "network N {\n"
        "    input x: f32[N, 3, H, W]\n"
        "    y = x -> c1: Conv2d(8, 3, stride = 2, padding = 1) -> ReLU\n"
        "\n"
        "    z = -y * 2 + y.shape[1] ** 2\n"
        "    output o = (y if true else z) -> [ BatchNorm2d  ReLU ] -> f{1}-a: Flatten\n"
        "}\n")


def test_long_chains_and_argument_lists_break():
    args = ", ".join(f"a{i} = {i}" for i in range(12))
    src = (f"network N {{ input x: f32[1, 4, 8, 8]\n"
           f"output y = x -> first: Conv2d(4, 3, padding = 1) -> second: Conv2d(4, 3, padding = 1)"
           f" -> ReLU -> third: Conv2d(4, 3, padding = 1) -> ReLU\n"
           f"z = f(x, {args}) }}\n")
    out = format_text(src)
    assert out == (
        "network N {\n"
        "    input x: f32[1, 4, 8, 8]\n"
        "    output y = x -> first: Conv2d(4, 3, padding = 1) -> second: Conv2d(4, 3, padding = 1) -> ReLU\n"
        "                 -> third: Conv2d(4, 3, padding = 1) -> ReLU\n"
        "    z = f(x, a0 = 0, a1 = 1, a2 = 2, a3 = 3, a4 = 4, a5 = 5, a6 = 6, a7 = 7, a8 = 8, a9 = 9,\n"
        "          a10 = 10, a11 = 11)\n"
        "}\n")
    assert max(map(len, out.splitlines())) <= LIMIT


def test_author_line_breaks_blocks_and_brackets():
    """The author's breaks stay (at most one blank line); a bracket whose contents start on
    the next line indents them by 4 and puts its closer on its own line; one-line bodies of
    if/for stay on one line, a block's body never does; blank lines around definitions."""
    src = ("block B(c: int) { ReLU }\n"
           "network N {\n"
           "input x: f32[1, 2]\n"
           "y = x -> g: [\n"
           "Linear(4)   ReLU\n"
           "  Linear(2)]\n"
           "if true { z = y } else { z = x }\n"
           "output o = concat(\n"
           "y, z)\n"
           "}\n"
           "network A = N\n"
           "network Longer = N\n")
    assert format_text(src) == (
        "block B(c: int) {\n"
        "    ReLU\n"
        "}\n"
        "\n"
        "network N {\n"
        "    input x: f32[1, 2]\n"
        "    y = x -> g: [\n"
        "        Linear(4)  ReLU\n"
        "        Linear(2)\n"
        "    ]\n"
        "    if true { z = y } else { z = x }\n"
        "    output o = concat(\n"
        "        y, z\n"
        "    )\n"
        "}\n"
        "\n"
        "network A      = N\n"
        "network Longer = N\n")


NASTY = '''# head comment
import "std/blocks.net"   # after import
\t# tabbed comment
block   B( c :int ,  # after a comma
\t k: int = 3  # k
  ) {
  """Multi-line
     docstring: unicode \u2713 \u00e9\u00e8"""
  x = x ->  # after an arrow
      Conv2d(c, k,   # inside arguments
             padding = k // 2)
      -> ReLU
  if c > 2 { x = x -> ReLU }  # after if
  # between if and else
  else { x = x -> Identity }
  y = x->[ Conv2d(c,1)
   # inside a group
   ReLU ]
  return y # last
}
network N{ input image:f32[N,3,H,W]  output o = image -> B(4) -> act{1}-x: ReLU -> Flatten  # t
} # end
# the last comment, without a newline'''


@pytest.mark.parametrize("variant", ["lf", "crlf", "bom", "tabs"])
def test_comments_everywhere_keep_their_place(variant):
    text = {"lf": NASTY, "crlf": NASTY.replace("\n", "\r\n"), "bom": "\ufeff" + NASTY,
            "tabs": NASTY.replace("  ", "\t")}[variant]
    out = format_text(text)
    assert format_text(out) == out
    assert parse(out) == parse(text)
    assert _comments(out) == _comments(text) and len(_comments(text)) == 14
    assert "\r" not in out.replace('Multi-line\r\n', "")          # only the docstring keeps its \r
    assert not [line for line in out.splitlines() if "\t" in line and "docstring" not in line]
    lines = out.splitlines()
    assert "    # between if and else" in lines
    assert "# the last comment, without a newline" == lines[-1] and out.endswith("\n")
    assert any(line.startswith("               # inside a group") for line in lines)
    # trailing comments of consecutive lines line up
    a = next(line for line in lines if line.endswith("# after a comma"))
    b = next(line for line in lines if line.endswith("# k"))
    assert a.index("#") == b.index("#")


def test_unicode_and_odd_literals_are_kept_verbatim():
    src = ('network N(s: str = \'caf\u00e9 \\u00e9\', f: float = 1.50e-3, g: float = .5) {\n'
           '  "\u6587\u6863"\n input x: f32[1]\n  output y = x }')
    out = format_text(src)
    assert "'caf\u00e9 \\u00e9'" in out and "1.50e-3" in out and "= .5)" in out
    assert parse(out) == parse(src)


def test_empty_and_comment_only_texts():
    assert format_text("") == ""
    assert format_text("\n\n  \n") == ""
    assert format_text("# just a comment   \n\n\n# and another") == "# just a comment\n\n# and another\n"


def test_syntax_error_is_a_located_parse_error():
    with pytest.raises(ParseError) as e:
        format_text("network N {\n  y = x ->\n}\n", "bad.net")
    assert (e.value.span.file, e.value.span.line, e.value.span.col) == ("bad.net", 3, 1)


# ---- the command --------------------------------------------------------------------------------

UGLY = "network N{input x:f32[1,2]\n  output y=x->ReLU}\n"
PRETTY = "network N {\n    input x: f32[1, 2]\n    output y = x -> ReLU\n}\n"


def test_cli_help(capsys):
    assert main(["fmt", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--check" in out and "--diff" in out and "FILE" in out


def test_cli_rewrites_in_place_only_what_changes(tmp_path, capsys):
    ugly, pretty = tmp_path / "a.net", tmp_path / "b.net"
    ugly.write_text(UGLY)
    pretty.write_text(PRETTY)
    before = pretty.stat().st_mtime_ns
    assert main(["fmt", str(ugly), str(pretty)]) == 0
    assert ugly.read_text() == PRETTY and pretty.read_text() == PRETTY
    assert pretty.stat().st_mtime_ns == before
    err = capsys.readouterr().err
    assert f"reformatted {ugly}" in err and str(pretty) not in err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]      # no temporary left


def test_cli_check_lists_and_exits_1(tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    ugly, pretty = tmp_path / "sub" / "a.net", tmp_path / "b.net"
    ugly.write_text(UGLY)
    pretty.write_text(PRETTY)
    (tmp_path / "notes.txt").write_text("not a spec")
    assert main(["fmt", "--check", str(tmp_path)]) == 1          # a directory: its .net files
    out = capsys.readouterr().out
    assert out.splitlines() == [str(ugly)]
    assert ugly.read_text() == UGLY                                # --check writes nothing
    assert main(["fmt", "--check", str(pretty)]) == 0
    assert capsys.readouterr().out == ""


def test_cli_diff(tmp_path, capsys):
    ugly = tmp_path / "a.net"
    ugly.write_text(UGLY)
    assert main(["fmt", "--diff", str(ugly)]) == 0
    out = capsys.readouterr().out
    assert "+    output y = x -> ReLU" in out and "-  output y=x->ReLU}" in out
    assert ugly.read_text() == UGLY


def test_cli_stdin_to_stdout(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(UGLY))
    assert main(["fmt", "-"]) == 0
    assert capsys.readouterr().out == PRETTY
    monkeypatch.setattr(sys, "stdin", io.StringIO(UGLY))
    assert main(["fmt", "--check", "-"]) == 1
    assert capsys.readouterr().out.strip() == "<stdin>"


def test_cli_syntax_error_is_located_and_the_file_untouched(tmp_path, capsys):
    bad, good = tmp_path / "bad.net", tmp_path / "good.net"
    bad.write_text("network N {\n  output y = x -> ReLU ->\n}\n")
    good.write_text(UGLY)
    assert main(["fmt", str(bad), str(good)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3:1: error: unexpected '}}'" in err and "^" in err
    assert bad.read_text() == "network N {\n  output y = x -> ReLU ->\n}\n"
    assert good.read_text() == PRETTY                          # the other files are still formatted


def test_cli_missing_and_non_net_files(tmp_path, capsys):
    other = tmp_path / "notes.txt"
    other.write_text("x")
    latin = tmp_path / "latin.net"
    latin.write_bytes(b"# caf\xe9\n")
    assert main(["fmt", str(tmp_path / "nope.net"), str(other), str(latin)]) == 1
    err = capsys.readouterr().err
    assert "nope.net': no such file or directory" in err
    assert "notes.txt' is not a .net file" in err
    assert f"cannot read '{latin}': not readable as UTF-8 text" in err
    assert "Traceback" not in err


# ---- comments anywhere, and the formatter's own check -----------------------------------------

def _with_comments(text: str, seed: int, p: float = 0.2) -> str:
    """`text` with comments (trailing and on lines of their own) put in random gaps between tokens."""
    from netdsl.frontend.parser import _parser
    rng = random.Random(seed)
    out, pos, k = [], 0, 0
    for tok in _parser().lex(text):
        gap = text[pos:tok.start_pos]
        if rng.random() < p:
            k += 1
            gap += f"  # c{k} \u00e9\n" if rng.random() < 0.5 else f"\n\n# own {k}\n"
        out += [gap, text[tok.start_pos:tok.end_pos]]
        pos = tok.end_pos
    return "".join(out) + text[pos:]


def _small_specs():
    import re
    sys.path.insert(0, str(ROOT / "tests"))
    from test_roundtrip import EXTRA
    doc = (ROOT / "docs" / "language.md").read_text()
    specs = list(EXTRA) + [m.group(1) for m in re.finditer(r"```net\n(.*?)```", doc, re.S)]
    specs += [(ROOT / "examples" / n).read_text() for n in ("resnet.net", "unet.net", "mobilenetv3.net")]
    out = []
    for text in specs:
        try:
            parse(text)
        except ParseError:
            continue
        out.append(text)
    return out


def test_comments_in_every_kind_of_place():
    """Comments dropped into random places (after '->', '(', ',', labels, keywords, inside name
    templates...) of the roundtrip specs, the docs' examples and three examples: each is kept,
    in order, the text means the same, and formatting it again changes nothing."""
    specs = _small_specs()
    assert len(specs) >= 15
    kept = 0
    for i, text in enumerate(specs):
        commented = _with_comments(text, i)
        out = format_text(commented)
        assert format_text(out) == out, i
        assert parse(out) == parse(text), i
        assert _comments(out) == _comments(commented), i
        kept += len(_comments(commented))
    assert kept > 500


def test_labels_and_literals_that_would_join_keep_a_space():
    out = format_text("network N { a-1 e5: ReLU  b-2x: ReLU\n y = 1 .real }")
    assert "a-1 e5: ReLU" in out and "b-2x: ReLU" in out and "y = 1 .real" in out
    assert parse(out) == parse("network N { a-1 e5: ReLU  b-2x: ReLU\n y = 1 .real }")


def test_a_layout_that_would_change_meaning_is_refused(tmp_path, monkeypatch, capsys):
    """The formatter checks its own output: a result that parses differently, or lost a comment,
    is an internal error (exit 3) and the file is left as it was."""
    from netdsl.frontend import formatter
    spec = tmp_path / "a.net"
    spec.write_text(UGLY + "# note\n")
    real = formatter._layout
    for broken in (lambda t: (real(t)[0].replace("ReLU", "GELU"), real(t)[1]),
                   lambda t: (real(t)[0].replace("# note", ""), real(t)[1])):
        monkeypatch.setattr(formatter, "_layout", broken)
        with pytest.raises(formatter.FormatterError):
            format_text(UGLY + "# note\n")
        assert main(["fmt", str(spec)]) == 3
        assert "internal error" in capsys.readouterr().err
        assert spec.read_text() == UGLY + "# note\n"


def test_cli_in_a_process_imports_no_torch(tmp_path):
    import subprocess
    spec = tmp_path / "a.net"
    spec.write_text(UGLY)
    code = ("import sys; from netdsl.cli import main; rc = main(['fmt', '--check', sys.argv[1]]); "
            "print(rc, 'torch' in sys.modules, 'onnx' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(spec)], capture_output=True, text=True, cwd=ROOT)
    assert r.stdout.splitlines()[-1] == "1 False False", r.stderr
    assert r.stdout.splitlines()[0] == str(spec)
