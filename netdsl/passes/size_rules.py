"""The input-size constraints as run-time rules, for the compiled artefacts to check.

The checker proves a network's shapes for the input sizes its constraints admit. A
compiled module or ONNX file given other sizes may run anyway and compute something of
another size, so the torch target checks these rules at the start of ``forward`` and the
ONNX target records them in its metadata (``netdsl.constraints``), where ``netdsl run``
reads them back.

The rules are the graph's constraints, deduplicated, without those that hold for every
size (``N ≥ 1``, ``(H + 1) // 2 ≥ 1``), plus the requirement that a symbol used by several
input dims has one size. The record (JSON) is::

    {"format": 1,
     "symbols": {"H": [["image", 2]], ...},          # which input dims each symbol is
     "sizes_that_work": ["H ≡ 0 (mod 16), H ≥ 16", ...],
     "constraints": [{"kind": "ge" | "eq" | "mod", "a": EXPR, "b": EXPR, "r": INT,
                      "relation": "H ≥ 16", "message": ..., "at": "file:line:col"}, ...]}

A rule holds when ``a >= b`` (ge), ``a == b`` (eq) or ``a % b == r`` (mod). EXPR is integer
arithmetic in Python syntax and semantics: integer literals, symbol names, ``+``, ``-``,
``*``, ``//`` (floor division) and parentheses, e.g. ``(H - 1) // 2 + 1``, plus
``int(EXPR * FLOAT)`` for `resize`'s ``floor(H * 1.1)`` (the product rounded to a double).
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass

from ..ir import dims as D

METADATA_KEY = "netdsl.constraints"
FORMAT = 1


@dataclass(frozen=True)
class SizeRule:
    kind: str             # "eq" | "ge" | "mod"
    a: object             # Dim
    b: object             # Dim
    r: int
    relation: str         # "H ≡ 0 (mod 2)"
    message: str          # the checker's message for it
    where: str | None     # "file:line:col" of the operation that requires it


def symbol_dims(graph) -> dict:
    """{symbol: [(input name, dim index), ...]} for every input dim that is a bare symbol."""
    out: dict = {}
    for v in graph.inputs:
        for i, d in enumerate(v.shape):
            if not D.is_static(d) and d.is_atom() and isinstance(d.terms[0][0], D.Sym):
                out.setdefault(d.terms[0][0].name, []).append((v.name, i))
    return out


def size_rules(graph) -> list:
    """The constraints that exclude some input size, each once, in the order recorded."""
    from .constraints import _relation, _trivial
    # graph.constraints holds each constraint once already (elaborate.RecordedConstraints)
    kept = [c for c in graph.constraints if not _trivial(c)]   # (those hold for every size)
    kept = _drop_implied(kept) if kept else []
    return [SizeRule(c.kind, c.a, c.b, c.r, _relation(c), c.message,
                     c.span.location() if c.span else None) for c in kept]


def _drop_implied(constraints: list) -> list:
    """Without the one-symbol constraints that hold for every size, and those that
    the others on the same symbol imply (``H // 2 ≥ 1`` beside ``H // 16 ≥ 1``), judged on
    every size in 1..LIMIT and a few far beyond."""
    import numpy as np
    from .constraints import LIMIT
    sizes = np.concatenate([np.arange(1, LIMIT + 1), [1 << k for k in range(13, 21)],
                            [(1 << k) + 1 for k in range(13, 21)]]).astype(np.int64)
    masks, out = {}, []
    for c in constraints:
        names = c.symbols()
        if len(names) == 1:
            (s,) = names
            m = np.broadcast_to(np.asarray(c.holds({s: sizes})), sizes.shape)
            if not m.all():
                masks[id(c)] = (s, m)
                out.append(c)
        else:       # several symbols: kept (a sample of sizes proves nothing about the rest)
            out.append(c)
    for c in list(out):             # earlier (shallower) constraints are usually the implied ones
        if id(c) not in masks:
            continue
        s, mine = masks[id(c)]
        rest = [masks[id(o)][1] for o in out if o is not c and masks.get(id(o), ("",))[0] == s]
        if rest and not (np.logical_and.reduce(rest) & ~mine).any():
            out.remove(c)
    return out


def sizes_that_work(graph) -> list:
    """The checker's summary of the admissible sizes (``H ≡ 0 (mod 16), H ≥ 16``)."""
    from .constraints import summarise
    from .summary import _symbols
    return summarise(graph.constraints, _symbols(graph))


# ---- the record in ONNX metadata, and checking concrete sizes against it -------------------

def to_record(graph) -> dict:
    rules = size_rules(graph)
    return {
        "format": FORMAT,
        "symbols": {s: [[n, i] for n, i in dims] for s, dims in symbol_dims(graph).items()},
        "sizes_that_work": sizes_that_work(graph) if rules else [],
        "constraints": [{"kind": r.kind, "a": _expr(r.a), "b": _expr(r.b), "r": int(r.r),
                         "relation": r.relation, "message": r.message, "at": r.where}
                        for r in rules],
    }


def _expr(d) -> str:
    return render(d, {s: s for s in D.symbols(d)})


def to_json(graph) -> str:
    return json.dumps(to_record(graph), ensure_ascii=False, separators=(",", ":"))


class RecordError(ValueError):
    """A malformed record (not written by this version of netdsl)."""


def violation(record: dict, shapes: dict, network: str = "the network") -> str | None:
    """The message for the first rule that the concrete input `shapes` ({input: dims}) break,
    or None when they fit. Raises RecordError on a record it cannot read (a record in a file
    from elsewhere may hold anything JSON can: every failure to read it is a RecordError)."""
    try:
        return _violation(record, shapes, network)
    except RecordError:
        raise
    except (TypeError, AttributeError, ValueError, KeyError, IndexError, OverflowError,
            ZeroDivisionError, RecursionError, MemoryError) as e:
        raise RecordError(f"{type(e).__name__}: {e}") from None


def _violation(record: dict, shapes: dict, network: str) -> str | None:
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise RecordError("unknown format")
    env, seen_at = {}, {}
    for s, dims in record.get("symbols", {}).items():
        for name, i in dims:
            shape = shapes.get(name)
            if shape is None or not 0 <= i < len(shape):
                continue
            if s in env and env[s] != shape[i]:
                first = seen_at[s]
                return (f"{network}: input sizes do not fit: {s} is dim {first[1]} of {first[0]} "
                        f"({env[s]}) and dim {i} of {name} ({shape[i]}), which must be equal")
            env[s], seen_at[s] = int(shape[i]), (name, i)
    for rule in record.get("constraints", []):
        try:
            a, b = evaluate(rule["a"], env), evaluate(rule["b"], env)
            kind, r = rule["kind"], int(rule["r"])
        except (KeyError, TypeError) as e:
            raise RecordError(f"bad rule {rule!r}: {e}") from None
        ok = {"eq": lambda: a == b, "ge": lambda: a >= b,
              "mod": lambda: b != 0 and a % b == r}.get(kind)
        if ok is None:
            raise RecordError(f"unknown rule kind {kind!r}")
        if not ok():
            values = ", ".join(f"{s} = {v}" for s, v in env.items() if s in _names(rule))
            return rule_message(network, rule.get("relation", ""), rule.get("message", ""),
                                rule.get("at"), record.get("sizes_that_work", [])) + f"; got {values}"
    return None


def rule_message(network: str, relation: str, message: str, where, sizes: list) -> str:
    """The text of a broken rule, shared by the torch module and `netdsl run`."""
    at = f" at {where}" if where else ""
    text = f"{network}: input sizes do not fit: {relation} does not hold ({message}{at})"
    if sizes:
        text += "; input sizes that work: " + "; ".join(sizes)
    return text


_ALLOWED = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Add, ast.Sub, ast.Mult, ast.FloorDiv,
            ast.USub, ast.UAdd, ast.Name, ast.Load, ast.Constant, ast.Call)


def _parse(text: str) -> ast.Expression:
    if not isinstance(text, str) or len(text) > 10_000:
        raise RecordError(f"bad expression {text!r}")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise RecordError(f"bad expression {text!r}") from None
    scaled = set()          # int(EXPR * FLOAT), resize's floor(L * s): the one call and float
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            arg = node.args[0] if len(node.args) == 1 and not node.keywords else None
            if not (isinstance(node.func, ast.Name) and node.func.id == "int" and isinstance(arg, ast.BinOp)
                    and isinstance(arg.op, ast.Mult) and isinstance(arg.right, ast.Constant)
                    and type(arg.right.value) is float):
                raise RecordError(f"bad expression {text!r}")
            scaled |= {id(node.func), id(arg.right)}
    for node in ast.walk(tree):
        if id(node) not in scaled and (not isinstance(node, _ALLOWED) or (
                isinstance(node, ast.Constant) and type(node.value) is not int)):
            raise RecordError(f"bad expression {text!r}")
    return tree


def _names(rule: dict) -> set:
    out = set()
    for key in ("a", "b"):
        try:
            out |= {n.id for n in ast.walk(_parse(rule[key])) if isinstance(n, ast.Name)}
        except (RecordError, KeyError):
            pass
    return out


def evaluate(text: str, env: dict) -> int:
    """The value of an EXPR (see the module docstring) for the symbol sizes in `env`."""
    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in env:
                raise RecordError(f"no size for symbol {node.id}")
            return env[node.id]
        if isinstance(node, ast.UnaryOp):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.Call):                  # int(EXPR * FLOAT), as _parse allows
            return int(ev(node.args[0].left) * node.args[0].right.value)
        left, right = ev(node.left), ev(node.right)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if right == 0:
            raise RecordError(f"division by zero in {text!r}")
        return left // right
    return ev(_parse(text))


# ---- dims as Python expressions -------------------------------------------------------------

def bracket(text: str) -> str:
    """`text` as an operand: bracketed unless a name, a number or ``x.shape[i]``."""
    return text if text.replace("_", "").replace(".", "").replace("[", "").replace("]", "").isalnum() \
        else f"({text})"


def render(d, dim: dict, to_int: str = "int") -> str:
    """A dim as a Python expression with the same value, each symbol written as `dim` says
    (``{"H": "x.shape[2]"}`` for the torch guards, ``{"H": "H"}`` for the metadata record).
    resize's floor(L * s), the product rounded to a double, is ``to_int(L * s)``: ``int`` in
    the record, ``torch.sym_int`` in the guards (torch.export specialises on ``int``)."""
    if D.is_static(d):
        return str(int(d))
    return _lin(d, dim, to_int)


def _lin(lin, dim, to_int="int") -> str:
    # a floor division with any coefficient but 1 is bracketed: -H // 2 is (-H) // 2 in Python
    terms = [(_atom(atom, dim, coef != 1, to_int), coef) for atom, coef in lin.terms]
    if lin.const or not terms:
        terms.append(("1", lin.const))
    text = ""
    for term, coef in terms:
        size = term if abs(coef) == 1 else (str(abs(coef)) if term == "1" else f"{abs(coef)} * {term}")
        text += (" - " if coef < 0 else " + ") + size if text else ("-" if coef < 0 else "") + size
    return text


def _atom(atom, dim, wrap: bool = False, to_int: str = "int") -> str:
    if isinstance(atom, D.Sym):
        return dim[atom.name]
    if isinstance(atom, D.FloorDiv):
        text = f"{bracket(_lin(atom.num, dim, to_int))} // {atom.den}"
        return f"({text})" if wrap else text
    if isinstance(atom, D.ScaledFloor):
        return f"{to_int}({bracket(_lin(atom.num, dim, to_int))} * {atom.scale!r})"
    return " * ".join(_atom(f, dim, True, to_int) for f in atom.factors)
