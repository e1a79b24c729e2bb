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

from ..errors import ShapeError, Span
from ..ir import dims as D

# numpy is imported where sizes are enumerated, not here: elaboration records constraints
# and checks concrete ones with plain ints, so `netdsl check` of a network whose constraints
# all hold trivially (see `summarise`) never loads it.

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

    def symbols(self) -> frozenset:
        syms = self.__dict__.get("_symbols")      # computed once: the solver asks many times
        if syms is None:
            syms = self.__dict__["_symbols"] = frozenset(D.symbols(self.a) | D.symbols(self.b))
        return syms

    def holds(self, env):
        """Whether it holds: a bool for concrete sizes, else a numpy array over `env`'s arrays."""
        a, b = D.evaluate(self.a, env), D.evaluate(self.b, env)
        if D.is_static(a) and D.is_static(b):
            a, b = int(a), int(b)
            if self.kind == "eq":
                return a == b
            if self.kind == "ge":
                return a >= b
            return (a % b if b else 0) == self.r        # (numpy's int mod by 0 gives 0)
        import numpy as np
        if self.kind == "eq":
            return np.asarray(a == b)
        if self.kind == "ge":
            return np.asarray(a >= b)
        if isinstance(b, int) and b > 0 and b & (b - 1) == 0:     # a power of two: a mask is
            return np.asarray(np.bitwise_and(a, b - 1) == self.r)  # exact and ~6x faster
        return np.asarray(np.mod(a, b) == self.r)

    def error(self) -> ShapeError:
        return ShapeError(self.message, self.span, self.trace)


class ShapeCtx:
    """What a shape rule uses to fail, to require things of its input sizes, or to make a
    data-dependent size (`dynamic`)."""

    def __init__(self, op: str, span: Span | None, trace: tuple, sink: list,
                 dynamic: dict | None = None, taken=()):
        self.op, self.span, self.trace, self.sink = op, span, trace, sink
        # the graph's data-dependent sizes (name -> Dyn), shared by every ctx of one graph so
        # that names are unique in it, and the names its input symbols have taken
        self.dynamics = {} if dynamic is None else dynamic
        self.taken = taken

    def fail(self, message: str):
        raise ShapeError(f"{self.op}: {message}", self.span, self.trace)

    def dynamic(self, hint: str, bound=None) -> D.Dim:
        """A fresh data-dependent size (`dims.Dyn`), known only at run time: named `hint`, or
        `hint2`, `hint3`, ... where that name is taken in this graph. `bound`: an upper bound
        (an int or a Dim over the input symbols), or None."""
        if not hint.isidentifier():
            raise ValueError(f"a data-dependent size's name must be an identifier, got {hint!r}")
        name, k = hint, 1
        while name in self.dynamics or name in self.taken:
            k += 1
            name = f"{hint}{k}"
        atom = D.Dyn(name, bound, self.op)
        self.dynamics[name] = atom
        return D.Lin.of([(atom, 1)])

    def _add(self, kind, a, b, message, r=0):
        # (a graph without data-dependent sizes, nearly every one, skips the look)
        if self.dynamics and (D.is_dynamic(a) or D.is_dynamic(b)):
            return          # known only at run time: never solved, never an error here
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
        if D.is_dynamic(d):
            self.fail(f"{what} must be known at compile time, but it is '{D.fmt(d)}', a size "
                      f"known only at run time (data-dependent)")
        self.fail(f"{what} must be known at compile time, but it is '{D.fmt(d)}'; "
                  f"declare that input dim as a number")


def solve(constraints: list, symbols: list) -> dict:
    """Admissible-size masks per symbol (index v = size v, 0 unused); raise on an empty set.

    Constraints over one symbol are solved exactly on 1..LIMIT. Those over several symbols
    (``H == W`` when two inputs meet) do not narrow any mask -- they relate them -- but each
    group of related ones is checked for a common solution among the sizes each symbol
    admits (`relations.check_relations`, which documents its bound).
    """
    import numpy as np
    from .relations import check_relations
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
    if multi:
        check_relations(multi, masks)     # jointly, per group of related symbols
    return masks


def _relates(c: Constraint, masks: dict) -> bool:
    """Whether a multi-symbol constraint excludes any admissible pair of sizes (else it says
    nothing worth printing, like ``3 * H * W >= 1``)."""
    import numpy as np
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


def _trivial(c: Constraint) -> bool:
    """Whether `c` holds for every size, judged cheaply: ``size ≥ k`` where the size grows
    with its one symbol (``(H + 31) // 32``) and holds at 1. Such constraints change no mask
    and print nothing; most networks record only these."""
    if c.kind != "ge" or not D.is_static(c.b) or D.is_static(c.a) or len(c.symbols()) != 1:
        return False
    if not D.nondecreasing(c.a):
        return False
    (s,) = c.symbols()
    return D.evaluate(c.a, {s: 1}) >= c.b


def _unsatisfiable(c: Constraint, s: str) -> ShapeError:
    err = c.error()
    err.message += f" for every size of input dim {s}"
    return err


def describe(name: str, mask) -> str:
    """'H ≡ 0 (mod 16), H ≥ 16', 'H ≥ 32', 'H ∈ {...}' for an admissible-size mask."""
    import numpy as np
    valid = np.flatnonzero(mask)
    lo = int(valid[0])
    tail = mask[lo:]
    span = len(tail)
    for m in range(1, MAX_PERIOD + 1):
        if span - m < 2 * m:
            break
        if np.array_equal(tail[:-m], tail[m:]):
            residues = sorted(set((valid % m).tolist()))     # (np.unique would import numpy.ma)
            parts = []
            if m > 1:
                if len(residues) == 1:
                    parts.append(f"{name} ≡ {residues[0]} (mod {m})")
                else:
                    parts.append(f"{name} mod {m} ∈ {{{', '.join(map(str, residues))}}}")
            if lo > 1 or m == 1:
                parts.append(f"{name} ≥ {lo}")
            return ", ".join(parts)
    text = _eventually_periodic(name, mask)
    if text:
        return text
    hi = int(valid[-1])
    if lo == hi:
        return f"{name} = {lo}"
    if len(valid) == hi - lo + 1:
        return f"{lo} ≤ {name} ≤ {hi}"
    shown = ", ".join(map(str, valid[:8])) + (", ..." if len(valid) > 8 else "")
    return f"{name} ∈ {{{shown}}}"


def _eventually_periodic(name: str, mask) -> str | None:
    """'H ≥ 12, or H ∈ {4, 5, 8–10}' for a mask that is periodic only from some size on,
    with finitely many admissible sizes before that (the paper's pyramid bins: level 4 fits
    4, 5, 8, 9, 10 and every size from 12). The periodic part must cover at least half of
    the enumerated sizes and three periods; None when no period does."""
    import numpy as np
    size = len(mask)
    for m in range(1, MAX_PERIOD + 1):
        if size - 1 - m < 3 * m:
            break
        differ = np.flatnonzero(mask[1:-m] != mask[1 + m:])
        start = int(differ[-1]) + 2 if len(differ) else 1       # periodic from here on
        if size - start < max(3 * m, size // 2):
            continue
        tail = np.flatnonzero(mask[start:]) + start
        if not len(tail):
            return None                  # finitely many sizes: listed by the caller
        lo = int(tail[0])
        residues = sorted(set((tail % m).tolist()))
        parts = []
        if m > 1:
            parts.append(f"{name} ≡ {residues[0]} (mod {m})" if len(residues) == 1
                         else f"{name} mod {m} ∈ {{{', '.join(map(str, residues))}}}")
        parts.append(f"{name} ≥ {lo}")
        before = np.flatnonzero(mask[1:start]) + 1
        if not len(before):
            return ", ".join(parts)
        return ", ".join(parts) + f", or {name} ∈ {{{_runs(before.tolist())}}}"
    return None


def _runs(values: list, most: int = 16) -> str:
    """'4, 5, 8–10, 12' for sorted ints (runs of three or more joined), at most `most` items."""
    items, i = [], 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        if j - i >= 2:
            items.append(f"{values[i]}–{values[j]}")
        else:
            items.extend(str(v) for v in values[i:j + 1])
        i = j + 1
    return ", ".join(items[:most]) + (", ..." if len(items) > most else "")


def summarise(constraints: list, symbols: list) -> list[str]:
    """Human-readable admissible sizes for each constrained symbol, then the relations
    between symbols (``H = W``)."""
    if all(_trivial(c) for c in constraints):     # nothing to say; and no numpy needed
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
