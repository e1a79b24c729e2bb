"""Refuse to build weights that cannot fit in memory, before allocating any of them: a located
error naming the layer that holds the largest parameter, instead of a raw MemoryError (or the
kernel's OOM killer) halfway through."""
from __future__ import annotations

from .errors import ResourceLimitError
from .ir.graph import Graph, param_key
from .memory import available_bytes, human_bytes


def _nbytes(spec) -> int:
    count = 1
    for d in spec.shape:
        count *= int(d)
    return count * (8 if spec.dtype == "int64" else 4)


def check_params_fit(graph: Graph, copies: int = 1, purpose: str = "its weights") -> None:
    """Raise a ResourceLimitError when `copies` copies of every parameter and buffer of `graph`
    need more memory than is available (when that is unknown, assume they fit)."""
    total, largest = 0, None
    for node in graph.nodes:
        for pname, spec in node.params.items():
            n = _nbytes(spec)
            total += n
            if largest is None or n > largest[0]:
                largest = (n, node, pname, spec)
    if largest is None:
        return
    need = total * copies
    avail = available_bytes()
    if avail is None or need <= avail:
        return
    n, node, pname, spec = largest
    key = param_key(node.path, pname)
    times = f" ({copies} copies)" if copies > 1 else ""
    raise ResourceLimitError(
        f"{node.path or key}: {node.op} needs {human_bytes(n)} for {key} {list(spec.shape)}; network "
        f"{graph.name} needs {human_bytes(need)}{times} for {purpose}, more than the {human_bytes(avail)} of "
        f"memory available", node.span, node.trace)
