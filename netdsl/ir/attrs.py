"""Type-checking and normalising op attribute values."""
from __future__ import annotations

import math

from ..errors import TypeMismatchError, ValueRangeError
from .dims import Expr
from .registry import AttrSpec


def type_name(v) -> str:
    from .graph import Value
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    if isinstance(v, (list, tuple)):
        return "list"
    if isinstance(v, Value):
        return "tensor"
    if v is None:
        return "none"
    if isinstance(v, Expr):
        return "symbolic size"
    return getattr(v, "type_label", type(v).__name__)


# Sizes and other int attributes beyond this are surely mistakes, and would overflow
# the 64-bit sizes of the targets once multiplied together.
MAX_INT = 2 ** 31 - 1


def _int(v, op, a, span):
    if isinstance(v, Expr):
        raise TypeMismatchError(f"{op}: '{a.name}' must be known at compile time, but it depends on "
                                f"the input size ({v})", span)
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeMismatchError(f"{op}: '{a.name}' must be an int, got {type_name(v)} {_show(v)}".rstrip(),
                                span)
    if abs(v) > MAX_INT:
        raise ValueRangeError(f"{op}: '{a.name}' is {v}, which is out of range (at most {MAX_INT:,})", span)
    return v


def _float(v, op, a, span):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeMismatchError(f"{op}: '{a.name}' must be a number, got {type_name(v)} {_show(v)}".rstrip(),
                                span)
    try:
        out = float(v)
    except OverflowError:
        out = math.inf
    if not math.isfinite(out):
        raise ValueRangeError(f"{op}: '{a.name}' must be a finite number, got {_show(v)}", span)
    return out


def _show(v, depth: int = 0) -> str:
    """A short rendering of a value for messages (long strings and lists are elided)."""
    if isinstance(v, str):
        return repr(v) if len(v) <= 40 else repr(v[:37]) + "..."
    if isinstance(v, (bool, int, float)):
        return str(v).lower() if isinstance(v, bool) else str(v)
    if isinstance(v, (list, tuple)):
        if depth >= 3 and v:
            return "[...]"
        items = [_show(x, depth + 1) for x in v[:8]] + (["..."] if len(v) > 8 else [])
        return "[" + ", ".join(items) + "]"
    return ""


def _tuple(v, n, op, a, span):
    if isinstance(v, (list, tuple)):
        if len(v) != n:
            raise TypeMismatchError(f"{op}: '{a.name}' needs {n} values, got {len(v)}", span)
        return tuple(_int(x, op, a, span) for x in v)
    return (_int(v, op, a, span),) * n


def coerce(op: str, a: AttrSpec, v, span):
    """Check `v` against the attribute's kind; return the normalised value."""
    k = a.kind
    if v is None and a.default is None:
        return None
    if k == "int":
        out = _int(v, op, a, span)
    elif k == "float":
        out = _float(v, op, a, span)
    elif k == "bool":
        if not isinstance(v, bool):
            raise TypeMismatchError(f"{op}: '{a.name}' must be true or false, got {type_name(v)} {_show(v)}", span)
        out = v
    elif k == "str":
        if not isinstance(v, str):
            raise TypeMismatchError(f"{op}: '{a.name}' must be a string, got {type_name(v)} {_show(v)}", span)
        out = v
    elif k in ("pair", "single"):       # int or [int, int] -> (int, int); single: int or [int] -> (int,)
        out = _tuple(v, 2 if k == "pair" else 1, op, a, span)
    elif k in ("pair_or_str", "single_or_str"):   # padding: an int, a tuple or 'same'/'valid'
        if isinstance(v, str):
            out = v
        else:
            out = _tuple(v, 2 if k == "pair_or_str" else 1, op, a, span)
    elif k == "ints":
        if not isinstance(v, (list, tuple)):
            v = [v]
        out = tuple(_int(x, op, a, span) for x in v)
    elif k == "floats":
        if not isinstance(v, (list, tuple)):
            v = [v]
        out = tuple(float(coerce(op, AttrSpec(a.name, "float"), x, span)) for x in v)
    elif k == "init":                   # an initialiser: kaiming_normal(), zeros(), ...
        if getattr(v, "type_label", None) != "init":
            called = getattr(v, "name", "") if getattr(v, "type_label", None) == "function" else ""
            hint = f" (call it: {called}())" if called else ""
            raise TypeMismatchError(f"{op}: '{a.name}' must be an initialiser such as zeros(), "
                                    f"normal(0.01) or kaiming_normal(), got {type_name(v)} {_show(v)}".rstrip()
                                    + hint, span)
        out = v
    elif k == "any":
        out = v
    else:
        raise AssertionError(f"unknown attribute kind {k}")
    if a.choices and out not in a.choices:
        opts = ", ".join(repr(c) for c in a.choices)
        raise ValueRangeError(f"{op}: '{a.name}' must be one of {opts}, got {_show(out)}", span)
    _check_range(op, a, out, span)
    return out


def _check_range(op, a, out, span):
    if not a.check or isinstance(out, str):
        return
    vals = out if isinstance(out, tuple) else (out,)
    for x in vals:
        if a.check == "positive" and not x > 0:
            raise ValueRangeError(f"{op}: '{a.name}' must be positive, got {_show(out)}", span)
        if a.check == "nonneg" and not x >= 0:
            raise ValueRangeError(f"{op}: '{a.name}' must be non-negative, got {_show(out)}", span)
        if a.check == "prob" and not 0 <= x < 1:
            raise ValueRangeError(f"{op}: '{a.name}' must be in [0, 1), got {_show(out)}", span)
        if a.check == "unit" and not 0 <= x <= 1:
            raise ValueRangeError(f"{op}: '{a.name}' must be in [0, 1], got {_show(out)}", span)
