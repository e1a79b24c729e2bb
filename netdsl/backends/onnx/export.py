"""IR graph -> ONNX: nodes, initializers named as state_dict keys, dynamic dims as
dim_params, value_info for every intermediate tensor.

Weights are kept as numpy arrays until the end. `to_model` returns a complete
ModelProto; `StreamedModel` streams the weights straight from numpy into the file
(no copy of the whole model in memory), which is most of the cost of compiling a
large network. Both give the same bytes for the same graph, weights and opset.
Models over protobuf's 2 GiB limit are written with external data: a .onnx file
whose initializers point into a data file beside it.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ... import __version__
from ...errors import BackendError, UsageError
from ...ir import dims as D
from ...ir.graph import Graph, graph_source, param_key
from ...passes import size_rules
from .builder import OnnxBuilder
from .emitters import EMITTERS
from ...weights import resolve

from ..opsets import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET  # noqa: F401 - re-exported
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


def _value_info(name: str, shape, dtype: str = "float32") -> onnx.ValueInfoProto:
    """A tensor's declared type: its element type (Value.dtype) and dims, each an int or a
    dim_param: the symbolic expression's text (`H`, `H // 2 + 1`; a data-dependent size's
    name, `K`)."""
    dims = [int(d) if D.is_static(d) else str(d) for d in shape]
    dt = np.dtype(dtype)
    return helper.make_tensor_value_info(name, _DTYPES.get(dt) or helper.np_dtype_to_tensor_dtype(dt), dims)


def _value_names(b: _WeightsByReference, graph: Graph) -> dict:
    """IR value name -> ONNX value name, with every name b will use reserved in b.

    The graph's input and output names are its interface, and initializers are named as the
    state_dict: these keep their names. An internal value whose IR name is one of them (a layer
    labelled `y` in a network with an output `y` that is another value) gets a fresh name, and
    so do the constants the emitters make (they come from b.fresh)."""
    interface = {v.name for v in graph.inputs} | {name for name, _ in graph.outputs} | set(b.layout)
    for name in interface:
        b.reserve(name)
    internal = [v for n in graph.nodes for v in n.outputs]
    for v in internal:
        b.reserve(v.name)
    names = {v.name: v.name for v in graph.inputs}
    output_as_itself = {id(v) for name, v in graph.outputs if name == v.name}
    for v in internal:
        clash = v.name in interface and id(v) not in output_as_itself
        names[v.name] = b.fresh(v.name) if clash else v.name
    return names


def _emit(graph: Graph, weights: dict, opset: int, direct_resize: bool):
    b = _WeightsByReference(opset, weights, graph.state_layout())
    b.direct_resize = direct_resize
    onnx_name = _value_names(b, graph)
    for v in graph.inputs:      # where each symbol can be read: the first input dim that is it
        for axis, d in enumerate(v.shape):
            if isinstance(d, D.Lin) and d.is_atom() and isinstance(d.terms[0][0], D.Sym):
                b.input_dims.setdefault(d.terms[0][0].name, (v.name, axis))
    for n in graph.nodes:
        EMITTERS[n.op](b, n, [onnx_name[v.name] for v in n.inputs], [onnx_name[v.name] for v in n.outputs])
        b.name_nodes(n.path or n.op)       # ONNX node names are the spec's paths
    return b, onnx_name


def _transposes_computed_value(b: OnnxBuilder) -> bool:
    """Whether the graph has a Transpose that onnxruntime's transpose optimiser could move: one
    of anything but a weight or constant (those it folds). Without one, a Resize can safely run
    on the 4-D tensor itself, which lets onnxruntime's NCHWc transformer take it."""
    constants = set(b.initializers) | set(getattr(b, "used", ()))
    return any(n.op_type == "Transpose" and n.input[0] not in constants for n in b.nodes)


def build_graph_proto(graph: Graph, weights: dict, opset: int = DEFAULT_OPSET):
    """The model without its initializers, and {weight name: ParamSpec} of those it uses."""
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(f"opset {opset} is not supported (choose {MIN_OPSET} to {MAX_OPSET})")
    missing = sorted({n.op for n in graph.nodes if n.op not in EMITTERS})
    if missing:
        raise BackendError(f"the onnx target does not support: {', '.join(missing)}")
    b, onnx_name = _emit(graph, weights, opset, direct_resize=True)
    if b.direct_resized and _transposes_computed_value(b):      # see emitters._linear_resize_merged
        b, onnx_name = _emit(graph, weights, opset, direct_resize=False)

    outputs = []
    for name, v in graph.outputs:
        if onnx_name[v.name] != name:   # an input, a value output under several names, or renamed
            b.add("Identity", [onnx_name[v.name]], [name])
            b.name_nodes(f"output:{name}")
        outputs.append(_value_info(name, v.shape, v.dtype))
    out_names = {name for name, _ in graph.outputs}
    value_info = [_value_info(onnx_name[v.name], v.shape, v.dtype) for n in graph.nodes for v in n.outputs
                  if onnx_name[v.name] not in out_names]
    g = helper.make_graph(b.nodes, graph.name, [_value_info(v.name, v.shape, v.dtype) for v in graph.inputs],
                          outputs, initializer=list(b.initializers.values()), value_info=value_info,
                          doc_string=graph.doc or "")
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(g, opset_imports=opsets, producer_name="netdsl", producer_version=__version__)
    model.ir_version = helper.find_min_ir_version_for(opsets)
    rules = size_rules.to_json(graph)       # the input sizes that work, for `netdsl run` to check
    helper.set_model_props(model, {size_rules.METADATA_KEY: rules, **model_metadata(graph)})
    return model, b.used


def model_metadata(graph: Graph) -> dict:
    """Where a model came from, for viewers and tools: `netdsl.source` (the spec file the
    network was loaded from, named as it was given, even where the network is defined in a file
    it imports), `netdsl.network` and `netdsl.version`."""
    source = graph_source(graph)
    meta = {"netdsl.network": graph.name, "netdsl.version": __version__}
    if source:
        meta["netdsl.source"] = source
    return meta


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


# protobuf cannot serialize or parse a message of 2 GiB or more: larger models keep their
# weights in a separate file ("external data")
PROTOBUF_LIMIT = 2 ** 31 - 1
_ALIGN = 4096       # external data offsets of all but tiny tensors, as onnx aligns them for mmap


class StreamedModel:
    """A model whose weights are written straight from their arrays, never copied into protos:
    either inline in one .onnx file, or as external data (a .onnx plus a data file)."""

    def __init__(self, graph: Graph, weights: dict, opset: int = DEFAULT_OPSET):
        self.model, used = build_graph_proto(graph, weights, opset)
        self.weights = weights
        self.tensors = [(name, spec, int(np.prod(spec.shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize)
                        for name, spec in used.items()]

    def _pieces(self):
        """(tensor index, bytes) of every weight in turn (see weights.stream_bytes)."""
        from ...weights import LazyUniform, stream_bytes

        def source(name, spec):
            value = self.weights[name]
            if isinstance(value, LazyUniform):
                return value
            return lambda: _array(self.weights, name, spec)     # waits for a fill still running
        return stream_bytes([source(name, spec) for name, spec, _ in self.tensors])

    # ---- one file

    def _inline_layout(self):
        """Protobuf merges repeated occurrences of an embedded message field, so the model is
        written as the model without weights followed by a second `graph` field that holds
        only the initializers, each raw_data written directly from its array."""
        chunks, total = [], 0
        for name, spec, nbytes in self.tensors:
            header = _tensor_header(name, spec).SerializeToString()
            tensor_len = len(header) + 1 + len(_varint(nbytes)) + nbytes
            prefix = b"\x2a" + _varint(tensor_len) + header + b"\x4a" + _varint(nbytes)
            chunks.append((prefix, name, spec))
            total += len(prefix) + nbytes
        return chunks, total

    def inline_size(self) -> int:
        """The size of the single-file model, in bytes."""
        _, total = self._inline_layout()
        size = self.model.ByteSize()
        return size + (1 + len(_varint(total)) + total if total else 0)

    def write_inline(self, f) -> None:
        chunks, total = self._inline_layout()
        f.write(self.model.SerializeToString())
        if chunks:
            f.write(b"\x3a" + _varint(total))
            current = None
            for i, piece in self._pieces():
                if i != current:
                    f.write(chunks[i][0])
                    current = i
                f.write(piece)

    # ---- external data

    def _offsets(self):
        offset, out = 0, []
        for name, spec, nbytes in self.tensors:
            if nbytes >= _ALIGN:
                offset = -(-offset // _ALIGN) * _ALIGN
            out.append((name, spec, offset, nbytes))
            offset += nbytes
        return out

    def external_model(self, location: str) -> bytes:
        """The .onnx file whose initializers refer to `location` (a file name beside it)."""
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        for name, spec, offset, nbytes in self._offsets():
            t = _tensor_header(name, spec)
            t.data_location = TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(nbytes))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
            model.graph.initializer.append(t)
        return model.SerializeToString()

    def data_size(self) -> int:
        """The size of the external data file, in bytes."""
        offsets = self._offsets()
        return offsets[-1][2] + offsets[-1][3] if offsets else 0

    def write_data(self, f) -> None:
        """The external data file: every weight's raw bytes at the offsets external_model gives."""
        offsets, pos = self._offsets(), 0
        for i, piece in self._pieces():
            offset = offsets[i][2]
            if offset > pos:
                f.write(bytes(offset - pos))
                pos = offset
            f.write(piece)
            pos += len(piece)

