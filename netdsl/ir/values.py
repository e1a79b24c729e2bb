"""Compile-time values and their limits: blocks and layers as values, built-in functions,
and the guards that keep a spec from building absurdly large numbers, lists or sizes."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from ..errors import NameLookupError, TypeMismatchError, ValueRangeError, suggest
from ..frontend import ast as A
from . import dims as D
from .attrs import type_name
from .graph import Value
from .init import GAINS
from .naming import ModuleScope
from .registry import OpSpec

MAX_DEPTH = 64
MAX_INT = 2 ** 63 - 1     # compile-time integers are 64-bit
MAX_ITEMS = 100_000       # longest list, string or range() a spec may build
MAX_WEIGHT = 1_000_000    # most values in a list, counting those of nested lists
MAX_STEPS = 1_000_000     # statements executed while elaborating one network (loops, recursion)
INSTANCE_STEPS = 20       # what a block instantiation counts towards MAX_STEPS
MAX_DIM = 2 ** 31 - 1     # largest tensor dim
MAX_RANK = 32             # most dims an input may have
RECURSION_ROOM = 5000     # Python frames allowed while elaborating (see Elaborator.network)
PARAM_TYPES = ("int", "float", "bool", "str", "list", "block", "any")
DTYPES = {"f32": "float32"}


class _Bindable:
    """A layer or block value that can take more arguments before it is applied."""

    def bind(self, pos, kw: dict):
        return replace(self, args=tuple(self.args) + tuple(pos), kwargs={**self.kwargs, **kw})


@dataclass
class BlockRef(_Bindable):
    """A block as a value, possibly with some arguments already bound."""
    defn: A.BlockDef
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    type_label = "block"


@dataclass
class OpRef(_Bindable):
    """A built-in layer as a value, possibly with some arguments already bound."""
    spec: OpSpec
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    type_label = "layer"


@dataclass
class Builtin:
    name: str
    fn: object
    keywords: bool = False      # fn takes keyword arguments (fn(span, *pos, **kw))
    type_label = "function"


@dataclass(frozen=True)
class Init:
    """How a parameter starts: a `param` tensor's `= zeros()`, or a layer's `init =` /
    `bias_init =`. `scale` is the std (normal), the bound (uniform), the value (constant) or
    the gain (xavier_*); `a`, `mode` and `nonlinearity` are kaiming_*'s (torch.nn.init)."""
    kind: str
    scale: float = 0.0
    a: float = 0.0
    mode: str = "fan_in"
    nonlinearity: str = "leaky_relu"
    type_label = "init"


GAIN_NONLINEARITIES = tuple(GAINS)     # torch.nn.init.calculate_gain's nonlinearities
FAN_MODES = ("fan_in", "fan_out")
# each initialiser's parameters (name, default; _REQ: none) in torch.nn.init's order
_REQ = object()
INIT_SIGNATURES = {
    "zeros": (), "ones": (), "bilinear": (),
    "constant": (("value", _REQ),),
    "normal": (("std", _REQ),),
    "uniform": (("bound", _REQ),),
    "kaiming_normal": (("a", 0.0), ("mode", "fan_in"), ("nonlinearity", "leaky_relu")),
    "kaiming_uniform": (("a", 0.0), ("mode", "fan_in"), ("nonlinearity", "leaky_relu")),
    "xavier_normal": (("gain", 1.0),),
    "xavier_uniform": (("gain", 1.0),),
}


def _bind(name: str, names, args, kw, span) -> dict:
    """A keyword-taking built-in's arguments by name (the positional ones, at most len(names),
    first in `names` order), with the errors for unknown and repeated keywords."""
    given = dict(zip(names, args))
    for k, v in kw.items():
        if k not in names:
            raise NameLookupError(f"{name}() has no argument '{k}'" + suggest(k, names)
                                  + (f" (its arguments: {', '.join(names)})" if names
                                     else "; it takes none"), span)
        if k in given:
            raise TypeMismatchError(f"{name}(): argument '{k}' given twice", span)
        given[k] = v
    return given


def _init_builtin(kind: str):
    sig = INIT_SIGNATURES[kind]
    names = [n for n, _ in sig]

    def call(span, *args, **kw):
        if len(args) > len(sig):
            want = "no arguments" if not sig else f"at most {len(sig)} argument{'s' * (len(sig) != 1)}"
            raise TypeMismatchError(f"{kind}() takes {want}, got {len(args)} argument"
                                    f"{'s' * (len(args) != 1)}", span)
        given = _bind(kind, names, args, kw, span)
        vals = {}
        for n, default in sig:
            if n not in given:
                if default is _REQ:
                    raise TypeMismatchError(f"{kind}() needs its argument '{n}' (a number)", span)
                vals[n] = default
                continue
            v = given[n]
            if n in ("mode", "nonlinearity"):
                choices = FAN_MODES if n == "mode" else GAIN_NONLINEARITIES
                if not isinstance(v, str) or v not in choices:
                    shown = repr(v) if isinstance(v, str) else type_name(v)
                    raise ValueRangeError(f"{kind}(): '{n}' must be one of "
                                          f"{', '.join(repr(c) for c in choices)}, got {shown}"
                                          + (suggest(v, choices) if isinstance(v, str) else ""), span)
                vals[n] = v
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeMismatchError(f"{kind}(): '{n}' must be a number, got {type_name(v)}", span)
            v = float(v)
            if v != v or v in (float("inf"), float("-inf")):
                raise ValueRangeError(f"{kind}(): '{n}' must be a finite number, got {v!r}", span)
            if n in ("std", "bound", "gain") and v < 0:
                raise ValueRangeError(f"{kind}() needs a non-negative number, got {given[n]!r}", span)
            vals[n] = v
        if kind.startswith("kaiming"):
            return Init(kind, 0.0, vals["a"], vals["mode"], vals["nonlinearity"])
        if not sig:
            return Init(kind)
        return Init(kind, vals[names[0]])
    return call


class _Return(Exception):
    def __init__(self, value):
        self.value = value


class Frame:
    """One block instantiation (or the network body) being executed."""

    def __init__(self, env: dict, mscope: ModuleScope, kind: str, depth: int, trace: tuple):
        self.env = env
        self.mscope = mscope
        self.kind = kind          # "network", "chain" or "dag"
        self.depth = depth
        self.trace = trace
        self.cursor: Value | None = None
        self.ns: dict = {}        # the namespace (file) whose names this body sees


def _check_int(v, span, what):
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeMismatchError(f"{what} must be an int, got {type_name(v)}", span)
    return v


def _builtin_range(span, *args):
    if not 1 <= len(args) <= 3:
        raise TypeMismatchError(f"range() takes 1 to 3 arguments, got {len(args)}", span)
    for a in args:
        _check_int(a, span, "range() argument")
    if len(args) == 3 and args[2] == 0:
        raise ValueRangeError("range() step must not be zero", span)
    r = range(*args)
    n = max(0, (r.stop - r.start + r.step - (1 if r.step > 0 else -1)) // r.step)  # len(r) may overflow
    if n > MAX_ITEMS:
        raise ValueRangeError(f"range() of {n} items is too long to unroll (at most {MAX_ITEMS:,})", span)
    return list(r)


def _builtin_len(span, *args):
    if len(args) != 1:
        raise TypeMismatchError(f"len() takes 1 argument, got {len(args)}", span)
    v = args[0]
    if isinstance(v, Value):
        return len(v.shape)
    if not isinstance(v, (list, tuple, str)):
        raise TypeMismatchError(f"len() needs a list, string or tensor, got {type_name(v)}", span)
    return len(v)


def _numeric_builtin(fn, name):
    def call(span, *args):
        vals = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
        if not vals:
            raise TypeMismatchError(f"{name}() needs at least one value", span)
        for v in vals:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeMismatchError(f"{name}() needs numbers, got {type_name(v)}", span)
        return _checked_number(fn(vals), span, ())
    return call


def _convert(fn, name, accepts):
    def call(span, *args):
        if len(args) != 1 or not isinstance(args[0], accepts) or isinstance(args[0], list):
            raise TypeMismatchError(f"{name}() takes one {' or '.join(t.__name__ for t in accepts)}", span)
        try:
            out = fn(args[0])
        except (ValueError, OverflowError) as e:
            raise ValueRangeError(f"{name}(): {e}", span) from None
        return _checked_number(out, span, ())
    return call


def _real(name: str, what: str, v, span) -> float:
    """A number argument of a math built-in (ints and floats; not bools or symbolic sizes)."""
    if isinstance(v, D.Lin):
        raise TypeMismatchError(f"{name}(): {what} depends on the input size '{D.fmt(v)}', which is not "
                                "known at compile time", span)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeMismatchError(f"{name}(): {what} must be a number, got {type_name(v)}", span)
    return v


def _arity(name: str, args, lo: int, hi: int, span):
    if not lo <= len(args) <= hi:
        want = f"{lo}" if lo == hi else f"{lo} or {hi}"
        raise TypeMismatchError(f"{name}() takes {want} argument{'s' * (hi != 1)}, got {len(args)}", span)


def _to_int(name: str, fn):
    """round, ceil, floor: a number to the int Python's round / math.ceil / math.floor give."""
    def call(span, *args):
        _arity(name, args, 1, 1, span)
        v = _real(name, "its argument", args[0], span)
        try:
            out = fn(v)
        except (ValueError, OverflowError):
            raise ValueRangeError(f"{name}() of {v!r} is not an integer", span) from None
        return _checked_number(out, span, ())
    return call


def _builtin_sqrt(span, *args):
    _arity("sqrt", args, 1, 1, span)
    v = _real("sqrt", "its argument", args[0], span)
    if v < 0:
        raise ValueRangeError(f"sqrt() of a negative number ({v!r})", span)
    try:
        return math.sqrt(v)
    except OverflowError:
        raise ValueRangeError("sqrt(): number too large", span) from None


def _builtin_log(span, *args):
    _arity("log", args, 1, 2, span)
    v = _real("log", "its argument", args[0], span)
    if v <= 0:
        raise ValueRangeError(f"log() of a number that is not positive ({v!r})", span)
    if len(args) == 1:
        return math.log(v)
    base = _real("log", "the base", args[1], span)
    if base <= 0 or base == 1:
        raise ValueRangeError(f"log(): the base must be positive and not 1, got {base!r}", span)
    return math.log(v, base)


def _builtin_make_divisible(span, *args, **kw):
    """torchvision's _make_divisible(v, divisor, min_value=None): v rounded to the nearest
    multiple of divisor, at least min_value (default divisor), and not more than 10% below v."""
    if len(args) > 3:
        raise TypeMismatchError(f"make_divisible() takes at most 3 arguments, got {len(args)}", span)
    given = _bind("make_divisible", ("v", "divisor", "min_value"), args, kw, span)
    if "v" not in given:
        raise TypeMismatchError("make_divisible() needs its argument 'v' (a number)", span)
    v = _real("make_divisible", "'v'", given["v"], span)
    divisor = given.get("divisor", 8)
    if isinstance(divisor, bool) or not isinstance(divisor, int):
        raise TypeMismatchError(f"make_divisible(): 'divisor' must be an int, got {type_name(divisor)}", span)
    if divisor <= 0:
        raise ValueRangeError(f"make_divisible(): 'divisor' must be positive, got {divisor}", span)
    min_value = given.get("min_value", divisor)
    if isinstance(min_value, bool) or not isinstance(min_value, int):
        raise TypeMismatchError(f"make_divisible(): 'min_value' must be an int, got {type_name(min_value)}", span)
    try:
        new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    except (ValueError, OverflowError):
        raise ValueRangeError(f"make_divisible() of {v!r} is not a size", span) from None
    if new_v < 0.9 * v:         # rounding down must not lose more than 10%
        new_v += divisor
    return _checked_number(new_v, span, ())


def _checked_number(v, span, trace):
    """Compile-time ints are 64-bit: beyond that lies only runaway arithmetic (x = x * x in a loop)."""
    if isinstance(v, int) and not isinstance(v, bool) and not -MAX_INT <= v <= MAX_INT:
        raise ValueRangeError("integer out of range: compile-time integers are limited to 64 bits",
                              span, trace)
    if isinstance(v, (str, list, tuple)) and len(v) > MAX_ITEMS:
        raise ValueRangeError(f"{type_name(v)} of {len(v)} items is too long (at most {MAX_ITEMS:,})",
                              span, trace)
    return v


def _dim_too_complex(d) -> bool:
    """Whether a symbolic size has grown absurdly (e.g. ``s = s * s`` in a loop)."""
    if not isinstance(d, D.Lin):
        return isinstance(d, int) and not -MAX_INT <= d <= MAX_INT
    budget = 256
    stack = [d]
    while stack:
        x = stack.pop()
        budget -= 1
        if budget < 0:
            return True
        if isinstance(x, D.Lin):
            if not -MAX_INT <= x.const <= MAX_INT:
                return True
            for atom, coef in x.terms:
                if not -MAX_INT <= coef <= MAX_INT:
                    return True
                stack.append(atom)
        elif isinstance(x, D.FloorDiv):
            if x.den > MAX_INT:
                return True
            stack.append(x.num)
        elif isinstance(x, D.Prod):
            stack.extend(x.factors)
    return False


def _builtin_error(span, *args):
    """`error("message")`: a spec's own located error, e.g. for a configuration it does not
    support (a block's `if version != 1 and version != 2 { error("...") }`)."""
    if len(args) != 1 or not isinstance(args[0], str):
        raise TypeMismatchError("error() takes one argument, the message (a string)", span)
    raise ValueRangeError(args[0], span)


BUILTINS = {
    "error": Builtin("error", _builtin_error),
    "range": Builtin("range", _builtin_range),
    "len": Builtin("len", _builtin_len),
    "min": Builtin("min", _numeric_builtin(min, "min")),
    "max": Builtin("max", _numeric_builtin(max, "max")),
    "sum": Builtin("sum", _numeric_builtin(sum, "sum")),
    "abs": Builtin("abs", _convert(abs, "abs", (int, float))),
    "int": Builtin("int", _convert(int, "int", (int, float, str))),
    "float": Builtin("float", _convert(float, "float", (int, float, str))),
    "str": Builtin("str", _convert(str, "str", (int, float, str, bool))),
    "type": Builtin("type", lambda span, *args: _builtin_type(span, *args)),
    "round": Builtin("round", _to_int("round", round)),       # half to even, as Python and torch.round
    "ceil": Builtin("ceil", _to_int("ceil", math.ceil)),
    "floor": Builtin("floor", _to_int("floor", math.floor)),
    "sqrt": Builtin("sqrt", _builtin_sqrt),
    "log": Builtin("log", _builtin_log),
    "make_divisible": Builtin("make_divisible", _builtin_make_divisible, keywords=True),
}
BUILTINS.update({kind: Builtin(kind, _init_builtin(kind), keywords=True) for kind in INIT_SIGNATURES})


def _builtin_type(span, *args):
    if len(args) != 1:
        raise TypeMismatchError(f"type() takes 1 argument, got {len(args)}", span)
    v = args[0]
    return "int" if isinstance(v, D.Lin) else type_name(v)


TENSOR_ATTRS = ("shape", "channels", "rank")


def _a(t: str) -> str:
    return ("an " if t[:1] in "aeiou" else "a ") + t
