"""Input-size checks at the start of the generated ``forward()``.

A network checked on symbolic sizes is only correct for the sizes its constraints admit
(``H ≡ 0 (mod 16)`` for a padded U-Net); other sizes may run and silently give another
output size. The generated module therefore checks the rules of `passes.size_rules` on
its inputs' shapes, raising ``ValueError`` with the checker's message for the first one
broken.

The checks are ``torch._check_with(ValueError, cond, message)`` calls: plain Python in
eager mode, and, under ``torch.compile(fullgraph=True)`` and ``torch.export``, facts about
the symbolic sizes rather than a data-dependent branch (export turns them into
range/divisibility constraints on its dynamic dims, or runtime assertions).
They are skipped while `torch.jit.trace` records the module (the TorchScript exporter,
``torch.onnx.export(..., dynamo=False)``): there sizes are traced tensors, not ints, and the
trace is of one concrete input anyway.
"""
from __future__ import annotations

from ...ir import dims as D
from ...passes.size_rules import bracket, render, rule_message, size_rules, sizes_that_work, symbol_dims


def size_guards(graph, arg_names: list) -> list:
    """Source lines (unindented) checking the inputs' sizes; `arg_names` are forward()'s
    parameter names for graph.inputs, in order. Empty when every size works."""
    positions = symbol_dims(graph)
    rules = [r for r in size_rules(graph) if D.symbols(r.a) | D.symbols(r.b) <= positions.keys()]
    arg_of = {v.name: a for v, a in zip(graph.inputs, arg_names)}
    dim = {s: f"{arg_of[n]}.shape[{i}]" for s, ((n, i), *_) in positions.items()}
    shared = [(s, p) for s, ps in positions.items() for p in ps[1:]]
    if not rules and not shared:
        return []
    sizes = sizes_that_work(graph) if rules else []
    check = "    torch._check_with"      # inside the `if` below
    lines = []
    if sizes:
        lines.append("# input sizes that work: " + "; ".join(sizes))
    lines.append("if not torch.jit.is_tracing():")
    for s, (n, i) in shared:
        (n0, i0) = positions[s][0]
        text = (f"{graph.name}: input sizes do not fit: {s} is dim {i0} of {n0} and dim {i} of {n}, "
                f"which must be equal")
        lines.append(f"{check}(ValueError, {arg_of[n]}.shape[{i}] == {dim[s]}, lambda: {text!r})")
    for r in rules:
        # a constant message: torch.compile refuses a message closure over the inputs
        used = sorted(D.symbols(r.a) | D.symbols(r.b))
        text = rule_message(graph.name, r.relation, r.message, r.where, sizes) + "; where " + \
            ", ".join(f"{s} is dim {positions[s][0][1]} of {positions[s][0][0]}" for s in used)
        lines.append(f"{check}(ValueError, {_condition(r, dim)}, lambda: {text!r})")
    return lines


def _condition(rule, dim: dict) -> str:
    to_int = "torch.sym_int"       # resize's floor(L * s); torch.export specialises on int()
    a, b = render(rule.a, dim, to_int), render(rule.b, dim, to_int)
    if rule.kind == "eq":
        return f"{a} == {b}"
    if rule.kind == "ge":
        return f"{a} >= {b}"
    return f"{bracket(a)} % {bracket(b)} == {int(rule.r)}"
