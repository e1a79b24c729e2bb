"""A layered (Sugiyama-style) layout of the visible graph, in pure Python.

There is no well-kept pure-Python layered-layout library on PyPI (networkx has no layered
layout; grandalf is unmaintained; Graphviz needs a system binary, which `netdsl graph` must not
require), so this module does the classic steps itself, in time linear or n log n in the size
of the drawn graph:

1. layers by longest path, in the view's execution order (an edge that goes against it, which
   only collapsing composites can make, is laid out reversed);
2. edges spanning several layers get a dummy point per layer crossed, so they can bend around
   boxes;
3. a few barycentre sweeps order each layer; the order keeps the members of each open composite
   (a cluster) next to each other;
4. x coordinates by weighted isotonic regression (pool adjacent violators): each box as close as
   the order and the gaps allow to the mean x of its neighbours, dummies weighted more so that
   long edges run straight;
5. y by layer, with room for the clusters' frames and titles.

The result: boxes (centre, size), clusters (frames around open composites), and each edge as a
polyline from its source's bottom to its target's top.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .model import count_text, expanded, visible

CHAR_W = 7.2          # the width of a character of the 12px monospace font the SVG uses
LINE_H = 15.0
PAD_X, PAD_Y = 10.0, 6.0
NODE_SEP = 24.0       # horizontal gap between neighbours in a layer
RANK_SEP = 46.0       # vertical gap between layers
CLUSTER_PAD = 12.0    # a cluster's frame around its members
CLUSTER_TITLE = 16.0  # room for a cluster's title above its members
DUMMY_W = 8.0
SWEEPS = 4


@dataclass
class Box:
    id: str
    node: dict | None           # None for a dummy point
    lines: list                 # text lines drawn in the box
    w: float
    h: float
    x: float = 0.0              # centre
    y: float = 0.0
    layer: int = 0
    pos: float = 0.0            # order within the layer
    clusters: tuple = ()        # open composites containing it, outermost first


@dataclass
class Route:
    edge: dict                  # from visible(): from, to, value, shape, count
    points: list                # [(x, y), ...] from the source to the target


@dataclass
class Cluster:
    id: str
    node: dict
    x: float                    # top-left corner
    y: float
    w: float
    h: float
    level: int                  # nesting: 0 = outermost


@dataclass
class Layout:
    width: float
    height: float
    boxes: dict = field(default_factory=dict)        # id -> Box (no dummies)
    routes: list = field(default_factory=list)
    clusters: list = field(default_factory=list)     # outermost first


def box_lines(node: dict, leaves: dict) -> list:
    """The text of a node's box: its path and op (a collapsed composite: with its number of
    layers), then its parameter count when it has any."""
    kind = node["kind"]
    if kind in ("input", "output"):
        return [f"{kind} {node['label']}", node["shape"]]
    op = node["op"]
    if kind in ("block", "group"):
        n = leaves.get(node["id"], 0)
        op = f"{op} · {n} layer{'s' * (n != 1)}"
    lines = [node["path"], op]
    if node["params"]:
        lines.append(f"{count_text(node['params'])} params")
    return lines


def cluster_title(n: dict) -> str:
    """The title of an open composite's frame."""
    title = f"{n['path']} · {n['op']}"
    if n["params"]:
        title += f" · {count_text(n['params'])} params"
    return title


def leaf_counts(view_json: dict) -> dict:
    """Composite id -> the number of layers under it."""
    by_id = {n["id"]: n for n in view_json["nodes"]}
    out: dict[str, int] = {}
    for n in reversed(view_json["nodes"]):      # children come after their parents
        if n["children"]:
            out[n["id"]] = sum(out.get(c, 1) if by_id[c]["children"] else 1 for c in n["children"])
    return out


def text_width(s: str) -> float:
    return len(s) * CHAR_W


def layout(view_json: dict, depth: int | None) -> Layout:
    nodes, edges = visible(view_json, depth)
    leaves = leaf_counts(view_json)
    index = {n["id"]: i for i, n in enumerate(view_json["nodes"])}
    by_id = {n["id"]: n for n in view_json["nodes"]}

    boxes: dict[str, Box] = {}
    for n in nodes:
        if expanded(n, depth):
            continue
        lines = box_lines(n, leaves)
        w = max(text_width(s) for s in lines) + 2 * PAD_X
        h = len(lines) * LINE_H + 2 * PAD_Y
        chain = []
        p = n["parent"]
        while p is not None:
            chain.append(p)
            p = by_id[p]["parent"]
        boxes[n["id"]] = Box(n["id"], n, lines, w, h, clusters=tuple(reversed(chain)))
    order = sorted(boxes, key=index.__getitem__)

    # 1. layers by longest path; edges against the execution order are laid out reversed
    succ: dict[str, list] = {b: [] for b in boxes}
    oriented = []
    for e in edges:
        a, b = e["from"], e["to"]
        rev = index[a] > index[b]
        if rev:
            a, b = b, a
        oriented.append((a, b, rev, e))
        succ[a].append(b)
    layer = {b: 0 for b in boxes}
    for b in order:
        lb = layer[b] + 1
        for c in succ[b]:
            if layer[c] < lb:
                layer[c] = lb
    # a source that is not a graph input (a `param`, a constant) sits just above its first
    # consumer rather than in the top layer, with its frames (parameters of a block are inside it)
    has_pred = {b for a_ in succ for b in succ[a_]}
    for b in reversed(order):
        if b not in has_pred and succ[b] and boxes[b].node["kind"] != "input":
            layer[b] = max(0, min(layer[c] for c in succ[b]) - 1)
    for b, box in boxes.items():
        box.layer = layer[b]
    nlayers = max(layer.values(), default=-1) + 1

    # 2. a dummy point per layer crossed by a long edge; up/down: neighbours in adjacent layers
    allb: dict[str, Box] = dict(boxes)
    chains = []             # (route's box ids from source to target, reversed?, edge)
    for k, (a, b, rev, e) in enumerate(oriented):
        ids = [a]
        common = _common(boxes[a].clusters, boxes[b].clusters)
        for li in range(layer[a] + 1, layer[b]):
            did = f"\0{k}.{li}"
            allb[did] = Box(did, None, [], DUMMY_W, 0.0, layer=li, clusters=common)
            ids.append(did)
        ids.append(b)
        chains.append((ids, rev, e))
    up: dict[str, list] = {b: [] for b in allb}
    down: dict[str, list] = {b: [] for b in allb}
    for ids, _, _ in chains:
        for u, v in zip(ids, ids[1:]):
            down[u].append(v)
            up[v].append(u)

    # 3. ordering: start from the execution order, then barycentre sweeps
    layers: list[list[str]] = [[] for _ in range(nlayers)]
    for b in order:
        layers[layer[b]].append(b)
    for ids, _, _ in chains:
        for d in ids[1:-1]:
            layers[allb[d].layer].append(d)
    for row in layers:
        for i, b in enumerate(row):
            allb[b].pos = i
    for sweep in range(SWEEPS):
        rng = range(1, nlayers) if sweep % 2 == 0 else range(nlayers - 2, -1, -1)
        nbrs = up if sweep % 2 == 0 else down
        for li in rng:
            row = layers[li]
            bary = {}
            for b in row:
                ns = nbrs[b]
                bary[b] = sum(allb[n].pos for n in ns) / len(ns) if ns else allb[b].pos
            layers[li] = row = _cluster_sort(row, bary, allb)
            for i, b in enumerate(row):
                allb[b].pos = i

    # 4. x: pack, then pull each box towards its neighbours (weighted isotonic regression)
    for row in layers:
        x = 0.0
        prev = None
        for b in row:
            box = allb[b]
            if prev is not None:
                x += _gap(prev, box)
            box.x = x + box.w / 2
            x += box.w
            prev = box
    for it in range(6):
        rng = range(1, nlayers) if it % 2 == 0 else range(nlayers - 2, -1, -1)
        nbrs = up if it % 2 == 0 else down
        if it >= 4:
            rng = range(nlayers)
        for li in rng:
            row = layers[li]
            if not row:
                continue
            targets, weights = [], []
            for b in row:
                ns = nbrs[b] if it < 4 else up[b] + down[b]
                box = allb[b]
                targets.append(sum(allb[n].x for n in ns) / len(ns) if ns else box.x)
                weights.append((4.0 if box.node is None else 1.0) * (1 if ns else 0.05))
            xs = _place_row([allb[b] for b in row], targets, weights)
            for b, x in zip(row, xs):
                allb[b].x = x
    _clear_frames(layers, allb, by_id)
    left = min((allb[b].x - allb[b].w / 2 - _depth_pad(allb[b]) for row in layers for b in row), default=0.0)

    # 5. y: layers, with room for the frames of the clusters that start or end between them
    span: dict[str, list] = {}
    for b in boxes.values():
        for c in b.clusters:
            s = span.setdefault(c, [b.layer, b.layer])
            s[0] = min(s[0], b.layer)
            s[1] = max(s[1], b.layer)
    # nesting counts per layer boundary: the largest number of frames opening/closing there
    top_need = [0] * (nlayers + 1)
    bottom_need = [0] * (nlayers + 1)
    for b in boxes.values():
        opening = sum(1 for c in b.clusters if span[c][0] == b.layer)
        closing = sum(1 for c in b.clusters if span[c][1] == b.layer)
        top_need[b.layer] = max(top_need[b.layer], opening)
        bottom_need[b.layer] = max(bottom_need[b.layer], closing)
    heights = [max((allb[b].h for b in row), default=0.0) for row in layers]
    y = 10.0 + top_need[0] * (CLUSTER_PAD + CLUSTER_TITLE) if nlayers else 10.0
    for li, row in enumerate(layers):
        for b in row:
            allb[b].y = y + heights[li] / 2
        if li + 1 < nlayers:
            y += heights[li] + RANK_SEP + bottom_need[li] * CLUSTER_PAD + \
                top_need[li + 1] * (CLUSTER_PAD + CLUSTER_TITLE)
        else:
            y += heights[li] + bottom_need[li] * CLUSTER_PAD
    shift = 10.0 - left
    for b in allb.values():
        b.x += shift

    # clusters: frames around their members (boxes and the dummies inside them)
    members: dict[str, list] = {}
    for b in allb.values():
        for c in b.clusters:
            members.setdefault(c, []).append(b)
    clusters = []
    for c, ms in members.items():
        if c not in span:
            continue
        level = by_id[c]["depth"]
        real = [m for m in ms if m.node is not None]
        x0 = min(m.x - m.w / 2 - CLUSTER_PAD * (len(m.clusters) - level) for m in ms)
        x1 = max(m.x + m.w / 2 + CLUSTER_PAD * (len(m.clusters) - level) for m in ms)
        y0 = min(m.y - m.h / 2 - (CLUSTER_PAD + CLUSTER_TITLE) * (len(m.clusters) - level)
                 for m in real)
        y1 = max(m.y + m.h / 2 + CLUSTER_PAD * (len(m.clusters) - level) for m in real)
        x1 = max(x1, x0 + 16 + text_width(cluster_title(by_id[c])))
        clusters.append(Cluster(c, by_id[c], x0, y0, x1 - x0, y1 - y0, level))
    clusters.sort(key=lambda k: (k.level, index[k.id]))

    routes = []
    for ids, rev, e in chains:
        pts = []
        first, last = allb[ids[0]], allb[ids[-1]]
        pts.append((first.x, first.y + first.h / 2))
        for d in ids[1:-1]:
            pts.append((allb[d].x, allb[d].y))
        pts.append((last.x, last.y - last.h / 2))
        if rev:
            pts.reverse()
        routes.append(Route(e, pts))

    width = max((b.x + b.w / 2 for b in allb.values()), default=0.0)
    width = max([width] + [k.x + k.w for k in clusters]) + 10.0
    height = max([y] + [k.y + k.h for k in clusters]) + 10.0
    return Layout(width, height, boxes, routes, clusters)


def _clear_frames(layers: list, allb: dict, by_id: dict, rounds: int = 2) -> None:
    """Move boxes out of the frames of clusters they are not in: in each layer a cluster spans,
    the boxes left of its members go left of its frame, the others right of it (the row's order
    stays; neighbours are pushed along)."""
    spans: dict[str, list] = {}
    for li, row in enumerate(layers):
        for b in row:
            for c in allb[b].clusters:
                s = spans.setdefault(c, [li, li])
                s[1] = li
    order = sorted(spans, key=lambda c: by_id[c]["depth"])     # outermost first
    for _ in range(rounds):
        moved = False
        for c in order:
            lo, hi = spans[c]
            level = by_id[c]["depth"]
            x0 = x1 = None
            for li in range(lo, hi + 1):
                for b in layers[li]:
                    box = allb[b]
                    if c in box.clusters:
                        pad = CLUSTER_PAD * (len(box.clusters) - level)
                        l, r = box.x - box.w / 2 - pad, box.x + box.w / 2 + pad
                        x0 = l if x0 is None else min(x0, l)
                        x1 = r if x1 is None else max(x1, r)
            if x0 is None:
                continue
            mid = (x0 + x1) / 2
            for li in range(lo, hi + 1):
                row = layers[li]
                inside = [i for i, b in enumerate(row) if c in allb[b].clusters]
                first = inside[0] if inside else None
                for i, b in enumerate(row):
                    box = allb[b]
                    if c in box.clusters:
                        continue
                    if box.x + box.w / 2 <= x0 or box.x - box.w / 2 >= x1:
                        continue
                    go_left = (i < first) if first is not None else box.x < mid
                    box.x = x0 - NODE_SEP - box.w / 2 if go_left else x1 + NODE_SEP + box.w / 2
                    moved = True
                split = first if first is not None else sum(1 for b in row if allb[b].x < mid)
                _pack(row, allb, split)
        if not moved:
            break


def _pack(row: list, allb: dict, split: int) -> None:
    """Restore the minimum gaps in a row after boxes moved out of a frame: the boxes before
    `split` are pushed leftwards, the others rightwards."""
    boxes = [allb[b] for b in row]
    for i in range(split - 2, -1, -1):
        a, b = boxes[i], boxes[i + 1]
        need = b.x - b.w / 2 - _gap(a, b) - a.w / 2
        if a.x > need:
            a.x = need
    for i in range(max(split, 1), len(boxes)):
        a, b = boxes[i - 1], boxes[i]
        need = a.x + a.w / 2 + _gap(a, b) + b.w / 2
        if b.x < need:
            b.x = need


def _common(a: tuple, b: tuple) -> tuple:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]


def _depth_pad(box: Box) -> float:
    return CLUSTER_PAD * len(box.clusters)


def _gap(a: Box, b: Box) -> float:
    """The horizontal gap between neighbours a, b: wider by a frame for each cluster one of
    them is in and the other is not."""
    common = len(_common(a.clusters, b.clusters))
    frames = (len(a.clusters) - common) + (len(b.clusters) - common)
    base = NODE_SEP if a.node is not None and b.node is not None else NODE_SEP / 2
    return base + frames * CLUSTER_PAD


def _cluster_sort(row: list, bary: dict, allb: dict) -> list:
    """The row sorted by barycentre, keeping members of a cluster together: each box is keyed by
    the mean barycentre of each of its clusters (outermost first), then its own."""
    means: dict[tuple, list] = {}
    for b in row:
        cl = allb[b].clusters
        for i in range(1, len(cl) + 1):
            m = means.setdefault(cl[:i], [0.0, 0])
            m[0] += bary[b]
            m[1] += 1

    def key(b):
        cl = allb[b].clusters
        k = []
        for i in range(1, len(cl) + 1):
            s, c = means[cl[:i]]
            k.append((s / c, cl[i - 1]))
        k.append((bary[b], ""))
        # compare clusters against plain boxes at each level by their means
        return k

    # a plain box at level i competes with clusters at level i: pad keys to equal length with
    # the box's own barycentre so that tuples compare on numbers first
    depth = max((len(allb[b].clusters) for b in row), default=0) + 1
    def padded(b):
        k = key(b)
        own = k[-1]
        return k[:-1] + [own] * (depth - len(k) + 1) + [(allb[b].pos, "")]
    return sorted(row, key=padded)


def _place_row(row: list, targets: list, weights: list) -> list:
    """x centres for the boxes of `row` (in order) closest, in weighted least squares, to
    `targets`, with each pair at least its gap apart: isotonic regression by pool adjacent
    violators on x - (the cumulative minimum offset)."""
    offs = [0.0]
    for a, b in zip(row, row[1:]):
        offs.append(offs[-1] + a.w / 2 + _gap(a, b) + b.w / 2)
    blocks = []         # [value, weight, count]
    for t, w, o in zip(targets, weights, offs):
        blocks.append([t - o, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, c2 = blocks.pop()
            v1, w1, c1 = blocks[-1]
            w = w1 + w2
            blocks[-1] = [(v1 * w1 + v2 * w2) / w, w, c1 + c2]
    out = []
    i = 0
    for v, _, c in blocks:
        for _ in range(c):
            out.append(v + offs[i])
            i += 1
    return out
