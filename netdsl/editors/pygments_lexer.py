"""A Pygments lexer for netdsl `.net` specs.

Registered through the ``pygments.lexers`` entry point (pyproject.toml), so that
``pygments.lexers.get_lexer_by_name("netdsl")`` and ``get_lexer_for_filename("x.net")`` find it
and `.net` code highlights in Sphinx, MkDocs and rich (``rich.syntax.Syntax(code, "netdsl")``).

Its word lists cannot drift from the language: the keywords are the grammar's keyword terminals
(read from grammars/netdsl.lark when this module is imported), the op names come from the op
registry (netdsl.ir.registry; no torch import) and the built-in functions and dtypes from
netdsl.ir.values. tests/test_highlight.py checks the keywords against the terminals Lark itself
builds from the grammar.

Pygments imports every plugin lexer when it looks one up by file name, so nothing here may raise
at import time: were the grammar or the registry unreadable, the lexer falls back to the lists
below (which the tests keep equal to the real ones) rather than break Pygments for every
language.

Token classes:
- ``Keyword.Namespace``: ``import``; ``Keyword.Declaration``: ``block network input output param``;
  ``Keyword``: ``if elif else for return freeze``; ``Operator.Word``: ``and or not in``;
  ``Keyword.Constant``: ``true false``; ``Keyword.Type``: dtypes (``f32``) and the types in a
  parameter list (``num_heads: int``).
- ``Name.Class``: a block's name where it is defined; ``Name.Function``: a network's.
- ``Name.Builtin``: op and layer names (``Conv2d``, ``concat``) and built-in functions
  (``range``, ``make_divisible``, ``kaiming_normal``).
- ``Name.Label``: layer labels (``conv1:`` and templates ``layer{i + 1}:``, ``block1-0:``);
  ``Name.Variable``: declared inputs, outputs, parameters and a definition's parameters;
  ``Name.Attribute``: after a dot (``x.shape``, freeze paths); ``Name``: everything else.
- ``String.Doc``: the docstring of a block or network; ``String.Double`` / ``String.Single``
  (triple-quoted ones too) with ``String.Escape`` for the valid escapes.
- ``Number.Integer``, ``Number.Float``; ``Comment.Single``.
- ``Operator``: ``->`` (chains), ``...`` (splices), arithmetic and comparison operators, ``=``;
  ``Punctuation``: brackets, ``, : ; .``.

A keyword followed by ``=`` or ``:`` is a name (``block: block = Bottleneck``, ``bias = false``
is not affected): the language reserves keywords only where they could start a construct.
Inside a body ``block``, ``network`` and ``import`` are names (``block(64)`` calls a parameter).
"""
from __future__ import annotations

import re

from pygments.lexer import RegexLexer, bygroups, default, include
from pygments.token import (Comment, Keyword, Name, Number, Operator, Punctuation, String,
                            Whitespace)

__all__ = ["NetdslLexer", "KEYWORDS", "OPS", "LAYERS", "FUNCTION_OPS", "BUILTINS", "DTYPES",
           "grammar_keywords"]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Used only when the grammar or the registry cannot be read (see the module doc); the tests
# keep these equal to what the grammar and the registry give.
_FALLBACK_KEYWORDS = ("and", "block", "elif", "else", "false", "for", "freeze", "if", "import",
                      "in", "input", "network", "not", "or", "output", "param", "return", "true")
_FALLBACK_DTYPES = ("f32",)

# lark grammar text: comments, string literals, regex literals, everything else
_LARK_PIECE = re.compile(r'//[^\n]*|"(?:[^"\\\n]|\\.)*"i?|/(?:[^/\\\n]|\\.)+/[imslux]*|[^"/]+|.',
                         re.S)


def grammar_keywords(grammar_text: str) -> tuple:
    """The keywords of a Lark grammar: its string literals that look like names, sorted."""
    words = set()
    for m in _LARK_PIECE.finditer(grammar_text):
        piece = m.group(0)
        if piece.startswith('"'):
            literal = piece[1:piece.rindex('"')]
            if _IDENT.fullmatch(literal):
                words.add(literal)
    return tuple(sorted(words))


def _load_keywords() -> tuple:
    try:
        from netdsl.frontend.grammar_path import grammar_file
        words = grammar_keywords(grammar_file().read_text(encoding="utf-8"))
        return words or _FALLBACK_KEYWORDS
    except Exception:       # noqa: BLE001  (never break Pygments' plugin scan)
        return _FALLBACK_KEYWORDS


def _load_ops() -> tuple:
    """(layers, function ops): ops applied in chains and ops called like functions."""
    try:
        from netdsl.ir.registry import all_ops
        ops = all_ops()
        return (tuple(sorted(n for n, s in ops.items() if not s.function)),
                tuple(sorted(n for n, s in ops.items() if s.function)))
    except Exception:       # noqa: BLE001
        return (), ()


def _load_builtins() -> tuple:
    try:
        from netdsl.ir.values import BUILTINS as _B, DTYPES as _D
        return tuple(sorted(_B)), tuple(sorted(_D))
    except Exception:       # noqa: BLE001
        return (), _FALLBACK_DTYPES


KEYWORDS = _load_keywords()
LAYERS, FUNCTION_OPS = _load_ops()
OPS = tuple(sorted(LAYERS + FUNCTION_OPS))
BUILTINS, DTYPES = _load_builtins()

# How each keyword is shown; a keyword the grammar gains later is a plain Keyword.
_KEYWORD_TOKENS = {
    "import": Keyword.Namespace,
    "block": Keyword.Declaration, "network": Keyword.Declaration,
    "input": Keyword.Declaration, "output": Keyword.Declaration, "param": Keyword.Declaration,
    "and": Operator.Word, "or": Operator.Word, "not": Operator.Word, "in": Operator.Word,
    "true": Keyword.Constant, "false": Keyword.Constant,
}
# top-level words: names inside a body
_TOP_ONLY = {"import", "block", "network"}

_END = r"(?![A-Za-z0-9_])"
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_NOT_A_NAME = r"(?!\s*(?:=(?!=)|:))"       # a keyword followed by `=` or `:` is a name
_ESCAPE = r"\\(?:[\\\"'ntr]|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})"


def _words(words) -> str:
    return "(?:%s)" % "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + _END


def _keyword_rules(words) -> list:
    by_token: dict = {}
    for w in words:
        by_token.setdefault(_KEYWORD_TOKENS.get(w, Keyword), []).append(w)
    return [(_words(ws) + _NOT_A_NAME, tok) for tok, ws in by_token.items()]


def _string_states(prefix: str, tok) -> dict:
    """The states of the three string forms, shown as `tok` (escapes as String.Escape)."""
    return {
        prefix + "tdq": [
            (r'"""', tok, "#pop"),
            (_ESCAPE, String.Escape),
            (r'[^"\\]+', tok),
            (r'\\.|\\|"', tok),                 # an unknown escape is the compiler's to report
        ],
        prefix + "dq": [
            (r'"', tok, "#pop"),
            (_ESCAPE, String.Escape),
            (r'[^"\\\n]+', tok),
            (r'\\[^\n]|\\', tok),
            (r"\n", Whitespace, "#pop"),         # unterminated: the string ends with its line
        ],
        prefix + "sq": [
            (r"'", tok, "#pop"),
            (_ESCAPE, String.Escape),
            (r"[^'\\\n]+", tok),
            (r"\\[^\n]|\\", tok),
            (r"\n", Whitespace, "#pop"),
        ],
    }


class NetdslLexer(RegexLexer):
    """Lexer for netdsl network specifications (`.net`)."""

    name = "netdsl"
    aliases = ["netdsl", "net"]       # "net": the fence tag docs/language.md and README use
    filenames = ["*.net"]
    mimetypes = ["text/x-netdsl"]

    _body_keywords = [w for w in KEYWORDS if w not in _TOP_ONLY]

    tokens = {
        # top level: imports and definitions
        "root": [
            include("space"),
            (r"(block)(\s+)(" + _NAME + r")", bygroups(Keyword.Declaration, Whitespace, Name.Class),
             "header"),
            (r"(network)(\s+)(" + _NAME + r")",
             bygroups(Keyword.Declaration, Whitespace, Name.Function), "header"),
            *_keyword_rules([w for w in KEYWORDS if w in _TOP_ONLY]),
            include("code"),
        ],
        # after `block Name` / `network Name`: parameters, signature, then the body (whose
        # first string is the docstring) or `= Other(...)` (an alias)
        "header": [
            include("space"),
            (r"\(", Punctuation, "params"),
            (r"\{", Punctuation, ("#pop", "body", "docstring")),
            (r"\[", Punctuation, ("#pop", "group", "docstring")),
            (r"->", Operator),
            (r"=", Operator, "#pop"),
            (_NAME, Name.Variable),              # io signature: `(x) -> y`
            default("#pop"),
        ],
        "params": [
            (r"\)", Punctuation, "#pop"),
            (r"(" + _NAME + r")(\s*)(:)(\s*)(" + _NAME + r")",
             bygroups(Name.Variable, Whitespace, Punctuation, Whitespace, Keyword.Type)),
            (r"(?<=[(,])(\s*)(" + _NAME + r")(?=\s*[,=)])", bygroups(Whitespace, Name.Variable)),
            include("code"),
        ],
        "docstring": [
            include("space"),
            (r'"""', String.Doc, ("#pop", "doc-tdq")),
            (r'"', String.Doc, ("#pop", "doc-dq")),
            (r"'", String.Doc, ("#pop", "doc-sq")),
            default("#pop"),
        ],
        "body": [
            (r"\}", Punctuation, "#pop"),
            include("code"),
        ],
        "group": [
            (r"\]", Punctuation, "#pop"),
            include("code"),
        ],
        "paren": [
            (r"\)", Punctuation, "#pop"),
            include("code"),
        ],
        "space": [
            (r"\s+", Whitespace),
            (r"#[^\n]*", Comment.Single),
        ],
        # statements and expressions, in any state
        "code": [
            include("space"),
            (r'"""', String.Double, "str-tdq"),
            (r'"', String.Double, "str-dq"),
            (r"'", String.Single, "str-sq"),
            (r"\d+\.\d*(?:[eE][-+]?\d+)?(?![A-Za-z_])|\d+[eE][-+]?\d+" + _END
             + r"|(?<![A-Za-z0-9_)\]}])\.\d+(?:[eE][-+]?\d+)?" + _END, Number.Float),
            (r"\d+", Number.Integer),
            (r"\.\.\.", Operator),
            (r"(\.)(\s*)(" + _NAME + r")", bygroups(Punctuation, Whitespace, Name.Attribute)),
            (r"(input|output|param)(\s+)(" + _NAME + r")",
             bygroups(Keyword.Declaration, Whitespace, Name.Variable)),
            *_keyword_rules(_body_keywords),
            # labels: `conv1:`, `block1-0:`, and the first part of a template `layer{i + 1}:`
            (_NAME + r"(?:-(?:" + _NAME + r"|\d+(?:" + _NAME + r")?))*(?=\s*:(?!:))", Name.Label),
            (_NAME + r"(?=\{)", Name.Label),
            (_words(OPS + BUILTINS) if OPS + BUILTINS else r"(?!x)x", Name.Builtin),
            (_words(DTYPES), Keyword.Type),
            (_NAME, Name),
            (r"->", Operator),
            (r"\*\*|==|!=|<=|>=|//|[-+*/%<>=]", Operator),
            (r"\(", Punctuation, "paren"),
            (r"\[", Punctuation, "group"),
            (r"\{", Punctuation, "body"),
            (r"[)\]},:;.]", Punctuation),
        ],
        **_string_states("str-", String.Double),
        **_string_states("doc-", String.Doc),
    }
    # single-quoted strings are String.Single
    tokens["str-sq"] = _string_states("str-", String.Single)["str-sq"]
