"""Elaboration: AST -> IR graph.

Runs the compile-time language (parameters, expressions, if/for, block
instantiation, recursion) and builds the graph as it goes; each op's shape rule
runs as soon as the op is applied, so shape queries (``x.channels``) and shape
errors happen in source order, at the right place.
"""
from __future__ import annotations

import keyword
import sys

from ..errors import (NameLookupError, NetDSLError, RecursionLimitError, ShapeError, Span,
                      TypeMismatchError, UsageError, ValueRangeError, suggest)
from ..frontend import ast as A
from ..gc_pause import paused_gc
from ..passes.constraints import ShapeCtx
from . import dims as D
from .attrs import coerce, type_name
from .expressions import ExpressionEvaluator
from .freeze import freeze_paths, frozen_params
from .graph import Graph, Node, Value
from .naming import ModuleScope, check_label, render, snake
from .program import Program
from .registry import OpSpec, all_ops
from .values import (BUILTINS, DTYPES, INSTANCE_STEPS, MAX_DEPTH, MAX_DIM, MAX_RANK, MAX_STEPS,
                     PARAM_TYPES, RECURSION_ROOM, BlockRef, Builtin, Frame, Init, OpRef, _a, _dim_too_complex,
                     _Return)


# ops that move elements without computing with them: any element type (int64 indices too)
_ANY_DTYPE = frozenset({"Identity", "select", "reshape", "permute", "transpose", "Flatten", "concat", "expand",
                        "crop", "center_crop"})


def _check_dtypes(spec: OpSpec, inputs: list, span, frame):
    """An op that computes in float refuses an int64 tensor (indices from topk, nms, ...), as a
    located error rather than a torch dtype error or an ONNX model that does not type-check. Ops
    with a dtypes rule or their own input checks (take, the detection ops) judge their inputs."""
    if spec.dtypes is not None or spec.check_inputs is not None:
        return
    op = spec.name
    if op in _ANY_DTYPE:
        kinds = list(dict.fromkeys(v.dtype for v in inputs))
        if len(kinds) > 1:
            raise TypeMismatchError(f"{op}: its input tensors have different element types "
                                    f"({', '.join(kinds)})", span, frame.trace)
        return
    for i, v in enumerate(inputs):
        if v.dtype != "float32":
            raise TypeMismatchError(f"{op}: input {i + 1} is an {v.dtype} tensor (indices, as topk's or "
                                    f"nms's are); {op} computes on float32 tensors (take(x, indices) selects "
                                    f"rows by index)", span, frame.trace)


class Elaborator(ExpressionEvaluator):
    def __init__(self, program: Program):
        self.program = program
        self.ops = all_ops()
        self._reset()

    def _reset(self):
        """Per-network state; also what `_resolve_network` needs when called on its own."""
        self._where: tuple = (None, ())
        self._steps = 0
        self._weights: dict = {}

    # ---- entry point ----------------------------------------------------------
    def network(self, name: str, overrides: dict | None = None, inputs: dict | None = None,
                override_spans: dict | None = None) -> Graph:
        """Build the graph of network `name`. `overrides` are parameter values;
        `inputs` maps input names to shapes (tuples of ints) replacing the declared ones."""
        self._reset()
        self.graph = None
        # Elaboration recurses along the AST and through block instantiations (64 levels at
        # most, each several frames deep): give it room beyond Python's default of 1000.
        old_limit = sys.getrecursionlimit()
        if old_limit < RECURSION_ROOM:
            sys.setrecursionlimit(RECURSION_ROOM)
        try:
            with paused_gc():
                return self._network(name, overrides, inputs)
        except NetDSLError as err:
            self._attach_partial(err)
            raise
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

    def _attach_partial(self, err: NetDSLError):
        """The graph built up to an error, as `err.partial_graph` (for editors: the layers
        before the error, with their shapes), paths and names finished as far as they can be."""
        g = self.graph
        if g is None or hasattr(err, "partial_graph"):
            return
        err.partial_graph = g
        if any(not isinstance(n.path, tuple) for n in g.nodes):
            return      # _finish ran already
        try:
            for s in self.scopes:
                s.close()
            self._finish()
        except Exception:       # noqa: BLE001 -- a partial graph is a best effort
            pass

    def _network(self, name: str, overrides: dict | None, inputs: dict | None) -> Graph:
        overrides = dict(overrides or {})
        inputs = dict(inputs or {})
        defn, bound_args, bound_kwargs, alias_span = self._resolve_network(name)
        self.graph = Graph(name=name, doc=defn.doc, span=defn.span, source=self.program.main_source)
        self.graph.constraints = RecordedConstraints()
        self._dims_checked: set = set()     # symbolic output sizes already required to be >= 1
        self._shape_results: dict = {}      # see _apply_op
        self.symbols: list[str] = []
        self._symbol_set: set[str] = set()     # self.symbols as a set: no linear scans
        self._input_names: set[str] = set()
        self._output_names: set[str] = set()
        self.hints: dict[int, str] = {}
        self.paths: dict[int, tuple] = {}
        self.scopes: list[ModuleScope] = []
        self._instances: list = []          # (path, block name, call span) of each block instance
        self._freezes: list = []            # (scope prefix, A.FreezePath, trace) of `freeze`
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
        if self._freezes:
            freeze_paths(self.graph, self._freezes)
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
            nets = {k: v for k, v in defn.ns.items() if not isinstance(v, A.BLOCKS)}

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
        for n in g.nodes:
            n.path = render(n.path)
        g.blocks = {render(path): (name, span) for path, name, span in getattr(self, "_instances", ())}
        # a top-level `param` is an ONNX initializer named by its path: no tensor may share it
        params = {n.path for n in g.nodes if n.op == "parameter"}
        used |= params
        for name, _ in g.outputs:
            if name in params:
                raise NameLookupError(f"output '{name}' has the name of a param; give one of them "
                                      "another name", g.span)
        out_names = {id(v): n for n, v in reversed(g.outputs)}
        for n in g.nodes:
            for i, v in enumerate(n.outputs):
                v.named = id(v) in out_names or id(v) in self.hints
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
                hint = ("; to freeze a block instance's parameters, label it and write `freeze NAME`"
                        if k == "frozen" else suggest(k, names))
                raise NameLookupError(f"{owner} has no parameter '{k}'" + hint, span, trace)
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
            target = st.stage.target
            if st.stage.label is None and isinstance(target, A.Callee) and target.name == "error" \
                    and isinstance(self._lookup(target.name, target.span, frame), Builtin):
                # `error("message")` as a statement: the spec's own located error
                self._e_Call(A.Call(target.span, A.Var(target.span, target.name), target.args or []), frame)
            if frame.cursor is None:
                raise ShapeError("no tensor flows into this layer: declare an input first", st.span,
                                 frame.trace)
            frame.cursor = self._apply_stage(st.stage, frame.cursor, frame)
        elif isinstance(st, A.Splice):
            frame.cursor = self._splice(st, frame)
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
        elif isinstance(st, A.ParamDecl):
            self._param(st, frame)
        elif isinstance(st, A.Freeze):      # resolved once every name is final (freeze.freeze_paths)
            self._freezes.extend((frame.mscope.prefix, p, frame.trace) for p in st.paths)
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
        if st.name in self._input_names:
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
                    if d in self.graph.dynamic:     # made by an op above: a size known at run time
                        raise NameLookupError(f"input dim '{d}' has the name of a data-dependent size "
                                              f"made above it (by {self.graph.dynamic[d].op}); "
                                              f"rename the symbol", st.span)
                    if d not in self._symbol_set:
                        self._symbol_set.add(d)
                        self.symbols.append(d)
                    shape.append(D.sym(d))
            else:
                shape.append(d)
        v = Value(st.name, tuple(shape), DTYPES[st.dtype])
        self.graph.inputs.append(v)
        self._input_names.add(st.name)
        frame.env[st.name] = v
        frame.cursor = v

    def _param(self, st: A.ParamDecl, frame: Frame):
        """A learned tensor at this scope's path; binds its name without moving the chain."""
        if st.dtype not in DTYPES:
            raise NameLookupError(f"unknown element type '{st.dtype}'" + suggest(st.dtype, DTYPES)
                                  + f" (supported: {', '.join(DTYPES)})", st.span, frame.trace)
        dims = []
        for d in st.dims:
            v = self._eval(d, frame)
            if isinstance(v, bool) or not isinstance(v, int):
                what = f"the input size '{D.fmt(v)}'" if isinstance(v, D.Lin) else type_name(v)
                raise TypeMismatchError(f"a param's dims must be ints known at compile time, got {what}",
                                        d.span, frame.trace)
            dims.append(v)
        if not dims:        # a rank-0 tensor: neither target builds one (torch.zeros() takes a size)
            raise ValueRangeError("a param needs at least one dim: write f32[1] for a single number",
                                  st.span, frame.trace)
        init = self._eval(st.init, frame) if st.init is not None else Init("zeros")
        if not isinstance(init, Init) or init.kind not in ("zeros", "ones", "constant", "normal", "uniform"):
            got = f"{init.kind}()" if isinstance(init, Init) else _a(type_name(init))
            raise TypeMismatchError(f"a param starts from zeros(), ones(), constant(value), normal(std) or "
                                    f"uniform(bound), got {got}", st.init.span, frame.trace)
        label = self._label(st.label, frame)
        if label in BUILTINS or label in self.ops:
            raise NameLookupError(f"cannot name a param '{label}': it names a built-in", st.span, frame.trace)
        if "-" in label:        # the name binds the tensor, and `a-b` in an expression is a subtraction
            raise NameLookupError(f"'{label}' cannot name a param: its name is also the tensor's name in "
                                  "expressions, where '-' subtracts (use _)", st.label.span, frame.trace)
        attrs = {"shape": dims, "init": init.kind}
        attrs["value" if init.kind == "constant" else "scale"] = init.scale
        value = self._apply_op(self.ops["parameter"], [], attrs, [], label, st.span, frame)
        frame.env[label] = value
        self.hints.setdefault(id(value), label)

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
        if st.name in self._output_names:
            raise NameLookupError(f"output '{st.name}' declared twice", st.span)
        if st.name in self._input_names:
            raise NameLookupError(f"'{st.name}' is already an input name", st.span)
        self.graph.outputs.append((st.name, value))
        self._output_names.add(st.name)
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
        return check_label("".join(out), label.span, frame.trace)

    def _apply_stage(self, stage: A.Stage, inp, frame: Frame):
        label = self._label(stage.label, frame)
        target = stage.target
        if isinstance(target, A.Group):
            path = frame.mscope.child(label, "seq", stage.span, trace=frame.trace)
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

    def _splice(self, st: A.Splice, frame: Frame):
        """`...Name(args)`: a chain block applied to the current tensor, its layers named in
        this scope (in a group, its unnamed items take the group's next indices)."""
        target = st.callee
        if frame.cursor is None:
            raise ShapeError("no tensor flows into this splice: declare an input first", st.span, frame.trace)
        fn = self._lookup(target.name, target.span, frame, callable_only=True)
        if isinstance(fn, OpRef):
            raise TypeMismatchError(f"'...' splices a block's layers into this scope; '{target.name}' is the "
                                    f"layer {fn.spec.name}: apply it without '...'", st.span, frame.trace)
        if not isinstance(fn, BlockRef):
            raise TypeMismatchError(f"'...' splices a block, not {_a(type_name(fn))}", st.span, frame.trace)
        if fn.defn.inputs is not None:
            raise TypeMismatchError(f"block {fn.defn.name} has named inputs ({', '.join(fn.defn.inputs)}); "
                                    "only a chain block (one input, x) can be spliced", st.span, frame.trace)
        pos, kw = self._eval_args(target.args or [], frame) if target.args is not None else ([], {})
        if not isinstance(frame.cursor, Value):
            raise TypeMismatchError(f"'...' needs a tensor to flow into it, got {type_name(frame.cursor)}",
                                    st.span, frame.trace)
        return self._instantiate(fn, list(pos), kw, [frame.cursor], None, target.span, frame, splice=True)

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
        frozen = False
        if "frozen" in kw and spec.attr("frozen") is None:    # `frozen = true`: any layer with parameters
            kw = dict(kw)
            frozen = kw.pop("frozen")
            if not isinstance(frozen, bool):
                raise TypeMismatchError(f"{op}: 'frozen' must be true or false, got {type_name(frozen)}",
                                        span, frame.trace)
        if any(isinstance(v, Value) for v in pos):
            raise TypeMismatchError(f"{op}: a tensor cannot be passed among its other arguments; tensor "
                                    f"inputs come first in a call, {op}(a, b, ...), or from the left of '->'",
                                    span, frame.trace)
        positional = [a for a in spec.attrs if not a.keyword_only]
        if len(pos) > len(positional):
            raise TypeMismatchError(f"{op} takes at most {len(positional)} positional argument"
                                    f"{'s' * (len(positional) != 1)}, got {len(pos)}", span, frame.trace)
        for a, v in zip(positional, pos):
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
                raise NameLookupError(f"{op} has no argument '{k}'" + suggest(k, names + ["frozen"]), span,
                                      frame.trace)
            if k in attrs:
                raise TypeMismatchError(f"{op}: argument '{k}' given twice", span, frame.trace)
            attrs[k] = v
        inputs = inputs + extra_inputs
        shapes = [v.shape for v in inputs]
        # Checking the arguments and running the shape rules is a function of (op, arguments,
        # input shapes), and a chain applies the same layer to the same shapes again and
        # again. A repeat reuses the first result: the constraints it would record are the
        # first one's (kept once anyway, see RecordedConstraints), and a call that failed
        # was never remembered. (repr tells 1 from True and 0.0 from -0.0, as == does not.)
        try:
            key = None if spec.dynamic else (id(spec), repr(list(attrs.items())), tuple(shapes))
            hash(key)
        except TypeError:
            key = None
        known = self._shape_results.get(key) if key is not None else None
        if known is None:
            self._check_attrs(spec, attrs, span, frame)
        self._check_inputs(spec, inputs, span, frame)
        _check_dtypes(spec, inputs[:len(inputs) - len(extra_inputs)], span, frame)
        if known is not None:
            attrs, outs, params, macs = known
            attrs, params = dict(attrs), dict(params)
        else:
            attrs, outs, params, macs = self._shape_rules(spec, attrs, shapes, span, frame)
            if key is not None:
                self._shape_results[key] = (dict(attrs), outs, dict(params), macs)
        if spec.check_inputs is not None:       # not cached: it looks past the input shapes
            spec.check_inputs(inputs, self._shape_ctx(op, span, frame))
        if frozen:
            params = frozen_params(op, params, span, frame.trace)
        path = frame.mscope.child(label, snake(op), span, trace=frame.trace)
        # without a dtypes rule an op keeps its first input's element type (select, reshape,
        # concat of int64 indices stay int64)
        dtypes = spec.dtypes(attrs, inputs) if spec.dtypes else \
            [inputs[0].dtype if inputs else "float32"] * len(outs)
        outputs = [Value("", tuple(s), dt) for s, dt in zip(outs, dtypes)]
        node = Node(op, path, list(inputs), outputs, attrs, span, frame.trace, params, macs)
        for v in outputs:
            v.producer = node
        self.graph.nodes.append(node)
        return outputs[0] if len(outputs) == 1 and not spec.tuple_result else tuple(outputs)

    def _check_attrs(self, spec: OpSpec, attrs: dict, span, frame):
        """Fill in defaults and check and normalise every argument, in place."""
        op = spec.name
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

    @staticmethod
    def _check_inputs(spec: OpSpec, inputs: list, span, frame):
        op = spec.name
        if spec.inputs is not None and len(inputs) != spec.inputs:
            raise TypeMismatchError(f"{op} takes {spec.inputs} input tensor{'s' * (spec.inputs != 1)}, "
                                    f"got {len(inputs)}", span, frame.trace)
        if spec.inputs is None and not inputs:
            raise TypeMismatchError(f"{op} needs at least one input tensor", span, frame.trace)

    def _shape_ctx(self, op: str, span, frame) -> ShapeCtx:
        """What an op's rules get: this graph's constraints and data-dependent dims."""
        return ShapeCtx(op, span, frame.trace, self.graph.constraints, self.graph.dynamic, self._symbol_set)

    def _shape_rules(self, spec: OpSpec, attrs: dict, shapes: list, span, frame):
        """The op's resolved attributes, output shapes, parameters and MACs; records the
        constraints on input sizes that it needs."""
        op = spec.name
        ctx = self._shape_ctx(op, span, frame)
        try:
            attrs = spec.resolve(dict(attrs), shapes, ctx)
            outs = spec.infer(attrs, shapes, ctx)
            for shape in outs:
                for i, d in enumerate(shape):
                    if D.is_static(d):
                        if d < 1:
                            ctx.require_ge(d, 1, f"output dim {i} would be {D.fmt(d)}, which is not positive")
                        if d > MAX_DIM:
                            ctx.fail(f"output dim {i} would be {D.fmt(d)}, which is too large "
                                     f"(at most {MAX_DIM:,})")
                    elif d not in self._dims_checked:   # each symbolic size once: a chain repeats them
                        ctx.require_ge(d, 1, f"output dim {i} would be {D.fmt(d)}, which is not positive")
                        if _dim_too_complex(d):
                            ctx.fail(f"output dim {i} would be {D.fmt(d)}, which is too large "
                                     f"(at most {MAX_DIM:,})")
                        self._dims_checked.add(d)
            params = spec.params(attrs, shapes, ctx)
            macs = spec.macs(attrs, shapes, outs)
        except ZeroDivisionError:
            raise ValueRangeError(f"{op}: a size in its arguments is zero", span, frame.trace) from None
        return attrs, outs, params, macs

    def _instantiate(self, ref: BlockRef, pos, kw, inputs, label, span, frame, splice=False):
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
        if splice:      # `...Name(args)`: its layers are named in the enclosing scope
            scope = frame.mscope
        else:           # a sequential block numbers its unnamed items, as a group does
            path = frame.mscope.child(label, snake(defn.name), span, trace=trace)
            scope = ModuleScope(path, index_mode=isinstance(defn, A.SeqBlockDef))
            self.scopes.append(scope)
            self._instances.append((path, defn.name, span))
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


class RecordedConstraints(list):
    """graph.constraints, recording each constraint once: one identical to an earlier one
    (same kind, sizes and remainder) can never be the one that fails, since the earlier one
    is checked first, and every report names the first. A 10,000-layer chain would otherwise
    carry 10,000 copies of the same few, and solving them would dominate `check`."""

    def __init__(self, items=()):
        super().__init__()
        self._keys: set = set()
        for c in items:
            self.append(c)

    def append(self, c):
        try:
            key = (c.kind, c.a, c.b, c.r)
            if key in self._keys:
                return
            self._keys.add(key)
        except TypeError:       # an unhashable size: keep it, unchecked for duplicates
            pass
        super().append(c)


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

