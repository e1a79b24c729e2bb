"""AST node classes. Every node carries the span of the text it came from.

They behave as dataclasses would (an __init__ taking the fields in order, __eq__ comparing
every field but the span, __repr__ without the span, unhashable), but their methods are
generated together by `_define_methods` below, in one compile: `@dataclass` took about
20 ms of every `netdsl` start for these ~30 classes.
"""
from __future__ import annotations

from typing import Any, Optional, Union

from ..errors import Span


class Node:
    span: Span


# ---- expressions -------------------------------------------------------------
class Var(Node):
    name: str


class Lit(Node):
    value: Any


class ListLit(Node):
    items: list


class TupleLit(Node):
    items: list


class BinOp(Node):
    op: str        # + - * / // % ** == != < <= > >= and or
    left: Any
    right: Any


class UnaryOp(Node):
    op: str        # - + not
    operand: Any


class CondExpr(Node):
    cond: Any
    then: Any
    orelse: Any


class Arg(Node):
    name: Optional[str]   # None for positional
    value: Any


class Call(Node):
    func: Any
    args: list


class Index(Node):
    obj: Any
    index: Any


class Attr(Node):
    obj: Any
    name: str


class NameTemplate(Node):
    parts: list           # str pieces and expressions, e.g. ["layer", <i + 1>]


class Callee(Node):
    name: str
    args: Optional[list]  # None: written without parentheses


class Group(Node):
    body: list


class Stage(Node):
    label: Optional[NameTemplate]
    target: Union[Callee, Group]


class Pipeline(Node):
    head: Any
    stages: list


# ---- statements --------------------------------------------------------------
class LayerStmt(Node):
    stage: Stage


class Assign(Node):
    names: list
    value: Any


class If(Node):
    branches: list        # [(cond, body)]
    orelse: Optional[list]


class For(Node):
    var: str
    iterable: Any
    body: list


class Return(Node):
    values: list


class InputDecl(Node):
    name: str
    dtype: str
    dims: list


class OutputDecl(Node):
    name: str
    value: Any            # None: output an existing tensor of that name


class ParamDecl(Node):
    """A learned tensor: ``param class_token: f32[1, 1, 768] = zeros()``."""
    label: NameTemplate
    dtype: str
    dims: list
    init: Any             # expression giving the initialiser, or None (zeros)


class FreezePath(Node):
    """A dotted path relative to the current scope: ``layer1.0.conv1``."""
    parts: list           # strs


class Splice(Node):
    """``...Name(args)``: a chain block applied to the current tensor, its layers named in
    the enclosing scope (continuing a group's numbering) rather than under a name of its own."""
    callee: Callee


class Freeze(Node):
    """``freeze a, b.c``: the parameters under those paths are not trained."""
    paths: list           # FreezePaths


# ---- definitions -------------------------------------------------------------
class Param(Node):
    name: str
    type: Optional[str]
    default: Any          # expression or None


class BlockDef(Node):
    name: str
    params: list
    inputs: Optional[list]    # None: a chain block with one input
    outputs: Optional[list]
    doc: Optional[str]
    body: list


class SeqBlockDef(BlockDef):
    """``block Name(params) [ "doc" stmts ]``: a chain block whose body is a group, so its
    unnamed items are numbered 0, 1, 2, ... inside each instance (torch's nn.Sequential)."""


class NetworkDef(Node):
    name: str
    params: list
    doc: Optional[str]
    body: list


class NetworkAlias(Node):
    name: str
    target: str
    args: list


class BlockAlias(Node):
    """``block SEBottleneck = Bottleneck(post = SE(16))``: a block with arguments bound."""
    name: str
    target: str
    args: list


BLOCKS = (BlockDef, BlockAlias)


class Import(Node):
    path: str


class Module(Node):
    items: list


def _define_methods(classes) -> None:
    """__init__, __eq__ and __repr__ for each node class, from its annotated fields."""
    lines, names = [], {}
    for cls in classes:
        fields = ["span"] + [f for klass in reversed(cls.__mro__[:-2]) for f in vars(klass).get("__annotations__", {})
                             if f != "span"]
        compared = fields[1:]
        key = cls.__name__
        names[key] = cls
        cls._fields = tuple(fields)
        lines.append(f"def {key}__init__(self, {', '.join(fields)}):")
        lines += [f"    self.{f} = {f}" for f in fields]
        lines.append(f"def {key}__eq__(self, other):")
        lines.append("    if other.__class__ is not self.__class__:")
        lines.append("        return NotImplemented")
        lines.append(f"    return ({''.join(f'self.{f}, ' for f in compared)}) == "
                     f"({''.join(f'other.{f}, ' for f in compared)})")
        lines.append(f"def {key}__repr__(self):")
        shown = ", ".join(f"{f}={{self.{f}!r}}" for f in compared)
        lines.append(f"    return f\"{{self.__class__.__qualname__}}({shown})\"")
    namespace: dict = {}
    exec(compile("\n".join(lines), __file__ + ":<generated>", "exec"), namespace)
    for key, cls in names.items():
        cls.__init__ = namespace[key + "__init__"]
        cls.__eq__ = namespace[key + "__eq__"]
        cls.__repr__ = namespace[key + "__repr__"]
        cls.__hash__ = None


_define_methods([cls for cls in list(globals().values())
                 if isinstance(cls, type) and issubclass(cls, Node) and cls is not Node])
