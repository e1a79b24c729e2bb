"""Mermaid (`flowchart TD`) of the graph view: a node per visible layer or collapsed composite,
a `subgraph` per open composite, edges labelled with shapes. Node ids are n0, n1, ... (Mermaid
ids cannot hold dots); every label is a quoted string with Mermaid's entity codes for the
characters that would end or break it."""
from __future__ import annotations

import re

from .layout import box_lines, cluster_title, leaf_counts
from .model import expanded, visible

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")
_ENTITY = {"#": "#35;", '"': "#quot;", "&": "#amp;", "<": "#lt;", ">": "#gt;", "|": "#124;",
           "`": "#96;"}
_SPECIAL = re.compile('[#"&<>|`]')


def text(s) -> str:
    """Label text for inside Mermaid's double quotes; lines joined with <br/>."""
    s = _CONTROL.sub("\ufffd", str(s).replace("\r", ""))
    lines = [_SPECIAL.sub(lambda m: _ENTITY[m.group()], line) for line in s.split("\n")]
    return "<br/>".join(lines)


def render_mmd(view_json: dict, depth: int | None) -> str:
    nodes, edges = visible(view_json, depth)
    leaves = leaf_counts(view_json)
    ids = {n["id"]: f"n{i}" for i, n in enumerate(nodes)}
    out = ["---", f"title: \"{text(view_json['network'])}\"", "---", "flowchart TD"]
    children: dict = {}
    for n in nodes:
        children.setdefault(n["parent"], []).append(n)
    kinds: dict = {}

    def emit(n, indent):
        pad = "    " * indent
        if expanded(n, depth):
            out.append(f'{pad}subgraph {ids[n["id"]]}["{text(cluster_title(n))}"]')
            for c in children.get(n["id"], ()):
                emit(c, indent + 1)
            out.append(f"{pad}end")
            return
        label = text("\n".join(box_lines(n, leaves)))
        if n["kind"] in ("input", "output"):
            out.append(f'{pad}{ids[n["id"]]}(["{label}"])')
        else:
            out.append(f'{pad}{ids[n["id"]]}["{label}"]')
        kinds.setdefault(n["kind"], []).append(ids[n["id"]])

    for n in children.get(None, ()):
        emit(n, 1)
    for e in edges:
        out.append(f'    {ids[e["from"]]} -->|"{text(e["shape"])}"| {ids[e["to"]]}')
    out.append("    classDef block fill:#f4f1ea,stroke:#6b5e45,stroke-width:2px")
    out.append("    classDef group fill:#f4f1ea,stroke:#6b5e45,stroke-width:2px")
    out.append("    classDef io fill:#ffffff,stroke:#333333")
    for kind, cls in (("block", "block"), ("group", "group"), ("input", "io"), ("output", "io")):
        if kinds.get(kind):
            out.append(f"    class {','.join(kinds[kind])} {cls}")
    return "\n".join(out) + "\n"
