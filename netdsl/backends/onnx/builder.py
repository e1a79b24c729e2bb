"""Accumulates ONNX nodes, constants and initializers for one graph."""
from __future__ import annotations

import numpy as np
from onnx import AttributeProto, NodeProto, TensorProto, helper, numpy_helper

from ...ir import dims as D
from ...ir.graph import param_key


def _attribute(key: str, value) -> AttributeProto:
    """helper.make_attribute(key, value), built directly for plain ints, floats and lists of
    ints: make_attribute's abstract-base-class checks were half of emitting a long network."""
    cls = value.__class__
    if cls is int or cls is float or ((cls is list or cls is tuple) and value
                                      and all(v.__class__ is int for v in value)):
        attr = AttributeProto()
        attr.name = key
        if cls is int:
            attr.i = value
            attr.type = AttributeProto.INT
        elif cls is float:
            attr.f = value
            attr.type = AttributeProto.FLOAT
        else:
            attr.ints.extend(value)
            attr.type = AttributeProto.INTS
        return attr
    return helper.make_attribute(key, value)


_WITH_SUBGRAPHS = frozenset({"If", "Loop", "Scan"})


def _with_subgraph_nodes(nodes):
    """The nodes, each followed by those of its subgraphs (an If's branches), depth first."""
    for node in nodes:
        yield node
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                yield from _with_subgraph_nodes(attr.g.node)
            elif attr.type == AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _with_subgraph_nodes(g.node)


class OnnxBuilder:
    def __init__(self, opset: int, weights: dict):
        self.opset = opset
        self.weights = weights
        self.nodes: list = []
        self.made: list = []        # nodes added since the last name_nodes(), subgraphs' included
        self._node_names: set = set()
        self.initializers: dict = {}
        self._used: set = set()
        self._consts: dict = {}
        self._resume: dict = {}     # base -> the last suffix it got: names are never freed
        self.input_dims: dict = {}  # symbol -> (graph input, axis) where that dim is the symbol
        self._dims: dict = {}       # symbolic dim's key -> the [1] tensor computing it
        # Resize straight on the 4-D tensor (see emitters._linear_resize_merged): export turns this
        # on, and emits again with it off when the graph it got has a Transpose of a computed value
        self.direct_resize = False
        self.direct_resized = False     # whether an emitter used it

    def fresh(self, hint: str) -> str:
        """The smallest free `base`, `base_1`, `base_2`, ...; each base's search resumes where
        its last one ended (linear, not quadratic, in the number of names)."""
        base = hint.replace(".", "_") or "t"
        k = self._resume.get(base, 0)
        name = f"{base}_{k}" if k else base
        while name in self._used:
            k += 1
            name = f"{base}_{k}"
        self._resume[base] = k
        self._used.add(name)
        return name

    def reserve(self, name: str):
        self._used.add(name)

    def add(self, op_type: str, inputs: list, outputs=None, name: str | None = None,
            domain: str = "", **attrs):
        """Add a node. `outputs`: names, or a hint for one fresh output. Returns the output
        name, or the list of names when several were asked for. The node is named by
        `name_nodes` (after the IR node it is made for); `name`, if given, is its label there
        instead of its op type."""
        if outputs is None or isinstance(outputs, str):
            outputs = [self.fresh(outputs or op_type.lower())]
        # helper.make_node, with the common attribute kinds made directly (_attribute)
        node = NodeProto()
        node.op_type = op_type
        node.input.extend(inputs)
        node.output.extend(outputs)
        if name:
            node.name = name
        if domain:
            node.domain = domain
        if attrs:
            node.attribute.extend(_attribute(k, v) for k, v in sorted(attrs.items()) if v is not None)
        self.nodes.append(node)
        self.made.append(node)
        return outputs[0] if len(outputs) == 1 else list(outputs)

    def name_nodes(self, path: str) -> None:
        """Name the nodes added since the last call (those of an If's branches included) after
        the IR node they were made for, so that a viewer (Netron) shows the spec's paths: one node
        is named `path` itself, several `path/OpType`, `path/OpType_1`, ... (each op type counted
        on its own). A name already given is made unique the same way."""
        made = self.made
        if not made:
            return
        self.made = []
        if any(node.op_type in _WITH_SUBGRAPHS for node in made):
            made = list(_with_subgraph_nodes(made))
        taken = self._node_names
        if len(made) == 1 and not made[0].name:
            name = path
            if name in taken:
                name = f"{path}/{made[0].op_type}"
            made[0].name = self._unique_node_name(name)
            return
        counts: dict = {}
        for node in made:
            label = node.name or node.op_type
            k = counts.get(label, 0)
            counts[label] = k + 1
            name = f"{path}/{label}_{k}" if k else f"{path}/{label}"
            if name in taken:
                name = self._unique_node_name(name)
            else:
                taken.add(name)
            node.name = name

    def _unique_node_name(self, name: str) -> str:
        taken = self._node_names
        if name in taken:
            k = 1
            while f"{name}_{k}" in taken:
                k += 1
            name = f"{name}_{k}"
        taken.add(name)
        return name

    def const(self, value, hint: str = "const", dtype=None) -> str:
        """An initializer holding a constant; identical small constants are shared."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes()) if arr.size <= 64 else None
        if key is not None and key in self._consts:
            return self._consts[key]
        name = self.fresh(hint)
        self.initializers[name] = numpy_helper.from_array(arr, name)
        if key is not None:
            self._consts[key] = name
        return name

    def ints(self, values, hint: str = "ints") -> str:
        return self.const(np.asarray(values, dtype=np.int64), hint)

    def weight(self, node, pname: str) -> str:
        """The initializer for a node parameter, named as in the torch state_dict."""
        full = param_key(node.path, pname)
        if full not in self.initializers:
            self.initializers[full] = numpy_helper.from_array(
                np.ascontiguousarray(self.weights[full]), full)
            self._used.add(full)
        return full

    def shape_dims(self, x: str, start: int, end: int | None = None, hint="dims") -> str:
        """int64 1-D tensor of x's dims [start:end] (read at run time)."""
        if self.opset < 15:   # Shape takes start/end from opset 15 on
            full = self.add("Shape", [x], "shape")
            ends = [end if end is not None else np.iinfo(np.int64).max]
            return self.add("Slice", [full, self.ints([start]), self.ints(ends)], hint)
        kw = {"start": start}
        if end is not None:
            kw["end"] = end
        return self.add("Shape", [x], hint, **kw)

    def size(self, x: str, shape, axis: int, hint: str = "len"):
        """shape[axis] of the value x: an int where static, else a [1] int64 tensor (from the
        graph inputs' sizes where it can, else read from x at run time)."""
        d = shape[axis]
        if D.is_static(d):
            return int(d)
        return self.input_dim(d, hint) or self.shape_dims(x, axis, axis + 1, hint)

    def shape_of_parts(self, parts: list, hint: str) -> str:
        """A 1-D int64 shape from ints and [1] int64 tensors (as `size` gives): one constant
        where all are ints, else a Concat with each run of ints as one constant."""
        if all(isinstance(x, int) for x in parts):
            return self.ints(parts, hint)
        pieces, run = [], []
        for x in parts:
            if isinstance(x, int):
                run.append(x)
                continue
            if run:
                pieces.append(self.ints(run))
                run = []
            pieces.append(x)
        if run:
            pieces.append(self.ints(run))
        return self.add("Concat", pieces, hint, axis=0)

    def input_dim(self, d, hint="dim") -> str | None:
        """[1] int64: the symbolic dim `d` computed from the graph inputs' shapes, or None when it
        involves a symbol that no input dim holds. Shape of a graph input, then integer
        arithmetic that is exact for every value (a floor division is (a - Mod(a, k)) / k, the
        division exact; floor(L * s) in double as torch rounds it). Cheaper to read than Shape of
        a large intermediate tensor, which onnxruntime first reorders out of its blocked (NCHWc)
        layout. Each expression is built once per graph."""
        if D.is_static(d):
            return self.ints([int(d)], hint)
        key = d.key()
        if key in self._dims:
            return self._dims[key]
        if not D.symbols(d) <= self.input_dims.keys():     # checked first: no nodes left unused
            return None
        if isinstance(d, D.Lin):
            out = None
            for atom, coef in d.terms:
                t = self.input_dim(atom, hint)
                if t is None:
                    return None
                t = t if coef == 1 else self.add("Mul", [t, self.ints([coef])], hint)
                out = t if out is None else self.add("Add", [out, t], hint)
            if d.const:
                out = self.add("Add", [out, self.ints([d.const])], hint)
        elif isinstance(d, D.Sym):
            if d.name not in self.input_dims:
                return None
            name, axis = self.input_dims[d.name]
            out = self.shape_dims(name, axis, axis + 1, hint)
        elif isinstance(d, D.FloorDiv):
            num = self.input_dim(d.num, hint)
            if num is None:
                return None
            k = self.ints([d.den])
            whole = self.add("Sub", [num, self.add("Mod", [num, k], hint)], hint)     # Mod: sign of k
            out = self.add("Div", [whole, k], hint)
        elif isinstance(d, D.Prod):
            out = None
            for f in d.factors:
                t = self.input_dim(f, hint)
                if t is None:
                    return None
                out = t if out is None else self.add("Mul", [out, t], hint)
        elif isinstance(d, D.ScaledFloor):
            num = self.input_dim(d.num, hint)
            if num is None:
                return None
            prod = self.add("Mul", [self.add("Cast", [num], hint, to=DOUBLE),
                                    self.const(np.float64(d.scale), "scale_d")], hint)
            out = self.add("Cast", [self.add("Floor", [prod], hint)], hint, to=INT64)
        else:
            return None
        self._dims[key] = out
        return out


FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
DOUBLE = TensorProto.DOUBLE


def reduce(b: OnnxBuilder, op: str, x: str, axes, keepdims: int = 1, out=None) -> str:
    """ReduceMean/ReduceMax/... with `axes` as an attribute (opset < 18) or an input (>= 18)."""
    if b.opset >= 18 or op == "ReduceSum":
        return b.add(op, [x, b.ints(list(axes), "axes")], out, keepdims=keepdims)
    return b.add(op, [x], out, axes=list(axes), keepdims=keepdims)
