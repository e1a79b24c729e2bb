"""Elaboration: AST -> IR graph.

Runs the compile-time language (parameters, expressions, if/for, block
instantiation, recursion) and builds the graph as it goes; each op's shape rule
runs as soon as the op is applied, so shape queries (``x.channels``) and shape
errors happen in source order, at the right place.
"""
from __future__ import annotations

import keyword
import math
import sys
from dataclasses import dataclass, field

from ..errors import (NameLookupError, NetDSLError, RecursionLimitError, ShapeError, Span,
                      TypeMismatchError, UsageError, ValueRangeError, suggest)
from ..frontend import ast as A
from ..passes.constraints import ShapeCtx
from . import dims as D
from .attrs import coerce, type_name
from .graph import Graph, Node, Value
from .naming import ModuleScope, render, snake
from .program import Program
from .registry import OpSpec, all_ops, get

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


@dataclass
class BlockRef:
    """A block as a value, possibly with some arguments already bound."""
    defn: A.BlockDef
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    type_label = "block"


@dataclass
class OpRef:
    """A built-in layer as a value, possibly with some arguments already bound."""
    spec: OpSpec
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    type_label = "layer"


@dataclass
class Builtin:
    name: str
    fn: object
    type_label = "function"


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


BUILTINS = {
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
}


def _builtin_type(span, *args):
    if len(args) != 1:
        raise TypeMismatchError(f"type() takes 1 argument, got {len(args)}", span)
    v = args[0]
    return "int" if isinstance(v, D.Lin) else type_name(v)

TENSOR_ATTRS = ("shape", "channels", "rank")


class Elaborator:
    def __init__(self, program: Program):
        self.program = program
        self.ops = all_ops()

    # ---- entry point ----------------------------------------------------------
    def network(self, name: str, overrides: dict | None = None, inputs: dict | None = None,
                override_spans: dict | None = None) -> Graph:
        """Build the graph of network `name`. `overrides` are parameter values;
        `inputs` maps input names to shapes (tuples of ints) replacing the declared ones."""
        self._where: tuple = (None, ())
        self._steps = 0
        self._weights: dict = {}
        # Elaboration recurses along the AST and through block instantiations (64 levels at
        # most, each several frames deep): give it room beyond Python's default of 1000.
        old_limit = sys.getrecursionlimit()
        if old_limit < RECURSION_ROOM:
            sys.setrecursionlimit(RECURSION_ROOM)
        try:
            return self._network(name, overrides, inputs)
        except RecursionError:
            # The parser bounds how deeply one body nests and MAX_DEPTH bounds block
            # instantiation; only their combination can get here. Report it at the
            # statement being elaborated when Python's stack ran out.
            span, trace = self._where
            raise RecursionLimitError("the spec nests too deeply to elaborate (block instantiations, "
                                      "groups, statements and expressions together); flatten some "
                                      "of it", span, trace) from None
        finally:
            if old_limit < RECURSION_ROOM:
                sys.setrecursionlimit(old_limit)

    def _network(self, name: str, overrides: dict | None, inputs: dict | None) -> Graph:
        overrides = dict(overrides or {})
        inputs = dict(inputs or {})
        defn, bound_args, bound_kwargs, alias_span = self._resolve_network(name)
        self.graph = Graph(name=name, doc=defn.doc, span=defn.span)
        self.symbols: list[str] = []
        self.hints: dict[int, str] = {}
        self.paths: dict[int, tuple] = {}
        self.scopes: list[ModuleScope] = []
        env = self._bind(defn.name, defn.params, bound_args, bound_kwargs, alias_span or defn.span,
                         overrides=overrides, ns=defn.ns)
        self.graph.params = {k: v for k, v in env.items()}
        root = ModuleScope(())
        self.scopes.append(root)
        frame = Frame(env, root, "network", 0, ())
        frame.ns = defn.ns
        self._given_inputs = inputs
        self._seen_inputs: set[str] = set()
        try:
            self._exec_body(defn.body, frame)
        except _Return as r:
            raise TypeMismatchError("'return' is for blocks; a network declares 'output's",
                                    r.value[1]) from None
        unknown = set(inputs) - self._seen_inputs
        if unknown:
            names = ", ".join(v.name for v in self.graph.inputs)
            bad = sorted(unknown)[0]
            raise UsageError(f"network {name} has no input '{bad}' (its inputs: {names or 'none'})"
                             + suggest(bad, [v.name for v in self.graph.inputs]), defn.span)
        if not self.graph.outputs:
            raise NameLookupError(f"network {name} declares no output", defn.span)
        for s in self.scopes:
            s.close()
        self._finish()
        return self.graph

    def _resolve_network(self, name):
        args, kwargs, alias_span = (), {}, None
        seen = []
        nets = self.program.networks
        while True:
            if name not in nets:
                raise NameLookupError(f"no network '{name}'" + suggest(name, nets) +
                                      (f"; networks here: {', '.join(sorted(nets))}" if nets else ""),
                                      alias_span)
            defn = nets[name]
            if isinstance(defn, A.NetworkDef):
                return defn, args, kwargs, alias_span
            if name in seen:
                raise NameLookupError(f"network '{name}' is defined in terms of itself", defn.span)
            seen.append(name)
            frame = Frame({}, ModuleScope(()), "network", 0, ())
            frame.ns = defn.ns
            pos, kw = self._eval_args(defn.args, frame)
            # arguments of an outer alias apply on top of the inner alias's
            args = tuple(pos) + tuple(args)
            kwargs = {**kw, **kwargs}
            alias_span = alias_span or defn.span
            name = defn.target
            nets = {k: v for k, v in defn.ns.items() if not isinstance(v, A.BlockDef)}

    # ---- finishing ----------------------------------------------------------------
    def _finish(self):
        g = self.graph
        used: set[str] = set()
        resume: dict[str, int] = {}     # names are never freed: each base's search resumes

        def unique(base: str) -> str:
            base = base.replace(".", "_") or "t"
            if not (base[0].isalpha() or base[0] == "_") or keyword.iskeyword(base):
                base = "t_" + base
            k = resume.get(base, 0)
            name = f"{base}_{k}" if k else base
            while name in used:
                k += 1
                name = f"{base}_{k}"
            resume[base] = k
            used.add(name)
            return name

        for v in g.inputs:
            used.add(v.name)
        out_names = {id(v): n for n, v in reversed(g.outputs)}
        for n in g.nodes:
            n.path = render(n.path)
        for n in g.nodes:
            for i, v in enumerate(n.outputs):
                if id(v) in out_names and out_names[id(v)] not in used:
                    v.name = out_names[id(v)]
                    used.add(v.name)
                else:
                    hint = self.hints.get(id(v)) or (n.path + (f"_{i}" if len(n.outputs) > 1 else ""))
                    v.name = unique(hint)

    # ---- parameters and arguments ----------------------------------------------------
    def _bind(self, owner: str, params: list, args, kwargs, span, overrides=None, ns=None,
              trace=()) -> dict:
        env: dict = {}
        names = [p.name for p in params]
        if len(args) > len(params):
            raise TypeMismatchError(f"{owner} takes {len(params)} argument{'s' * (len(params) != 1)}, "
                                    f"got {len(args)}", span, trace)
        given = dict(zip(names, args))
        for k, v in kwargs.items():
            if k not in names:
                raise NameLookupError(f"{owner} has no parameter '{k}'" + suggest(k, names), span, trace)
            if k in given:
                raise TypeMismatchError(f"{owner}: parameter '{k}' given twice", span, trace)
            given[k] = v
        overrides = overrides or {}
        for k in overrides:
            if k not in names:
                raise UsageError(f"{owner} has no parameter '{k}'" + suggest(k, names)
                                 + (f" (its parameters: {', '.join(names)})" if names else ""), span)
        for p in params:
            if p.type is not None and p.type not in PARAM_TYPES:
                raise NameLookupError(f"unknown type '{p.type}'" + suggest(p.type, PARAM_TYPES)
                                      + f" (types: {', '.join(PARAM_TYPES)})", p.span)
            if p.name in overrides:
                value = overrides[p.name]
                if isinstance(value, _Deferred):
                    value = value.evaluate(self)
                self._check_type(owner, p, value, p.span, override=True)
            elif p.name in given:
                value = given[p.name]
                self._check_type(owner, p, value, span, trace=trace)
            elif p.default is not None:
                frame = Frame(dict(env), ModuleScope(()), "network", 0, trace)
                frame.ns = ns or {}
                value = self._eval(p.default, frame)
                self._check_type(owner, p, value, p.default.span)
            else:
                raise TypeMismatchError(f"{owner}: missing argument '{p.name}'", span, trace)
            if p.type == "float" and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            env[p.name] = value
        return env

    def _check_type(self, owner, p: A.Param, value, span, override=False, trace=()):
        t = p.type
        if t is None or t == "any":
            return
        ok = {
            "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            "bool": lambda v: isinstance(v, bool),
            "str": lambda v: isinstance(v, str),
            "list": lambda v: isinstance(v, (list, tuple)),
            "block": lambda v: isinstance(v, (BlockRef, OpRef)),
        }[t](value)
        if not ok:
            what = f"--set {p.name}" if override else f"{owner}: parameter '{p.name}'"
            raise TypeMismatchError(f"{what} must be {_a(t)}, got {type_name(value)}", span, trace)

    def _eval_args(self, args: list, frame: Frame):
        pos, kw = [], {}
        for a in args:
            v = self._eval(a.value, frame)
            if a.name is None:
                if kw:
                    raise TypeMismatchError("positional argument after keyword argument", a.span, frame.trace)
                pos.append(v)
            else:
                if a.name in kw:
                    raise TypeMismatchError(f"argument '{a.name}' given twice", a.span, frame.trace)
                kw[a.name] = v
        return pos, kw

    # ---- statements ---------------------------------------------------------------
    def _exec_body(self, stmts: list, frame: Frame):
        for st in stmts:
            self._exec(st, frame)

    def _exec(self, st, frame: Frame):
        self._where = (st.span, frame.trace)
        self._steps += 1
        if self._steps > MAX_STEPS:
            raise ValueRangeError(f"elaboration takes too long: more than {MAX_STEPS:,} statements run "
                                  "(a loop or a recursion far too large?)", st.span, frame.trace)
        if isinstance(st, A.LayerStmt):
            if frame.cursor is None:
                raise ShapeError("no tensor flows into this layer: declare an input first", st.span,
                                 frame.trace)
            frame.cursor = self._apply_stage(st.stage, frame.cursor, frame)
        elif isinstance(st, A.Assign):
            value = self._eval(st.value, frame)
            if len(st.names) == 1:
                self._assign(st.names[0], value, frame, st.span)
            else:
                if not isinstance(value, (tuple, list)) or len(value) != len(st.names):
                    got = len(value) if isinstance(value, (tuple, list)) else 1
                    raise TypeMismatchError(f"cannot unpack {got} value{'s' * (got != 1)} into "
                                            f"{len(st.names)} names", st.span, frame.trace)
                for n, v in zip(st.names, value):
                    self._assign(n, v, frame, st.span)
        elif isinstance(st, A.If):
            for cond, body in st.branches:
                if self._truth(self._eval(cond, frame), cond.span, frame):
                    self._exec_body(body, frame)
                    return
            if st.orelse is not None:
                self._exec_body(st.orelse, frame)
        elif isinstance(st, A.For):
            seq = self._eval(st.iterable, frame)
            if not isinstance(seq, (list, tuple)):
                raise TypeMismatchError(f"for needs a list to loop over, got {type_name(seq)}",
                                        st.iterable.span, frame.trace)
            for item in seq:
                frame.env[st.var] = item
                self._exec_body(st.body, frame)
        elif isinstance(st, A.Return):
            if frame.kind == "network":
                raise TypeMismatchError("'return' is for blocks; a network declares 'output's",
                                        st.span, frame.trace)
            vals = [self._eval(v, frame) for v in st.values]
            for v, e in zip(vals, st.values):
                if not isinstance(v, Value):
                    raise TypeMismatchError(f"a block returns tensors, got {type_name(v)}", e.span,
                                            frame.trace)
            raise _Return((vals[0] if len(vals) == 1 else tuple(vals), st.span))
        elif isinstance(st, A.InputDecl):
            self._input(st, frame)
        elif isinstance(st, A.OutputDecl):
            self._output(st, frame)
        else:  # pragma: no cover - the grammar has no other statements
            raise AssertionError(type(st))

    def _assign(self, name: str, value, frame: Frame, span: Span | None):
        if name in self.ops or name in BUILTINS:
            raise NameLookupError(f"cannot assign to '{name}': it names a built-in", span, frame.trace)
        frame.env[name] = value
        if isinstance(value, Value):
            self.hints.setdefault(id(value), name)
            frame.cursor = value

    def _input(self, st: A.InputDecl, frame: Frame):
        if frame.kind != "network":
            raise TypeMismatchError("'input' declarations belong in a network; a block lists its "
                                    "inputs in its signature", st.span, frame.trace)
        if st.dtype not in DTYPES:
            raise NameLookupError(f"unknown element type '{st.dtype}'" + suggest(st.dtype, DTYPES)
                                  + f" (supported: {', '.join(DTYPES)})", st.span)
        if any(v.name == st.name for v in self.graph.inputs):
            raise NameLookupError(f"input '{st.name}' declared twice", st.span)
        declared = []
        for d in st.dims:
            if isinstance(d, A.Var) and d.name not in frame.env:   # an unbound name: a symbolic size
                declared.append(d.name)
                continue
            v = self._eval(d, frame)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeMismatchError(f"an input dim must be an int or a symbol name, got {type_name(v)}",
                                        d.span)
            if v <= 0:
                raise ValueRangeError(f"input dims must be positive, got {v}", d.span)
            if v > MAX_DIM:
                raise ValueRangeError(f"input dim {v} is too large (at most {MAX_DIM:,})", d.span)
            declared.append(v)
        if len(declared) > MAX_RANK:
            raise ValueRangeError(f"input '{st.name}' has {len(declared)} dims; at most {MAX_RANK} are "
                                  "supported", st.span)
        shape = []
        given = self._given_inputs.get(st.name)
        self._seen_inputs.add(st.name)
        if given is not None:
            if len(given) != len(declared):
                raise UsageError(f"--input {st.name}: the network declares {len(declared)} dims "
                                 f"({D.fmt_shape(declared)}), got {len(given)}", st.span)
            for i, (want, got) in enumerate(zip(declared, given)):
                if isinstance(want, int) and want != got:
                    raise UsageError(f"--input {st.name}: dim {i} is fixed to {want} by the network, "
                                     f"got {got}", st.span)
        for i, d in enumerate(declared):
            if isinstance(d, str):
                value = given[i] if given is not None else None
                bound = frame.env.get(("#sym", d))
                if value is not None:
                    if isinstance(bound, int) and bound != value:
                        raise UsageError(f"--input {st.name}: dim {d} is {bound} in another input, "
                                         f"got {value}", st.span)
                    frame.env[("#sym", d)] = value
                    shape.append(value)
                elif isinstance(bound, int):
                    shape.append(bound)
                else:
                    if d not in self.symbols:
                        self.symbols.append(d)
                    shape.append(D.sym(d))
            else:
                shape.append(d)
        v = Value(st.name, tuple(shape), DTYPES[st.dtype])
        self.graph.inputs.append(v)
        frame.env[st.name] = v
        frame.cursor = v

    def _output(self, st: A.OutputDecl, frame: Frame):
        if frame.kind != "network":
            raise TypeMismatchError("'output' declarations belong in a network; a block returns its "
                                    "results", st.span, frame.trace)
        if st.value is None:
            if st.name not in frame.env:
                raise NameLookupError(f"no tensor named '{st.name}' to output"
                                      + suggest(st.name, [k for k, v in frame.env.items()
                                                          if isinstance(v, Value)]), st.span)
            value = frame.env[st.name]
        else:
            value = self._eval(st.value, frame)
        if not isinstance(value, Value):
            raise TypeMismatchError(f"an output must be a tensor, got {type_name(value)}", st.span)
        if any(n == st.name for n, _ in self.graph.outputs):
            raise NameLookupError(f"output '{st.name}' declared twice", st.span)
        if any(v.name == st.name for v in self.graph.inputs):
            raise NameLookupError(f"'{st.name}' is already an input name", st.span)
        self.graph.outputs.append((st.name, value))
        self._assign(st.name, value, frame, st.span)

    def _truth(self, v, span, frame) -> bool:
        if isinstance(v, Value):
            raise TypeMismatchError("a tensor is not a compile-time condition", span, frame.trace)
        if isinstance(v, D.Lin):
            raise TypeMismatchError(f"this condition depends on the input size '{v}', which is not "
                                    "known at compile time", span, frame.trace)
        if not isinstance(v, (bool, int, float, str, list, tuple)):
            raise TypeMismatchError(f"{_a(type_name(v))} is not a condition", span, frame.trace)
        return bool(v)

    # ---- stages: layers, blocks and groups ----------------------------------------------
    def _label(self, label: A.NameTemplate | None, frame: Frame) -> str | None:
        if label is None:
            return None
        out = []
        for part in label.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                v = self._eval(part, frame)
                if isinstance(v, bool) or not isinstance(v, (int, str)):
                    raise TypeMismatchError(f"a name part must be an int or string, got {type_name(v)}",
                                            part.span, frame.trace)
                out.append(str(v))
        return "".join(out)

    def _apply_stage(self, stage: A.Stage, inp, frame: Frame):
        label = self._label(stage.label, frame)
        target = stage.target
        if isinstance(target, A.Group):
            path = frame.mscope.child(label, "seq", stage.span)
            scope = ModuleScope(path, index_mode=True)
            self.scopes.append(scope)
            saved_scope, saved_cursor = frame.mscope, frame.cursor
            frame.mscope, frame.cursor = scope, inp
            try:
                self._exec_body(target.body, frame)
                return frame.cursor
            finally:
                frame.mscope = saved_scope
                frame.cursor = saved_cursor
        fn = self._lookup(target.name, target.span, frame, callable_only=True)
        pos, kw = self._eval_args(target.args or [], frame) if target.args is not None else ([], {})
        inputs = list(inp) if isinstance(inp, (tuple, list)) else [inp]
        for v in inputs:
            if not isinstance(v, Value):
                raise TypeMismatchError(f"'->' needs a tensor on its left, got {type_name(v)}",
                                        stage.span, frame.trace)
        return self._call(fn, pos, kw, inputs, label, target.span, frame)

    def _call(self, fn, pos, kw, inputs, label, span, frame):
        if isinstance(fn, OpRef):
            return self._apply_op(fn.spec, list(fn.args) + list(pos), {**fn.kwargs, **kw}, inputs,
                                  label, span, frame)
        if isinstance(fn, BlockRef):
            return self._instantiate(fn, list(pos), kw, inputs, label, span, frame)
        raise TypeMismatchError(f"{_a(type_name(fn))} is not a layer or block", span, frame.trace)

    def _apply_op(self, spec: OpSpec, pos: list, kw: dict, inputs: list, label, span, frame) -> Value:
        op = spec.name
        attrs: dict = {}
        if any(isinstance(v, Value) for v in pos):
            raise TypeMismatchError(f"{op}: a tensor cannot be passed among its other arguments; tensor "
                                    f"inputs come first in a call, {op}(a, b, ...), or from the left of '->'",
                                    span, frame.trace)
        if len(pos) > len(spec.attrs):
            raise TypeMismatchError(f"{op} takes at most {len(spec.attrs)} positional argument"
                                    f"{'s' * (len(spec.attrs) != 1)}, got {len(pos)}", span, frame.trace)
        for a, v in zip(spec.attrs, pos):
            attrs[a.name] = v
        names = [a.name for a in spec.attrs] + list(spec.tensor_attrs)
        extra_inputs = []
        for k, v in kw.items():
            if k in spec.tensor_attrs:
                if not isinstance(v, Value):
                    raise TypeMismatchError(f"{op}: '{k}' must be a tensor, got {type_name(v)}", span,
                                            frame.trace)
                extra_inputs.append(v)
                attrs[k] = True
                continue
            if k not in names:
                raise NameLookupError(f"{op} has no argument '{k}'" + suggest(k, names), span, frame.trace)
            if k in attrs:
                raise TypeMismatchError(f"{op}: argument '{k}' given twice", span, frame.trace)
            attrs[k] = v
        for a in spec.attrs:
            if a.name not in attrs:
                if a.required:
                    raise TypeMismatchError(f"{op}: missing argument '{a.name}'", span, frame.trace)
                attrs[a.name] = a.default
            if isinstance(attrs[a.name], Value):
                raise TypeMismatchError(f"{op}: '{a.name}' must be a value, not a tensor", span, frame.trace)
            if attrs[a.name] is not None or a.default is not None:
                attrs[a.name] = coerce(op, a, attrs[a.name], span)
        for t in spec.tensor_attrs:
            attrs.setdefault(t, False)
        inputs = inputs + extra_inputs
        if spec.inputs is not None and len(inputs) != spec.inputs:
            raise TypeMismatchError(f"{op} takes {spec.inputs} input tensor{'s' * (spec.inputs != 1)}, "
                                    f"got {len(inputs)}", span, frame.trace)
        if spec.inputs is None and not inputs:
            raise TypeMismatchError(f"{op} needs at least one input tensor", span, frame.trace)
        shapes = [v.shape for v in inputs]
        ctx = ShapeCtx(op, span, frame.trace, self.graph.constraints)
        try:
            attrs = spec.resolve(dict(attrs), shapes, ctx)
            outs = spec.infer(attrs, shapes, ctx)
            for shape in outs:
                for i, d in enumerate(shape):
                    if D.is_static(d) and d < 1 or not D.is_static(d):
                        ctx.require_ge(d, 1, f"output dim {i} would be {D.fmt(d)}, which is not positive")
                    if D.is_static(d) and d > MAX_DIM or not D.is_static(d) and _dim_too_complex(d):
                        ctx.fail(f"output dim {i} would be {D.fmt(d)}, which is too large "
                                 f"(at most {MAX_DIM:,})")
            params = spec.params(attrs, shapes, ctx)
            macs = spec.macs(attrs, shapes, outs)
        except ZeroDivisionError:
            raise ValueRangeError(f"{op}: a size in its arguments is zero", span, frame.trace) from None
        path = frame.mscope.child(label, snake(op), span)
        outputs = [Value("", tuple(s)) for s in outs]
        node = Node(op, path, list(inputs), outputs, attrs, span, frame.trace, params, macs)
        for v in outputs:
            v.producer = node
        self.graph.nodes.append(node)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def _instantiate(self, ref: BlockRef, pos, kw, inputs, label, span, frame):
        defn = ref.defn
        trace = frame.trace
        self._steps += INSTANCE_STEPS
        if self._steps > MAX_STEPS:
            raise ValueRangeError(f"elaboration takes too long: more than {MAX_STEPS // INSTANCE_STEPS:,} "
                                  "block instances, or a loop far too large (a recursion that branches?)",
                                  span, trace)
        if frame.depth + 1 > MAX_DEPTH:
            raise RecursionLimitError(f"block instantiation nested deeper than {MAX_DEPTH} levels "
                                      f"(is a recursion missing its base case?)", span, trace)
        call_trace = ((defn.name, span),) + trace
        env = self._bind(defn.name, defn.params, tuple(ref.args) + tuple(pos), {**ref.kwargs, **kw}, span,
                         ns=defn.ns, trace=trace)
        in_names = defn.inputs if defn.inputs is not None else ["x"]
        if len(inputs) != len(in_names):
            raise TypeMismatchError(f"block {defn.name} takes {len(in_names)} input tensor"
                                    f"{'s' * (len(in_names) != 1)}, got {len(inputs)}", span, trace)
        for n, v in zip(in_names, inputs):
            env[n] = v
        path = frame.mscope.child(label, snake(defn.name), span)
        scope = ModuleScope(path)
        self.scopes.append(scope)
        inner = Frame(env, scope, "chain" if defn.inputs is None else "dag", frame.depth + 1, call_trace)
        inner.ns = defn.ns
        inner.cursor = inputs[0]
        try:
            self._exec_body(defn.body, inner)
        except _Return as r:
            return r.value[0]
        if defn.inputs is None or not defn.outputs:
            return inner.cursor
        outs = []
        for n in defn.outputs:
            v = env.get(n)
            if not isinstance(v, Value):
                raise NameLookupError(f"block {defn.name} never sets its output '{n}'", defn.span, trace)
            outs.append(v)
        return outs[0] if len(outs) == 1 else tuple(outs)

    # ---- expressions ----------------------------------------------------------------
    def _lookup(self, name: str, span, frame: Frame, callable_only=False):
        if name in frame.env:
            return frame.env[name]
        defn = frame.ns.get(name)
        if isinstance(defn, A.BlockDef):
            return BlockRef(defn)
        spec = self.ops.get(name)
        if spec is not None:
            return OpRef(spec)
        if name in BUILTINS:
            return BUILTINS[name]
        pool = [k for k, v in frame.ns.items() if isinstance(v, A.BlockDef)] + list(self.ops)
        if not callable_only:
            pool += [k for k in frame.env if isinstance(k, str)] + list(BUILTINS)
        what = "layer or block" if callable_only else "name"
        raise NameLookupError(f"unknown {what} '{name}'" + suggest(name, pool), span, frame.trace)

    def _eval(self, e, frame: Frame):
        m = getattr(self, "_e_" + type(e).__name__)
        return m(e, frame)

    def _e_Var(self, e: A.Var, frame):
        return self._lookup(e.name, e.span, frame)

    def _e_Lit(self, e: A.Lit, frame):
        return e.value

    def _e_ListLit(self, e: A.ListLit, frame):
        return self._sized([self._eval(x, frame) for x in e.items], e, frame)

    def _e_TupleLit(self, e: A.TupleLit, frame):
        return self._sized(tuple([self._eval(x, frame) for x in e.items]), e, frame)

    def _weight(self, v) -> int:
        """How many values a list holds, nested lists counted in full (shared ones once per use)."""
        if not isinstance(v, (list, tuple)):
            return 1
        hit = self._weights.get(id(v))
        if hit is not None and hit[0] is v:
            return hit[1]
        w = 1 + sum(self._weight(x) for x in v)
        self._weights[id(v)] = (v, w)
        return w

    def _sized(self, v, e, frame):
        """Stop lists that nest into themselves (``v = [v, v]`` in a loop) from growing exponentially."""
        if isinstance(v, (list, tuple)) and self._weight(v) > MAX_WEIGHT:
            raise ValueRangeError(f"this list holds more than {MAX_WEIGHT:,} values (counting those of "
                                  "nested lists), which is too many", e.span, frame.trace)
        return v

    def _e_CondExpr(self, e: A.CondExpr, frame):
        if self._truth(self._eval(e.cond, frame), e.cond.span, frame):
            return self._eval(e.then, frame)
        return self._eval(e.orelse, frame)

    def _e_UnaryOp(self, e: A.UnaryOp, frame):
        v = self._eval(e.operand, frame)
        if e.op == "not":
            return not self._truth(v, e.operand.span, frame)
        if isinstance(v, D.Lin):
            return self._checked_dim(D.neg(v), e, frame) if e.op == "-" else v
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeMismatchError(f"unary '{e.op}' needs a number, got {type_name(v)}", e.span, frame.trace)
        return _checked_number(-v, e.span, frame.trace) if e.op == "-" else v

    def _e_BinOp(self, e: A.BinOp, frame):
        if e.op in ("and", "or"):
            left = self._eval(e.left, frame)
            lt = self._truth(left, e.left.span, frame)
            if (e.op == "and") != lt:
                return left
            right = self._eval(e.right, frame)
            self._truth(right, e.right.span, frame)
            return right
        a, b = self._eval(e.left, frame), self._eval(e.right, frame)
        if isinstance(a, Value) or isinstance(b, Value):
            return self._tensor_binop(e, a, b, frame)
        if isinstance(a, D.Lin) or isinstance(b, D.Lin):
            return self._dim_binop(e, a, b, frame)
        return self._value_binop(e, a, b, frame)

    def _tensor_binop(self, e, a, b, frame):
        ops = {"+": "add", "*": "mul"}
        if e.op not in ops:
            raise TypeMismatchError(f"'{e.op}' is not defined on tensors (tensors support + and *)",
                                    e.span, frame.trace)
        if not (isinstance(a, Value) and isinstance(b, Value)):
            other = b if isinstance(a, Value) else a
            raise TypeMismatchError(f"'{e.op}' needs two tensors, got a tensor and {_a(type_name(other))}",
                                    e.span, frame.trace)
        return self._apply_op(self.ops[ops[e.op]], [], {}, [a, b], None, e.span, frame)

    def _dim_binop(self, e, a, b, frame):
        def bad():
            sym, other = (a, b) if isinstance(a, D.Lin) else (b, a)
            what = f"'{D.fmt(other)}'" if isinstance(other, (int, D.Lin)) and not isinstance(other, bool) \
                else _a(type_name(other))
            return TypeMismatchError(f"'{e.op}' on the symbolic size '{D.fmt(sym)}' and {what} "
                                     "is not computable at compile time", e.span, frame.trace)
        for v in (a, b):
            if not isinstance(v, (D.Lin, int)) or isinstance(v, bool):
                raise bad()
        if e.op == "+":
            return self._checked_dim(D.add(a, b), e, frame)
        if e.op == "-":
            return self._checked_dim(D.sub(a, b), e, frame)
        if e.op == "*":
            return self._checked_dim(D.mul(a, b), e, frame)
        if e.op == "//" and isinstance(b, int) and b > 0:
            return self._checked_dim(D.floordiv(a, b), e, frame)
        if e.op in ("==", "!="):
            same = D.same(a, b)
            if same is None:
                raise TypeMismatchError(f"whether {D.fmt(a)} {e.op} {D.fmt(b)} depends on the input size",
                                        e.span, frame.trace)
            return same if e.op == "==" else not same
        raise bad()

    def _checked_dim(self, d, e, frame):
        if _dim_too_complex(d):
            raise ValueRangeError("this symbolic size has grown too large to track", e.span, frame.trace)
        return d

    def _value_binop(self, e, a, b, frame):
        out = _checked_number(self._value_binop_raw(e, a, b, frame), e.span, frame.trace)
        return self._sized(out, e, frame)

    def _value_binop_raw(self, e, a, b, frame):
        op = e.op
        num = (int, float)
        isnum = lambda v: isinstance(v, num) and not isinstance(v, bool)  # noqa: E731
        try:
            if op in ("==", "!="):
                eq = a == b and type_name(a) == type_name(b) or (isnum(a) and isnum(b) and a == b)
                return eq if op == "==" else not eq
            if op in ("<", "<=", ">", ">="):
                if not ((isnum(a) and isnum(b)) or (isinstance(a, str) and isinstance(b, str))):
                    raise TypeMismatchError(f"cannot compare {type_name(a)} and {type_name(b)} with '{op}'",
                                            e.span, frame.trace)
                return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
            if op == "+":
                if isnum(a) and isnum(b) or type(a) is type(b) and isinstance(a, (str, list)):
                    return a + b
            elif op == "*":
                if isnum(a) and isnum(b):
                    return a * b
                if isinstance(a, (list, str)) and isinstance(b, int) and not isinstance(b, bool):
                    if len(a) * max(b, 0) > 100_000:
                        raise ValueRangeError("list too long", e.span, frame.trace)
                    return a * b
            elif op in ("-", "/", "//", "%", "**"):
                if isnum(a) and isnum(b):
                    if op in ("/", "//", "%") and b == 0:
                        raise ValueRangeError("division by zero", e.span, frame.trace)
                    if op == "-":
                        return a - b
                    if op == "/":
                        return a / b
                    if op == "//":
                        return a // b
                    if op == "%":
                        return a % b
                    if abs(b) > 64 or (isinstance(b, int) and b < 0 and a == 0):
                        raise ValueRangeError(f"exponent {b} is out of range", e.span, frame.trace)
                    out = a ** b
                    if isinstance(out, complex):
                        raise ValueRangeError("a negative number to a fractional power", e.span, frame.trace)
                    return out
        except OverflowError:
            raise ValueRangeError("number too large", e.span, frame.trace) from None
        raise TypeMismatchError(f"'{op}' is not defined on {type_name(a)} and {type_name(b)}", e.span,
                                frame.trace)

    def _e_Call(self, e: A.Call, frame):
        fn = self._eval(e.func, frame)
        pos, kw = self._eval_args(e.args, frame)
        if isinstance(fn, Builtin):
            if kw:
                raise TypeMismatchError(f"{fn.name}() takes no keyword arguments", e.span, frame.trace)
            return fn.fn(e.span, *pos)
        if isinstance(fn, (OpRef, BlockRef)):
            n_tensors = 0
            while n_tensors < len(pos) and isinstance(pos[n_tensors], Value):
                n_tensors += 1
            inputs, rest = pos[:n_tensors], pos[n_tensors:]
            if inputs:
                return self._call(fn, rest, kw, inputs, None, e.span, frame)
            if isinstance(fn, OpRef) and fn.spec.function:
                raise TypeMismatchError(f"{fn.spec.name}() needs tensor arguments first", e.span, frame.trace)
            cls = type(fn)
            target = fn.spec if isinstance(fn, OpRef) else fn.defn
            return cls(target, tuple(fn.args) + tuple(rest), {**fn.kwargs, **kw})
        raise TypeMismatchError(f"{_a(type_name(fn))} cannot be called", e.span, frame.trace)

    def _e_Index(self, e: A.Index, frame):
        obj, idx = self._eval(e.obj, frame), self._eval(e.index, frame)
        if not isinstance(obj, (list, tuple, str)):
            raise TypeMismatchError(f"{_a(type_name(obj))} cannot be indexed", e.span, frame.trace)
        if isinstance(idx, bool) or not isinstance(idx, int):
            raise TypeMismatchError(f"an index must be an int, got {type_name(idx)}", e.index.span, frame.trace)
        if not -len(obj) <= idx < len(obj):
            raise ValueRangeError(f"index {idx} is out of range for a {type_name(obj)} of length {len(obj)}",
                                  e.index.span, frame.trace)
        return obj[idx]

    def _e_Attr(self, e: A.Attr, frame):
        obj = self._eval(e.obj, frame)
        if not isinstance(obj, Value):
            raise TypeMismatchError(f"{_a(type_name(obj))} has no attribute '{e.name}'", e.span, frame.trace)
        if e.name == "shape":
            return tuple(obj.shape)
        if e.name == "rank":
            return len(obj.shape)
        if e.name == "channels":
            if len(obj.shape) < 2:
                raise ShapeError("a tensor of rank < 2 has no channel dim", e.span, frame.trace)
            return obj.shape[1]
        raise NameLookupError(f"tensors have no attribute '{e.name}'" + suggest(e.name, TENSOR_ATTRS)
                              + f" (they have: {', '.join(TENSOR_ATTRS)})", e.span, frame.trace)

    def _e_Pipeline(self, e: A.Pipeline, frame):
        cur = self._eval(e.head, frame)
        for st in e.stages:
            cur = self._apply_stage(st, cur, frame)
        return cur


class _Deferred:
    """A --set value given as source text: parsed and evaluated against the program."""

    def __init__(self, text: str, key: str):
        self.text, self.key = text, key

    def evaluate(self, elab: Elaborator):
        from ..frontend.parser import parse_value
        expr = parse_value(self.text, f"--set {self.key}")
        try:
            frame = Frame({}, ModuleScope(()), "network", 0, ())
            frame.ns = {**elab.program.blocks, **elab.program.networks}
            return elab._eval(expr, frame)
        except NetDSLError as err:
            if err.span is not None and err.span.source.name == f"--set {self.key}":
                raise UsageError(err.message, err.span) from None   # the location names the option
            raise UsageError(f"--set {self.key}={self.text}: {err.message}", err.span) from None


def parse_override(text: str, key: str) -> _Deferred:
    return _Deferred(text, key)


def _a(t: str) -> str:
    return ("an " if t[:1] in "aeiou" else "a ") + t


def elaborate(program: Program, network: str | None = None, overrides: dict | None = None,
              inputs: dict | None = None) -> Graph:
    return Elaborator(program).network(choose_network(program, network), overrides, inputs)


def choose_network(program: Program, network: str | None) -> str:
    if network is not None:
        return network
    mains = program.main_networks
    if len(mains) == 1:
        return mains[0]
    if not mains:
        raise NameLookupError(f"{program.main_source} defines no network")
    raise UsageError(f"{program.main_source} defines {len(mains)} networks; choose one with "
                     f"--network: {', '.join(mains)}")


_ = math
