"""Frozen parameters: `frozen = true` on a layer, and `freeze path, ...` statements.

A frozen parameter keeps its place in the state_dict (and in `param_count`) but is not
trained: ParamSpec.trainable is False, and the torch target sets requires_grad=False.
A `freeze` path is relative to the scope the statement is in (the network, a block
instance or a group) and is resolved once every automatic name is final, so it may name
layers defined after it. It freezes every parameter whose state_dict key is the path or
lies under it (a layer, a group, a block instance, or one parameter such as `fc.bias`).
"""
from __future__ import annotations

from dataclasses import replace

from ..errors import NameLookupError, TypeMismatchError, suggest
from .graph import Graph, param_key
from .naming import render


def frozen_params(op: str, params: dict, span, trace) -> dict:
    """A layer's parameters for `frozen = true`: an error when it has none to freeze."""
    if not any(not s.buffer for s in params.values()):
        extra = " (it holds buffers only)" if params else ""
        raise TypeMismatchError(f"{op} has no parameters to freeze{extra}; remove 'frozen = true'",
                                span, trace)
    return {k: (s if s.buffer else replace(s, trainable=False)) for k, s in params.items()}


def freeze_paths(graph: Graph, freezes: list) -> None:
    """Apply the `freeze` statements [(scope prefix segments, A.FreezePath, trace)] to the
    graph's parameters, whose node paths are rendered already."""
    # every path prefix of every parameter key -> the (node, parameter name) pairs under it
    under: dict = {}
    for n in graph.nodes:
        for pname, spec in n.params.items():
            if spec.buffer:
                continue
            parts = param_key(n.path, pname).split(".")
            for i in range(1, len(parts) + 1):
                under.setdefault(".".join(parts[:i]), []).append((n, pname))
    buffers_only = {param_key(n.path, p) for n in graph.nodes for p, s in n.params.items() if s.buffer}
    for prefix, fp, trace in freezes:
        scope = render(prefix)
        rel = ".".join(fp.parts)
        full = f"{scope}.{rel}" if scope else rel
        hits = under.get(full)
        if not hits:
            where = f"in {scope}" if scope else "in this network"
            if full in buffers_only or any(k.startswith(full + ".") for k in buffers_only) \
                    or any(n.path == full for n in graph.nodes):
                raise NameLookupError(f"'{rel}' has no parameters to freeze", fp.span, trace)
            start = f"{scope}." if scope else ""
            near = {k[len(start):] for k in under if k.startswith(start)}
            raise NameLookupError(f"nothing named '{rel}' {where} has parameters to freeze"
                                  + suggest(rel, near), fp.span, trace)
        for n, pname in hits:
            spec = n.params[pname]
            if spec.trainable:
                n.params[pname] = replace(spec, trainable=False)
