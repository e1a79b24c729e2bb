"""Summary and cost: per-layer output shapes, parameters, MACs, and the input-size constraints."""
from __future__ import annotations

import re

from ..ir import dims as D
from ..gc_pause import paused_gc
from ..ir.graph import Graph
from .constraints import summarise


def _num(d):
    """An int where the value is known, else the symbolic expression as text."""
    return int(d) if D.is_static(d) else str(d)


def _shape(shape):
    return [_num(d) for d in shape]


def summarize(graph: Graph, symbols: list | None = None) -> dict:
    with paused_gc():
        return _summarize(graph, symbols)


def _summarize(graph: Graph, symbols: list | None) -> dict:
    layers = []
    for n in graph.nodes:
        count = frozen = 0
        for spec in n.params.values():
            if not spec.buffer:
                c = 1
                for d in spec.shape:
                    c *= d
                count += c
                if not spec.trainable:
                    frozen += c
        layers.append({
            "path": n.path,
            "op": n.op,
            "output_shape": _shape(n.outputs[0].shape) if len(n.outputs) == 1 else
            [_shape(v.shape) for v in n.outputs],
            "params": count,
            "frozen_params": frozen,
            "macs": _num(n.macs),
        })
    syms = symbols if symbols is not None else _symbols(graph)
    return {
        "network": graph.name,
        "inputs": [{"name": v.name, "shape": _shape(v.shape)} for v in graph.inputs],
        "outputs": [{"name": n, "shape": _shape(v.shape)} for n, v in graph.outputs],
        "params": graph.param_count(),
        "trainable_params": graph.trainable_param_count(),
        "frozen_params": graph.frozen_param_count(),
        "macs": _num(graph.macs()),
        "constraints": summarise(graph.constraints, syms),
        "dynamic_dims": dynamic_dims(graph),
        "layers": layers,
    }


def dynamic_dims(graph: Graph) -> list:
    """[{name, bound, op, path}] for each data-dependent size (dims.Dyn) of the graph, in the
    order made: its bound (an int, an expression over the input symbols as text, or None) and
    the layer whose output it first sizes."""
    if not graph.dynamic:
        return []
    origin: dict = {}
    for n in graph.nodes:
        for v in n.outputs:
            for d in v.shape:
                for atom in D.dyn_atoms(d):
                    origin.setdefault(atom.name, n)
        if len(origin) == len(graph.dynamic):
            break
    out = []
    for name, atom in graph.dynamic.items():
        n = origin.get(name)
        out.append({"name": name, "bound": None if atom.bound is None else _num(atom.bound),
                    "op": n.op if n is not None else atom.op, "path": n.path if n is not None else None})
    return out


def dynamic_text(entry: dict) -> str:
    """'K ≤ 5: topk at sel, known at run time' for an entry of `dynamic_dims`."""
    bound = "" if entry["bound"] is None else f" ≤ {entry['bound']}"
    at = f" at {entry['path']}" if entry.get("path") else ""
    return f"{entry['name']}{bound}: {entry['op']}{at}, known at run time"


def _symbols(graph: Graph) -> list:
    out, seen = [], set()
    for v in graph.inputs:
        for d in v.shape:
            for s in sorted(D.symbols(d)):
                if s not in seen:
                    seen.add(s)
                    out.append(s)
    return out


def _fmt_int(v) -> str:
    return f"{v:,}" if isinstance(v, int) else str(v)


def format_text(summary: dict, doc: str | None = None) -> str:
    lines = [f"network {summary['network']}"]
    if doc:
        lines += ["  " + line for line in doc.strip().splitlines()]
    for v in summary["inputs"]:
        lines.append(f"  input  {v['name']}: {D.fmt_shape(v['shape'])}")
    for v in summary["outputs"]:
        lines.append(f"  output {v['name']}: {D.fmt_shape(v['shape'])}")
    rows = [("layer", "op", "output shape", "params", "MACs")]
    for layer in summary["layers"]:
        shape = layer["output_shape"]
        if not shape or not isinstance(shape[0], list):
            shape_s = D.fmt_shape(shape)
        elif len(shape) <= 4:
            shape_s = "; ".join(D.fmt_shape(s) for s in shape)
        else:           # an RPNHead over five levels has ten: the table stays readable
            shape_s = f"{D.fmt_shape(shape[0])}; … {len(shape)} outputs …; {D.fmt_shape(shape[-1])}"
        macs = layer["macs"]   # a symbolic count is unreadable in a table: see the footer
        rows.append((layer["path"], layer["op"], shape_s, _fmt_int(layer["params"]),
                     _fmt_int(macs) if isinstance(macs, int) else "?"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines.append("")
    for i, r in enumerate(rows):
        lines.append("  " + "  ".join(c.ljust(w) if j < 3 else c.rjust(w)
                                      for j, (c, w) in enumerate(zip(r, widths))).rstrip())
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(f"  parameters: {_fmt_int(summary['params'])} (trainable {_fmt_int(summary['trainable_params'])}"
                 f", frozen {_fmt_int(summary['frozen_params'])})")
    macs = summary["macs"]
    dyn = [e["name"] for e in summary.get("dynamic_dims", ())
           if not isinstance(macs, int) and re.search(rf"\b{e['name']}\b", macs)]
    if isinstance(macs, int):
        lines.append(f"  MACs per sample: {macs:,} ({macs / 1e9:.3f} GMACs)")
    elif dyn:           # no --input fixes these: they are known at run time
        lines.append(f"  MACs per sample: {macs}, with {', '.join(dyn)} known at run time")
    else:
        first = summary["inputs"][0] if summary["inputs"] else {"name": "NAME", "shape": []}
        example = "x".join(str(d) if isinstance(d, int) else "?" for d in first["shape"])
        lines.append(f"  MACs per sample depend on the input size: give it with --input "
                     f"{first['name']}={example}")
    if summary["constraints"]:
        lines.append("  input sizes that work: " + "; ".join(summary["constraints"]))
    for entry in summary.get("dynamic_dims", ()):
        lines.append("  data-dependent size " + dynamic_text(entry))
    return "\n".join(lines)
