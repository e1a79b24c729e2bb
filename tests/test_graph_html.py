"""The HTML graph view without a browser: the page parses, is self-contained (nothing to
download), embeds every node and edge of the IR, and carries hostile spec text only as data."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

import netdsl
from netdsl.graphview.html import STATIC, render_html, script_json
from netdsl.graphview.model import build_view

ROOT = Path(__file__).resolve().parent.parent

EVIL_DOC = "</script><script>alert(1)</script> & <!-- x --> </SCRIPT > <b>bold</b>"
EVIL = f'''network Evil {{
    "{EVIL_DOC}"
    input x: f32[1, 4]
    output y = x -> fc: Linear(2)   # </script><script>alert(2)</script>
}}
'''


class Page(HTMLParser):
    """Every start tag with its attributes, and the text of each <script>/<style> element."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[tuple[dict, str]] = []
        self.styles: list[str] = []
        self.open: list[str] = []
        self._cur: tuple[str, dict] | None = None
        self._buf: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag in ("script", "style"):
            self._cur, self._buf = (tag, attrs), []
        elif tag not in ("meta", "br", "img", "link", "input", "path", "rect"):
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if self._cur is not None and tag == self._cur[0]:
            (self.scripts if tag == "script" else self.styles).append(
                (self._cur[1], "".join(self._buf)) if tag == "script" else "".join(self._buf))
            self._cur = None
        elif tag not in ("path", "rect"):
            assert self.open and self.open[-1] == tag, (tag, self.open[-5:])
            self.open.pop()

    def handle_data(self, data):
        if self._cur is not None:
            self._buf.append(data)


def parse(page: str) -> Page:
    p = Page()
    p.feed(page)
    p.close()
    assert p._cur is None and p.open == [], "unclosed elements"
    return p


def embedded(p: Page, element_id: str):
    (text,) = [t for a, t in p.scripts if a.get("id") == element_id]
    return json.loads(text)


@pytest.fixture(scope="module")
def resnet():
    net = netdsl.load(ROOT / "examples/resnet.net", network="ResNet50")
    view = build_view(net).to_json()
    return net, view, render_html(view, 1)


def test_page_parses_and_has_the_viewer(resnet):
    _, view, page = resnet
    assert page.startswith("<!DOCTYPE html>")
    p = parse(page)
    ids = {a.get("id") for _, a in p.tags}
    for need in ("canvas", "viewport", "tooltip", "expand-all", "collapse-all", "fit",
                 "net-name", "netdsl-view", "netdsl-config", "arrow"):
        assert need in ids, need
    types = [a.get("type") for a, _ in p.scripts]
    assert types == ["application/json", "application/json", None, None]
    dagre_js, viewer_js = (t for a, t in p.scripts if a.get("type") is None)
    assert "dagre" in dagre_js and "graphlib" in dagre_js and len(dagre_js) > 20_000
    assert "dagre.layout" in viewer_js and "data-id" in viewer_js
    assert p.styles and ".node" in p.styles[0]
    assert [t for t, _ in p.tags].count("title") == 1
    assert "ResNet50" in page[:page.index("</title>")]


def test_page_is_self_contained(resnet):
    _, _, page = resnet
    p = parse(page)
    for tag, attrs in p.tags:
        assert "src" not in attrs, (tag, attrs)          # nothing loaded from anywhere
        for k in ("href", "xlink:href", "action", "poster", "data"):
            assert not re.match(r"\s*(https?:)?//", attrs.get(k) or ""), (tag, k, attrs[k])
        assert tag not in ("link", "iframe", "img", "object", "embed", "base"), tag
        if tag == "meta":
            assert attrs.get("http-equiv") is None, attrs
    code = "\n".join(t for a, t in p.scripts if a.get("type") is None) + "\n".join(p.styles)
    for banned in ("fetch(", "XMLHttpRequest", "WebSocket", "EventSource", "sendBeacon",
                   "importScripts", "import(", "@import", "url(http", "url(//",
                   "sourceMappingURL"):
        assert banned not in code, banned
    # the only URL-looking text is the SVG namespace name (createElementNS; never fetched)
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", code))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls


def _ir_edges(graph):
    """(producer, consumer) pairs straight from the IR: inputs/layers -> layers/outputs."""
    inputs = {id(v): "input:" + v.name for v in graph.inputs}

    def src(v):
        return v.producer.path if v.producer is not None else inputs[id(v)]

    pairs = {(src(v), n.path) for n in graph.nodes for v in n.inputs}
    pairs |= {(src(v), "output:" + name) for name, v in graph.outputs}
    return pairs


@pytest.mark.parametrize("spec,network", [("examples/resnet.net", "ResNet50"),
                                          ("examples/unet.net", None)])
def test_page_embeds_every_ir_node_and_edge(spec, network):
    net = netdsl.load(ROOT / spec, network=network)
    view = build_view(net).to_json()
    page = render_html(view, 1)
    shown = embedded(parse(page), "netdsl-view")
    assert shown == view                       # the JSON round-trips exactly
    g = net.graph
    ids = {n["id"] for n in shown["nodes"]}
    layers = {n.path for n in g.nodes}
    assert len(layers) == len(g.nodes) > 10
    assert layers <= ids
    assert {"input:" + v.name for v in g.inputs} <= ids
    assert {"output:" + name for name, _ in g.outputs} <= ids
    edges = {(e["from"], e["to"]) for e in shown["edges"]}
    ir = _ir_edges(g)
    assert len(ir) >= len(g.nodes)
    assert ir == edges
    # every composite (a proper prefix of a layer path) is a node with its children
    prefixes = {".".join(p.split(".")[:i]) for p in layers for i in range(1, p.count(".") + 1)}
    assert prefixes and prefixes <= ids
    assert embedded(parse(page), "netdsl-config") == {"depth": 1}


def test_hostile_spec_text_stays_data():
    net = netdsl.loads(EVIL, name="evil.net")
    view = build_view(net).to_json()
    assert "</script>" in view["doc"]
    (fc,) = [n for n in view["nodes"] if n["id"] == "fc"]
    assert "</script><script>alert(2)" in fc["source"]["text"]
    page = render_html(view, None)
    # exactly the page's own four <script> elements and their four end tags
    assert len(re.findall(r"<script\b", page, re.I)) == 4
    assert len(re.findall(r"</script\s*>", page, re.I)) == 4
    assert "<script>alert" not in page
    assert "<!--" not in page and "<b>bold" not in page
    p = parse(page)
    assert [a.get("id") for a, _ in p.scripts][:2] == ["netdsl-view", "netdsl-config"]
    shown = embedded(p, "netdsl-view")
    assert shown["doc"] == view["doc"] == EVIL_DOC
    assert shown == view
    assert embedded(p, "netdsl-config") == {"depth": None}


def test_script_json_escapes_what_html_would_read():
    for s in ["</script>", "</SCRIPT", "<!--", "-->", "a & b", "\u2028\u2029", "<![CDATA["]:
        text = script_json({"s": s})
        assert not re.search(r"[<>&\u2028\u2029]", text), text
        assert json.loads(text) == {"s": s}


def test_viewer_writes_spec_text_as_text_only():
    js = (STATIC / "graph.js").read_text(encoding="utf-8")
    for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                   "new Function", "setTimeout(\"", "fetch(", "XMLHttpRequest"):
        assert banned not in js, banned
    assert "textContent" in js


def test_vendored_layout_library_and_licence():
    dagre = (STATIC / "dagre.min.js").read_text(encoding="utf-8")
    licence = (STATIC / "dagre.LICENSE").read_text(encoding="utf-8")
    assert "Chris Pettitt" in licence and "Permission is hereby granted" in licence
    assert "graphlib" in dagre and "layout" in dagre
    page = render_html({"network": "E", "doc": None, "source": None, "nodes": [], "edges": []}, 1)
    (code,) = [t for a, t in parse(page).scripts if a.get("type") is None and "dagre" in t[:100]]
    assert "Chris Pettitt" in code[:1500] and "MIT" in code[:200]   # the licence travels along
    assert "LEGAL.txt" not in code                                   # no pointer to a missing file
    assert "dagre.min.js" in (STATIC / "README.md").read_text(encoding="utf-8")


def test_depth_is_checked():
    view = {"network": "E", "doc": None, "source": None, "nodes": [], "edges": []}
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(ValueError):
            render_html(view, bad)
    for good in (0, 3, None):
        assert embedded(parse(render_html(view, good)), "netdsl-config") == {"depth": good}
