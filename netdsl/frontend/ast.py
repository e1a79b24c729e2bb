"""AST node classes. Every node carries the span of the text it came from."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

from ..errors import Span


@dataclass
class Node:
    span: Span = field(repr=False, compare=False)


# ---- expressions -------------------------------------------------------------
@dataclass
class Var(Node):
    name: str


@dataclass
class Lit(Node):
    value: Any


@dataclass
class ListLit(Node):
    items: list


@dataclass
class TupleLit(Node):
    items: list


@dataclass
class BinOp(Node):
    op: str        # + - * / // % ** == != < <= > >= and or
    left: Any
    right: Any


@dataclass
class UnaryOp(Node):
    op: str        # - + not
    operand: Any


@dataclass
class CondExpr(Node):
    cond: Any
    then: Any
    orelse: Any


@dataclass
class Arg(Node):
    name: Optional[str]   # None for positional
    value: Any


@dataclass
class Call(Node):
    func: Any
    args: list


@dataclass
class Index(Node):
    obj: Any
    index: Any


@dataclass
class Attr(Node):
    obj: Any
    name: str


@dataclass
class NameTemplate(Node):
    parts: list           # str pieces and expressions, e.g. ["layer", <i + 1>]


@dataclass
class Callee(Node):
    name: str
    args: Optional[list]  # None: written without parentheses


@dataclass
class Group(Node):
    body: list


@dataclass
class Stage(Node):
    label: Optional[NameTemplate]
    target: Union[Callee, Group]


@dataclass
class Pipeline(Node):
    head: Any
    stages: list


# ---- statements --------------------------------------------------------------
@dataclass
class LayerStmt(Node):
    stage: Stage


@dataclass
class Assign(Node):
    names: list
    value: Any


@dataclass
class If(Node):
    branches: list        # [(cond, body)]
    orelse: Optional[list]


@dataclass
class For(Node):
    var: str
    iterable: Any
    body: list


@dataclass
class Return(Node):
    values: list


@dataclass
class InputDecl(Node):
    name: str
    dtype: str
    dims: list


@dataclass
class OutputDecl(Node):
    name: str
    value: Any            # None: output an existing tensor of that name


@dataclass
class ParamDecl(Node):
    """A learned tensor: ``param class_token: f32[1, 1, 768] = zeros()``."""
    label: NameTemplate
    dtype: str
    dims: list
    init: Any             # expression giving the initialiser, or None (zeros)


# ---- definitions -------------------------------------------------------------
@dataclass
class Param(Node):
    name: str
    type: Optional[str]
    default: Any          # expression or None


@dataclass
class BlockDef(Node):
    name: str
    params: list
    inputs: Optional[list]    # None: a chain block with one input
    outputs: Optional[list]
    doc: Optional[str]
    body: list


@dataclass
class NetworkDef(Node):
    name: str
    params: list
    doc: Optional[str]
    body: list


@dataclass
class NetworkAlias(Node):
    name: str
    target: str
    args: list


@dataclass
class BlockAlias(Node):
    """``block SEBottleneck = Bottleneck(post = SE(16))``: a block with arguments bound."""
    name: str
    target: str
    args: list


BLOCKS = (BlockDef, BlockAlias)


@dataclass
class Import(Node):
    path: str


@dataclass
class Module(Node):
    items: list
