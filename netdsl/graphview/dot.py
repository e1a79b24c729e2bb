"""Graphviz DOT of the graph view: a box per visible layer or collapsed composite, a cluster
(`subgraph cluster_...`) per open composite, edges labelled with shapes. Render with
`dot -Tsvg net.dot -o net.svg` where Graphviz is installed; netdsl itself never needs it."""
from __future__ import annotations

import re

from .layout import box_lines, cluster_title, leaf_counts
from .model import expanded, visible
from .svg import colours, tooltip

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")


def quote(text) -> str:
    """A DOT quoted string: backslashes and quotes escaped, newlines as the `\\n` escape
    (centred lines in a label), control characters dropped."""
    s = _CONTROL.sub("\ufffd", str(text))
    s = s.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "\\n")
    return f'"{s}"'


def render_dot(view_json: dict, depth: int | None) -> str:
    nodes, edges = visible(view_json, depth)
    leaves = leaf_counts(view_json)
    out = [f"digraph {quote(view_json['network'])} {{",
           '  graph [rankdir=TB, fontname="monospace", fontsize=11, nodesep=0.3, ranksep=0.4];',
           '  node [shape=box, style="rounded,filled", fontname="monospace", fontsize=10];',
           '  edge [fontname="monospace", fontsize=8, color="#666666"];']
    children: dict = {}
    for n in nodes:
        children.setdefault(n["parent"], []).append(n)

    def emit(n, indent):
        pad = "  " * indent
        if expanded(n, depth):
            out.append(f"{pad}subgraph {quote('cluster_' + n['id'])} {{")
            out.append(f"{pad}  label={quote(cluster_title(n))}; tooltip={quote(tooltip(n))};")
            out.append(f'{pad}  style="rounded,dashed"; color="#b9ac8e"; fontcolor="#6b5e45";')
            for c in children.get(n["id"], ()):
                emit(c, indent + 1)
            out.append(f"{pad}}}")
            return
        fill, stroke = colours(n)
        shape = ', shape=oval' if n["kind"] in ("input", "output") else ""
        extra = ', penwidth=2, peripheries=2' if n["kind"] in ("block", "group") else ""
        out.append(f"{pad}{quote(n['id'])} [label={quote(chr(10).join(box_lines(n, leaves)))}, "
                   f"tooltip={quote(tooltip(n))}, fillcolor={quote(fill)}, "
                   f"color={quote(stroke)}{shape}{extra}];")

    for n in children.get(None, ()):
        emit(n, 1)
    for e in edges:
        out.append(f"  {quote(e['from'])} -> {quote(e['to'])} [label={quote(e['shape'])}, "
                   f"tooltip={quote(e['value'] + ': ' + e['shape'])}];")
    out.append("}")
    return "\n".join(out) + "\n"
