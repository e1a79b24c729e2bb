"""A document as the features see it: its text, its analysis and the names in its scope, with
the conversions between netdsl's positions (1-based lines and columns counted in code points)
and the LSP's (0-based lines, characters counted in the client's encoding: UTF-16 by default)."""
from __future__ import annotations

import logging
import re
from functools import cached_property
from pathlib import Path

from lsprotocol import types
from pygls.workspace.position_codec import PositionCodec, ServerTextPosition

from ..frontend import ast as A

log = logging.getLogger(__name__)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Document:
    def __init__(self, uri: str, path: str | None, text: str, resolver, codec: PositionCodec | None = None):
        from ..analysis import analyse
        self.uri = uri
        self.path = path
        self.text = text
        self.resolver = resolver
        self.codec = codec or PositionCodec()
        self.lines = text.split("\n")       # as netdsl's lexer counts lines
        self.internal_error = None
        try:
            self.analysis = analyse(text, path)
        except Exception as e:      # noqa: BLE001 - a bug in netdsl: the editor keeps working
            from ..analysis import Analysis
            log.exception("analysing %s", uri)
            self.analysis = Analysis()
            self.internal_error = f"{type(e).__name__}: {e}"
        self.module = self.analysis.module
        self.source_name = self.module.span.source.name if self.module is not None else (path or "<string>")
        self._same_file: dict = {}
        self.others = lambda: []        # the other open Documents (set by the server)

    @property
    def base_dir(self) -> Path:
        return Path(self.path).parent if self.path else Path.cwd()

    @cached_property
    def definitions(self) -> dict:
        """name -> scope.Definition: the document's own blocks and networks and the imported ones."""
        return self.resolver.namespace(self.module, self.path, self.base_dir)

    @property
    def graphs(self) -> dict:
        return self.analysis.graphs or {}

    # ---- positions -----------------------------------------------------------------------
    def point(self, position: types.Position) -> tuple:
        """An LSP position as netdsl's (line, col), 1-based, col in code points."""
        p = self.codec.position_from_client_units(self.lines, types.Position(position.line, position.character))
        return (p.line + 1, p.character + 1)

    def position(self, line: int, col: int, lines=None) -> types.Position:
        """netdsl's 1-based line:col as an LSP position."""
        lines = self.lines if lines is None else lines
        line0 = max(line - 1, 0)
        if line0 >= len(lines):
            return types.Position(line=len(lines), character=0)
        return self.codec.position_to_client_units(lines, ServerTextPosition(line0, max(col - 1, 0)))

    def range(self, line: int, col: int, end_line: int, end_col: int, text: str | None = None) -> types.Range:
        """A 1-based, end-exclusive netdsl range as an LSP Range (in `text`, default this document)."""
        lines = None if text is None else text.split("\n")
        if end_line < line or (end_line == line and end_col < col):
            end_line, end_col = line, col
        return types.Range(start=self.position(line, col, lines), end=self.position(end_line, end_col, lines))

    def span_range(self, span) -> types.Range:
        text = None if self.in_doc(span) else span.source.text
        return self.range(span.line, span.col, span.end_line or span.line, span.end_col or span.col + 1, text)

    def in_doc(self, span) -> bool:
        """Whether a span is in this document: in its own analysis, or in another document's
        analysis that imported this file (where the file is named by its path)."""
        if span is None:
            return False
        name = span.source.name
        if name == self.source_name:
            return True
        same = self._same_file.get(name)
        if same is None:
            same = self._same_file[name] = self.path is not None and _resolve(name) == _resolve(self.path)
        return same

    def word_at(self, line: int, col: int) -> tuple:
        """(word, start col, end col) of the identifier at or just before line:col, or (None, 0, 0)."""
        if not 0 < line <= len(self.lines):
            return (None, 0, 0)
        text = self.lines[line - 1]
        for m in _WORD.finditer(text):
            if m.start() + 1 <= col <= m.end() + 1:
                return (m.group(), m.start() + 1, m.end() + 1)
        return (None, 0, 0)

    # ---- the AST around a point ----------------------------------------------------------
    def item_at(self, line: int, col: int):
        """The top-level item (definition or import) of this document that contains line:col."""
        if self.module is None:
            return None
        for item in self.module.items:
            if covers(item.span, line, col):
                return item
        return None


def _resolve(name: str):
    """A source name (a path, or std/... as the loader names the standard library's files) as
    a resolved Path; None for a name that is no file."""
    from ..ir.program import STD_DIR
    if name.startswith("<"):
        return None
    path = Path(name)
    if not path.is_absolute() and name.startswith("std/"):
        path = STD_DIR / name[4:]
    try:
        return path.resolve()
    except (OSError, ValueError):       # ValueError: a NUL in the name
        return None


def covers(span, line: int, col: int, inclusive_end: bool = True) -> bool:
    """Whether the span contains line:col (its end included when inclusive_end: a cursor just
    after a word is still on it)."""
    if span is None:
        return False
    end = (span.end_line or span.line, span.end_col or span.col + 1)
    if (line, col) < (span.line, span.col):
        return False
    return (line, col) <= end if inclusive_end else (line, col) < end


def span_size(span) -> tuple:
    return ((span.end_line or span.line) - span.line, (span.end_col or span.col) - span.col)


def walk(node):
    """Every AST node under `node` (itself included), depth first, in source order."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, A.Node):
            yield n
            children = [getattr(n, f, None) for f in reversed(n._fields[1:])]
        elif isinstance(n, (list, tuple)):
            children = list(reversed(n))
        else:
            continue
        stack.extend(c for c in children if isinstance(c, (A.Node, list, tuple)))
