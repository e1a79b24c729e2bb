"""The Pygments lexer (netdsl/editors/pygments_lexer.py): found through its entry point, lexes
every spec without Error tokens and without losing a character, classifies what matters, and
keeps its word lists equal to the grammar's and the registry's."""
import io
import subprocess
import sys
from pathlib import Path

import pytest
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
from pygments.token import (Comment, Error, Keyword, Name, Number, Operator, Punctuation,
                            String, Token)

from netdsl.editors import pygments_lexer as P
from netdsl.editors.pygments_lexer import NetdslLexer
from netdsl.frontend.grammar_path import grammar_file

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "examples").glob("*.net")) + sorted((ROOT / "netdsl" / "std").glob("*.net"))

sys.path.insert(0, str(ROOT / "tests"))
from fuzz.spec_gen import generate  # noqa: E402

FUZZ_SEEDS = range(60)


@pytest.fixture(scope="module")
def lexer():
    return NetdslLexer()


def tokens(lexer, text):
    return list(lexer.get_tokens_unprocessed(text))


def check_lexes(lexer, text):
    toks = tokens(lexer, text)
    errors = [(text.count("\n", 0, i) + 1, v) for i, t, v in toks if t in Error]
    assert errors == []
    assert "".join(v for _, _, v in toks) == text
    return toks


# ---- the entry point ----------------------------------------------------------------------

def test_entry_point_finds_the_lexer():
    assert isinstance(get_lexer_by_name("netdsl"), NetdslLexer)
    assert isinstance(get_lexer_by_name("net"), NetdslLexer)      # the docs' ```net fences
    assert isinstance(get_lexer_for_filename("resnet.net"), NetdslLexer)
    assert isinstance(get_lexer_for_filename("examples/unet.net", "network N {}"), NetdslLexer)


def test_rich_highlights_with_it():
    from rich.console import Console
    from rich.syntax import Syntax
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="truecolor", width=100)
    syntax = Syntax('network N {\n    x = y -> Conv2d(3, 3)   # conv\n}\n', "netdsl",
                    theme="monokai")
    assert syntax.lexer is not None and syntax.lexer.name == "netdsl"
    console.print(syntax)
    text = out.getvalue()
    assert "Conv2d" in text and "\x1b[" in text
    # keyword, op name and comment come out in different colours
    colours = {}
    for word in ("network", "Conv2d", "# conv"):
        before = text[:text.index(word)]
        colours[word] = before[before.rindex("\x1b["):]
    assert len(set(colours.values())) == 3, colours


def test_pygments_in_a_fresh_process_does_not_import_torch():
    code = ("import sys; from pygments.lexers import get_lexer_for_filename as g; "
            "l = g('a.net'); assert l.name == 'netdsl', l; "
            "assert 'torch' not in sys.modules; print(len(list(l.get_tokens('network N {}'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 3


# ---- word lists ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lark_keywords():
    """The keyword terminals Lark itself builds from the grammar."""
    import re
    from lark import Lark
    parser = Lark(grammar_file().read_text(encoding="utf-8"), parser="lalr", start="start")
    return sorted(t.pattern.value for t in parser.terminals
                  if t.pattern.type == "str" and re.fullmatch(r"[A-Za-z_]\w*", t.pattern.value))


def test_keywords_are_the_grammars(lark_keywords):
    assert len(lark_keywords) > 10 and "network" in lark_keywords
    assert list(P.KEYWORDS) == lark_keywords
    assert sorted(P._FALLBACK_KEYWORDS) == lark_keywords


def test_grammar_keyword_scan_skips_comments_and_regexes():
    text = '// "comment"\nstart: "kw" NAME "->" /"re"/ "x"i\nNAME: /[a-z]+/ // "also"\n'
    assert P.grammar_keywords(text) == ("kw", "x")


def test_ops_and_builtins_are_the_registrys():
    from netdsl.ir.registry import all_ops
    from netdsl.ir.values import BUILTINS, DTYPES
    ops = all_ops()
    assert sorted(P.OPS) == sorted(ops) and len(P.OPS) > 50
    assert set(P.LAYERS) == {n for n, s in ops.items() if not s.function}
    assert set(P.FUNCTION_OPS) == {n for n, s in ops.items() if s.function}
    assert set(P.BUILTINS) == set(BUILTINS) and "range" in P.BUILTINS
    assert set(P.DTYPES) == set(DTYPES) == set(P._FALLBACK_DTYPES)


# ---- every spec lexes ---------------------------------------------------------------------

@pytest.mark.parametrize("path", SPECS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_specs_lex_without_errors_and_round_trip(lexer, path):
    toks = check_lexes(lexer, path.read_text(encoding="utf-8"))
    assert Keyword.Declaration in {t for _, t, _ in toks}


def test_fuzz_specs_lex_without_errors_and_round_trip(lexer):
    for seed in FUZZ_SEEDS:
        check_lexes(lexer, generate(seed).text)


def test_an_odd_character_is_an_error_token(lexer):
    # the checks above can fail: a character outside the language is an Error token
    toks = tokens(lexer, "network N { x = a $ b }")
    assert [v for _, t, v in toks if t in Error] == ["$"]


def test_unterminated_string_ends_with_its_line(lexer):
    toks = tokens(lexer, 'network N {\n    x = "open\n    y = x\n}\n')
    assert ("y", Name) in [(v, t) for _, t, v in toks]


# ---- classification -----------------------------------------------------------------------

SAMPLE = '''import "std/residual.net"   # the blocks
block Unit(c: int, stride = 1) (x) -> y {
    "A unit: conv, then \\"norm\\"\\n."
    y = x -> conv{0}: Conv2d(c, 3, stride = stride, bias = false) -> relu: ReLU
    y = concat(y, x, dim = 1) -> Dropout(0.5) -> LayerNorm(eps = 1e-5)
}
block Seq(c: int) [
    'a sequential block'
    Conv2d(c, 3)
]
block Alias = Unit(8)
network Net(block: block = Unit, n: int = 2) {
    """Multi-line
    docstring."""
    input image: f32[N, 3, H, W]
    x = image -> layer1-0: ReLU
    for i in range(n) { x = x -> stage{i}: block(64 * 2 ** i) }
    if n > 1 and not false { x = x -> ... Seq(8) }
    output y = x -> head: Linear(10)
    freeze stage0.conv0, layer1.0
}
'''


@pytest.fixture(scope="module")
def sample(lexer):
    return check_lexes(lexer, SAMPLE)


def kind_of(toks, value, nth=0):
    found = [t for _, t, v in toks if v == value]
    assert len(found) > nth, value
    return found[nth]


@pytest.mark.parametrize("value,nth,expected", [
    ("import", 0, Keyword.Namespace),
    ("block", 0, Keyword.Declaration),
    ("Unit", 0, Name.Class),
    ("Net", 0, Name.Function),
    ("network", 0, Keyword.Declaration),
    ("input", 0, Keyword.Declaration),
    ("image", 0, Name.Variable),
    ("output", 0, Keyword.Declaration),
    ("for", 0, Keyword),
    ("in", 0, Operator.Word),
    ("and", 0, Operator.Word),
    ("not", 0, Operator.Word),
    ("if", 0, Keyword),
    ("freeze", 0, Keyword),
    ("false", 0, Keyword.Constant),
    ("Conv2d", 0, Name.Builtin),
    ("ReLU", 0, Name.Builtin),
    ("concat", 0, Name.Builtin),
    ("range", 0, Name.Builtin),
    ("f32", 0, Keyword.Type),
    ("int", 0, Keyword.Type),
    ("c", 0, Name.Variable),
    ("stride", 0, Name.Variable),
    ("x", 0, Name.Variable),            # the io signature
    ("conv", 0, Name.Label),
    ("relu", 0, Name.Label),
    ("layer1-0", 0, Name.Label),
    ("head", 0, Name.Label),
    ("stage", 0, Name.Label),
    ("conv0", 0, Name.Attribute),
    ("3", 0, Number.Integer),
    ("0.5", 0, Number.Float),
    ("1e-5", 0, Number.Float),
    ("->", 0, Operator),
    ("...", 0, Operator),
    ("**", 0, Operator),
    ("=", 0, Operator),
    ("{", 0, Punctuation),
    ("# the blocks", 0, Comment.Single),
    ("std/residual.net", 0, String.Double),
    ("A unit: conv, then ", 0, String.Doc),
    ('\\"', 0, String.Escape),
    ("\\n", 0, String.Escape),
    ("a sequential block", 0, String.Doc),
    ('Multi-line\n    docstring.', 0, String.Doc),
    ("Alias", 0, Name.Class),
])
def test_token_classes(sample, value, nth, expected):
    assert kind_of(sample, value, nth) is expected


def test_keywords_used_as_names(sample):
    # `block: block = Unit` names a parameter and its type; `block(64 ...)` calls it
    assert kind_of(sample, "block", 3) is Name.Variable       # the parameter
    assert kind_of(sample, "block", 4) is Keyword.Type        # its type
    assert kind_of(sample, "block", 5) is Name                # the call in the body
    lexer = NetdslLexer()
    toks = tokens(lexer, "network N { x = f(input = 1, if = 2) -> output: ReLU }")
    assert kind_of(toks, "input") is Name and kind_of(toks, "if") is Name
    assert kind_of(toks, "output") is Name.Label


def test_strings_keep_escapes_and_quotes(lexer):
    toks = check_lexes(lexer, 'block B { "a\\x41\\u00e9\\q\'" }')
    assert [v for _, t, v in toks if t is String.Escape] == ["\\x41", "\\u00e9"]
    assert all(t in String for _, t, v in toks if "q" in v)


def test_every_token_type_is_a_standard_one(sample):
    from pygments.token import STANDARD_TYPES
    assert {t for _, t, _ in sample} <= set(STANDARD_TYPES) | {Token}


def test_any_text_round_trips(lexer):
    """Half-typed specs (unclosed strings and brackets, stray characters) lex to the end and lose
    nothing."""
    import random
    rng = random.Random(0)
    pieces = ["block", "network", "import", "input", " ", "\n", '"', '"""', "'", "\\", "{", "}", "[",
              "]", "(", ")", "x", "Conv2d", ":", "=", "->", "...", "1", ".5", "1e", "#", "$", "if",
              ",", "-", "é", "\t"]
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 60)))
        assert "".join(v for _, _, v in tokens(lexer, text)) == text, text
