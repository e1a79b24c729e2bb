"""String literals: what their escapes mean, and how long they may be.

The language's own rule, not Python's (docs/language.md, "Strings"):

- ``\\\\ \\" \\' \\n \\t \\r`` and ``\\xHH``, ``\\uHHHH``, ``\\UHHHHHHHH`` with exactly 2, 4
  and 8 hex digits; anything else after a backslash is an error at that escape;
- a string holds characters: no NUL, and no surrogate code point (U+D800 to U+DFFF), whether
  written raw or as an escape, so every string can be written out as UTF-8;
- at most MAX_STRING_CHARS characters.
"""
from __future__ import annotations

import re

from ..errors import ParseError, Source, Span

# The longest string literal, in characters after decoding: the longest string a spec may
# build at all (netdsl.ir.values.MAX_ITEMS), and far beyond any docstring.
MAX_STRING_CHARS = 100_000

_SIMPLE = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r"}
_HEX_DIGITS = {"x": 2, "u": 4, "U": 8}
# a backslash and what follows it; the lexer only lets a backslash stand before some character
_ESCAPE = re.compile(r"\\(.)((?<=[xuU])[0-9A-Fa-f]{0,8})?", re.S)
_FORBIDDEN_RAW = re.compile("[\0\ud800-\udfff]")


def decode_string(text: str, source: Source, line: int, col: int) -> str:
    """The value of the string literal `text` (with its quotes) found at line:col of `source`."""
    q = 3 if text.startswith('"""') and len(text) >= 6 else 1
    body = text[q:-q]

    def where(offset: int, length: int) -> Span:
        """The span of body[offset:offset + length] in the source (for errors only: linear)."""
        at = q + offset
        nl = text.rfind("\n", 0, at)
        ln = line + text.count("\n", 0, at)
        c = col + at if nl < 0 else at - nl
        return Span(source, ln, c, ln, c + length)

    # bounded before decoding: no escape is longer than 10 characters
    if len(body) > 10 * MAX_STRING_CHARS:
        raise _too_long(where(-q, len(text)))
    bad = _FORBIDDEN_RAW.search(body)
    if bad:
        raise ParseError(_forbidden(ord(bad.group())), where(bad.start(), 1))
    if "\\" not in body:
        out = body
    else:
        out = _ESCAPE.sub(lambda m: _escape(m, where), body)
    if len(out) > MAX_STRING_CHARS:
        raise _too_long(where(-q, len(text)))
    return out


def _escape(m: re.Match, where) -> str:
    kind, digits = m.group(1), m.group(2) or ""
    if kind in _SIMPLE:
        return _SIMPLE[kind]
    if kind not in _HEX_DIGITS:
        if kind == "N":
            msg = r"named escapes (\N{...}) are not supported; write the character itself or \uHHHH"
        else:
            shown = kind if kind.isprintable() else repr(kind)[1:-1]
            msg = (f"invalid escape sequence '\\{shown}' (escapes: \\\\ \\\" \\' \\n \\t \\r \\xHH "
                   "\\uHHHH \\UHHHHHHHH)")
        raise ParseError(f"invalid string literal: {msg}", where(m.start(), 2))
    n = _HEX_DIGITS[kind]
    if len(digits) < n:
        raise ParseError(f"invalid string literal: '\\{kind}' needs exactly {n} hex digits",
                         where(m.start(), 2 + len(digits)))
    code = int(digits[:n], 16)
    if code > 0x10FFFF:
        raise ParseError(f"invalid string literal: \\{kind}{digits[:n]} is beyond the last Unicode "
                         "character (\\U0010FFFF)", where(m.start(), 2 + n))
    if code == 0 or 0xD800 <= code <= 0xDFFF:
        raise ParseError(_forbidden(code), where(m.start(), 2 + n))
    return chr(code) + digits[n:]


def _forbidden(code: int) -> str:
    if code == 0:
        return "a string cannot contain a NUL character"
    return (f"a string cannot contain U+{code:04X}: it is a surrogate code point, not a character "
            r"(write a character beyond U+FFFF as \UHHHHHHHH or as itself)")


def _too_long(span: Span) -> ParseError:
    return ParseError(f"string literal too long (at most {MAX_STRING_CHARS:,} characters)", span)


def unlexed_quote(text: str, pos: int) -> str:
    """Why the lexer found no string at the quote text[pos]: the grammar's STRING stops after
    MAX_STRING_CHARS escapes (bounding its memory), else the string is not closed."""
    end = -1 if text.startswith('"""', pos) else text.find("\n", pos)
    end = len(text) if end < 0 else end
    if text.count("\\", pos, end) > MAX_STRING_CHARS:
        return f"string literal too long (at most {MAX_STRING_CHARS:,} characters)"
    if text.startswith('"""', pos):
        close = text.find('"""', pos + 3)
        stop = len(text) if close < 0 else close
    else:
        stop = len(text) if end == len(text) else end + 1      # with the newline itself
    if re.search(r"(?<!\\)(?:\\\\)*\\\r?\n", text[pos:stop]):    # an odd run of backslashes
        return ("a backslash cannot end a line inside a string (there is no line continuation); "
                "write \\n for a newline")
    return ("unterminated string literal (a \"...\" or '...' string ends on its line; "
            '"""..."""' + " may span lines)")
