"""Accumulates ONNX nodes, constants and initializers for one graph."""
from __future__ import annotations

import numpy as np
from onnx import AttributeProto, NodeProto, TensorProto, helper, numpy_helper

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


class OnnxBuilder:
    def __init__(self, opset: int, weights: dict):
        self.opset = opset
        self.weights = weights
        self.nodes: list = []
        self.initializers: dict = {}
        self._used: set = set()
        self._consts: dict = {}
        self._resume: dict = {}     # base -> the last suffix it got: names are never freed

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
        name, or the list of names when several were asked for."""
        if outputs is None or isinstance(outputs, str):
            outputs = [self.fresh(outputs or op_type.lower())]
        node_name = self.fresh(name or f"{outputs[0]}_{op_type}")
        # helper.make_node, with the common attribute kinds made directly (_attribute)
        node = NodeProto()
        node.op_type = op_type
        node.input.extend(inputs)
        node.output.extend(outputs)
        node.name = node_name
        if domain:
            node.domain = domain
        if attrs:
            node.attribute.extend(_attribute(k, v) for k, v in sorted(attrs.items()) if v is not None)
        self.nodes.append(node)
        return outputs[0] if len(outputs) == 1 else list(outputs)

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


FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
DOUBLE = TensorProto.DOUBLE


def reduce(b: OnnxBuilder, op: str, x: str, axes, keepdims: int = 1, out=None) -> str:
    """ReduceMean/ReduceMax/... with `axes` as an attribute (opset < 18) or an input (>= 18)."""
    if b.opset >= 18 or op == "ReduceSum":
        return b.add(op, [x, b.ints(list(axes), "axes")], out, keepdims=keepdims)
    return b.add(op, [x], out, axes=list(axes), keepdims=keepdims)
