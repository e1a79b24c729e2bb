"""Symbolic dims print as integer Python that means what they are: messages and summaries show
them, and users read them as arithmetic. `-(H // 2) + H` must not print as `-H // 2 + H`."""
from hypothesis import given, settings
from hypothesis import strategies as st

from netdsl.ir import dims as D

H, W = D.sym("H"), D.sym("W")


def _build(ops):
    d = H
    for op, k in ops:
        if op == "add":
            d = D.add(d, k)
        elif op == "sub_from":        # k - d: negates the terms, floor divisions included
            d = D.sub(k, d)
        elif op == "mul":
            d = D.mul(d, k)
        elif op == "div":
            d = D.floordiv(d, k)
        elif op == "plus_w":
            d = D.add(d, D.floordiv(W, k))
        else:
            d = D.sub(d, D.floordiv(H, k))
    return d


def test_a_negated_floor_division_keeps_its_brackets():
    d = D.sub(H, D.floordiv(H, 2))
    assert D.evaluate(d, {"H": 5}) == 3
    assert eval(D.fmt(d), {"H": 5}) == 3, D.fmt(d)
    d = D.sub(0, D.floordiv(H, 2))
    assert D.fmt(d) == "-(H // 2)"


@settings(derandomize=True, max_examples=300, deadline=None, database=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "sub_from", "mul", "div", "plus_w", "minus_half"]),
                          st.integers(1, 5)), min_size=1, max_size=6),
       st.integers(1, 200), st.integers(1, 200))
def test_printed_dims_evaluate_as_python(ops, h, w):
    d = _build(ops)
    if D.is_static(d):
        return
    env = {"H": h, "W": w}
    assert eval(D.fmt(d), {}, env) == D.evaluate(d, env), D.fmt(d)
