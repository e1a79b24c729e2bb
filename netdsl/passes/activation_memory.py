"""Memory estimates for `netdsl summary`: the bytes of a tensor of a given shape and dtype,
symbolic where the shape is."""
from __future__ import annotations

from ..ir import dims as D

_ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4,
             "int16": 2, "int8": 1, "uint8": 1, "bool": 1}


def itemsize(dtype: str) -> int:
    """Bytes per element of a netdsl dtype name ("float32", "int64", ...)."""
    size = _ITEMSIZE.get(dtype)
    if size is None:
        import numpy as np
        size = np.dtype(dtype).itemsize
    return size


def value_bytes(shape, dtype: str):
    """numel(shape) * itemsize(dtype): an int, or a dims expression where the shape is symbolic."""
    total = itemsize(dtype)
    for d in shape:
        total = total * d if isinstance(d, int) and isinstance(total, int) else D.mul(total, d)
    return total


def param_bytes(graph) -> tuple:
    """(bytes of the parameters, bytes of the buffers) of a graph."""
    params = buffers = 0
    for spec in graph.state_layout().values():
        n = itemsize(spec.dtype)
        for d in spec.shape:
            n *= int(d)
        if spec.buffer:
            buffers += n
        else:
            params += n
    return params, buffers


def human(n) -> str:
    """'3.1 MiB', '588.0 KiB', '12 B' for a byte count; '?' for a symbolic one."""
    if not isinstance(n, int):
        return "?"
    if n < 1024:
        return f"{n} B"
    for unit, scale in (("KiB", 2 ** 10), ("MiB", 2 ** 20), ("GiB", 2 ** 30), ("TiB", 2 ** 40)):
        if n < scale * 1024 or unit == "TiB":
            return f"{n / scale:,.1f} {unit}"
    raise AssertionError
