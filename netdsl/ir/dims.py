"""Tensor dimensions: plain ints, or symbolic expressions over input dims (N, H, W...).

A symbolic dim is kept in a canonical form so that equal sizes compare equal:
an integer linear combination of atoms (a symbol, a floor division of such a
combination by a positive int, or a product of atoms) plus a constant. Floor
divisions pull out the divisible part (``(2H + 3) // 2 = H + 1 + (1) // 2``
becomes ``H + 1``) and nested divisions fuse (``H // 2 // 2 = H // 4``), which is
enough for convolution, pooling and upsampling arithmetic to simplify to the
forms people write by hand. Every expression can be evaluated on numpy arrays of
candidate symbol values; the constraint solver uses that.
"""
from __future__ import annotations

from typing import Union

import numpy as np


class Expr:
    """Base class of symbolic dims; see `Lin`."""


class Sym(Expr):
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def key(self):
        return ("s", self.name)

    def eval(self, env):
        return env[self.name]

    def symbols(self):
        return {self.name}

    def __str__(self):
        return self.name


class FloorDiv(Expr):
    __slots__ = ("num", "den")

    def __init__(self, num: "Lin", den: int):
        self.num, self.den = num, den

    def key(self):
        return ("f", self.num.key(), self.den)

    def eval(self, env):
        return np.floor_divide(self.num.eval(env), self.den)

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


class Lin(Expr):
    """sum(coef * atom) + const, with non-zero coefficients, sorted by atom."""
    __slots__ = ("terms", "const", "_key")

    def __init__(self, terms: dict, const: int = 0):
        items = [(a, c) for a, c in terms.values() if c != 0] if terms and isinstance(
            next(iter(terms.values())), tuple) else []
        self.terms = tuple(sorted(items, key=lambda ac: ac[0].key()))
        self.const = const
        self._key = (tuple((a.key(), c) for a, c in self.terms), const)

    @staticmethod
    def of(items, const=0) -> "Lin":
        acc: dict = {}
        for atom, coef in items:
            k = atom.key()
            prev = acc.get(k, (atom, 0))[1]
            acc[k] = (atom, prev + coef)
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
        return set().union(*(a.symbols() for a, _ in self.terms)) if self.terms else set()

    def __str__(self):
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


def _lin(d: Dim) -> Lin:
    return Lin.of([], d) if isinstance(d, int) else d


def _norm(lin: Lin) -> Dim:
    return lin.const if not lin.terms else lin


def is_static(d) -> bool:
    return isinstance(d, (int, np.integer))


def add(a: Dim, b: Dim) -> Dim:
    if is_static(a) and is_static(b):
        return int(a) + int(b)
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
        return values.get(a.name, sym(a.name))
    if isinstance(a, FloorDiv):
        return floordiv(_subst_lin(a.num, values), a.den)
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
