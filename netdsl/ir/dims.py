"""Tensor dimensions: plain ints, or symbolic expressions over input dims (N, H, W...).

A symbolic dim is kept in a canonical form so that equal sizes compare equal:
an integer linear combination of atoms (a symbol, a floor division of such a
combination by a positive int, a product of atoms, or `resize`'s floor(x * scale) rounded
as torch rounds it) plus a constant. Floor divisions pull out the divisible part
(``(2H + 3) // 2 = H + 1 + (1) // 2`` becomes ``H + 1``) and nested divisions fuse
(``H // 2 // 2 = H // 4``), which is enough for convolution, pooling and upsampling
arithmetic to simplify to the forms people write by hand. Every expression can be
evaluated on numpy arrays of candidate symbol values; the constraint solver uses that.
A `Dyn` atom is a size known only at run time (data-dependent), written like a symbol.
"""
from __future__ import annotations

import math
from numbers import Integral
from typing import Union

# No numpy import here: sizes evaluate with Python ints as well as with numpy arrays (the
# constraint solver's), and `netdsl check` need not load numpy at all.


class Expr:
    """Base class of symbolic dims; see `Lin`."""


class Sym(Expr):
    __slots__ = ("name", "_key")

    def __init__(self, name: str):
        self.name = name
        self._key = ("s", name)

    def key(self):
        return self._key

    def eval(self, env):
        return env[self.name]

    def symbols(self):
        return {self.name}

    def __str__(self):
        return self.name


class Dyn(Sym):
    """A data-dependent size: known only at run time (the number of boxes a non-maximum
    suppression keeps, a top-k over a symbolic size). Arithmetic and printing treat it as a
    symbol (`K`, `2 * K + 1`); it never takes part in the constraint solving (ShapeCtx drops
    any constraint that mentions one). `bound` is an upper bound where one is known: an int,
    a Dim over the input symbols, or None. Made by `ShapeCtx.dynamic`, with a name unique
    within its graph; `op` names the op that made it."""
    __slots__ = ("bound", "op")

    def __init__(self, name: str, bound=None, op: str | None = None):
        super().__init__(name)
        self.bound, self.op = bound, op
        self._key = ("s", name, "dyn")     # sorts among the symbols, yet never equals one

    def __repr__(self):
        return f"Dyn({self.name}, bound={self.bound})"


class FloorDiv(Expr):
    __slots__ = ("num", "den")

    def __init__(self, num: "Lin", den: int):
        self.num, self.den = num, den

    def key(self):
        return ("f", self.num.key(), self.den)

    def eval(self, env):
        return self.num.eval(env) // self.den      # np.floor_divide on arrays

    def symbols(self):
        return self.num.symbols()

    def __str__(self):
        inner = str(self.num)
        if not self.num.is_atom():
            inner = f"({inner})"
        return f"{inner} // {self.den}"


class Prod(Expr):
    __slots__ = ("factors",)

    def __init__(self, factors):
        self.factors = tuple(sorted(factors, key=lambda a: a.key()))

    def key(self):
        return ("p",) + tuple(f.key() for f in self.factors)

    def eval(self, env):
        out = 1
        for f in self.factors:
            out = out * f.eval(env)
        return out

    def symbols(self):
        return set().union(*(f.symbols() for f in self.factors))

    def __str__(self):
        return " * ".join(f"({f})" if isinstance(f, FloorDiv) else str(f) for f in self.factors)


class ScaledFloor(Expr):
    """floor(num * scale) with the product rounded to a double first, as torch sizes
    `interpolate(scale_factor=scale)`: 50 * 2.3 is 114.99999999999999, so 114. Used where
    that rounding is not a plain floor division (see `scaled_floor`)."""
    __slots__ = ("num", "scale")

    def __init__(self, num: "Lin", scale: float):
        self.num, self.scale = num, float(scale)

    def key(self):
        return ("m", self.num.key(), self.scale.hex())

    def eval(self, env):
        v = self.num.eval(env)
        if isinstance(v, Integral):
            return math.floor(int(v) * self.scale)
        import numpy as np
        prod = np.asarray(v, dtype=np.float64) * self.scale
        return np.floor(np.minimum(prod, 2.0 ** 62)).astype(np.int64)    # no int64 overflow

    def symbols(self):
        return self.num.symbols()

    def __str__(self):
        return f"floor({self.num} * {self.scale!r})"


class Lin(Expr):
    """sum(coef * atom) + const, with non-zero coefficients, sorted by atom."""
    __slots__ = ("terms", "const", "_key", "_syms", "_str")

    def __init__(self, terms: dict, const: int = 0):
        """`terms` maps each atom's key to (atom, coefficient), as `Lin.of` builds it."""
        keyed = sorted((k, ac) for k, ac in terms.items() if ac[1] != 0) if terms else []
        self.terms = tuple(ac for _, ac in keyed)
        self.const = const
        self._key = (tuple((k, ac[1]) for k, ac in keyed), const)
        self._syms = self._str = None

    @staticmethod
    def of(items, const=0) -> "Lin":
        acc: dict = {}
        for atom, coef in items:
            k = atom.key()
            prev = acc.get(k)
            acc[k] = (atom, coef if prev is None else prev[1] + coef)
        return Lin(acc, const)

    def key(self):
        return self._key

    def is_atom(self) -> bool:
        return self.const == 0 and len(self.terms) == 1 and self.terms[0][1] == 1

    def eval(self, env):
        out = self.const
        for a, c in self.terms:
            out = out + c * a.eval(env)
        return out

    def symbols(self):
        if self._syms is None:     # computed once (a Lin never changes); callers copy before mutating
            self._syms = frozenset().union(*(a.symbols() for a, _ in self.terms))
        return self._syms

    def __str__(self):
        if self._str is None:       # a Lin never changes: format it once
            self._str = self._format()
        return self._str

    def _format(self) -> str:
        parts = []
        for a, c in self.terms:
            s = str(a)
            if c != 1 and c != -1 and isinstance(a, FloorDiv):
                s = f"({s})"
            if c == 1:
                parts.append(("+", s))
            elif c == -1:
                parts.append(("-", s))
            else:
                parts.append(("+" if c > 0 else "-", f"{abs(c)} * {s}"))
        if self.const:
            parts.append(("+" if self.const > 0 else "-", str(abs(self.const))))
        if not parts:
            return "0"
        sign, first = parts[0]
        if sign == "-" and self.terms and isinstance(self.terms[0][0], FloorDiv) and self.terms[0][1] == -1:
            first = f"({first})"      # -(H // 2), not -H // 2, which reads as (-H) // 2
        text = ("-" if sign == "-" else "") + first
        for sign, p in parts[1:]:
            text += f" {sign} {p}"
        return text

    def __eq__(self, other):
        return isinstance(other, Lin) and self._key == other._key

    def __hash__(self):
        return hash(self._key)

    def __repr__(self):
        return f"Dim({self})"


Dim = Union[int, Lin]


def sym(name: str) -> Lin:
    return Lin.of([(Sym(name), 1)])


def dyn(name: str, bound=None, op: str | None = None) -> Lin:
    """A dim that is the data-dependent size `name` (see `Dyn`); shape rules use
    `ShapeCtx.dynamic`, which keeps names unique within a graph."""
    return Lin.of([(Dyn(name, bound, op), 1)])


def _lin(d: Dim) -> Lin:
    return Lin.of([], int(d)) if is_static(d) else d


def _scaled(lin: Lin, k: int, shift: int) -> Lin:
    """k * lin + shift (k != 0) without re-sorting: the terms keep their order."""
    out = Lin.__new__(Lin)
    if k == 1:
        out.terms, key_terms = lin.terms, lin._key[0]
    else:
        out.terms = tuple((t, c * k) for t, c in lin.terms)
        key_terms = tuple((tk, c * k) for tk, c in lin._key[0])
    out.const = lin.const * k + shift
    out._key = (key_terms, out.const)
    out._syms, out._str = lin._syms, None
    return out


def _norm(lin: Lin) -> Dim:
    return lin.const if not lin.terms else lin


def is_static(d) -> bool:
    cls = d.__class__
    return cls is int or (cls is not Lin and isinstance(d, Integral))   # numpy's ints are Integral too


def add(a: Dim, b: Dim) -> Dim:
    if is_static(a):
        if is_static(b):
            return int(a) + int(b)
        a, b = b, a
    if is_static(b) and a.terms:        # the common case: a size plus a number
        return _scaled(a, 1, int(b)) if b else a
    la, lb = _lin(a), _lin(b)
    return _norm(Lin.of(list(la.terms) + list(lb.terms), la.const + lb.const))


def neg(a: Dim) -> Dim:
    return mul(a, -1)


def sub(a: Dim, b: Dim) -> Dim:
    return add(a, neg(b))


def mul(a: Dim, b: Dim) -> Dim:
    if is_static(a) and is_static(b):
        return int(a) * int(b)
    if is_static(a):
        a, b = b, a
    if is_static(b):
        k = int(b)
        if k == 0:
            return 0
        if a.terms:
            return _scaled(a, k, 0) if k != 1 else a
        la = _lin(a)
        return _norm(Lin.of([(t, c * k) for t, c in la.terms], la.const * k))
    la, lb = _lin(a), _lin(b)
    items = [(t, c * lb.const) for t, c in la.terms] + [(t, c * la.const) for t, c in lb.terms]
    for ta, ca in la.terms:
        for tb, cb in lb.terms:
            fa = ta.factors if isinstance(ta, Prod) else (ta,)
            fb = tb.factors if isinstance(tb, Prod) else (tb,)
            items.append((Prod(fa + fb), ca * cb))
    return _norm(Lin.of(items, la.const * lb.const))


def floordiv(a: Dim, d: int) -> Dim:
    if d <= 0:
        raise ValueError("division of a dim by a non-positive number")
    if is_static(a):
        return int(a) // d
    if d == 1:
        return a
    la = _lin(a)
    pulled, rest = [], []
    for t, c in la.terms:
        q, r = divmod(c, d)
        if q:
            pulled.append((t, q))
        if r:
            rest.append((t, r))
    q, r = divmod(la.const, d)
    if not rest:
        return _norm(Lin.of(pulled, q))
    rest_lin = Lin.of(rest, r)
    # floor((floor(x / a) + r) / d) == floor((x + r * a) / (a * d))
    if len(rest_lin.terms) == 1 and rest_lin.terms[0][1] == 1 and isinstance(rest_lin.terms[0][0], FloorDiv):
        inner = rest_lin.terms[0][0]
        fused = floordiv(add(inner.num, rest_lin.const * inner.den), inner.den * d)
        return add(_norm(Lin.of(pulled, q)), fused)
    return _norm(Lin.of(pulled + [(FloorDiv(rest_lin, d), 1)], q))


def scaled_floor(a: Dim, scale: float) -> Dim:
    """floor(a * scale), the product rounded to a double as torch rounds it. A scale whose
    double is p / 2**k with a small p (0.5, 1.5, 3) multiplies sizes below 2**32 exactly, so
    the result is the floor division a * p // 2**k; other scales (1.1, 2.3) keep their own atom."""
    if is_static(a):
        return math.floor(int(a) * float(scale))
    from fractions import Fraction      # rarely needed: not imported by every `check`
    frac = Fraction(float(scale))
    if frac.numerator.bit_length() <= 20:
        return floordiv(mul(a, frac.numerator), frac.denominator)
    return Lin.of([(ScaledFloor(_lin(a), scale), 1)])


def nondecreasing(d: Dim) -> bool:
    """Whether a size never decreases as its symbols grow: positive coefficients over
    symbols, and floor divisions and positive scalings of such sizes."""
    if is_static(d):
        return True
    for atom, coef in d.terms:
        if coef < 0:
            return False
        if isinstance(atom, FloorDiv):
            if not nondecreasing(atom.num):
                return False
        elif isinstance(atom, ScaledFloor):
            if not (atom.scale >= 0 and nondecreasing(atom.num)):
                return False
        elif not isinstance(atom, Sym):
            return False        # a product of sizes: not judged here
    return True


def ceildiv(a: Dim, d: int) -> Dim:
    return floordiv(add(a, d - 1), d)


def same(a: Dim, b: Dim) -> bool | None:
    """True/False when equality is decided, None when it depends on the symbols."""
    if is_static(a) and is_static(b):
        return int(a) == int(b)
    if not is_static(a) and not is_static(b) and a == b:
        return True
    diff = sub(a, b)
    if is_static(diff):
        return diff == 0
    return None


def _atoms(a):
    """Every Sym (and Dyn) under an atom or a Lin."""
    if isinstance(a, Sym):
        yield a
    elif isinstance(a, Lin):
        for t, _ in a.terms:
            yield from _atoms(t)
    elif isinstance(a, (FloorDiv, ScaledFloor)):
        yield from _atoms(a.num)
    elif isinstance(a, Prod):
        for f in a.factors:
            yield from _atoms(f)


def dyn_atoms(d: Dim) -> list:
    """The data-dependent sizes (`Dyn`) that `d` mentions, each once, in order."""
    if is_static(d):
        return []
    out = {}
    for a in _atoms(d):
        if isinstance(a, Dyn):
            out.setdefault(a.name, a)
    return list(out.values())


def is_dynamic(d) -> bool:
    """Whether the dim mentions a data-dependent size (a `Dyn`), known only at run time."""
    return not is_static(d) and any(isinstance(a, Dyn) for a in _atoms(d))


def symbols(d: Dim) -> set:
    return set() if is_static(d) else d.symbols()


def evaluate(d: Dim, env: dict):
    return d if is_static(d) else d.eval(env)


def substitute(d: Dim, values: dict) -> Dim:
    """Replace symbols by ints where `values` gives them; the rest stay symbolic."""
    if is_static(d):
        return int(d)
    if not (d.symbols() & values.keys()):
        return d
    if d.symbols() <= values.keys():
        return int(d.eval(values))
    return _subst_lin(d, values)


def _subst_atom(a, values) -> Dim:
    if isinstance(a, Sym):
        return values.get(a.name, Lin.of([(a, 1)]))     # (a Dyn stays a Dyn)
    if isinstance(a, FloorDiv):
        return floordiv(_subst_lin(a.num, values), a.den)
    if isinstance(a, ScaledFloor):
        return scaled_floor(_subst_lin(a.num, values), a.scale)
    out: Dim = 1
    for f in a.factors:
        out = mul(out, _subst_atom(f, values))
    return out


def _subst_lin(lin: Lin, values) -> Dim:
    out: Dim = lin.const
    for a, c in lin.terms:
        out = add(out, mul(_subst_atom(a, values), c))
    return out


def fmt(d: Dim) -> str:
    return str(int(d)) if is_static(d) else str(d)


def fmt_shape(shape) -> str:
    return "[" + ", ".join(fmt(d) for d in shape) + "]"
