"""Input-size constraints: recorded during shape inference, solved by enumeration.

An op that only works for some sizes records a constraint on its (possibly
symbolic) dims. Concrete dims are checked at once. Symbolic ones are kept and,
after elaboration, each input symbol's admissible values are found by evaluating
every constraint on all candidate sizes 1..LIMIT at once (numpy), then summarised
as ``H ≡ r (mod m), H ≥ lo``. This is exact for the floor/affine arithmetic of
convolutions and pooling, whose admissible sets are eventually periodic.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ShapeError, Span
from ..ir import dims as D

LIMIT = 4096        # candidate sizes tried per symbol
MAX_PERIOD = 1024


@dataclass
class Constraint:
    kind: str            # "eq" (a == b), "ge" (a >= b), "mod" (a % b == r)
    a: object
    b: object
    r: int
    message: str
    span: Span | None
    trace: tuple

    def symbols(self) -> set:
        return D.symbols(self.a) | D.symbols(self.b)

    def holds(self, env) -> np.ndarray:
        a, b = D.evaluate(self.a, env), D.evaluate(self.b, env)
        if self.kind == "eq":
            return np.asarray(a == b)
        if self.kind == "ge":
            return np.asarray(a >= b)
        return np.asarray(np.mod(a, b) == self.r)

    def error(self) -> ShapeError:
        return ShapeError(self.message, self.span, self.trace)


class ShapeCtx:
    """What a shape rule uses to fail, or to require things of its input sizes."""

    def __init__(self, op: str, span: Span | None, trace: tuple, sink: list):
        self.op, self.span, self.trace, self.sink = op, span, trace, sink

    def fail(self, message: str):
        raise ShapeError(f"{self.op}: {message}", self.span, self.trace)

    def _add(self, kind, a, b, message, r=0):
        c = Constraint(kind, a, b, r, f"{self.op}: {message}", self.span, self.trace)
        if not c.symbols():
            if not bool(c.holds({})):
                raise c.error()
            return
        if kind == "eq" and D.same(a, b) is True:
            return
        self.sink.append(c)

    def require_eq(self, a, b, message: str):
        self._add("eq", a, b, message)

    def require_ge(self, a, b, message: str):
        self._add("ge", a, b, message)

    def require_mod(self, a, m: int, r: int, message: str):
        self._add("mod", a, m, message, r)

    def static(self, d, what: str) -> int:
        if D.is_static(d):
            return int(d)
        self.fail(f"{what} must be known at compile time, but it is '{D.fmt(d)}'; "
                  f"declare that input dim as a number")


def solve(constraints: list, symbols: list) -> dict:
    """Admissible-size masks per symbol (index v = size v, 0 unused); raise on an empty set.

    Constraints over one symbol are solved exactly on 1..LIMIT. Those over two symbols
    (``H == W`` when two inputs meet) do not narrow either mask -- they relate the two --
    but are checked for having some solution among the sizes each symbol admits.
    """
    sizes = np.arange(LIMIT + 1, dtype=np.int64)
    masks = {s: sizes >= 1 for s in symbols}
    for s in {s for c in constraints for s in c.symbols()} - masks.keys():
        masks[s] = sizes >= 1
    single = [c for c in constraints if len(c.symbols()) == 1]
    multi = [c for c in constraints if len(c.symbols()) > 1]
    for c in single:
        (s,) = c.symbols()
        ok = masks[s] & np.broadcast_to(c.holds({s: sizes}), sizes.shape)
        if not ok.any():
            raise _unsatisfiable(c, s)
        masks[s] = ok
    for c in multi:
        if _holds_somewhere(c, masks) is False:
            err = c.error()
            err.message += " for every size of input dims " + " and ".join(sorted(c.symbols()))
            raise err
    return masks


def _holds_somewhere(c: Constraint, masks: dict, chunk: int = 64):
    """Whether two-symbol constraint `c` holds for some admissible sizes: True or False;
    None when `c` has more symbols (not checked)."""
    names = sorted(c.symbols())
    if len(names) != 2:
        return None
    a, b = names
    va, vb = np.flatnonzero(masks[a]), np.flatnonzero(masks[b])
    for i in range(0, len(va), chunk):
        env = {a: va[i:i + chunk, None], b: vb[None, :]}
        if np.asarray(c.holds(env)).any():
            return True
    return False


def _relates(c: Constraint, masks: dict) -> bool:
    """Whether a multi-symbol constraint excludes any admissible pair of sizes (else it says
    nothing worth printing, like ``3 * H * W >= 1``)."""
    names = sorted(c.symbols())
    if len(names) != 2:
        return True
    a, b = names
    va, vb = np.flatnonzero(masks[a])[:256], np.flatnonzero(masks[b])[:256]
    return not np.asarray(c.holds({a: va[:, None], b: vb[None, :]})).all()


def _relation(c: Constraint) -> str:
    if c.kind == "eq":
        return f"{D.fmt(c.a)} = {D.fmt(c.b)}"
    if c.kind == "ge":
        return f"{D.fmt(c.a)} ≥ {D.fmt(c.b)}"
    return f"{D.fmt(c.a)} ≡ {c.r} (mod {D.fmt(c.b)})"


def _unsatisfiable(c: Constraint, s: str) -> ShapeError:
    err = c.error()
    err.message += f" for every size of input dim {s}"
    return err


def describe(name: str, mask: np.ndarray) -> str:
    """'H ≡ 0 (mod 16), H ≥ 16', 'H ≥ 32', 'H ∈ {...}' for an admissible-size mask."""
    valid = np.flatnonzero(mask)
    lo = int(valid[0])
    tail = mask[lo:]
    span = len(tail)
    for m in range(1, MAX_PERIOD + 1):
        if span - m < 2 * m:
            break
        if np.array_equal(tail[:-m], tail[m:]):
            residues = sorted({int(v) % m for v in valid})
            parts = []
            if m > 1:
                if len(residues) == 1:
                    parts.append(f"{name} ≡ {residues[0]} (mod {m})")
                else:
                    parts.append(f"{name} mod {m} ∈ {{{', '.join(map(str, residues))}}}")
            if lo > 1 or m == 1:
                parts.append(f"{name} ≥ {lo}")
            return ", ".join(parts)
    hi = int(valid[-1])
    if lo == hi:
        return f"{name} = {lo}"
    if len(valid) == hi - lo + 1:
        return f"{lo} ≤ {name} ≤ {hi}"
    shown = ", ".join(map(str, valid[:8])) + (", ..." if len(valid) > 8 else "")
    return f"{name} ∈ {{{shown}}}"


def summarise(constraints: list, symbols: list) -> list[str]:
    """Human-readable admissible sizes for each constrained symbol, then the relations
    between symbols (``H = W``)."""
    if not constraints:
        return []
    masks = solve(constraints, symbols)
    constrained = set().union(*(c.symbols() for c in constraints if len(c.symbols()) == 1))
    out = []
    for s in symbols:
        if s in constrained:
            text = describe(s, masks[s])
            if text != f"{s} ≥ 1":
                out.append(text)
    seen = set()
    for c in constraints:
        if len(c.symbols()) > 1 and _relates(c, masks):
            key = (c.kind, frozenset((D.fmt(c.a), D.fmt(c.b)))) if c.kind == "eq" else _relation(c)
            if key not in seen:       # H = W and W = H are one relation
                seen.add(key)
                out.append(_relation(c))
    return out
