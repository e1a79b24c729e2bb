"""IR graph -> ONNX: nodes, initializers named as state_dict keys, dynamic dims as
dim_params, value_info for every intermediate tensor.

Weights are kept as numpy arrays until the end. `to_model` returns a complete
ModelProto; `write_model` streams the weights straight from numpy into the file
(no copy of the whole model in memory), which is most of the cost of compiling a
large network. Both give the same bytes for the same graph, weights and opset.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ... import __version__
from ...errors import BackendError, UsageError
from ...ir import dims as D
from ...ir.graph import Graph, param_key
from .builder import OnnxBuilder
from .emitters import EMITTERS
from ...weights import resolve

MIN_OPSET, MAX_OPSET = 13, 21
DEFAULT_OPSET = 17
_DTYPES = {np.dtype("float32"): TensorProto.FLOAT, np.dtype("int64"): TensorProto.INT64}


class _WeightsByReference(OnnxBuilder):
    """Records which weights the graph uses (name -> ParamSpec) instead of copying them
    into protos; the values are read only when the model is assembled or written."""

    def __init__(self, opset, weights, layout):
        super().__init__(opset, weights)
        self.layout = layout
        self.used: dict = {}

    def weight(self, node, pname: str) -> str:
        full = param_key(node.path, pname)
        if full not in self.used:
            self.used[full] = self.layout[full]
            self.reserve(full)
        return full


def _value_info(name: str, shape) -> onnx.ValueInfoProto:
    dims = [int(d) if D.is_static(d) else str(d) for d in shape]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def build_graph_proto(graph: Graph, weights: dict, opset: int = DEFAULT_OPSET):
    """The model without its initializers, and {weight name: ParamSpec} of those it uses."""
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(f"opset {opset} is not supported (choose {MIN_OPSET} to {MAX_OPSET})")
    missing = sorted({n.op for n in graph.nodes if n.op not in EMITTERS})
    if missing:
        raise BackendError(f"the onnx target does not support: {', '.join(missing)}")
    b = _WeightsByReference(opset, weights, graph.state_layout())
    for v in graph.inputs:
        b.reserve(v.name)
    for n in graph.nodes:
        for v in n.outputs:
            b.reserve(v.name)
    for n in graph.nodes:
        EMITTERS[n.op](b, n, [v.name for v in n.inputs], [v.name for v in n.outputs])

    outputs = []
    for name, v in graph.outputs:
        if v.name != name:    # an input, or a value that is output twice under two names
            b.add("Identity", [v.name], [name])
        outputs.append(_value_info(name, v.shape))
    out_names = {name for name, _ in graph.outputs}
    value_info = [_value_info(v.name, v.shape) for n in graph.nodes for v in n.outputs
                  if v.name not in out_names]
    g = helper.make_graph(b.nodes, graph.name, [_value_info(v.name, v.shape) for v in graph.inputs],
                          outputs, initializer=list(b.initializers.values()), value_info=value_info,
                          doc_string=graph.doc or "")
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(g, opset_imports=opsets, producer_name="netdsl", producer_version=__version__)
    model.ir_version = helper.find_min_ir_version_for(opsets)
    return model, b.used


def _tensor_header(name: str, spec) -> TensorProto:
    t = TensorProto()
    t.name = name
    t.dims.extend(spec.shape)
    t.data_type = _DTYPES[np.dtype(spec.dtype)]
    return t


def _array(weights: dict, name: str, spec) -> np.ndarray:
    arr = np.ascontiguousarray(resolve(weights[name]), dtype=spec.dtype)
    if arr.shape != tuple(spec.shape):
        raise UsageError(f"weight {name} has shape {list(arr.shape)}, the network needs {list(spec.shape)}")
    return arr


def to_model(graph: Graph, weights: dict, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    model, used = build_graph_proto(graph, weights, opset)
    for name, spec in used.items():
        model.graph.initializer.append(numpy_helper.from_array(_array(weights, name, spec), name))
    return model


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def write_model(graph: Graph, weights: dict, path, opset: int = DEFAULT_OPSET) -> None:
    """Write the model to an open binary file or a path, streaming the weights.

    Protobuf merges repeated occurrences of an embedded message field, so the model
    is written as the model without weights followed by a second `graph` field that
    holds only the initializers, each raw_data written directly from its array."""
    model, used = build_graph_proto(graph, weights, opset)
    chunks: list = []
    total = 0
    for name, spec in used.items():
        header = _tensor_header(name, spec).SerializeToString()
        nbytes = int(np.prod(spec.shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize
        tensor_len = len(header) + 1 + len(_varint(nbytes)) + nbytes
        prefix = b"\x2a" + _varint(tensor_len) + header + b"\x4a" + _varint(nbytes)
        chunks.append((prefix, name, spec))
        total += len(prefix) + nbytes
    head = model.SerializeToString()

    def emit(f):
        f.write(head)
        if chunks:
            f.write(b"\x3a" + _varint(total))
            for prefix, name, spec in chunks:
                arr = _array(weights, name, spec)   # waits for a fill still running
                f.write(prefix)
                f.write(memoryview(arr.astype(arr.dtype.newbyteorder("<"), copy=False)).cast("B"))

    if hasattr(path, "write"):
        emit(path)
    else:
        with open(path, "wb") as f:
            emit(f)
