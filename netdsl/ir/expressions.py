"""Evaluating compile-time expressions: names, literals, arithmetic on numbers, lists and
symbolic sizes, tensor operators (+, *), calls, indexing, shape queries and chains.

`ExpressionEvaluator` is a mixin of `Elaborator`: applying a layer or a block (from a
chain or a call) is the elaborator's job, through `_apply_stage`, `_apply_op` and `_call`.
"""
from __future__ import annotations

from ..errors import NameLookupError, NetDSLError, ShapeError, TypeMismatchError, ValueRangeError, suggest
from ..frontend import ast as A
from . import dims as D
from .attrs import type_name
from .graph import Value
from .values import (BUILTINS, MAX_WEIGHT, TENSOR_ATTRS, BlockRef, Builtin, Frame, OpRef, _a,
                     _checked_number, _dim_too_complex)


class ExpressionEvaluator:
    def _lookup(self, name: str, span, frame: Frame, callable_only=False):
        if name in frame.env:
            return frame.env[name]
        defn = frame.ns.get(name)
        if isinstance(defn, A.BlockDef):
            return BlockRef(defn)
        if isinstance(defn, A.BlockAlias):
            return self._block_alias(defn, frame)
        spec = self.ops.get(name)
        if spec is not None:
            return OpRef(spec)
        if name in BUILTINS:
            return BUILTINS[name]
        pool = [k for k, v in frame.ns.items() if isinstance(v, A.BLOCKS)] + list(self.ops)
        if not callable_only:
            pool += [k for k in frame.env if isinstance(k, str)] + list(BUILTINS)
        what = "layer or block" if callable_only else "name"
        raise NameLookupError(f"unknown {what} '{name}'" + suggest(name, pool), span, frame.trace)

    def _block_alias(self, alias: A.BlockAlias, frame: Frame):
        """`block B = Target(args)`: Target (a block, alias or layer) with those arguments bound,
        evaluated in the alias's own file."""
        resolving = self.__dict__.setdefault("_aliases_resolving", [])
        if alias.name in resolving:
            raise NameLookupError(f"block '{alias.name}' is defined in terms of itself", alias.span,
                                  frame.trace)
        resolving.append(alias.name)
        try:
            inner = Frame({}, frame.mscope, "network", frame.depth, frame.trace)
            inner.ns = alias.ns
            target = self._lookup(alias.target, alias.span, inner, callable_only=True)
            if not isinstance(target, (BlockRef, OpRef)):
                raise TypeMismatchError(f"block '{alias.name}' must name a block or layer, not "
                                        f"{_a(type_name(target))}", alias.span, frame.trace)
            pos, kw = self._eval_args(alias.args, inner)
        finally:
            resolving.pop()
        return target.bind(pos, kw)

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
        if isinstance(v, Value):
            return self._apply_op(self.ops["neg"], [], {}, [v], None, e.span, frame) if e.op == "-" else v
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeMismatchError(f"unary '{e.op}' needs a number or a tensor, got {type_name(v)}", e.span,
                                    frame.trace)
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
        """`+ - * /` of two tensors (broadcasting), or of a tensor and an int or float (the op's
        `scalar`; `reverse` where the number is on the left)."""
        ops = {"+": "add", "-": "sub", "*": "mul", "/": "div"}
        if e.op not in ops:
            raise TypeMismatchError(f"'{e.op}' is not defined on tensors (tensors support + - * /, with a "
                                    "tensor or a number, and unary -)", e.span, frame.trace)
        if isinstance(a, Value) and isinstance(b, Value):
            return self._apply_op(self.ops[ops[e.op]], [], {}, [a, b], None, e.span, frame)
        tensor, other = (a, b) if isinstance(a, Value) else (b, a)
        if isinstance(other, bool) or not isinstance(other, (int, float)):
            what = "a symbolic size (known only at run time)" if isinstance(other, D.Expr) \
                else _a(type_name(other))
            raise TypeMismatchError(f"'{e.op}' needs two tensors or a tensor and a number, got a tensor and "
                                    f"{what}", e.span, frame.trace)
        kw = {"scalar": other, "reverse": True} if tensor is b else {"scalar": other}
        return self._apply_op(self.ops[ops[e.op]], [], kw, [tensor], None, e.span, frame)

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
            if kw and not fn.keywords:
                raise TypeMismatchError(f"{fn.name}() takes no keyword arguments", e.span, frame.trace)
            try:
                return fn.fn(e.span, *pos, **kw)
            except NetDSLError as err:      # located at the call, inside its block instances
                if not err.trace:
                    err.trace = tuple(frame.trace)
                raise
        if isinstance(fn, (OpRef, BlockRef)):
            n_tensors = 0
            while n_tensors < len(pos) and isinstance(pos[n_tensors], Value):
                n_tensors += 1
            inputs, rest = pos[:n_tensors], pos[n_tensors:]
            if inputs:
                return self._call(fn, rest, kw, inputs, None, e.span, frame)
            if isinstance(fn, OpRef) and fn.spec.function:
                raise TypeMismatchError(f"{fn.spec.name}() needs tensor arguments first", e.span, frame.trace)
            return fn.bind(rest, kw)
        raise TypeMismatchError(f"{_a(type_name(fn))} cannot be called", e.span, frame.trace)

    def _e_Index(self, e: A.Index, frame):
        # `t = x` then `[ ReLU ]` on the next line reads as x[ReLU]: say how to write a group there
        # (';' ends a statement in groups only: a { } body has no anonymous groups at all)
        group = ""
        if e.index.span.line > e.obj.span.end_line:
            group = ("; a '[' on the line after an assignment indexes its value: " +
                     ("to start an anonymous group there, end the assignment with ';'"
                      if getattr(frame.mscope, "index_mode", False) else
                      "an anonymous group [ ... ] stands only inside a group; in a { } body name it: g: [ ... ]"))
        obj = self._eval(e.obj, frame)
        try:
            idx = self._eval(e.index, frame)
        except NameLookupError as err:      # `c = s[0]` then `[ Conv2d(c, 1) ]`: c is not bound yet
            if group:
                err.message += group
                err.args = (err.message,)
            raise
        if not isinstance(obj, (list, tuple, str)):
            raise TypeMismatchError(f"{_a(type_name(obj))} cannot be indexed" + group, e.span, frame.trace)
        if isinstance(idx, bool) or not isinstance(idx, int):
            raise TypeMismatchError(f"an index must be an int, got {type_name(idx)}" + group, e.index.span,
                                    frame.trace)
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
