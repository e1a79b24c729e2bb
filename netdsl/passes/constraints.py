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

    Constraints over one symbol are solved exactly on 1..LIMIT; those over several
    are checked with every other symbol held at its smallest admissible size.
    """
    sizes = np.arange(LIMIT + 1, dtype=np.int64)
    masks = {s: sizes >= 1 for s in symbols}
    single = [c for c in constraints if len(c.symbols()) == 1]
    multi = [c for c in constraints if len(c.symbols()) > 1]
    for c in single:
        (s,) = c.symbols()
        ok = masks[s] & np.broadcast_to(c.holds({s: sizes}), sizes.shape)
        if not ok.any():
            raise _unsatisfiable(c, s)
        masks[s] = ok
    for c in multi:
        names = sorted(c.symbols())
        for s in names:
            env = {o: int(np.argmax(masks[o])) for o in names if o != s}
            env[s] = sizes
            ok = masks[s] & np.broadcast_to(c.holds(env), sizes.shape)
            if not ok.any():
                raise _unsatisfiable(c, s)
            masks[s] = ok
    return masks


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
    if len(valid) == hi - lo + 1:
        return f"{lo} ≤ {name} ≤ {hi}"
    shown = ", ".join(map(str, valid[:8])) + (", ..." if len(valid) > 8 else "")
    return f"{name} ∈ {{{shown}}}"


def summarise(constraints: list, symbols: list) -> list[str]:
    """Human-readable admissible sizes for each constrained symbol."""
    if not constraints:
        return []
    masks = solve(constraints, symbols)
    constrained = set().union(*(c.symbols() for c in constraints))
    out = []
    for s in symbols:
        if s in constrained:
            text = describe(s, masks[s])
            if text != f"{s} ≥ 1":
                out.append(text)
    return out
