"""Document symbols: the networks (Class) and blocks (Function) a document defines, aliases
included, each with its parameters (and a network's inputs and outputs) as children."""
from __future__ import annotations

from lsprotocol import types

from ..frontend import ast as A
from .hover import param_text, signature
from .scope import DEFINITIONS, name_span


def document_symbols(doc) -> list:
    out = []
    if doc.module is None:
        return out
    for item in doc.module.items:
        if not isinstance(item, DEFINITIONS):
            continue
        network = isinstance(item, (A.NetworkDef, A.NetworkAlias))
        children = []
        for p in getattr(item, "params", None) or []:
            if isinstance(p, A.Param):
                sel = doc.range(p.span.line, p.span.col, p.span.line, p.span.col + len(p.name))
                children.append(types.DocumentSymbol(
                    name=p.name, kind=types.SymbolKind.TypeParameter, detail=param_text(p),
                    range=doc.span_range(p.span), selection_range=sel))
        if isinstance(item, A.NetworkDef):
            for st in item.body:
                if isinstance(st, (A.InputDecl, A.OutputDecl)):
                    word = "input" if isinstance(st, A.InputDecl) else "output"
                    children.append(types.DocumentSymbol(
                        name=st.name, kind=types.SymbolKind.Field, detail=word,
                        range=doc.span_range(st.span), selection_range=doc.span_range(st.span)))
        sel = doc.range(*name_span(item))
        try:
            detail = signature(item, wrap=False)
        except Exception:           # noqa: BLE001 - symbols never fail for a detail
            detail = None
        out.append(types.DocumentSymbol(
            name=item.name, kind=types.SymbolKind.Class if network else types.SymbolKind.Function,
            detail=detail, range=doc.span_range(item.span), selection_range=sel,
            children=children or None))
    return out
