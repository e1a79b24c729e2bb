"""AST -> canonical source text. parse(to_source(parse(t))) == parse(t) for every valid t
(comments are not kept). Used by the round-trip tests and to show specs back to users."""
from __future__ import annotations

from . import ast as A

_INDENT = "    "


def to_source(module: A.Module) -> str:
    return "\n\n".join(_item(it) for it in module.items) + "\n"


def _item(it) -> str:
    if isinstance(it, A.Import):
        return f"import {_str(it.path)}"
    if isinstance(it, (A.NetworkAlias, A.BlockAlias)):
        kind = "network" if isinstance(it, A.NetworkAlias) else "block"
        return f"{kind} {it.name} = {it.target}({_args(it.args)})"
    params = ", ".join(_param(p) for p in it.params)
    if isinstance(it, A.SeqBlockDef):
        return f"block {it.name}({params}) " + _body(it.body, 0, it.doc, open_="[", close="]")
    if isinstance(it, A.BlockDef):
        head = f"block {it.name}({params})"
        if it.inputs is not None:
            outs = it.outputs or []
            out_s = outs[0] if len(outs) == 1 else f"({', '.join(outs)})"
            head += f" ({', '.join(it.inputs)}) -> {out_s}"
    else:
        head = f"network {it.name}" + (f"({params})" if it.params else "")
    return head + " " + _body(it.body, 0, it.doc)


def _param(p: A.Param) -> str:
    out = p.name
    if p.type:
        out += f": {p.type}"
    if p.default is not None:
        out += f" = {expr(p.default)}"
    return out


def _body(stmts, depth: int, doc=None, open_="{", close="}") -> str:
    pad = _INDENT * (depth + 1)
    lines = [open_]
    if doc is not None:
        lines.append(pad + _str(doc))
    for i, s in enumerate(stmts):
        line = pad + stmt(s, depth + 1)
        if i + 1 < len(stmts) and _ends_in_expression(s) and _anonymous_group(stmts[i + 1]):
            line += ";"     # else the group's '[' would index the expression (see the grammar)
        lines.append(line)
    lines.append(_INDENT * depth + close)
    return "\n".join(lines)


def _ends_in_expression(s) -> bool:
    return (isinstance(s, (A.Assign, A.Return)) or (isinstance(s, A.OutputDecl) and s.value is not None)
            or (isinstance(s, A.ParamDecl) and s.init is not None))


def _anonymous_group(s) -> bool:
    return isinstance(s, A.LayerStmt) and s.stage.label is None and isinstance(s.stage.target, A.Group)


def stmt(s, depth: int = 0) -> str:
    if isinstance(s, A.LayerStmt):
        return _stage(s.stage, depth)
    if isinstance(s, A.Assign):
        return f"{', '.join(s.names)} = {expr(s.value, depth)}"
    if isinstance(s, A.If):
        out = []
        for i, (cond, body) in enumerate(s.branches):
            out.append(f"{'if' if i == 0 else 'elif'} {expr(cond, depth)} {_body(body, depth)}")
        text = " ".join(out)
        if s.orelse is not None:
            text += f" else {_body(s.orelse, depth)}"
        return text
    if isinstance(s, A.For):
        return f"for {s.var} in {expr(s.iterable, depth)} {_body(s.body, depth)}"
    if isinstance(s, A.Return):
        return "return " + ", ".join(expr(v, depth) for v in s.values)
    if isinstance(s, A.InputDecl):
        return f"input {s.name}: {s.dtype}[{', '.join(expr(d) for d in s.dims)}]"
    if isinstance(s, A.ParamDecl):
        label = "".join(p if isinstance(p, str) else "{" + expr(p) + "}" for p in s.label.parts)
        return (f"param {label}: {s.dtype}[{', '.join(expr(d) for d in s.dims)}]"
                + (f" = {expr(s.init, depth)}" if s.init is not None else ""))
    if isinstance(s, A.OutputDecl):
        return f"output {s.name}" + (f" = {expr(s.value, depth)}" if s.value is not None else "")
    if isinstance(s, A.Freeze):
        return "freeze " + ", ".join(".".join(p.parts) for p in s.paths)
    if isinstance(s, A.Splice):
        t = s.callee
        return "..." + t.name + (f"({_args(t.args)})" if t.args is not None else "")
    raise TypeError(type(s))


def _stage(st: A.Stage, depth: int) -> str:
    label = ""
    if st.label is not None:
        label = "".join(p if isinstance(p, str) else "{" + expr(p) + "}" for p in st.label.parts) + ": "
    t = st.target
    if isinstance(t, A.Group):
        return label + _body(t.body, depth, open_="[", close="]")
    return label + t.name + (f"({_args(t.args)})" if t.args is not None else "")


def _args(args) -> str:
    return ", ".join((f"{a.name} = " if a.name else "") + expr(a.value) for a in args)


def _str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _operand(e, depth: int) -> str:
    """An expression inside a larger one: a chain binds loosest of all, so it takes brackets."""
    return f"({expr(e, depth)})" if isinstance(e, A.Pipeline) else expr(e, depth)


def expr(e, depth: int = 0) -> str:
    if isinstance(e, A.Var):
        return e.name
    if isinstance(e, A.Lit):
        v = e.value
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return _str(v)
        return repr(v)
    if isinstance(e, A.ListLit):
        return "[" + ", ".join(expr(x, depth) for x in e.items) + "]"
    if isinstance(e, A.TupleLit):
        inner = ", ".join(expr(x, depth) for x in e.items)
        return f"({inner},)" if len(e.items) == 1 else f"({inner})"
    if isinstance(e, A.BinOp):
        return f"({_operand(e.left, depth)} {e.op} {_operand(e.right, depth)})"
    if isinstance(e, A.UnaryOp):
        return f"(not {_operand(e.operand, depth)})" if e.op == "not" else f"({e.op}{_operand(e.operand, depth)})"
    if isinstance(e, A.CondExpr):
        return f"({_operand(e.then, depth)} if {_operand(e.cond, depth)} else {_operand(e.orelse, depth)})"
    if isinstance(e, A.Call):
        return f"{_operand(e.func, depth)}({_args(e.args)})"
    if isinstance(e, A.Index):
        return f"{_operand(e.obj, depth)}[{expr(e.index, depth)}]"
    if isinstance(e, A.Attr):
        return f"{_operand(e.obj, depth)}.{e.name}"
    if isinstance(e, A.Pipeline):
        return " -> ".join([expr(e.head, depth)] + [_stage(s, depth) for s in e.stages])
    raise TypeError(type(e))
