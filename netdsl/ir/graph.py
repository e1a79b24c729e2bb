"""The IR: a graph of nodes (op applications) over values (tensors).

Nodes are kept in topological order (the elaborator appends them as it goes).
Each node knows its module path (its parameters live at ``path.weight`` ...),
the source span it came from and the block-instantiation trace leading there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import Span
from . import dims as D


@dataclass(eq=False)
class Value:
    name: str                      # unique within the graph; a valid identifier
    shape: tuple                   # tuple of Dim
    dtype: str = "float32"
    producer: "Node | None" = field(default=None, repr=False)
    named: bool = False            # the spec named it (an assignment, input or output)

    @property
    def rank(self) -> int:
        return len(self.shape)

    def __repr__(self):
        return f"Value({self.name}: {D.fmt_shape(self.shape)})"


@dataclass(frozen=True)
class ParamSpec:
    """A parameter or buffer of a node, in the layout torch uses for it."""
    shape: tuple                   # concrete ints
    init: str                      # "uniform" (bound = 1/sqrt(fan_in), or `scale`), "normal" (std =
                                   # `scale`), "ones", "zeros", "constant" (`scale`), "bilinear"
                                   # (netdsl.ir.init: FCN's upsampling kernel, per channel),
                                   # "relative_position_index" (netdsl.weights: fan_in = window width),
                                   # "relative_coords_table" (Swin V2's buffer, netdsl.weights)
    fan_in: int = 1
    buffer: bool = False           # running statistics: in the state_dict, not trained
    dtype: str = "float32"
    scale: float = 0.0
    trainable: bool = True         # False: frozen (`frozen = true`, `freeze`); buffers: see `buffer`


def graph_source(graph) -> str | None:
    """The spec file a graph's network was loaded from, as given (None where unknown): its
    `source`, else the file its definition is in."""
    source = getattr(graph, "source", None)
    if source:
        return source
    span = getattr(graph, "span", None)
    return span.file if span is not None else None


def param_counts(nodes) -> tuple[int, int]:
    """(trainable, frozen) parameter elements of `nodes`; buffers are not parameters."""
    trainable = frozen = 0
    for n in nodes:
        for spec in n.params.values():
            if spec.buffer:
                continue
            count = 1
            for d in spec.shape:
                count *= d
            if spec.trainable:
                trainable += count
            else:
                frozen += count
    return trainable, frozen


def param_key(path: str, pname: str) -> str:
    """The state_dict key of a node's parameter; a `param` tensor is keyed by its path alone."""
    return f"{path}.{pname}" if pname else path


@dataclass(eq=False)
class Node:
    op: str
    path: str                      # module path, e.g. "layer1.0.conv1"
    inputs: list
    outputs: list
    attrs: dict
    span: Span | None = field(default=None, repr=False)
    trace: tuple = field(default=(), repr=False)   # ((block name, span), ...) innermost first
    params: dict = field(default_factory=dict)     # name -> ParamSpec
    macs: Any = 0                                  # Dim

    def __repr__(self):
        ins = ", ".join(v.name for v in self.inputs)
        outs = ", ".join(v.name for v in self.outputs)
        return f"Node({self.path}: {self.op}({ins}) -> {outs})"


@dataclass(eq=False)
class Graph:
    name: str
    doc: str | None = None
    inputs: list = field(default_factory=list)      # Values
    outputs: list = field(default_factory=list)     # (name, Value)
    nodes: list = field(default_factory=list)
    constraints: list = field(default_factory=list)  # passes.constraints.Constraint
    params: dict = field(default_factory=dict)       # network parameter values used
    span: Span | None = field(default=None, repr=False)
    dynamic: dict = field(default_factory=dict)      # data-dependent sizes: name -> dims.Dyn,
                                                     # in the order made (ShapeCtx.dynamic)
    blocks: dict = field(default_factory=dict)       # block instance path -> (block name, Span of
                                                     # the call); spliced instances have no path
    source: str | None = None                        # the spec file the network was loaded from,
                                                     # as given (a network may be defined in a file
                                                     # it imports: span.file is that one)

    def state_layout(self) -> dict:
        """Fully-qualified parameter/buffer name -> ParamSpec, in definition order."""
        out = {}
        for n in self.nodes:
            for pname, spec in n.params.items():
                out[param_key(n.path, pname)] = spec
        return out

    def param_count(self, trainable: bool | None = None) -> int:
        """Elements of all parameters (buffers excluded); only the trainable (True) or the
        frozen (False) ones when `trainable` is given."""
        total = 0
        for spec in self.state_layout().values():
            if not spec.buffer and (trainable is None or spec.trainable == trainable):
                count = 1
                for d in spec.shape:
                    count *= d
                total += count
        return total

    def trainable_param_count(self) -> int:
        return self.param_count(trainable=True)

    def frozen_param_count(self) -> int:
        return self.param_count(trainable=False)

    def macs(self):
        total = 0
        for n in self.nodes:
            total = D.add(total, n.macs)
        return total
