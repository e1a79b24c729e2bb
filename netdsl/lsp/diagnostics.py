"""Diagnostics: every error `netdsl.analysis.analyse` finds in a document, as LSP Diagnostics."""
from __future__ import annotations

from lsprotocol import types


def diagnostics(doc) -> list:
    out = []
    for err in doc.analysis.diagnostics:
        span = err.span
        if span is not None and doc.in_doc(span):
            rng = doc.range(span.line, span.col, span.end_line or span.line,
                            span.end_col or span.col + 1)
        else:       # analyse() locates every error in the document; this is a safety net
            rng = types.Range(start=types.Position(0, 0), end=types.Position(0, 0))
        message = err.message
        notes = list(getattr(err, "notes", ()) or ())
        trace = getattr(err, "trace", ()) or ()
        if trace:
            message += "".join(f"\nin block {name}, instantiated at {s.location()}" for name, s in trace[:3])
        if notes:
            message += "".join(f"\nnote: {n}" for n in notes)
        related = [types.DiagnosticRelatedInformation(location=loc, message=f"in block {name}, instantiated here")
                   for name, s in trace for loc in [_location(doc, s)] if loc is not None]
        out.append(types.Diagnostic(range=rng, message=message, severity=types.DiagnosticSeverity.Error,
                                    source="netdsl", code=type(err).__name__, related_information=related or None))
    if doc.internal_error:
        out.append(types.Diagnostic(
            range=types.Range(start=types.Position(0, 0), end=types.Position(0, 0)),
            message=f"netdsl: internal error while analysing this document (a bug in netdsl; please "
                    f"report it with the text): {doc.internal_error}",
            severity=types.DiagnosticSeverity.Warning, source="netdsl"))
    return out


def _location(doc, span) -> types.Location | None:
    """An LSP Location for a span in this document or in a file it (transitively) imports."""
    from pathlib import Path

    from pygls.uris import from_fs_path

    from ..ir.program import STD_DIR
    if span is None:
        return None
    if doc.in_doc(span):
        return types.Location(uri=doc.uri, range=doc.span_range(span))
    name = span.source.name
    path = Path(name)
    if not path.is_absolute():
        path = STD_DIR.parent / name if name.startswith("std/") else doc.base_dir / name
    if not path.is_file():
        return None
    return types.Location(uri=from_fs_path(str(path.resolve())), range=doc.span_range(span))
