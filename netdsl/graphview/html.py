"""The interactive HTML graph view: one self-contained file (no network access).

`render_html(view_json, depth)` embeds the view JSON (model.py's schema), the viewer's CSS and
JavaScript (static/graph.css, static/graph.js) and the dagre layout library (static/dagre.min.js,
MIT, see static/README.md) in one page. In the browser, dagre lays out the visible graph again
each time a composite is expanded or collapsed; `depth` is the initial expansion (as
model.visible: depth 1 shows the top-level nodes only, None everything).
"""
from __future__ import annotations

import html
import json
import re
from functools import lru_cache
from pathlib import Path

STATIC = Path(__file__).with_name("static")

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="netdsl">
<title>@TITLE@</title>
<style>
@CSS@
</style>
</head>
<body data-ready="0">
<header>
  <div class="about">
    <div class="line"><span id="net-name">@NAME@</span><span id="net-totals"></span></div>
    <div class="line"><span id="net-doc"></span></div>
    <div class="line"><span id="net-source"></span><span id="net-io"></span></div>
  </div>
  <div class="buttons">
    <span id="status"></span>
    <button type="button" id="expand-all" title="Expand every block and group">Expand all</button>
    <button type="button" id="collapse-all" title="Show the top level only">Collapse all</button>
    <button type="button" id="fit" title="Fit the graph to the window">Fit</button>
  </div>
</header>
<main>
  <svg id="canvas" role="img" aria-label="network graph">
    <defs>
      <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7"
              markerUnits="userSpaceOnUse" orient="auto"><path d="M0,1 L10,5 L0,9 z"></path></marker>
    </defs>
    <g id="viewport"></g>
  </svg>
  <div id="tooltip" hidden></div>
  <noscript><p style="padding: 1em">The graph view needs JavaScript (it runs locally; nothing is
  downloaded). <code>netdsl graph FILE -o OUT.svg</code> writes a static picture.</p></noscript>
</main>
<script type="application/json" id="netdsl-view">@VIEW@</script>
<script type="application/json" id="netdsl-config">@CONFIG@</script>
<script>
@DAGRE@
</script>
<script>
@VIEWER@
</script>
</body>
</html>
"""


def script_json(value) -> str:
    """JSON that is safe as the text of a <script> element: no '<', '>' or '&' (so no
    '</script>' or '<!--' can end or confuse the element), no U+2028/U+2029; JSON.parse reads the
    escapes back to the original characters."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _inline(text: str, element: str) -> str:
    """A static asset's text, checked safe to place inside <script>/<style> as it is."""
    text = re.sub(r"^\s*//# sourceMappingURL=\S*\s*$", "", text, flags=re.M)  # no .map beside us
    if re.search(rf"</{element}|<!--", text, re.I):
        raise ValueError(f"static asset cannot be inlined in <{element}>")
    return text.strip()


@lru_cache(maxsize=None)
def _asset(name: str, element: str) -> str:
    return _inline((STATIC / name).read_text(encoding="utf-8"), element)


@lru_cache(maxsize=None)
def _dagre() -> str:
    """dagre's minified build, headed by its MIT licence (which must travel with every copy)."""
    licence = (STATIC / "dagre.LICENSE").read_text(encoding="utf-8").strip()
    if "*/" in licence:
        raise ValueError("licence text cannot be a JS comment")
    code = _asset("dagre.min.js", "script")
    code = re.sub(r"/\*! For license information please see \S+ \*/", "", code).strip()
    return f"/*! @dagrejs/dagre (npm), MIT licence:\n\n{licence}\n*/\n{code}"


def render_html(view_json: dict, depth: int | None) -> str:
    """One self-contained HTML page showing `view_json`, composites deeper than `depth` collapsed
    at first (None: everything expanded)."""
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0):
        raise ValueError(f"depth must be a non-negative integer or None, not {depth!r}")
    name = str(view_json.get("network", ""))
    parts = {
        "@TITLE@": html.escape(f"{name} \u2014 netdsl graph"),
        "@NAME@": html.escape(name),
        "@CSS@": _asset("graph.css", "style"),
        "@VIEW@": script_json(view_json),
        "@CONFIG@": script_json({"depth": depth}),
        "@DAGRE@": _dagre(),
        "@VIEWER@": _asset("graph.js", "script"),
    }
    return re.sub("|".join(map(re.escape, parts)), lambda m: parts[m.group(0)], _TEMPLATE)
