"""A standalone SVG of the graph view: boxes (path, op, params), edges labelled with shapes,
open composites as frames, collapsed ones drawn as stacked boxes; `<title>` tooltips carry the
attributes, output shape, params, MACs and source line.

Every node's group has `id` and `data-id` = the node id (clusters too), every edge's group
`data-from`/`data-to`, so that the drawing can be checked (and styled) by node id."""
from __future__ import annotations

import re

from .layout import LINE_H, PAD_Y, cluster_title, layout

HEADER = 34.0
FONT = "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace"

# characters XML 1.0 cannot hold at all (a spec's strings may contain anything)
_BAD_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def esc(text) -> str:
    """Text for XML content and attribute values (quotes escaped too; line breaks and tabs as
    character references, which attribute values keep)."""
    s = _BAD_XML.sub("\ufffd", str(text))
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;").replace("\n", "&#10;").replace("\r", "&#13;")
            .replace("\t", "&#9;"))


_FILLS = (
    (("conv",), "#dbe9f6", "#4a7fb5"),
    (("norm",), "#e3f1e0", "#5b9a52"),
    (("relu", "gelu", "silu", "sigmoid", "tanh", "softmax", "swish", "hardswish", "elu", "mish",
      "activation"), "#fdf3d6", "#c49a2c"),
    (("pool",), "#eee3f5", "#8a62a8"),
    (("linear", "attention", "matmul", "einsum"), "#fde4d4", "#c9753d"),
    (("dropout",), "#f1f1f1", "#999999"),
)


def colours(node: dict) -> tuple[str, str]:
    kind = node["kind"]
    if kind in ("input", "output"):
        return "#ffffff", "#333333"
    if kind in ("block", "group"):
        return "#f4f1ea", "#6b5e45"
    op = node["op"].lower()
    for keys, fill, stroke in _FILLS:
        if any(k in op for k in keys):
            return fill, stroke
    return "#f5f5f5", "#777777"


def tooltip(node: dict) -> str:
    """The text of a node's tooltip (and of the HTML view's hover panel)."""
    lines = [f"{node['path']}: {node['op']}" if node["kind"] not in ("input", "output")
             else f"{node['kind']} {node['label']}"]
    if node["shape"]:
        lines.append(f"output shape: {node['shape']}")
    if node["kind"] not in ("input", "output"):
        frozen = node["params"] - node["trainable"]
        p = f"params: {node['params']:,}"
        if frozen:
            p += f" (trainable {node['trainable']:,}, frozen {frozen:,})"
        lines.append(p)
        lines.append(f"MACs: {node['macs']}")
    for k, v in node["attrs"].items():
        lines.append(f"  {k} = {v}")
    src = node.get("source")
    if src:
        lines.append(f"{src['file']}:{src['line']}:{src['col']}: {src['text']}")
    return "\n".join(lines)


def _f(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def edge_labels(routes: list) -> list:
    """Where each route's shape label goes, or None: the edges leaving one box that carry the
    same shape get one label, just below the box; other edges are labelled beside the middle of
    their first segment (near their source: the shape is the source's output)."""
    by_source: dict = {}
    for i, r in enumerate(routes):
        by_source.setdefault(r.edge["from"], []).append(i)
    out = [None] * len(routes)
    for idx in by_source.values():
        if len(idx) > 1 and len({routes[i].edge["shape"] for i in idx}) == 1:
            x, y = routes[idx[0]].points[0]
            out[idx[0]] = (x + 4, y + 12)
            continue
        for i in idx:
            (ax, ay), (bx, by) = routes[i].points[0], routes[i].points[1]
            out[i] = ((ax + bx) / 2 + 4, (ay + by) / 2 + 3)
    return out


def render_svg(view_json: dict, depth: int | None) -> str:
    lay = layout(view_json, depth)
    labels = edge_labels(lay.routes)
    out = []
    total = sum(n["params"] for n in view_json["nodes"] if n["parent"] is None)
    head = f"{view_json['network']} — {total:,} params"
    if view_json.get("source"):
        head += f" — {view_json['source']}"
    w = max([lay.width, 20 + len(head) * 8.4]
            + [c.x + 16 + len(cluster_title(c.node)) * 7.2 for c in lay.clusters]
            + [at[0] + len(r.edge["shape"]) * 6.1 + 10 for r, at in zip(lay.routes, labels) if at])
    h = lay.height + HEADER
    out.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{_f(w)}" height="{_f(h)}" '
               f'viewBox="0 0 {_f(w)} {_f(h)}" font-family="{esc(FONT)}" font-size="12">')
    out.append(f"<title>{esc(view_json['network'])}</title>")
    out.append('<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
               'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
               'fill="#555"/></marker></defs>')
    out.append('<style>.edge path{fill:none;stroke:#666;stroke-width:1.2}'
               '.edge text{fill:#555;font-size:10px}'
               '.cluster rect{fill:#faf8f3;stroke:#b9ac8e;stroke-dasharray:4 3}'
               '.cluster text{fill:#6b5e45;font-weight:bold}'
               '.node text{fill:#222}.node .op{fill:#555}.node .params{fill:#2d5f8a}'
               '.collapsed .stack{fill:#e9e3d3;stroke:#6b5e45}</style>')
    out.append('<rect width="100%" height="100%" fill="#ffffff"/>')
    out.append(f'<text class="header" x="10" y="22" font-size="14" font-weight="bold">{esc(head)}</text>')
    out.append(f'<g transform="translate(0,{_f(HEADER)})">')

    for c in lay.clusters:
        n = c.node
        title = cluster_title(n)
        out.append(f'<g class="cluster kind-{n["kind"]}" id="{esc(n["id"])}" data-id="{esc(n["id"])}">'
                   f'<title>{esc(tooltip(n))}</title>'
                   f'<rect x="{_f(c.x)}" y="{_f(c.y)}" width="{_f(c.w)}" height="{_f(c.h)}" rx="6"/>'
                   f'<text x="{_f(c.x + 8)}" y="{_f(c.y + 14)}">{esc(title)}</text></g>')

    for r, at in zip(lay.routes, labels):
        e = r.edge
        pts = r.points
        d = "M" + " L".join(f"{_f(x)},{_f(y)}" for x, y in pts)
        count = f" ({e['count']} connections)" if e.get("count", 1) > 1 else ""
        out.append(f'<g class="edge" data-from="{esc(e["from"])}" data-to="{esc(e["to"])}">'
                   f'<title>{esc(e["value"])}: {esc(e["shape"])}{count}</title>'
                   f'<path d="{d}" marker-end="url(#arrow)"/>'
                   + (f'<text x="{_f(at[0])}" y="{_f(at[1])}">{esc(e["shape"])}</text>' if at else "")
                   + "</g>")

    for b in lay.boxes.values():
        n = b.node
        fill, stroke = colours(n)
        x0, y0 = b.x - b.w / 2, b.y - b.h / 2
        collapsed = n["kind"] in ("block", "group")
        cls = f"node kind-{n['kind']}" + (" collapsed" if collapsed else "")
        parts = [f'<g class="{cls}" id="{esc(n["id"])}" data-id="{esc(n["id"])}">',
                 f"<title>{esc(tooltip(n))}</title>"]
        if collapsed:       # a stack of cards: a block with its contents folded away
            parts.append(f'<rect class="stack" x="{_f(x0 + 4)}" y="{_f(y0 + 4)}" width="{_f(b.w)}" '
                         f'height="{_f(b.h)}" rx="4"/>')
        rx = 12 if n["kind"] in ("input", "output") else 4
        width = 2 if collapsed else 1.2
        parts.append(f'<rect x="{_f(x0)}" y="{_f(y0)}" width="{_f(b.w)}" height="{_f(b.h)}" '
                     f'rx="{rx}" fill="{fill}" stroke="{stroke}" stroke-width="{width}"/>')
        for i, line in enumerate(b.lines):
            cls_t = ("path", "op", "params")[min(i, 2)]
            weight = ' font-weight="bold"' if i == 0 else ""
            ty = y0 + PAD_Y + LINE_H * (i + 1) - 3.5
            parts.append(f'<text class="{cls_t}" x="{_f(b.x)}" y="{_f(ty)}" text-anchor="middle"{weight}>{esc(line)}</text>')
        parts.append("</g>")
        out.append("".join(parts))
    out.append("</g></svg>")
    return "\n".join(out) + "\n"
