"""The language server: pygls's LanguageServer with netdsl's features registered.

Documents are synchronised in full. Each open document is analysed (`netdsl.analysis`) when it
is opened, and after a change once its text has stayed the same for DEBOUNCE_S, with imports
resolved relative to its file; a request analyses the current text if that is not done yet. The
result is kept until the next change and serves hover, definition, completion and symbols.
Diagnostics are published after those analyses (an empty list once the errors are fixed, and
on close).
"""
from __future__ import annotations

import asyncio
import logging
import os

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path, uri_scheme

from .. import __version__
from .completion import completion
from .definition import definition
from .diagnostics import diagnostics
from .document import Document
from .hover import hover
from .scope import Resolver
from .symbols import document_symbols

log = logging.getLogger(__name__)

TRIGGER_CHARACTERS = ["(", ",", '"', "/"]
DEBOUNCE_S = 0.2


class NetdslLanguageServer(LanguageServer):
    def __init__(self):
        super().__init__("netdsl", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Full)
        self.documents: dict = {}       # uri -> Document (the latest analysed text)
        self.latest: dict = {}          # uri -> the latest version changed to
        self.resolver = Resolver(read=self._open_text)

    def _open_text(self, path: str) -> str | None:
        """The editor's (maybe unsaved) text of a file that is open, else None."""
        for uri, td in self.workspace.text_documents.items():
            if uri_scheme(uri) == "file" and to_fs_path(uri) == path:
                return td.source
        return None

    def document(self, uri: str) -> Document | None:
        """The analysed Document for the workspace's current text of `uri`; None for a URI that
        is neither open nor a readable regular file (a request may name any URI)."""
        td = self.workspace.get_text_document(uri)
        if td.version is None and (uri_scheme(uri) != "file" or not td.path or not os.path.isfile(td.path)):
            return None         # not open: pygls would read td.path, which is no file
        try:
            text = td.source
        except (OSError, ValueError):       # gone, unreadable, or not UTF-8 (a ValueError)
            return None
        doc = self.documents.get(uri)
        if doc is None or doc.text != text:
            path = to_fs_path(uri) if uri_scheme(uri) == "file" else None
            doc = Document(uri, path, text, self.resolver, self.workspace.position_codec)
            doc.others = lambda: [d for u, d in list(self.documents.items()) if u != uri]
            self.documents[uri] = doc
        return doc

    def republish_others(self, changed_uri: str | None = None):
        """Analyse every open document again (but `changed_uri`, whose analysis is current) and
        publish its diagnostics: a file it imports may have changed."""
        for uri in list(self.documents):
            if uri != changed_uri:     # the open documents (closing drops them)
                self.documents.pop(uri, None)
                self.publish(uri, None)

    def publish(self, uri: str, version: int | None):
        doc = self.document(uri)
        self.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=uri, version=version,
                                           diagnostics=diagnostics(doc) if doc is not None else []))


def _safe(feature, doc, *args):
    """A feature's answer; None (and the traceback in the log) where netdsl has a bug, so that
    one bad request does not surface as an error in the editor."""
    if doc is None:         # a URI that is neither open nor a file
        return None
    try:
        return feature(doc, *args)
    except Exception:       # noqa: BLE001
        log.exception("%s on %s", feature.__name__, doc.uri)
        return None


def create_server() -> NetdslLanguageServer:
    server = NetdslLanguageServer()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: NetdslLanguageServer, params: types.DidOpenTextDocumentParams):
        ls.publish(params.text_document.uri, params.text_document.version)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    async def did_change(ls: NetdslLanguageServer, params: types.DidChangeTextDocumentParams):
        # while the user types, only the text that stays DEBOUNCE_S unchanged is analysed for
        # diagnostics (a request in between analyses the text it is about)
        uri, version = params.text_document.uri, params.text_document.version
        ls.latest[uri] = version
        await asyncio.sleep(DEBOUNCE_S)
        if ls.latest.get(uri) == version:
            ls.publish(uri, version)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: NetdslLanguageServer, params: types.DidSaveTextDocumentParams):
        ls.republish_others(params.text_document.uri)

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def did_change_watched_files(ls: NetdslLanguageServer, params: types.DidChangeWatchedFilesParams):
        # a .net file changed outside the editor (the VS Code extension watches **/*.net)
        ls.republish_others()

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: NetdslLanguageServer, params: types.DidCloseTextDocumentParams):
        ls.documents.pop(params.text_document.uri, None)
        ls.latest.pop(params.text_document.uri, None)
        ls.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[]))

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def on_hover(ls: NetdslLanguageServer, params: types.HoverParams):
        return _safe(hover, ls.document(params.text_document.uri), params.position)

    @server.feature(types.TEXT_DOCUMENT_DEFINITION)
    def on_definition(ls: NetdslLanguageServer, params: types.DefinitionParams):
        return _safe(definition, ls.document(params.text_document.uri), params.position)

    @server.feature(types.TEXT_DOCUMENT_COMPLETION,
                    types.CompletionOptions(trigger_characters=TRIGGER_CHARACTERS))
    def on_completion(ls: NetdslLanguageServer, params: types.CompletionParams):
        return _safe(completion, ls.document(params.text_document.uri), params.position)

    @server.feature(types.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    def on_symbols(ls: NetdslLanguageServer, params: types.DocumentSymbolParams):
        return _safe(document_symbols, ls.document(params.text_document.uri))

    _add_formatting(server)
    return server


def _add_formatting(server: NetdslLanguageServer):
    """textDocument/formatting through netdsl.frontend.formatter, when it is there."""
    try:
        from ..frontend.formatter import format_text
    except ImportError:
        return

    @server.feature(types.TEXT_DOCUMENT_FORMATTING)
    def on_formatting(ls: NetdslLanguageServer, params: types.DocumentFormattingParams):
        from ..errors import NetDSLError
        from ..frontend import formatter
        doc = ls.document(params.text_document.uri)
        if doc is None:
            return None
        try:
            new = format_text(doc.text, doc.path or "<string>")
        except NetDSLError:
            return None         # a syntax error: the diagnostics say where
        except getattr(formatter, "FormatterError", NetDSLError) as e:   # the formatter refuses: keep the text
            ls.window_show_message(types.ShowMessageParams(type=types.MessageType.Warning,
                                                           message=f"netdsl: not formatted: {e}"))
            return None
        if new == doc.text:
            return []
        end = doc.position(len(doc.lines), len(doc.lines[-1]) + 1)
        return [types.TextEdit(range=types.Range(start=types.Position(0, 0), end=end), new_text=new)]


def main() -> int:
    create_server().start_io()
    return 0
