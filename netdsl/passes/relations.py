"""Constraints relating several input symbols (``W // 2 ≥ H``, ``H = W``), checked jointly.

Single-symbol constraints are solved first, into one admissible-size mask per symbol
(`constraints.solve`). The constraints over several symbols are then split into groups
that share symbols, and each group is checked by enumerating every tuple of admissible
sizes at once (numpy, in chunks, stopping at the first tuple that satisfies them all).

Bound: a group is enumerated exactly while the product of its symbols' admissible-size
counts is at most ``JOINT_BUDGET`` (2**24: any two symbols over all of 1..4096). A larger
group (three or more symbols with many admissible sizes) is searched on the smallest
sizes of each symbol only; if that window holds no solution, nothing is concluded and the
group's two-symbol constraints are checked one at a time, as a weaker fallback.

When a group has no solution, the error is located at the first constraint (in the order
the network records them) whose addition leaves no solution, and names the earlier
relations it conflicts with (a minimal set of them).
"""
from __future__ import annotations

import numpy as np

JOINT_BUDGET = 1 << 24     # size tuples enumerated per group of related symbols
_CHUNK = 1 << 18           # tuples evaluated per numpy step


def check_relations(multi: list, masks: dict) -> None:
    """Raise a ShapeError when some group of multi-symbol constraints has no solution
    among the sizes each symbol admits on its own."""
    for group in _groups(multi):
        names = sorted(set().union(*(c.symbols() for c in group)))
        values, exact = _window(names, masks)
        bits = _search(group, names, values)
        if bits is None:
            continue
        if not exact:
            _check_one_at_a_time(group, masks)
            continue
        raise _conflict(group, names, bits)


def _groups(multi: list) -> list:
    """Constraints that (transitively) share a symbol, in recorded order, duplicates dropped."""
    parent: dict = {}

    def find(s):
        while parent.setdefault(s, s) != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    unique, seen = [], set()
    for c in multi:
        key = (c.kind, str(c.a), str(c.b), c.r)
        if key in seen:
            continue
        seen.add(key)
        unique.append(c)
        first, *rest = sorted(c.symbols())
        for s in rest:
            parent[find(s)] = find(first)
    groups: dict = {}
    for c in unique:
        groups.setdefault(find(next(iter(c.symbols()))), []).append(c)
    return list(groups.values())


def _window(names: list, masks: dict):
    """The candidate sizes of each symbol, and whether they are all of its admissible ones."""
    values = [np.flatnonzero(masks[s]) for s in names]
    total = 1
    for v in values:
        total *= len(v)
    if total <= JOINT_BUDGET:
        return values, True
    cap = 1
    while _product([min(len(v), cap + 1) for v in values]) <= JOINT_BUDGET:
        cap += 1
    return [v[:cap] for v in values], False


def _product(xs) -> int:
    out = 1
    for x in xs:
        out *= x
    return out


def _chunks(names: list, values: list):
    """Environments covering the whole window: the first symbol in slices, the others whole
    (each on its own broadcast axis)."""
    k = len(names)
    rest = _product(len(v) for v in values[1:])
    step = max(1, _CHUNK // max(rest, 1))
    others = {s: v.reshape((1,) + tuple(-1 if j == i else 1 for j in range(1, k)))
              for i, (s, v) in enumerate(zip(names[1:], values[1:]), start=1)}
    first = values[0]
    for i in range(0, len(first), step):
        env = dict(others)
        env[names[0]] = first[i:i + step].reshape((-1,) + (1,) * (k - 1))
        yield env


def _holds(c, env, shape) -> np.ndarray:
    return np.broadcast_to(np.asarray(c.holds(env)), shape)


def _search(group: list, names: list, values: list):
    """None when some size tuple in the window satisfies the whole group (the usual case,
    found in the first chunk); else, for each constraint, the tuples where it holds, as
    packed bits (to find the conflicting ones without evaluating anything twice)."""
    if any(len(v) == 0 for v in values):
        return [np.zeros(0, dtype=np.uint8) for _ in group]
    parts: list = [[] for _ in group]
    for env in _chunks(names, values):
        shape = np.broadcast_shapes(*(np.shape(v) for v in env.values()))
        ok = np.ones(shape, dtype=bool)
        for i, c in enumerate(group):
            holds = _holds(c, env, shape)
            ok &= holds
            parts[i].append(np.packbits(holds, axis=None))
        if ok.any():
            return None
    return [np.concatenate(p) for p in parts]


def _conflict(group: list, names: list, bits: list):
    """The error for an unsatisfiable group: at the first constraint that empties the set of
    solutions, naming a minimal set of the earlier ones it conflicts with."""
    def satisfiable(indices) -> bool:
        acc = None
        for i in indices:
            acc = bits[i] if acc is None else acc & bits[i]
        return acc is None or bool(acc.any())

    prefix: list = []
    culprit = len(group) - 1
    for i in range(len(group)):
        if not satisfiable(prefix + [i]):
            culprit = i
            break
        prefix.append(i)
    core = list(prefix)
    for i in list(core):
        trial = [j for j in core if j != i]
        if not satisfiable(trial + [culprit]):
            core = trial
    return _error(group[culprit], [group[i] for i in core], names)


def _error(culprit, partners: list, names: list):
    from .constraints import _relation
    err = culprit.error()
    dims = " and ".join(sorted(culprit.symbols() | set().union(*(p.symbols() for p in partners))))
    if not partners:
        err.message += f" for every size of input dims {dims}"
        return err
    others = ", ".join(_relation(p) for p in partners)
    err.message += (f": no sizes of input dims {dims} satisfy {_relation(culprit)} together with "
                    f"{others}")
    err.notes = err.notes + tuple(
        f"{_relation(p)} is required by {p.message}" + (f" at {p.span.location()}" if p.span else "")
        for p in partners)
    return err


def _check_one_at_a_time(group: list, masks: dict) -> None:
    """The weaker check for a group too large to enumerate: each two-symbol constraint alone."""
    for c in group:
        names = sorted(c.symbols())
        if len(names) != 2:
            continue
        values = [np.flatnonzero(masks[s]) for s in names]
        if _search([c], names, values) is not None:
            raise _error(c, [], names)
