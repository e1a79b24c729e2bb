"""Go to definition: block and network names (aliases included), in this document, in the
files it imports and in the standard library (netdsl/std); a parameter of the enclosing
definition; the file an `import` names."""
from __future__ import annotations

from pathlib import Path

from lsprotocol import types
from pygls.uris import from_fs_path

from ..frontend import ast as A
from .document import covers
from .scope import name_span


def definition(doc, position: types.Position):
    line, col = doc.point(position)
    item = doc.item_at(line, col)
    if isinstance(item, A.Import):
        for imp, target in doc.resolver.imports(doc.module, doc.base_dir):
            if imp is item and target is not None:
                start = types.Position(line=0, character=0)
                return [types.Location(uri=from_fs_path(str(target)),
                                       range=types.Range(start=start, end=start))]
        return None
    word, _, _ = doc.word_at(line, col)
    if not word:
        return None
    if isinstance(item, (A.NetworkDef, A.BlockDef)):
        for p in item.params:
            if isinstance(p, A.Param) and p.name == word and not covers(p.span, line, col):
                return [types.Location(uri=doc.uri, range=doc.range(p.span.line, p.span.col, p.span.line,
                                                                     p.span.col + len(p.name)))]
    d = doc.definitions.get(word)
    if d is None:
        return None
    return [location(doc, d)]


def location(doc, d) -> types.Location:
    """Where a scope.Definition's name is (its header)."""
    line, col, end_line, end_col = name_span(d.item)
    if d.own:
        return types.Location(uri=doc.uri, range=doc.range(line, col, end_line, end_col))
    uri = from_fs_path(str(Path(d.path))) if d.path else doc.uri
    return types.Location(uri=uri, range=doc.range(line, col, end_line, end_col, d.item.span.source.text))
