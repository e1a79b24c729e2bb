"""The graph view's model: the IR graph of a network as a tree of boxes (layers inside block
instances and groups) over a DAG of edges between layers, inputs and outputs.

`build_view(net).to_json()` gives the JSON every renderer (SVG, DOT, Mermaid, HTML) draws from;
its schema is pinned in the issue-10 interface notes:

- a node per layer (kind "layer"), per graph input ("input", id ``input:NAME``) and output
  ("output", id ``output:NAME``), and per composite: every proper prefix of a layer path is a
  block instance ("block", op = the block's name) or a plain group ("group");
- an edge per value flowing from its producer (a layer or an input) to each consumer (a layer or
  an output); composites have no edges of their own: `visible` lifts edges onto collapsed ones.

Composites carry the totals of their subtree (params, trainable, MACs) and the output shape of
their last layer. Nothing here imports numpy or torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir import dims as D
from ..ir.graph import graph_source, param_counts

INPUT, OUTPUT = "input:", "output:"


@dataclass
class View:
    network: str
    doc: str | None
    source: str | None
    nodes: list = field(default_factory=list)     # dicts in the JSON schema
    edges: list = field(default_factory=list)

    def to_json(self) -> dict:
        return {"network": self.network, "doc": self.doc, "source": self.source,
                "nodes": self.nodes, "edges": self.edges}


# ---- text of IR values -------------------------------------------------------------------

def shape_text(values) -> str:
    """The output shape(s) of a node: one shape, or up to four joined by '; '."""
    shapes = [D.fmt_shape(v.shape) for v in values]
    if not shapes:
        return ""
    if len(shapes) <= 4:
        return "; ".join(shapes)
    return f"{shapes[0]}; … {len(shapes)} outputs …; {shapes[-1]}"


def count_text(n: int) -> str:
    """1234567 -> '1.2M' (K, M, G, T; below 1000 as is)."""
    if n < 1000:
        return str(n)
    for unit, scale in (("K", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12)):
        if n < scale * 1000 or unit == "T":
            return f"{n / scale:.1f}{unit}"
    return str(n)  # pragma: no cover


def macs_text(m) -> str:
    """A MAC count as summary's table shows it: a number (compact here), '?' when symbolic."""
    return count_text(int(m)) if D.is_static(m) else "?"


def attr_text(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v).lower() if isinstance(v, bool) else "none"
    if isinstance(v, (tuple, list)):
        inner = ", ".join(attr_text(x) for x in v)
        return f"[{inner}]" if isinstance(v, list) else f"({inner}{',' if len(v) == 1 else ''})"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return v
    if isinstance(v, int) or isinstance(v, D.Expr):
        return D.fmt(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {attr_text(x)}" for k, x in v.items()) + "}"
    return str(v)


def source_of(span) -> dict | None:
    if span is None:
        return None
    return {"file": span.file, "line": span.line, "col": span.col,
            "text": span.source.line(span.line).strip()}


# ---- the view -----------------------------------------------------------------------------

def build_view(net) -> View:
    """The view of a `netdsl.api.Network` (or of an IR Graph)."""
    graph = getattr(net, "graph", net)
    return build_view_of_graph(graph)


def build_view_of_graph(graph) -> View:
    blocks = getattr(graph, "blocks", None) or {}
    view = View(network=graph.name, doc=graph.doc, source=graph_source(graph))
    nodes: dict[str, dict] = {}          # id -> node, in insertion order
    top: list[str] = []                  # top-level ids in execution order
    macs_of: dict[str, object] = {}      # composite id -> Dim total

    def new(nid, label, path, op, kind, parent, depth, shape="", source=None, attrs=None):
        node = {"id": nid, "label": label, "path": path, "op": op, "kind": kind,
                "parent": parent, "children": [], "depth": depth, "attrs": attrs or {},
                "shape": shape, "params": 0, "trainable": 0, "macs": "0", "source": source}
        nodes[nid] = node
        if parent is None:
            top.append(nid)
        else:
            nodes[parent]["children"].append(nid)
        return node

    for v in graph.inputs:
        new(INPUT + v.name, v.name, v.name, "input", "input", None, 0, D.fmt_shape(v.shape))

    for n in graph.nodes:
        parts = n.path.split(".")
        parent = None
        for i in range(1, len(parts)):          # the composites above this layer
            cid = ".".join(parts[:i])
            if cid not in nodes:
                block = blocks.get(cid)
                if block is not None:
                    new(cid, parts[i - 1], cid, block[0], "block", parent, i - 1,
                        source=source_of(block[1]))
                else:
                    new(cid, parts[i - 1], cid, "group", "group", parent, i - 1)
                macs_of[cid] = 0
            parent = cid
        attrs = {k: attr_text(a) for k, a in n.attrs.items() if a is not None}
        leaf = new(n.path, parts[-1], n.path, n.op, "layer", parent, len(parts) - 1,
                   shape_text(n.outputs), source_of(n.span), attrs)
        t, frozen = param_counts((n,))
        p = t + frozen
        leaf["params"], leaf["trainable"], leaf["macs"] = p, t, macs_text(n.macs)
        # totals up the tree; a composite's shape is its last layer's output
        for i in range(1, len(parts)):
            c = nodes[".".join(parts[:i])]
            c["params"] += p
            c["trainable"] += t
            c["shape"] = leaf["shape"]
            macs_of[c["id"]] = D.add(macs_of[c["id"]], n.macs)

    for cid, m in macs_of.items():
        nodes[cid]["macs"] = macs_text(m)

    for name, v in graph.outputs:
        new(OUTPUT + name, name, name, "output", "output", None, 0, D.fmt_shape(v.shape))

    # edges: value producer -> consumer (layers and inputs -> layers and outputs)
    input_ids = {id(v): INPUT + v.name for v in graph.inputs}
    edges, seen = [], set()

    def source_id(v):
        if v.producer is not None:
            return v.producer.path
        return input_ids.get(id(v))

    def edge(src, dst, v):
        if src is None or (src, dst, v.name) in seen:
            return
        seen.add((src, dst, v.name))
        edges.append({"from": src, "to": dst, "value": v.name, "shape": D.fmt_shape(v.shape)})

    for n in graph.nodes:
        for v in n.inputs:
            edge(source_id(v), n.path, v)
    for name, v in graph.outputs:
        edge(source_id(v), OUTPUT + name, v)

    # top-level first in execution order, then every node's subtree (a stable, readable order)
    order: list[str] = []

    def walk(nid):
        order.append(nid)
        for c in nodes[nid]["children"]:
            walk(c)

    for nid in top:
        walk(nid)
    view.nodes = [nodes[i] for i in order]
    view.edges = edges
    return view


# ---- what is shown at a depth ---------------------------------------------------------------

def expanded(node: dict, depth: int | None) -> bool:
    """Whether a composite is drawn open at `depth` (None: all). `depth` counts the levels of
    boxes shown: 1 shows the top level only (every top-level block collapsed), 2 opens the
    top-level composites, and so on; 0 is the same as 1."""
    return bool(node["children"]) and (depth is None or node["depth"] + 1 < depth)


def visible(view_json: dict, depth: int | None):
    """(nodes, edges) shown when composites deeper than `depth` are collapsed (see `expanded`).

    nodes: the node dicts drawn, as boxes (leaves and collapsed composites) or as clusters
    (expanded composites, which come before their children), in the view's order.
    edges: dicts {"from", "to", "value", "shape", "count"} between boxes, lifted to the nearest
    visible ancestor, self-loops dropped, parallel edges merged (the first shape label kept;
    `count` says how many IR edges it stands for)."""
    by_id = {n["id"]: n for n in view_json["nodes"]}
    box: dict[str, str] = {}        # every node id -> the id of the box that stands for it
    shown = []
    for n in view_json["nodes"]:    # parents come before their children
        parent = n["parent"]
        if parent is not None:
            owner = box[parent]
            if owner != parent or not expanded(by_id[parent], depth):
                box[n["id"]] = owner        # inside a collapsed composite
                continue
        box[n["id"]] = n["id"]
        shown.append(n)
    # an expanded composite is a cluster, not a box: its children stand for themselves
    out_edges, index = [], {}
    for e in view_json["edges"]:
        a, b = box[e["from"]], box[e["to"]]
        if a == b:
            continue
        key = (a, b)
        if key in index:
            index[key]["count"] += 1
            continue
        index[key] = {"from": a, "to": b, "value": e["value"], "shape": e["shape"], "count": 1}
        out_edges.append(index[key])
    return shown, out_edges


def is_box(node: dict, depth: int | None) -> bool:
    """A node drawn as a box (a layer, an input/output, or a collapsed composite)."""
    return not expanded(node, depth)
