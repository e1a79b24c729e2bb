"""A live nn.Module built by executing the generated source."""
from __future__ import annotations

import linecache

from ...ir.graph import Graph
from ...torch_support import require_torch
from .codegen import class_name, generate_source

_counter = [0]


def build_module(graph: Graph, weights: dict | None = None, source: str | None = None):
    torch = require_torch("the torch target")
    source = source or generate_source(graph)
    _counter[0] += 1
    filename = f"<netdsl:{graph.name}:{_counter[0]}>"
    # registered so that tracebacks and inspect can show the generated lines
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict = {"__name__": f"netdsl_generated_{_counter[0]}"}
    exec(compile(source, filename, "exec"), namespace)
    module = namespace[class_name(graph)]()
    if weights is not None:
        state = {k: torch.from_numpy(v.copy()) for k, v in weights.items()}
        module.load_state_dict(state, strict=True)
    return module
