"""`netdsl graph` and netdsl.graphview (model, layout, SVG, DOT, Mermaid): every IR node and edge
is drawn, composites collapse and lift edges, text is escaped for each format, the command's
errors, and the time to draw the large examples."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import netdsl
from netdsl.cli import main
from netdsl.commands.graph import default_depth
from netdsl.graphview.dot import render_dot
from netdsl.graphview.layout import layout
from netdsl.graphview.mmd import render_mmd
from netdsl.graphview.model import build_view, expanded, visible
from netdsl.graphview.svg import render_svg

ROOT = Path(__file__).resolve().parent.parent
EX = ROOT / "examples"
SVG_NS = "{http://www.w3.org/2000/svg}"

NODE_KEYS = {"id", "label", "path", "op", "kind", "parent", "children", "depth", "attrs", "shape",
             "params", "trainable", "macs", "source"}

# A comment on a layer's line reaches the tooltips (the source line's text): it holds every
# character the formats must escape.
HOSTILE = '''\
block Pair(c: int) {
    a: Conv2d(c, 3, padding = 1)   # </title></g></svg><script>alert("x")</script> & 'q' \\ "|` #x
    ReLU
}

network Hostile {
    "Doc with </script> & <b>tags</b>."
    input x: f32[N, 3, H, W]
    y = x -> p: Pair(4) -> q: [
        Pair(4)
        Pair(4)
    ]
    freeze q.0
    output out = (y -> Conv2d(3, 1)) + x
}
'''


# ---- fixtures: each network is built once -----------------------------------------------

def _net(file, network=None, **kw):
    return netdsl.load(EX / file, network=network, **kw)


@pytest.fixture(scope="module")
def resnet18():
    net = _net("resnet.net", "ResNet18")
    return net, build_view(net).to_json()


@pytest.fixture(scope="module")
def resnet50():
    net = _net("resnet.net", "ResNet50")
    return net, build_view(net).to_json()


@pytest.fixture(scope="module")
def unet():
    net = _net("unet.net")
    return net, build_view(net).to_json()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "hostile.net"
    path.write_text(HOSTILE)
    net = netdsl.load(path)
    return net, build_view(net).to_json()


def _big(file, network):
    t = time.perf_counter()
    net = _net(file, network)
    view = build_view(net).to_json()
    return net, view, time.perf_counter() - t


@pytest.fixture(scope="module")
def densenet201():
    return _big("densenet.net", "DenseNet201")


@pytest.fixture(scope="module")
def vit_l():
    return _big("attention.net", "ViT_L_16")


# ---- what the IR says should be drawn ---------------------------------------------------

def ir_node_ids(net) -> set:
    g = net.graph
    return ({n.path for n in g.nodes} | {f"input:{v.name}" for v in g.inputs}
            | {f"output:{name}" for name, _ in g.outputs})


def ir_edges(net) -> set:
    """(from, to) of every value flowing between layers, inputs and outputs, from the IR."""
    g = net.graph
    inputs = {id(v): f"input:{v.name}" for v in g.inputs}

    def src(v):
        return v.producer.path if v.producer is not None else inputs[id(v)]

    out = {(src(v), n.path) for n in g.nodes for v in n.inputs}
    out |= {(src(v), f"output:{name}") for name, v in g.outputs}
    return out


def lifted(view, depth, pairs) -> set:
    """IR edges lifted to the boxes shown at `depth`, self-loops dropped."""
    by_id = {n["id"]: n for n in view["nodes"]}
    shown = {n["id"] for n in visible(view, depth)[0]}

    def box(i):
        chain = [i]
        while by_id[chain[-1]]["parent"] is not None:
            chain.append(by_id[chain[-1]]["parent"])
        for a in reversed(chain):           # the outermost collapsed ancestor stands for it
            if a in shown and not expanded(by_id[a], depth):
                return a
        raise AssertionError(i)

    return {(box(a), box(b)) for a, b in pairs if box(a) != box(b)}


# ---- the model ------------------------------------------------------------------------

def test_view_schema_and_every_ir_node_and_edge(resnet18):
    net, view = resnet18
    assert set(view) == {"network", "doc", "source", "nodes", "edges"}
    assert view["network"] == "ResNet18" and view["source"].endswith("resnet.net")
    assert view["doc"].startswith("ResNet")
    ids = [n["id"] for n in view["nodes"]]
    assert len(ids) == len(set(ids))
    for n in view["nodes"]:
        assert set(n) == NODE_KEYS, n["id"]
        assert isinstance(n["params"], int) and isinstance(n["macs"], str)
    leaves = {n["id"] for n in view["nodes"] if n["kind"] in ("layer", "input", "output")}
    assert leaves == ir_node_ids(net)
    assert {(e["from"], e["to"]) for e in view["edges"]} == ir_edges(net)
    assert len(ir_edges(net)) > len(net.graph.nodes)      # the residual edges are there too
    json.dumps(view)                                        # plain JSON


def test_composites_blocks_groups_and_totals(resnet18):
    net, view = resnet18
    by_id = {n["id"]: n for n in view["nodes"]}
    assert by_id["layer1"]["kind"] == "group" and by_id["layer1"]["op"] == "group"
    blk = by_id["layer1.0"]
    assert blk["kind"] == "block" and blk["op"] == "BasicBlock" and blk["parent"] == "layer1"
    assert blk["depth"] == 1 and blk["source"]["file"].endswith("resnet.net")
    assert blk["children"][:2] == ["layer1.0.conv1", "layer1.0.bn1"]
    assert by_id["layer2.0.downsample"]["kind"] == "group"
    conv = by_id["layer1.0.conv1"]
    assert conv["op"] == "Conv2d" and conv["parent"] == "layer1.0" and conv["depth"] == 2
    assert conv["params"] == 64 * 64 * 9 and conv["attrs"]["kernel_size"] == "(3, 3)"
    assert conv["source"]["file"].endswith("residual.net") and conv["source"]["line"] > 0
    # buffers (running statistics) are not parameters; totals add up to the network's count
    assert by_id["bn1"]["params"] == 128
    top = [n for n in view["nodes"] if n["parent"] is None]
    assert sum(n["params"] for n in top) == net.param_count()
    assert by_id["layer1"]["params"] == sum(by_id[c]["params"] for c in by_id["layer1"]["children"])
    assert by_id["layer4"]["shape"] == by_id["layer4.1.relu_1"]["shape"] == "[N, 512, (H + 31) // 32, (W + 31) // 32]"
    assert by_id["input:image"]["shape"] == "[N, 3, H, W]" and by_id["output:logits"]["shape"] == "[N, 1000]"
    assert by_id["layer1.0.conv1"]["macs"] == "?"           # symbolic H, W


def test_macs_and_shapes_with_given_input():
    net = _net("resnet.net", "ResNet18", inputs={"image": (1, 3, 224, 224)})
    by_id = {n["id"]: n for n in build_view(net).to_json()["nodes"]}
    assert by_id["conv1"]["macs"] == "118.0M"               # 9408 * 112 * 112
    assert by_id["conv1"]["shape"] == "[1, 64, 112, 112]"
    assert by_id["layer1"]["macs"] == "462.4M"


def test_frozen_parameters_are_counted_apart(hostile):
    net, view = hostile
    by_id = {n["id"]: n for n in view["nodes"]}
    assert by_id["q.0"]["params"] > 0 and by_id["q.0"]["trainable"] == 0
    assert by_id["q"]["trainable"] == by_id["q.1"]["params"]
    assert by_id["p"]["trainable"] == by_id["p"]["params"] > 0
    assert by_id["p"]["kind"] == "block" and by_id["p"]["op"] == "Pair"


def test_blocks_groups_and_splices_told_apart():
    net = netdsl.loads("""
block B(c: int) {
    conv: Conv2d(c, 1)
    ReLU
}
network S {
    input x: f32[N, 3, H, W]
    output y = x -> s: [
        ...B(4)
    ] -> b: B(4) -> [
        B(4)
        B(4)
    ]
}
""")
    kinds = {n["id"]: (n["kind"], n["op"]) for n in build_view(net).to_json()["nodes"]}
    assert kinds["s"] == ("group", "group")          # a spliced block has no box of its own
    assert kinds["s.conv"] == ("layer", "Conv2d")
    assert kinds["b"] == ("block", "B") and kinds["seq"] == ("group", "group")
    assert kinds["seq.0"] == kinds["seq.1"] == ("block", "B")
    assert kinds["seq.1.relu"] == ("layer", "ReLU")


def test_visible_depth_one_is_the_top_level_with_lifted_edges(resnet18):
    net, view = resnet18
    for depth in (0, 1):
        nodes, edges = visible(view, depth)
        assert [n["id"] for n in nodes] == [n["id"] for n in view["nodes"] if n["parent"] is None]
        pairs = [(e["from"], e["to"]) for e in edges]
        assert len(pairs) == len(set(pairs)) and all(a != b for a, b in pairs)
        assert set(pairs) == lifted(view, depth, ir_edges(net))
        assert ("maxpool", "layer1") in pairs and ("layer1", "layer2") in pairs
    residual = next(e for e in visible(view, 1)[1] if e["to"] == "layer1")
    assert residual["count"] == 2          # the block's conv and its skip connection


def test_visible_depth_two_opens_the_top_level(resnet18):
    net, view = resnet18
    nodes, edges = visible(view, 2)
    ids = [n["id"] for n in nodes]
    assert "layer1" in ids and "layer1.0" in ids and "layer1.0.conv1" not in ids
    assert {(e["from"], e["to"]) for e in edges} == lifted(view, 2, ir_edges(net))
    assert ("layer1.0", "layer1.1") in {(e["from"], e["to"]) for e in edges}


# ---- SVG ------------------------------------------------------------------------------

def svg_parts(text):
    root = ET.fromstring(text)
    nodes, edges, clusters = set(), set(), set()
    for g in root.iter(f"{SVG_NS}g"):
        cls = g.get("class", "").split()
        if "node" in cls:
            assert g.get("id") == g.get("data-id")
            nodes.add(g.get("data-id"))
        elif "edge" in cls:
            edges.add((g.get("data-from"), g.get("data-to")))
        elif "cluster" in cls:
            clusters.add(g.get("data-id"))
    return root, nodes, edges, clusters


@pytest.mark.parametrize("fixture", ["resnet18", "unet", "resnet50"])
def test_svg_full_depth_has_every_ir_node_and_edge(fixture, request):
    net, view = request.getfixturevalue(fixture)
    root, nodes, edges, clusters = svg_parts(render_svg(view, None))
    assert nodes == ir_node_ids(net)
    assert edges == ir_edges(net)
    assert clusters == {n["id"] for n in view["nodes"] if n["children"]}
    assert root.find(f"{SVG_NS}title").text == net.name
    # a tooltip per box, with the source line
    conv = next(g for g in root.iter(f"{SVG_NS}g") if g.get("data-id") == net.graph.nodes[0].path)
    tip = conv.find(f"{SVG_NS}title").text
    assert net.graph.nodes[0].op in tip and ".net:" in tip


def test_svg_depth_one(resnet50):
    net, view = resnet50
    root, nodes, edges, clusters = svg_parts(render_svg(view, 1))
    assert nodes == {n["id"] for n in view["nodes"] if n["parent"] is None}
    assert edges == lifted(view, 1, ir_edges(net))
    assert not clusters and "layer3" in nodes
    collapsed = [g for g in root.iter(f"{SVG_NS}g") if "collapsed" in g.get("class", "")]
    assert {g.get("data-id") for g in collapsed} == {"layer1", "layer2", "layer3", "layer4"}
    texts = " ".join(t.text or "" for t in root.iter(f"{SVG_NS}text"))
    assert "Bottleneck" not in texts and "group · " in texts and "params" in texts


def test_svg_escapes_everything(hostile):
    net, view = hostile
    text = render_svg(view, None)
    root, nodes, edges, _ = svg_parts(text)          # parses: nothing broke out
    assert nodes == ir_node_ids(net) and edges == ir_edges(net)
    assert not list(root.iter(f"{SVG_NS}script")) and not list(root.iter("script"))
    tips = [t.text for t in root.iter(f"{SVG_NS}title")]
    assert any('<script>alert("x")</script>' in (t or "") for t in tips)   # shown, as text


def test_layout_boxes_do_not_overlap(resnet50, unet):
    for _, view in (resnet50, unet):
        for depth in (1, 2, None):
            lay = layout(view, depth)
            rows: dict = {}
            for b in lay.boxes.values():
                rows.setdefault(b.layer, []).append(b)
            assert len(rows) > 3
            for row in rows.values():
                row.sort(key=lambda b: b.x)
                for a, b in zip(row, row[1:]):
                    assert a.x + a.w / 2 <= b.x - b.w / 2 + 1e-6, (a.id, b.id)
            for r in lay.routes:     # edges go downwards from their source's box to the target's
                src, dst = lay.boxes[r.edge["from"]], lay.boxes[r.edge["to"]]
                if src.layer < dst.layer:
                    assert r.points[0][1] == pytest.approx(src.y + src.h / 2)
                    assert r.points[-1][1] == pytest.approx(dst.y - dst.h / 2)
                    assert len(r.points) == dst.layer - src.layer + 1


# ---- DOT and Mermaid ------------------------------------------------------------------------

_DOT_TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|(->|[{}\[\];,=])|([A-Za-z_][A-Za-z0-9_.]*|-?[0-9.]+))', re.S)


def dot_parse(text):
    """A small recursive-descent reader of the DOT subset render_dot writes; returns the node
    ids (of node statements) and edges. Fails on anything malformed (an unescaped quote)."""
    toks, pos = [], 0
    while pos < len(text.rstrip()):
        m = _DOT_TOKEN.match(text, pos)
        assert m and m.end() > pos, f"bad DOT at {text[pos:pos + 60]!r}"
        toks.append(m.group(1) or m.group(2) or m.group(3))
        pos = m.end()
    nodes, edges, i = set(), set(), 0

    def ident(t):
        assert t[0] == '"' or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*|-?[0-9.]+", t), t
        return re.sub(r'\\(.)', r'\1', t[1:-1]) if t[0] == '"' else t

    def attrs():
        nonlocal i
        if toks[i] != "[":
            return
        i += 1
        while toks[i] != "]":
            ident(toks[i]); assert toks[i + 1] == "="; ident(toks[i + 2])
            i += 3
            if toks[i] == ",":
                i += 1
        i += 1

    def stmts():
        nonlocal i
        while toks[i] != "}":
            t = toks[i]
            if t == "subgraph":
                ident(toks[i + 1]); assert toks[i + 2] == "{"
                i += 3
                stmts()
                continue
            elif t in ("graph", "node", "edge"):
                i += 1
                attrs()
            elif toks[i + 1] == "=":
                ident(t); ident(toks[i + 2])
                i += 3
            elif toks[i + 1] == "->":
                edges.add((ident(t), ident(toks[i + 2])))
                i += 3
                attrs()
            else:
                nodes.add(ident(t))
                i += 1
                attrs()
            assert toks[i] == ";", toks[i - 3:i + 1]
            i += 1
        i += 1

    assert toks[0] == "digraph"
    ident(toks[1])
    assert toks[2] == "{"
    i = 3
    stmts()
    assert i == len(toks)
    return nodes, edges


@pytest.mark.parametrize("depth", [1, 2, None])
def test_dot_has_every_visible_node_and_edge(resnet50, depth):
    net, view = resnet50
    text = render_dot(view, depth)
    nodes, edges = dot_parse(text)
    shown, vedges = visible(view, depth)
    assert nodes == {n["id"] for n in shown if not expanded(n, depth)}
    assert edges == {(e["from"], e["to"]) for e in vedges} == lifted(view, depth, ir_edges(net))
    clusters = re.findall(r'subgraph "cluster_([^"]*)"', text)
    assert set(clusters) == {n["id"] for n in shown if expanded(n, depth)}
    if depth is None:
        assert nodes == ir_node_ids(net)


def test_dot_escapes(hostile):
    net, view = hostile
    text = render_dot(view, None)
    nodes, edges = dot_parse(text)
    assert nodes == ir_node_ids(net) and edges == ir_edges(net)
    assert r'alert(\"x\")' in text and "\\\\" in text


def test_label_escapers():
    from netdsl.graphview import dot, mmd, svg
    nasty = 'a"b<c>&d|e`f#g\nh\\i\x01j</script>'
    t = mmd.text(nasty)
    assert not re.search(r'["|`<>]', t.replace("<br/>", "")) and "#quot;" in t and "#35;g" in t
    q = dot.quote(nasty)
    m = _DOT_TOKEN.fullmatch(q)
    assert m and m.group(1) == q and "\\n" in q and "\\\\i" in q
    el = ET.fromstring(f'<t a="{svg.esc(nasty)}">{svg.esc(nasty)}</t>')
    assert el.text == el.get("a") == nasty.replace("\x01", "\ufffd")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed (not needed)")
def test_graphviz_reads_the_dot(resnet18, hostile):
    for _, view in (resnet18, hostile):
        r = subprocess.run(["dot", "-Tsvg"], input=render_dot(view, 2), capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        ET.fromstring(r.stdout)


_MMD_LINE = re.compile(
    r'(?:---|title: "[^"]*"|flowchart TD|end'
    r'|subgraph n\d+\["[^"]*"\]'
    r'|n\d+\["[^"]*"\]|n\d+\(\["[^"]*"\]\)'
    r'|n\d+ -->\|"[^"]*"\| n\d+'
    r'|classDef \w+ [-#\w:,]+|class (?:n\d+,)*n\d+ \w+)')


def mmd_parse(text, view, depth):
    lines = [line.strip() for line in text.strip().split("\n")]
    for line in lines:
        assert _MMD_LINE.fullmatch(line), line
    assert lines.count("end") == sum(1 for line in lines if line.startswith("subgraph "))
    shown, _ = visible(view, depth)
    names = {f"n{i}": n["id"] for i, n in enumerate(shown)}
    nodes = {names[m] for m in re.findall(r'^\s*(n\d+)(?:\[|\(\[)', text, re.M)}
    edges = {(names[a], names[b]) for a, b in re.findall(r'^\s*(n\d+) -->\|"[^"]*"\| (n\d+)$', text, re.M)}
    return nodes, edges


@pytest.mark.parametrize("depth", [1, 2, None])
def test_mermaid_has_every_visible_node_and_edge(unet, depth):
    net, view = unet
    nodes, edges = mmd_parse(render_mmd(view, depth), view, depth)
    shown, vedges = visible(view, depth)
    assert nodes == {n["id"] for n in shown if not expanded(n, depth)}
    assert edges == {(e["from"], e["to"]) for e in vedges} == lifted(view, depth, ir_edges(net))
    if depth is None:
        assert nodes == ir_node_ids(net)


def test_mermaid_escapes(hostile):
    net, view = hostile
    text = render_mmd(view, None)
    nodes, edges = mmd_parse(text, view, None)
    assert nodes == ir_node_ids(net) and edges == ir_edges(net)


# ---- the command ---------------------------------------------------------------------------

def run_cli(*args):
    return main([str(a) for a in args])


def test_cli_writes_each_format(tmp_path, capsys):
    for suffix in ("svg", "dot", "mmd", "html"):
        out = tmp_path / f"u.{suffix}"
        assert run_cli("graph", EX / "unet.net", "-o", out) == 0
        text = out.read_text()
        assert "UNet" in text and "body.enc.conv1" in text, suffix
    assert "wrote" in capsys.readouterr().err
    # --format overrides the suffix
    out = tmp_path / "u.txt"
    assert run_cli("graph", EX / "unet.net", "--format", "svg", "-o", out) == 0
    ET.fromstring(out.read_text())


def test_cli_stdout_and_depth(capsys):
    assert run_cli("graph", EX / "resnet.net", "--network", "ResNet50", "--depth", "1",
                   "--format", "svg", "-o", "-") == 0
    captured = capsys.readouterr()
    _, nodes, _, _ = svg_parts(captured.out)
    assert "layer1" in nodes and "layer1.0" not in nodes
    assert captured.err == ""


def test_default_depth(resnet50, resnet18, unet, densenet201):
    d = default_depth(resnet50[1])
    assert d == 2 and len(visible(resnet50[1], d)[0]) <= 60
    assert default_depth(densenet201[1]) == 2
    assert default_depth(unet[1]) is None       # small enough to show fully


@pytest.mark.parametrize("args, message", [
    (["--depth", "-1", "-o", "x.svg"], "non-negative"),
    (["--depth", "two", "-o", "x.svg"], "non-negative"),
    (["-o", "x.png"], "OUT.html, OUT.svg, OUT.dot or OUT.mmd"),
    (["-o", "noext"], "--format"),
    (["-o", "-"], "--format"),
    ([], "-o"),
    (["--format", "pdf", "-o", "x.pdf"], "invalid choice"),
])
def test_cli_usage_errors(args, message, capsys, tmp_path):
    assert run_cli("graph", EX / "unet.net", *args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.svg").exists()


def test_cli_spec_errors_are_located(tmp_path, capsys):
    bad = tmp_path / "bad.net"
    bad.write_text("network Bad {\n    input x: f32[1, 3, 8, 8]\n    output y = x -> Conv2d(4, 3) -> Linear(\n}\n")
    out = tmp_path / "bad.svg"
    assert run_cli("graph", bad, "-o", out) == 1
    err = capsys.readouterr().err
    assert re.search(r"bad\.net:\d+:\d+: error", err) and "^" in err
    assert not out.exists()
    shape = tmp_path / "shape.net"
    shape.write_text("network S {\n    input x: f32[1, 3, 8, 8]\n    output y = x -> Conv2d(4, 9)\n}\n")
    assert run_cli("graph", shape, "-o", out) == 1
    assert "shape.net:3:" in capsys.readouterr().err
    assert run_cli("graph", tmp_path / "missing.net", "-o", out) == 1
    assert run_cli("graph", EX / "resnet.net", "-o", out) == 1      # several networks
    assert "--network" in capsys.readouterr().err


def test_cli_help_and_no_torch(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "netdsl", "graph", "--help"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0 and "--depth" in r.stdout and ".mmd" in r.stdout
    script = ("import sys\nfrom netdsl.cli import main\nrc = main(sys.argv[1:])\n"
              "assert 'torch' not in sys.modules, 'torch was imported'\n"
              "assert 'onnx' not in sys.modules, 'onnx was imported'\nsys.exit(rc)\n")
    for suffix in ("svg", "html"):
        out = tmp_path / f"r.{suffix}"
        r = subprocess.run([sys.executable, "-c", script, "graph", str(EX / "resnet.net"),
                            "--network", "ResNet18", "-o", str(out)],
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        assert out.stat().st_size > 1000


# ---- large networks ----------------------------------------------------------------------------

@pytest.mark.parametrize("fixture", ["densenet201", "vit_l"])
def test_large_networks_render_quickly(fixture, request):
    net, view, build = request.getfixturevalue(fixture)
    for depth in (1, None):
        t = time.perf_counter()
        text = render_svg(view, depth)
        took = time.perf_counter() - t
        print(f"{net.name}: build {build:.2f} s, SVG at depth {depth or 'full'} {took:.2f} s, "
              f"{len(text) // 1024} KiB")
        assert build + took < 10
        root, nodes, edges, _ = svg_parts(text)
        if depth is None:
            assert nodes == ir_node_ids(net) and edges == ir_edges(net)
        else:
            assert nodes == {n["id"] for n in view["nodes"] if n["parent"] is None}
            assert 3 <= len(nodes) <= 30      # legible: a handful of boxes
