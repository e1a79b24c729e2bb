"""`netdsl lsp` end to end: the server runs as `python -m netdsl lsp` and is driven over stdio by
pygls's LanguageClient; the tests assert the JSON-RPC results (decoded by lsprotocol).

One server for the module, on one event loop (pytest-asyncio is not used)."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

lsprotocol = pytest.importorskip("lsprotocol")
from lsprotocol import types  # noqa: E402
from pygls.lsp.client import LanguageClient  # noqa: E402
from pygls.uris import from_fs_path, to_fs_path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STD = ROOT / "netdsl" / "std"

LIB = textwrap.dedent('''\
    block Stem(width: int = 32) {
        "A 3x3 conv stem."
        conv: Conv2d(width, 3, padding = 1)
        ReLU
    }
    ''')

MAIN = textwrap.dedent('''\
    import "lib.net"
    import "std/residual.net"

    block Pair(c: int) {
        "Two convs."
        Conv2d(c, 3, padding = 1)
        Conv2d(c, 3, padding = 1)
    }

    network Net {
        "A small net."
        input image: f32[N, 3, H, W]
        x = image -> stem: Stem(16) -> Pair(32) -> p2: Pair(48)
              -> b1: BasicBlock(64, stride = 2)
        output logits = x -> AdaptiveAvgPool2d(1) -> Flatten -> fc: Linear(10)
    }
    ''')

# two networks, each with an unknown layer; the second one's line has astral characters (two
# UTF-16 code units each) before the error
BROKEN = textwrap.dedent('''\
    network A {
        input image: f32[N, 3, H, W]
        output y = image -> Conv2d(8, 3) -> Lnear(10)
    }

    network B {
        input image: f32[N, 3, H, W]
        output y = (image if "😀é" == "😀é" else image) -> Conv2d(16, 3) -> Nope
    }
    ''')


class Session:
    """A LanguageClient talking to one `python -m netdsl lsp` process."""

    def __init__(self, root: Path):
        self.root = root
        self.loop = asyncio.new_event_loop()
        self.client = LanguageClient("netdsl-test", "1")
        self.diagnostics: dict = {}         # uri -> [(version, [Diagnostic])]
        self.versions: dict = {}

        @self.client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def _diagnostics(params: types.PublishDiagnosticsParams):
            self.diagnostics.setdefault(params.uri, []).append((params.version, params.diagnostics))

        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.run(self.client.start_io(sys.executable, "-m", "netdsl", "lsp", cwd=str(root), env=env))
        self.init = self.run(self.client.initialize_async(types.InitializeParams(
            process_id=os.getpid(), root_uri=from_fs_path(str(root)),
            capabilities=types.ClientCapabilities(
                general=types.GeneralClientCapabilities(position_encodings=[types.PositionEncodingKind.Utf16])))))
        self.client.initialized(types.InitializedParams())

    def run(self, coro, timeout: float = 20):
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def open(self, path: Path, text: str) -> str:
        uri = from_fs_path(str(path))
        self.versions[uri] = 1
        self.client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="netdsl", version=1, text=text)))
        return uri

    def change(self, uri: str, text: str):
        self.versions[uri] += 1
        self.client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=self.versions[uri]),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))

    def wait_diagnostics(self, uri: str, timeout: float = 15) -> list:
        """The diagnostics published for the document's current version."""
        want = self.versions[uri]

        async def wait():
            while True:
                for version, diags in self.diagnostics.get(uri, ()):
                    if version == want:
                        return list(diags)
                await asyncio.sleep(0.01)
        return self.run(wait(), timeout)

    def hover(self, uri, line, character):
        return self.run(self.client.text_document_hover_async(types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, character))))

    def definition(self, uri, line, character):
        return self.run(self.client.text_document_definition_async(types.DefinitionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, character))))

    def completion(self, uri, line, character):
        return self.run(self.client.text_document_completion_async(types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, character))))

    def symbols(self, uri):
        return self.run(self.client.text_document_document_symbol_async(types.DocumentSymbolParams(
            text_document=types.TextDocumentIdentifier(uri=uri))))

    def close(self):
        if self.loop.is_closed():
            return
        try:
            if not self.client.stopped:
                self.run(self.client.shutdown_async(None), timeout=10)
                self.client.exit(None)
                self.run(self.client.stop(), timeout=10)
        finally:
            self.loop.close()


@pytest.fixture(scope="module")
def lsp(tmp_path_factory):
    root = tmp_path_factory.mktemp("lsp dir é")      # a space and non-ASCII: quoted in URIs
    (root / "lib.net").write_text(LIB, encoding="utf-8")
    (root / "main.net").write_text(MAIN, encoding="utf-8")
    session = Session(root)
    yield session
    session.close()


def _pos(text: str, needle: str, offset: int = 0, nth: int = 0) -> tuple:
    """LSP (line, character in UTF-16 code units) of the nth occurrence of needle in text, plus
    offset characters."""
    start = -1
    for _ in range(nth + 1):
        start = text.index(needle, start + 1)
    start += offset
    line = text.count("\n", 0, start)
    before = text[text.rfind("\n", 0, start) + 1:start]
    return line, len(before.encode("utf-16-le")) // 2


def _hover_text(h) -> str:
    assert h is not None
    return h.contents.value


# ---- tests ---------------------------------------------------------------------------------

def test_initialize_capabilities(lsp):
    caps = lsp.init.capabilities
    assert lsp.init.server_info.name == "netdsl"
    assert caps.hover_provider
    assert caps.definition_provider
    assert caps.document_symbol_provider
    assert caps.completion_provider is not None and "(" in caps.completion_provider.trigger_characters
    sync = caps.text_document_sync
    assert getattr(sync, "change", sync) == types.TextDocumentSyncKind.Full
    assert caps.position_encoding in (None, types.PositionEncodingKind.Utf16)


def test_diagnostics_ranges_and_clearing(lsp):
    uri = lsp.open(lsp.root / "broken.net", BROKEN)
    diags = lsp.wait_diagnostics(uri)
    got = [(d.range.start.line, d.range.start.character, d.range.end.line, d.range.end.character,
            d.severity, d.source) for d in diags]
    err = types.DiagnosticSeverity.Error
    # line 3 (0-based 2): the call Lnear(10) at code point columns 41..50 (1-based); ASCII only
    # line 8 (0-based 7): 'Nope' at code point column 71; two astral characters before it add
    # one UTF-16 unit each
    assert got == [(2, 40, 2, 49, err, "netdsl"), (7, 72, 7, 76, err, "netdsl")]
    assert "unknown layer or block 'Lnear'" in diags[0].message and "Linear" in diags[0].message
    assert "'Nope'" in diags[1].message
    fixed = BROKEN.replace("Lnear(10)", "ReLU").replace(" -> Nope", "")
    lsp.change(uri, fixed)
    assert lsp.wait_diagnostics(uri) == []
    lsp.change(uri, BROKEN.replace("network B {", "network B {{"))      # a syntax error
    diags = lsp.wait_diagnostics(uri)
    # a burst of changes (typing): diagnostics for the last text, not for each keystroke
    first = lsp.versions[uri] + 1
    for k in range(3):
        lsp.change(uri, fixed + "#" * k)
    assert lsp.wait_diagnostics(uri) == []
    published = {v for v, _ in lsp.diagnostics[uri]}
    assert lsp.versions[uri] in published and not {first, first + 1} <= published
    lsp.change(uri, BROKEN.replace("network B {", "network B {{"))
    diags = lsp.wait_diagnostics(uri)
    syntax = [d for d in diags if d.code == "ParseError"]
    assert [(d.range.start.line, d.range.start.character) for d in syntax] == [(5, 11)]
    assert "unexpected" in syntax[0].message
    assert (2, 40) in [(d.range.start.line, d.range.start.character) for d in diags]   # A's error stays
    assert all(d.severity == err for d in diags)


def test_hover_layer_shape_params_macs(lsp):
    uri = lsp.open(lsp.root / "main.net", MAIN)
    assert lsp.wait_diagnostics(uri) == []
    text = _hover_text(lsp.hover(uri, *_pos(MAIN, "Linear(10)", 2)))
    assert "**fc**" in text and "`[N, 10]`" in text
    assert "params: 650 (trainable 650, frozen 0)" in text
    assert "MACs: 640" in text
    assert "**Linear** (layer)" in text          # and the op's documentation
    # the label of a layer gives the same layer
    assert "**fc**" in _hover_text(lsp.hover(uri, *_pos(MAIN, "fc:")))
    # a block's body: one line per instance, with its path
    text = _hover_text(lsp.hover(uri, *_pos(MAIN, "Conv2d(c, 3", 1, nth=1)))
    assert "**2 instances**" in text
    assert "- `pair.conv2d_1`: `[N, 32, H, W]` · 9,248 params · MACs 9216 * H * W" in text
    assert "- `p2.conv2d_1`: `[N, 48, H, W]` · 20,784 params" in text
    text = _hover_text(lsp.hover(uri, *_pos(MAIN, "Pair(48)", 1)))
    assert "**p2** · 2 layers" in text and "params: 34,656 (trainable 34,656, frozen 0)" in text
    assert "block Pair(c: int)" in text and "Two convs." in text
    # a block call: the instance's output, totals, then the block's signature and docstring
    text = _hover_text(lsp.hover(uri, *_pos(MAIN, "BasicBlock(64", 3)))
    assert "**b1**" in text and "[N, 64, (H + 1) // 2, (W + 1) // 2]" in text
    assert "block BasicBlock(\n    planes: int,\n    stride: int = 1,\n" in text and "\n) (x) -> y" in text
    assert "std/residual.net" in text
    # a tensor name and an input
    text = _hover_text(lsp.hover(uri, *_pos(MAIN, "x = image", 0)))
    assert "**x**" in text and "[N, 64, (H + 1) // 2, (W + 1) // 2]" in text
    assert "`[N, 3, H, W]`" in _hover_text(lsp.hover(uri, *_pos(MAIN, "image:", 1)))
    # a block defined in an imported file: its signature and docstring
    text = _hover_text(lsp.hover(uri, *_pos(MAIN, "Stem(16)", 1)))
    assert "block Stem(width: int = 32)" in text and "A 3x3 conv stem." in text
    assert "`stem`" in text or "**stem**" in text
    # a network's name: signature, docstring, inputs and outputs, totals
    text = _hover_text(lsp.hover(uri, *_pos(MAIN, "network Net", 9)))
    assert "network Net" in text and "A small net." in text and "output `logits`: `[N, 10]`" in text


def test_hover_in_an_imported_file_uses_the_open_importer(lsp):
    """A file of blocks has no network of its own: the shapes come from the open documents that
    use its blocks."""
    lsp.open(lsp.root / "main.net", MAIN)
    uri = lsp.open(lsp.root / "lib.net", LIB)
    assert lsp.wait_diagnostics(uri) == []
    text = _hover_text(lsp.hover(uri, *_pos(LIB, "Conv2d", 1)))
    assert "**stem.conv** · `Conv2d` · in Net" in text or "**stem.conv** · `Conv2d`" in text
    assert "`[N, 16, H, W]`" in text and "params: 448" in text


LOOP = textwrap.dedent('''\
    network Loop {
        input image: f32[N, 3, H, W]
        x = image
        for i in range(2) {
            x = x -> stage{i + 1}: [ Conv2d(8 * 2 ** i, 3, stride = 2, padding = 1)  ReLU ]
        }
        output y = x
    }
    ''')


def test_hover_groups_and_loops(lsp):
    uri = lsp.open(lsp.root / "loop.net", LOOP)
    assert lsp.wait_diagnostics(uri) == []
    text = _hover_text(lsp.hover(uri, *_pos(LOOP, "stage{", 2)))      # a group's label
    assert "**2 instances**" in text
    assert "- `stage1`: `[N, 8, (H + 1) // 2, (W + 1) // 2]` · 224 params" in text
    assert "- `stage2`: `[N, 16, (H + 3) // 4, (W + 3) // 4]` · 1,168 params" in text
    text = _hover_text(lsp.hover(uri, *_pos(LOOP, "Conv2d(8", 0)))    # one line per iteration
    assert "`stage1.0`: `[N, 8," in text and "`stage2.0`: `[N, 16," in text
    text = _hover_text(lsp.hover(uri, *_pos(LOOP, "output y = x", 11)))    # a use of x
    assert "**x**" in text and "`[N, 16, (H + 3) // 4, (W + 3) // 4]`" in text
    assert "**y** (output)" in _hover_text(lsp.hover(uri, *_pos(LOOP, "output y", 7)))


def test_hover_with_a_later_error(lsp):
    uri = lsp.open(lsp.root / "broken2.net", BROKEN)
    lsp.wait_diagnostics(uri)
    text = _hover_text(lsp.hover(uri, *_pos(BROKEN, "Conv2d(8", 1)))
    assert "[N, 8, H - 2, W - 2]" in text and "params: 224" in text
    assert "MACs: 216 * H * W" in text
    text = _hover_text(lsp.hover(uri, *_pos(BROKEN, "Conv2d(16", 1)))
    assert "[N, 16, H - 2, W - 2]" in text


def test_definition_across_imports_and_into_std(lsp):
    uri = lsp.open(lsp.root / "main.net", MAIN)
    locs = lsp.definition(uri, *_pos(MAIN, "Stem(16)", 2))
    assert len(locs) == 1
    assert Path(to_fs_path(locs[0].uri)) == (lsp.root / "lib.net").resolve()
    assert (locs[0].range.start.line, locs[0].range.start.character, locs[0].range.end.character) == (0, 6, 10)
    locs = lsp.definition(uri, *_pos(MAIN, "BasicBlock", 4))
    assert Path(to_fs_path(locs[0].uri)) == (STD / "residual.net").resolve()
    line = (STD / "residual.net").read_text(encoding="utf-8").split("\n")[locs[0].range.start.line]
    assert line[locs[0].range.start.character:locs[0].range.end.character] == "BasicBlock"
    assert line.startswith("block BasicBlock(")
    locs = lsp.definition(uri, *_pos(MAIN, "Pair(32)", 1))          # in the same file
    assert locs[0].uri == uri and (locs[0].range.start.line, locs[0].range.start.character) == (3, 6)
    locs = lsp.definition(uri, *_pos(MAIN, "residual.net", 0))      # the import itself
    assert Path(to_fs_path(locs[0].uri)) == (STD / "residual.net").resolve()
    assert lsp.definition(uri, *_pos(MAIN, "padding", 1)) is None   # nothing to go to


def test_completion(lsp):
    uri = lsp.open(lsp.root / "main.net", MAIN)
    # inside Conv2d's call, after its positional arguments
    result = lsp.completion(uri, *_pos(MAIN, "padding = 1)", 0))
    labels = [i.label for i in result.items]
    assert "Conv2d" in labels and "BasicBlock" in labels and "Stem" in labels and "Pair" in labels
    assert "network" in labels and "Linear" in labels
    kwargs = [i for i in result.items if i.kind == types.CompletionItemKind.Property]
    assert {"out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias"} <= \
        {i.label for i in kwargs}
    assert labels.index("stride") < labels.index("Conv2d")          # keyword arguments first
    conv = next(i for i in result.items if i.label == "Conv2d")
    assert "2-D convolution" in conv.documentation.value and "`out_channels`" in conv.documentation.value
    # a block's parameters inside its call, with their defaults
    result = lsp.completion(uri, *_pos(MAIN, "stride = 2)", 10))
    props = {i.label: i for i in result.items if i.kind == types.CompletionItemKind.Property}
    assert "planes" in props and props["dilation"].detail == "dilation: int = 1"
    assert "stride" not in props            # already given
    # outside any call: no keyword arguments
    result = lsp.completion(uri, *_pos(MAIN, "x = image", 0))
    assert not [i for i in result.items if i.kind == types.CompletionItemKind.Property]


def test_document_symbols(lsp):
    uri = lsp.open(lsp.root / "main.net", MAIN)
    syms = lsp.symbols(uri)
    assert [(s.name, s.kind) for s in syms] == [("Pair", types.SymbolKind.Function),
                                                ("Net", types.SymbolKind.Class)]
    pair, net = syms
    assert (pair.range.start.line, pair.range.end.line) == (3, 7)
    assert (pair.selection_range.start.line, pair.selection_range.start.character,
            pair.selection_range.end.character) == (3, 6, 10)
    assert [c.name for c in pair.children] == ["c"]
    assert {c.name for c in net.children} == {"image", "logits"}


def test_formatting(lsp):
    formatter = pytest.importorskip("netdsl.frontend.formatter")
    assert lsp.init.capabilities.document_formatting_provider
    ugly = "network  Tiny{\n  input image : f32[N,3,H,W]\n  output y=image->Conv2d(8,3)->ReLU\n}\n"
    uri = lsp.open(lsp.root / "ugly.net", ugly)
    assert lsp.wait_diagnostics(uri) == []
    edits = lsp.run(lsp.client.text_document_formatting_async(types.DocumentFormattingParams(
        text_document=types.TextDocumentIdentifier(uri=uri), options=types.FormattingOptions(4, True))))
    expected = formatter.format_text(ugly)
    assert expected != ugly
    assert len(edits) == 1 and edits[0].new_text == expected
    assert (edits[0].range.start.line, edits[0].range.start.character) == (0, 0)
    assert (edits[0].range.end.line, edits[0].range.end.character) == (4, 0)
    lsp.change(uri, ugly.replace("{", "{{"))          # a syntax error: nothing to format
    lsp.wait_diagnostics(uri)
    assert not lsp.run(lsp.client.text_document_formatting_async(types.DocumentFormattingParams(
        text_document=types.TextDocumentIdentifier(uri=uri), options=types.FormattingOptions(4, True))))


def test_lsp_help_and_usage_errors(capsys, tmp_path):
    from netdsl.cli import main
    assert main(["lsp", "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: netdsl lsp" in out and "Language Server Protocol" in out and "--stdio" in out
    assert main(["lsp", "--tcp"]) == 2
    assert "unrecognized arguments: --tcp" in capsys.readouterr().err
    missing = tmp_path / "no such dir" / "lsp.log"
    assert main(["lsp", "--log-file", str(missing)]) == 1
    assert capsys.readouterr().err.startswith(f"netdsl: error: cannot write the log file '{missing}'")


def test_lsp_imports_no_torch():
    code = textwrap.dedent(f'''
        import sys
        from lsprotocol import types
        from netdsl.lsp.server import create_server
        from netdsl.lsp.document import Document
        from netdsl.lsp.scope import Resolver
        from netdsl.lsp.hover import hover
        from netdsl.lsp.completion import completion
        create_server()
        path = {str(ROOT / "examples" / "resnet.net")!r}
        doc = Document("file://" + path, path, open(path, encoding="utf-8").read(), Resolver())
        assert doc.graphs and not doc.analysis.diagnostics
        hover(doc, types.Position(32, 25)); completion(doc, types.Position(32, 40))
        bad = [m for m in sys.modules if m.split(".")[0] in ("torch", "onnx", "onnxruntime")]
        assert not bad, bad
        print("ok")
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    # the command itself: started with nothing on stdin it ends at once, having imported no torch
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "netdsl", "lsp"], input="",
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    modules = [line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")]
    assert "netdsl.lsp.server" in modules and "pygls.lsp.server" in modules
    assert not [m for m in modules if m.split(".")[0] in ("torch", "onnx", "onnxruntime")]


def test_no_completion_inside_comments_and_strings(lsp):
    text = textwrap.dedent('''\
        # a comment about Con
        network S {
            "A docstring that mentions Con"
            input x: f32[1, 3, 8, 8]
            output y = x -> Conv2d(4, 3, padding = "sa") -> ReLU  # and Con
        }
        ''')
    uri = lsp.open(lsp.root / "strings.net", text)
    for needle, offset in (("about Con", 9), ("mentions Con", 12), ('"sa"', 3), ("and Con", 7)):
        result = lsp.completion(uri, *_pos(text, needle, offset))
        assert result is not None and not result.items, needle
    # in code, on the same lines: layers and keyword arguments
    labels = [i.label for i in lsp.completion(uri, *_pos(text, "-> ReLU", 3)).items]
    assert "Conv2d" in labels
    labels = [i.label for i in lsp.completion(uri, *_pos(text, "padding", 0)).items]
    assert "stride" in labels and "Conv2d" in labels


def test_requests_for_documents_that_are_not_open_or_not_files(lsp):
    """A request may name any URI: one that is neither open nor a readable file gets null (it was
    an internal error, FileNotFoundError, with a traceback in the log)."""
    missing = from_fs_path(str(lsp.root / "never written.net"))
    for uri in (missing, "untitled:Untitled-9", "https://example.com/x.net"):
        doc = types.TextDocumentIdentifier(uri=uri)
        assert lsp.hover(uri, 0, 0) is None
        assert lsp.completion(uri, 0, 0) is None
        assert lsp.definition(uri, 0, 0) is None
        assert lsp.symbols(uri) is None
        assert lsp.run(lsp.client.text_document_formatting_async(types.DocumentFormattingParams(
            text_document=doc, options=types.FormattingOptions(tab_size=4, insert_spaces=True)))) is None
    # a file on disk that is not open still answers, from its text on disk
    syms = lsp.symbols(from_fs_path(str(lsp.root / "lib.net")))
    assert [s.name for s in syms] == ["Stem"]


def test_import_of_a_name_the_system_refuses_keeps_definitions(lsp):
    # an import too long for a file name made every request on the document fail (OSError)
    text = f'import "{"a" * 5000}.net"\n' + MAIN
    uri = lsp.open(lsp.root / "longimport.net", text)
    diags = lsp.wait_diagnostics(uri)
    assert [d.range.start.line for d in diags] == [0] and "cannot import" in diags[0].message
    locs = lsp.definition(uri, *_pos(text, "Stem(16)", 2))
    assert locs and Path(to_fs_path(locs[0].uri)) == (lsp.root / "lib.net").resolve()
    labels = [i.label for i in lsp.completion(uri, *_pos(text, "-> Pair(32)", 3)).items]
    assert "Stem" in labels and "Pair" in labels


def test_a_file_changed_outside_the_editor_is_seen(lsp):
    """workspace/didChangeWatchedFiles: an imported file written on disk (not open in the
    editor) re-analyses the open documents that import it."""
    lib = lsp.root / "watched_lib.net"
    lib.write_text("block Other() {\n    ReLU\n}\n", encoding="utf-8")
    text = 'import "watched_lib.net"\n\nnetwork W {\n    input x: f32[N, 3]\n    output y = x -> Late()\n}\n'
    uri = lsp.open(lsp.root / "watcher.net", text)
    assert lsp.wait_diagnostics(uri), "Late is not defined yet"
    published = len(lsp.diagnostics[uri])
    lib.write_text("block Late() {\n    ReLU\n}\n", encoding="utf-8")
    lsp.client.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams(
        changes=[types.FileEvent(uri=from_fs_path(str(lib)), type=types.FileChangeType.Changed)]))

    async def cleared():
        while True:
            if any(not diags for _, diags in lsp.diagnostics[uri][published:]):
                return True
            await asyncio.sleep(0.01)
    assert lsp.run(cleared(), 15)


def test_shutdown_and_exit_are_clean(lsp):
    """Last: shuts the module's server down (shutdown answers null, exit ends the process with 0)."""
    start = time.monotonic()
    assert lsp.run(lsp.client.shutdown_async(None), timeout=10) is None
    lsp.client.exit(None)
    lsp.run(lsp.client.stop(), timeout=10)
    server = lsp.client._server
    assert server is not None and server.returncode == 0
    assert time.monotonic() - start < 10
