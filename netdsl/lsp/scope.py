"""Which blocks and networks a document can name, and where each is defined.

A file's namespace is what its imports bring (transitively, as `netdsl.ir.program` loads them),
shadowed by what it defines itself. Imported files are parsed on their own (cached by
modification time), so that go-to-definition and completion keep working while the document
being edited has errors that stop the compiler's own loading.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import NetDSLError
from ..frontend import ast as A
from ..ir.program import import_candidates

DEFINITIONS = (A.BlockDef, A.BlockAlias, A.NetworkDef, A.NetworkAlias)
_DEF_NAME = re.compile(r"(?:block|network)\s+([A-Za-z_][A-Za-z0-9_]*)")


@dataclass
class Definition:
    name: str
    item: A.Node             # BlockDef, SeqBlockDef, BlockAlias, NetworkDef or NetworkAlias
    path: str | None         # the file it is in; None for an unsaved document without a path
    own: bool                # defined in the document itself (not imported)

    @property
    def kind(self) -> str:
        return "block" if isinstance(self.item, A.BLOCKS) else "network"


def import_target(rel: str, base_dir: Path | None) -> Path | None:
    """The file `import "rel"` loads from a file in base_dir, as Program._import finds it."""
    for c in import_candidates(rel, base_dir):
        try:
            if c.is_file():
                return c.resolve()
        except OSError:         # a name the system refuses (too long, ...)
            return None
    return None


def offset_of(text: str, line: int, col: int) -> int:
    """The string offset of 1-based line:col (columns in code points, lines split on \\n)."""
    pos = 0
    for _ in range(line - 1):
        nl = text.find("\n", pos)
        if nl < 0:
            return len(text)
        pos = nl + 1
    return min(pos + col - 1, len(text))


def name_span(item) -> tuple:
    """(line, col, end_line, end_col), 1-based, of the name in a definition's header (the whole
    definition's start when it cannot be found)."""
    span = item.span
    text = span.source.text
    start = offset_of(text, span.line, span.col)
    m = _DEF_NAME.match(text, start)
    if m is None or m.group(1) != item.name:
        m = re.compile(rf"\b{re.escape(item.name)}\b").search(text, start)
        if m is None:
            return (span.line, span.col, span.line, span.col + 1)
        s, e = m.span()
    else:
        s, e = m.span(1)
    line = text.count("\n", 0, s) + 1
    col = s - (text.rfind("\n", 0, s) + 1) + 1
    return (line, col, line, col + (e - s))


class Resolver:
    """Parses imported files (cached by path and modification time) and builds namespaces.
    `read(path) -> str | None` may give the text of a file open (and maybe unsaved) in the
    editor; otherwise the file on disk is read."""

    def __init__(self, read=None):
        self.read = read
        self._cache: dict = {}      # path -> (stamp, Module | None)

    def module_of(self, path: Path):
        from ..frontend.parser import parse
        from ..source_files import UnreadableFile, read_source
        key = str(path)
        text = self.read(key) if self.read else None
        try:
            stamp = ("open", text) if text is not None else ("disk", os.stat(key).st_mtime_ns)
        except OSError:
            return None
        hit = self._cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        module = None
        try:
            module = parse(text if text is not None else read_source(path), key)
        except (NetDSLError, UnreadableFile):
            module = None
        self._cache[key] = (stamp, module)
        return module

    def namespace(self, module: A.Module | None, path: str | None, base_dir: Path | None) -> dict:
        """name -> Definition for a document's module (its own path may be None)."""
        return self._namespace(module, path, base_dir, own=True, stack=set())

    def _namespace(self, module, path, base_dir, own, stack) -> dict:
        ns: dict = {}
        if module is None:
            return ns
        for item in module.items:
            if isinstance(item, A.Import):
                target = import_target(item.path, base_dir)
                if target is None or str(target) in stack:
                    continue
                sub = self.module_of(target)
                ns.update(self._namespace(sub, str(target), target.parent, False,
                                          stack | {str(target)} | ({path} if path else set())))
        for item in module.items:
            if isinstance(item, DEFINITIONS):
                ns[item.name] = Definition(item.name, item, path, own)
        return ns

    def imports(self, module: A.Module | None, base_dir: Path | None) -> list:
        """[(Import item, resolved Path or None)] of a module."""
        if module is None:
            return []
        return [(item, import_target(item.path, base_dir)) for item in module.items
                if isinstance(item, A.Import)]
