"""IR graph -> onnx.ModelProto: nodes, initializers named as state_dict keys,
dynamic dims as dim_params, value_info for every intermediate tensor."""
from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from ... import __version__
from ...errors import BackendError, UsageError
from ...ir import dims as D
from ...ir.graph import Graph
from .builder import OnnxBuilder
from .emitters import EMITTERS

MIN_OPSET, MAX_OPSET = 13, 21
DEFAULT_OPSET = 17


def _value_info(name: str, shape) -> onnx.ValueInfoProto:
    dims = [int(d) if D.is_static(d) else str(d) for d in shape]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def to_model(graph: Graph, weights: dict, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(f"opset {opset} is not supported (choose {MIN_OPSET} to {MAX_OPSET})")
    missing = sorted({n.op for n in graph.nodes if n.op not in EMITTERS})
    if missing:
        raise BackendError(f"the onnx target does not support: {', '.join(missing)}")
    b = OnnxBuilder(opset, weights)
    for v in graph.inputs:
        b.reserve(v.name)
    for n in graph.nodes:
        for v in n.outputs:
            b.reserve(v.name)
    for n in graph.nodes:
        EMITTERS[n.op](b, n, [v.name for v in n.inputs], [v.name for v in n.outputs])

    outputs = []
    produced = {v.name for n in graph.nodes for v in n.outputs}
    for name, v in graph.outputs:
        if v.name != name:    # an input, or a value that is output twice under two names
            b.add("Identity", [v.name], [name])
        outputs.append(_value_info(name, v.shape))
    out_names = {name for name, _ in graph.outputs}
    value_info = [_value_info(v.name, v.shape) for n in graph.nodes for v in n.outputs
                  if v.name not in out_names and v.name in produced]
    g = helper.make_graph(b.nodes, graph.name, [_value_info(v.name, v.shape) for v in graph.inputs],
                          outputs, initializer=list(b.initializers.values()), value_info=value_info,
                          doc_string=graph.doc or "")
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(g, opset_imports=opsets, producer_name="netdsl", producer_version=__version__)
    model.ir_version = helper.find_min_ir_version_for(opsets)
    return model
