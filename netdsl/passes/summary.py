"""Summary and cost: per-layer output shapes, parameters (trainable and frozen), MACs, activation
memory and receptive fields; the groups and block instances with their layers' totals; memory
estimates and the input-size constraints (docs/summary.md)."""
from __future__ import annotations

import re
from fractions import Fraction

from ..ir import dims as D
from ..gc_pause import paused_gc
from ..ir.graph import Graph, param_counts
from .activation_memory import human, param_bytes, value_bytes
from .constraints import summarise
from .receptive_field import receptive_fields, to_json as rf_json


def _num(d):
    """An int where the value is known, else the symbolic expression as text."""
    return int(d) if D.is_static(d) else str(d)


def _shape(shape):
    return [_num(d) for d in shape]


def summarize(graph: Graph, symbols: list | None = None) -> dict:
    with paused_gc():
        return _summarize(graph, symbols)


def _summarize(graph: Graph, symbols: list | None) -> dict:
    rfs = receptive_fields(graph)
    layers = []
    total_act = 0
    symbolic: dict = {}     # symbolic activation bytes -> layers with that many
    sizes: dict = {}        # (shape, dtype) -> bytes
    for n in graph.nodes:
        trainable, frozen = param_counts((n,))
        count = trainable + frozen
        act = 0
        for v in n.outputs:
            b = _bytes_of(v, sizes)
            act = act + b if isinstance(act, int) and isinstance(b, int) else D.add(act, b)
        if isinstance(act, int):
            total_act += act
        else:       # summed once per distinct expression: a long chain repeats a few
            try:
                symbolic[act] = symbolic.get(act, 0) + 1
            except TypeError:       # an unhashable size
                total_act = D.add(total_act, act)
        layers.append({
            "path": n.path,
            "op": n.op,
            "output_shape": _shape(n.outputs[0].shape) if len(n.outputs) == 1 else
            [_shape(v.shape) for v in n.outputs],
            "params": count,
            "frozen_params": frozen,
            "macs": _num(n.macs),
            # added in issue 10: the keys above keep their meaning
            "depth": n.path.count("."),
            "trainable_params": count - frozen,
            "activation_bytes": _num(act),
            "receptive_field": rf_json(rfs.get(id(n.outputs[0]))) if n.outputs else None,
            "_act": act, "_macs": n.macs,       # for the modules' totals, dropped below
        })
    for expr, count in symbolic.items():
        total_act = D.add(total_act, D.mul(expr, count))
    syms = symbols if symbols is not None else _symbols(graph)
    modules = _modules(graph, layers)
    for layer in layers:
        del layer["_act"], layer["_macs"]
    in_bytes = 0
    for v in graph.inputs:
        in_bytes = D.add(in_bytes, value_bytes(v.shape, v.dtype))
    p_bytes, b_bytes = param_bytes(graph)
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
        # added in issue 10
        "modules": modules,
        "input_bytes": _num(in_bytes),
        "activation_bytes": _num(total_act),
        "param_bytes": p_bytes,
        "buffer_bytes": b_bytes,
        "total_bytes": _num(D.add(D.add(in_bytes, total_act), p_bytes + b_bytes)),
    }


def _bytes_of(v, cache: dict):
    key = (v.shape, v.dtype)
    try:
        b = cache.get(key)
    except TypeError:       # an unhashable size
        return value_bytes(v.shape, v.dtype)
    if b is None:
        b = cache[key] = value_bytes(v.shape, v.dtype)
    return b


def _modules(graph: Graph, layers: list) -> list:
    """The composite rows: every proper prefix of a layer's path (a block instance, or a plain
    group `name: [...]`), in the order of their first layer, with the totals of their layers
    and the output shape and receptive field of their last one."""
    blocks = getattr(graph, "blocks", None) or {}
    mods: dict = {}
    for layer in layers:
        parts = layer["path"].split(".")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            m = mods.get(prefix)
            if m is None:
                block = blocks.get(prefix)
                name = block[0] if isinstance(block, tuple) else block
                m = mods[prefix] = {
                    "path": prefix, "op": name or "group", "kind": "block" if name else "group",
                    "depth": i - 1, "params": 0, "trainable_params": 0, "frozen_params": 0,
                    "macs": 0, "activation_bytes": 0, "layers": 0}
            m["params"] += layer["params"]
            m["trainable_params"] += layer["trainable_params"]
            m["frozen_params"] += layer["frozen_params"]
            m["layers"] += 1
            m["output_shape"] = layer["output_shape"]
            m["receptive_field"] = layer["receptive_field"]
        if len(parts) > 1:      # symbolic sums are dear: a layer adds to its parent only, ...
            m = mods[".".join(parts[:-1])]
            m["macs"] = _add(m["macs"], layer["_macs"])
            m["activation_bytes"] = _add(m["activation_bytes"], layer["_act"])
    # ... and each composite, deepest first, to its own parent
    for m in sorted(mods.values(), key=lambda m: -m["depth"]):
        if m["depth"] > 0:
            parent = mods[m["path"].rsplit(".", 1)[0]]
            parent["macs"] = _add(parent["macs"], m["macs"])
            parent["activation_bytes"] = _add(parent["activation_bytes"], m["activation_bytes"])
    for m in mods.values():
        m["macs"] = _num(m["macs"])
        m["activation_bytes"] = _num(m["activation_bytes"])
    return list(mods.values())


def _add(a, b):
    return a + b if isinstance(a, int) and isinstance(b, int) else D.add(a, b)


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


def _shape_text(shape) -> str:
    if not shape or not isinstance(shape[0], list):
        return D.fmt_shape(shape)
    if len(shape) <= 4:
        return "; ".join(D.fmt_shape(s) for s in shape)
    # an RPNHead over five levels has ten: the table stays readable
    return f"{D.fmt_shape(shape[0])}; … {len(shape)} outputs …; {D.fmt_shape(shape[-1])}"


def _rows(summary: dict, depth: int | None) -> list:
    """The table's rows: each layer after the composite rows (groups, block instances) that
    first contain it, labelled by the last part of its path, indented two spaces a level."""
    modules = {m["path"]: m for m in summary.get("modules", ())}
    shown: set = set()
    rows = []

    def row(entry, label, op):
        macs = entry["macs"]   # a symbolic count is unreadable in a table: see the footer
        rf = entry.get("receptive_field")
        return ("  " * entry.get("depth", 0) + label, op, _shape_text(entry["output_shape"]),
                _fmt_int(entry.get("trainable_params", entry["params"] - entry["frozen_params"])),
                _fmt_int(entry["frozen_params"]), _fmt_int(macs) if isinstance(macs, int) else "?",
                human(entry["activation_bytes"]) if "activation_bytes" in entry else "?",
                _rf_text(rf))

    for layer in summary["layers"]:
        parts = layer["path"].split(".")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            m = modules.get(prefix)
            if m is None or prefix in shown:
                continue
            shown.add(prefix)
            if depth is None or m["depth"] < depth:
                rows.append(row(m, parts[i - 1], m["op"]))
        if depth is None or layer.get("depth", 0) < depth:
            rows.append(row(layer, parts[-1], layer["op"]))
    return rows


def _rf_text(rf) -> str:
    if not rf:
        return "-"

    def one(xs):
        xs = [str(x) if not isinstance(x, float) else str(Fraction(x).limit_denominator(1 << 20))
              for x in xs]
        return xs[0] if len(set(xs)) == 1 else "x".join(xs)
    return f"{one(rf['size'])} ({one(rf['jump'])})"


_HEAD = ("layer", "op", "output shape", "trainable", "frozen", "MACs", "activations", "RF (jump)")


def _input_example(summary: dict) -> str:
    first = summary["inputs"][0] if summary["inputs"] else {"name": "NAME", "shape": []}
    return first["name"] + "=" + "x".join(str(d) if isinstance(d, int) else "?" for d in first["shape"])


def _bytes_text(n) -> str:
    """'36,125,472 B (34.5 MiB)', or a symbolic count as its expression."""
    if not isinstance(n, int):
        return f"{n} bytes"
    return f"{n:,} B ({human(n)})" if n >= 1024 else f"{n} B"


def _memory_lines(summary: dict) -> list:
    """The footer's memory estimates (what each counts: docs/summary.md)."""
    act, total = summary["activation_bytes"], summary["total_bytes"]
    n = len(summary["layers"])
    layers = "the output of its 1 layer" if n == 1 else f"the outputs of all {n} layers"
    out = []
    if isinstance(summary["input_bytes"], int):
        out.append(f"  input size: {_bytes_text(summary['input_bytes'])}")
    if isinstance(act, int):
        out.append(f"  forward activations: {_bytes_text(act)}, {layers}, "
                   f"each kept (training keeps them for the backward pass)")
    elif len(act) <= 60 or any(e["name"] in act for e in summary.get("dynamic_dims", ())):
        out.append(f"  forward activations: {act} bytes, {layers}, each kept")
    else:
        out.append(f"  forward activations depend on the input size: give it with --input "
                   f"{_input_example(summary)}")
    out.append(f"  parameter memory: {_bytes_text(summary['param_bytes'])}"
               + (f", buffers {_bytes_text(summary['buffer_bytes'])}" if summary["buffer_bytes"] else ""))
    if isinstance(total, int):
        out.append(f"  estimated total: {_bytes_text(total)} (input, forward activations, "
                   f"parameters and buffers)")
    return out


def format_text(summary: dict, doc: str | None = None, depth: int | None = None) -> str:
    """The `netdsl summary` table: a header (network, doc, inputs, outputs), one row per layer
    and per composite (a group or block instance, with its layers' totals) nested by path, and
    a footer with the totals, memory estimates, input-size constraints and data-dependent
    sizes. `depth` hides the rows nested `depth` levels deep or more (1: top-level rows only)."""
    lines = [f"network {summary['network']}"]
    if doc:
        lines += ["  " + line for line in doc.strip().splitlines()]
    for v in summary["inputs"]:
        lines.append(f"  input  {v['name']}: {D.fmt_shape(v['shape'])}")
    for v in summary["outputs"]:
        lines.append(f"  output {v['name']}: {D.fmt_shape(v['shape'])}")
    rows = [_HEAD] + _rows(summary, depth)
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEAD))]
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
        lines.append(f"  MACs per sample depend on the input size: give it with --input "
                     f"{_input_example(summary)}")
    if "activation_bytes" in summary:
        lines += _memory_lines(summary)
    if summary["constraints"]:
        lines.append("  input sizes that work: " + "; ".join(summary["constraints"]))
    for entry in summary.get("dynamic_dims", ()):
        lines.append("  data-dependent size " + dynamic_text(entry))
    return "\n".join(lines)
