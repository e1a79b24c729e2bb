"""Hover: what the compiler knows about the thing under the cursor.

- a layer (an op call such as ``Conv2d(...)``, or its label): its output shape, parameters
  (trainable and frozen) and MACs, from the IR nodes whose span covers the cursor; inside a
  block's definition, one line per instance (``layer1.0.conv1: [N, 64, ...]``);
- a block call: each instance's output shape, parameters and MACs, then the block's signature;
- a block or network name (its definition or a use): its signature and docstring; for a
  network, its inputs, outputs and totals;
- an op name: its documentation and attribute schema, from the op registry;
- a name bound to a tensor (``x = ...``, an input): its shape.

The graphs come from `netdsl.analysis`: where a network fails to elaborate, the partial graph
(layers up to the first error) still answers.
"""
from __future__ import annotations

import re
from pathlib import Path

from lsprotocol import types

from ..frontend import ast as A
from ..ir import dims as D
from ..ir.graph import param_counts
from ..ir.registry import REQUIRED, get as get_op
from .document import covers, walk

MAX_INSTANCES = 6


# ---- formatting --------------------------------------------------------------------------

def fmt_count(n: int) -> str:
    return f"{n:,}"


def fmt_macs(m) -> str:
    if D.is_static(m):
        m = int(m)
        for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
            if m >= scale:
                return f"{m:,} ({m / scale:.1f}{unit})"
        return f"{m:,}"
    return str(m)


def fmt_shapes(values) -> str:
    if len(values) == 1:
        return D.fmt_shape(values[0].shape)
    if len(values) <= 4:
        return "; ".join(D.fmt_shape(v.shape) for v in values)
    return f"{D.fmt_shape(values[0].shape)}; … {len(values)} outputs …; {D.fmt_shape(values[-1].shape)}"


def fmt_params(nodes) -> str:
    trainable, frozen = param_counts(nodes)
    return f"{fmt_count(trainable + frozen)} (trainable {fmt_count(trainable)}, frozen {fmt_count(frozen)})"


def total_macs(nodes):
    total = 0
    for n in nodes:
        total = D.add(total, n.macs)
    return total


def literal(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, tuple):
        return "(" + ", ".join(literal(x) for x in v) + ")"
    if isinstance(v, list):
        return "[" + ", ".join(literal(x) for x in v) + "]"
    return str(v)


def attr_line(a) -> str:
    head = f"`{a.name}`: {a.kind}"
    if a.default is REQUIRED:
        head += " (required)"
    elif a.default is not None:
        head += f" = `{literal(a.default)}`"
    if a.choices:
        head += " — one of " + ", ".join(f"`{literal(c)}`" for c in a.choices)
    if a.keyword_only:
        head += " (keyword only)"
    return head + (f" — {a.doc}" if a.doc else "")


def op_markdown(spec) -> str:
    """An op's documentation and attribute schema."""
    kind = "function" if spec.function else "layer"
    out = [f"**{spec.name}** ({kind})", "", spec.doc]
    if spec.attrs:
        out += ["", "Attributes:"] + [f"- {attr_line(a)}" for a in spec.attrs]
    return "\n".join(out)


def param_text(p: A.Param) -> str:
    from ..frontend.printer import expr
    out = p.name + (f": {p.type}" if p.type else "")
    if p.default is not None:
        try:
            out += f" = {expr(p.default)}"
        except Exception:       # noqa: BLE001 - a hover never fails for printing
            out += " = …"
    return out


def signature(item, wrap: bool = True) -> str:
    from ..frontend.printer import expr
    if isinstance(item, (A.BlockAlias, A.NetworkAlias)):
        kind = "block" if isinstance(item, A.BlockAlias) else "network"
        args = []
        for a in item.args:
            try:
                args.append((f"{a.name} = " if a.name else "") + expr(a.value))
            except Exception:   # noqa: BLE001
                args.append("…")
        return f"{kind} {item.name} = {item.target}({', '.join(args)})"
    texts = [param_text(p) for p in item.params]
    params = ", ".join(texts)
    if wrap and len(params) > 70:   # one parameter a line, as a long signature is written
        params = "\n    " + ",\n    ".join(texts) + "\n"
    if isinstance(item, A.NetworkDef):
        return f"network {item.name}" + (f"({params})" if item.params else "")
    head = f"block {item.name}({params})"
    if isinstance(item, A.SeqBlockDef):
        return head + " [ … ]"
    if item.inputs is not None:
        outs = item.outputs or []
        head += f" ({', '.join(item.inputs)}) -> " + (outs[0] if len(outs) == 1 else f"({', '.join(outs)})")
    return head


def definition_markdown(doc, d) -> str:
    item = d.item
    out = ["```netdsl", signature(item), "```"]
    if type(item) is A.BlockDef and item.inputs is None:
        out.append("a chain block: one input (`x`), one output")
    elif isinstance(item, A.SeqBlockDef):
        out.append("a sequential block: its items are numbered 0, 1, 2, ...")
    target = None
    if isinstance(item, (A.BlockAlias, A.NetworkAlias)):
        target = doc.definitions.get(item.target)
        if target is not None and target.item is not item:
            out += ["```netdsl", signature(target.item), "```"]
    docstring = getattr(item, "doc", None) or (getattr(target.item, "doc", None) if target else None)
    if docstring:
        out += ["", docstring]
    if not d.own:
        out += ["", f"*defined in {_where(d)}*"]
    if d.kind == "network":
        g = doc.graphs.get(d.name)
        if g is not None:
            out.append("")
            out += [f"- input `{v.name}`: `{D.fmt_shape(v.shape)}`" for v in g.inputs]
            out += [f"- output `{n}`: `{D.fmt_shape(v.shape)}`" for n, v in g.outputs]
            out.append(f"- params: {fmt_params(g.nodes)}")
            out.append(f"- MACs: {fmt_macs(g.macs())}")
            out.append(f"- layers: {len(g.nodes)}")
    return "\n".join(out)


def _where(d) -> str:
    from ..ir.program import STD_DIR
    if d.path is None:
        return "this document"
    try:
        return "std/" + Path(d.path).resolve().relative_to(STD_DIR.resolve()).as_posix()
    except ValueError:
        return d.path


# ---- what the graphs say about a point -----------------------------------------------------

def graphs_for(doc, item) -> list:
    """[(network name, Graph)] to look in: the enclosing network's own graph when there is one,
    else every graph of the document (a block is instantiated by any of them)."""
    gs = doc.graphs
    if isinstance(item, A.NetworkDef) and item.name in gs:
        return [(item.name, gs[item.name])]
    out = list(gs.items())
    if isinstance(item, A.BLOCKS):      # and the networks of other open documents, which may use it
        names = {name for name, _ in out}
        for other in doc.others():
            for name, g in other.graphs.items():
                out.append((name if name not in names else f"{name} ({Path(other.path or other.uri).name})", g))
                names.add(name)
    return out


def _key(span) -> tuple:
    return (span.line, span.col, span.end_line, span.end_col)


def _size(span) -> tuple:
    return (span.end_line - span.line, span.end_col - span.col if span.end_line == span.line else 10 ** 6)


def layer_hits(doc, item, line, col):
    """("layer", [(network, path, [nodes])]) for the op applications whose call covers line:col,
    ("block", [...]) for the block instances whose call covers it (the tightest call wins),
    or None."""
    best = None         # (size, key, kind)
    found: dict = {}
    for gname, g in graphs_for(doc, item):
        for n in g.nodes:
            if doc.in_doc(n.span) and covers(n.span, line, col):
                cand = (_size(n.span), _key(n.span), "layer")
                if best is None or cand[:2] < best[:2]:
                    best, found = cand, {}
                if cand[:2] == best[:2]:
                    found.setdefault((gname, n.path), []).append(n)
        matched = False
        for path, (bname, span) in (getattr(g, "blocks", None) or {}).items():
            if doc.in_doc(span) and covers(span, line, col):
                matched = True
                cand = (_size(span), _key(span), "block")
                if best is None or cand[:2] < best[:2]:
                    best, found = cand, {}
                if cand[:2] == best[:2] and best[2] == "block":
                    prefix = path + "."
                    found[(gname, path)] = [n for n in g.nodes if n.path.startswith(prefix) or n.path == path]
        if not matched:     # a spliced instance (no path of its own), or a graph without `blocks`
            for n in g.nodes:
                for _name, span in n.trace:
                    if doc.in_doc(span) and covers(span, line, col):
                        cand = (_size(span), _key(span), "block")
                        if best is None or cand[:2] < best[:2]:
                            best, found = cand, {}
                        if cand[:2] == best[:2] and best[2] == "block":
                            found.setdefault((gname, None), []).append(n)
                        break
    if best is None:
        return None
    out = []
    for (gname, path), nodes in found.items():
        if path is None and nodes:
            path = _common_prefix([n.path for n in nodes])
        out.append((gname, path, nodes))
    return best[2], out


def _common_prefix(paths) -> str:
    parts = [p.split(".") for p in paths]
    common = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common) or "(instance)"


def hits_markdown(kind: str, hits: list) -> str:
    networks = {g for g, _, _ in hits}
    many_networks = len(networks) > 1
    if kind == "layer" and len(hits) == 1:
        gname, path, nodes = hits[0]
        n = nodes[-1]
        return "\n".join([f"**{path}** · `{n.op}`" + (f" · in {gname}" if many_networks else ""), "",
                          f"- output: `{fmt_shapes(n.outputs)}`",
                          f"- params: {fmt_params([n])}",
                          f"- MACs: {fmt_macs(n.macs)}"])
    if kind == "block" and len(hits) == 1:
        gname, path, nodes = hits[0]
        last = nodes[-1] if nodes else None
        out = [f"**{path}**" + (f" · in {gname}" if many_networks else "") + f" · {len(nodes)} layers", ""]
        if last is not None:
            out.append(f"- output: `{fmt_shapes(last.outputs)}` (its last layer, `{last.path}`)")
        out += [f"- params: {fmt_params(nodes)}", f"- MACs: {fmt_macs(total_macs(nodes))}"]
        return "\n".join(out)
    what = "instances" if kind == "block" or len({id(h[2][-1].span) for h in hits if h[2]}) <= 1 else "layers"
    out = [f"**{len(hits)} {what}**", ""]
    for gname, path, nodes in hits[:MAX_INSTANCES]:
        if not nodes:
            continue
        last = nodes[-1]
        where = f"{gname}: " if many_networks else ""
        trainable, frozen = param_counts(nodes)
        macs = last.macs if kind == "layer" else total_macs(nodes)
        out.append(f"- {where}`{path}`: `{fmt_shapes(last.outputs)}` · {fmt_count(trainable + frozen)} params"
                   + (f" ({fmt_count(frozen)} frozen)" if frozen else "") + f" · MACs {fmt_macs(macs)}")
    if len(hits) > MAX_INSTANCES:
        out.append(f"- … and {len(hits) - MAX_INSTANCES} more")
    return "\n".join(out)


def tensor_markdown(doc, item, word: str, line: int, col: int) -> str | None:
    """The shape of the tensor a name is bound to at line:col (its latest assignment before
    the cursor, or the assignment under it; or a network input)."""
    if item is None or not isinstance(item, (A.NetworkDef, A.BlockDef)):
        return None
    gs = graphs_for(doc, item)
    for st in walk(item.body):
        if isinstance(st, A.InputDecl) and st.name == word:
            lines = [f"- {g}: `{D.fmt_shape(v.shape)}`" if len(gs) > 1 else f"`{D.fmt_shape(v.shape)}`"
                     for g, graph in gs for v in graph.inputs if v.name == word]
            if lines:
                return "\n".join([f"**{word}** (input)", ""] + lines)
    for st in walk(item.body):
        if isinstance(st, A.OutputDecl) and st.name == word:
            lines = [f"- {g}: `{D.fmt_shape(v.shape)}`" if len(gs) > 1 else f"`{D.fmt_shape(v.shape)}`"
                     for g, graph in gs for n, v in graph.outputs if n == word]
            if lines:
                return "\n".join([f"**{word}** (output)", ""] + lines)
    chosen = None
    for st in walk(item.body):
        if isinstance(st, A.Assign) and word in st.names and st.value is not None:
            if covers(st.span, line, col):
                if (line, col) < (st.value.span.line, st.value.span.col):
                    chosen = st     # the name being assigned
                    break
                continue            # a use in its own value: the binding before
            if (st.span.line, st.span.col) <= (line, col):
                chosen = st
    if chosen is None or len(chosen.names) != 1:
        return None
    vspan = chosen.value.span
    results = []        # (network, owner path, last node)
    for gname, g in gs:
        last_by_owner: dict = {}
        blocks = getattr(g, "blocks", None) or {}
        inside_calls = [p for p, (_, s) in blocks.items() if doc.in_doc(s) and _within(s, vspan)]
        for n in g.nodes:
            owner = None
            if doc.in_doc(n.span) and _within(n.span, vspan):
                owner = n.path.rsplit(".", 1)[0] if "." in n.path else ""
            else:
                for p in inside_calls:
                    if n.path.startswith(p + "."):
                        owner = p.rsplit(".", 1)[0] if "." in p else ""
                        break
                else:
                    if any(doc.in_doc(s) and _within(s, vspan) for _, s in n.trace):
                        owner = "(instance)"
            if owner is not None:
                last_by_owner[owner] = n
        results += [(gname, owner, n) for owner, n in last_by_owner.items()]
    if not results:
        return None
    if len(results) == 1:
        _, _, n = results[0]
        return f"**{word}**: `{fmt_shapes(n.outputs)}`\n\n(the output of `{n.path}`, {n.op})"
    many = len({g for g, _, _ in results}) > 1
    out = [f"**{word}**", ""]
    for gname, owner, n in results[:MAX_INSTANCES]:
        where = (f"{gname}: " if many else "") + (f"`{owner}`: " if owner else "")
        out.append(f"- {where}`{fmt_shapes(n.outputs)}`")
    if len(results) > MAX_INSTANCES:
        out.append(f"- … and {len(results) - MAX_INSTANCES} more")
    return "\n".join(out)


def _within(inner, outer) -> bool:
    return (outer.line, outer.col) <= (inner.line, inner.col) and \
        (inner.end_line, inner.end_col) <= (outer.end_line, outer.end_col)


def group_hits(doc, item, stage) -> list:
    """[(network, path, [nodes])] for each instance of a labelled group (``layer{i + 1}: [...]``):
    the layers inside its brackets, grouped by the path component that its label names."""
    pattern = re.compile("".join(re.escape(p) if isinstance(p, str) else r"[^.]+" for p in stage.label.parts) + r"\Z")
    span = stage.target.span
    found: dict = {}
    for gname, g in graphs_for(doc, item):
        for n in g.nodes:
            inside = (doc.in_doc(n.span) and _within(n.span, span)) or \
                any(doc.in_doc(s) and _within(s, span) for _, s in n.trace)
            if not inside:
                continue
            parts = n.path.split(".")
            for k in range(len(parts) - 2, -1, -1):        # the deepest component above the layer
                if pattern.match(parts[k]):
                    found.setdefault((gname, ".".join(parts[:k + 1])), []).append(n)
                    break
    return [(gname, path, nodes) for (gname, path), nodes in found.items()]


def _label_target(item, line, col):
    """The stage whose label (``conv1`` in ``conv1: Conv2d(...)``) is at line:col."""
    if item is None:
        return None
    for node in walk(item):
        if isinstance(node, A.Stage) and node.label is not None and covers(node.label.span, line, col):
            return node
    return None


def _param_at(item, word):
    for p in getattr(item, "params", None) or []:
        if isinstance(p, A.Param) and p.name == word:
            return p
    return None


# ---- the request -------------------------------------------------------------------------

def hover(doc, position: types.Position) -> types.Hover | None:
    line, col = doc.point(position)
    word, wstart, wend = doc.word_at(line, col)
    item = doc.item_at(line, col)
    parts = []
    rng = doc.range(line, wstart, line, wend) if word else None

    lline, lcol = line, col
    stage = _label_target(item, line, col)
    if stage is not None and isinstance(stage.target, A.Callee):
        lline, lcol = stage.target.span.line, stage.target.span.col
    if stage is not None and isinstance(stage.target, A.Group):
        hits = ("block", group_hits(doc, item, stage))
    else:
        hits = layer_hits(doc, item, lline, lcol)
    if hits is not None and hits[1]:
        parts.append(hits_markdown(*hits))

    defs = doc.definitions
    local = word is not None and isinstance(item, (A.NetworkDef, A.BlockDef)) and (
        _param_at(item, word) is not None or word in (getattr(item, "inputs", None) or []))
    if word and not local and word in defs:
        parts.append(definition_markdown(doc, defs[word]))
    elif word and not local and get_op(word) is not None:
        parts.append(op_markdown(get_op(word)))
    elif word and _param_at(item, word) is not None:
        parts.append(f"```netdsl\n{param_text(_param_at(item, word))}\n```\nparameter of {item.name}")
    elif word and not hits:
        text = tensor_markdown(doc, item, word, line, col)
        if text:
            parts.append(text)
    if not parts:
        return None
    return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown,
                                                    value="\n\n---\n\n".join(parts)), range=rng)
