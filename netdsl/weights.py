"""Weights as numpy arrays keyed by state_dict name: deterministic random init, and
loading from .npz files or torch state_dicts (.pt), checked against the graph."""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from .errors import UsageError
from .ir.graph import Graph, ParamSpec


_CHUNK = 1 << 22          # elements per independently seeded piece of a large parameter
_pool = None


def _executor():
    global _pool
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor
        _pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 2), thread_name_prefix="netdsl-init")
    return _pool


def _fill_uniform(flat: np.ndarray, start: int, bound: float, key: list) -> None:
    """U(-bound, bound) into flat[start:start + _CHUNK]; numpy releases the GIL here."""
    part = flat[start:start + _CHUNK]
    rng = np.random.Generator(np.random.SFC64(key + [start // _CHUNK]))
    rng.random(out=part, dtype=np.float32)
    part *= np.float32(2 * bound)
    part -= np.float32(bound)


def _init_one(name: str, spec: ParamSpec, seed: int, pool):
    """The array, or (array, futures) when its random fill runs on `pool`."""
    if spec.init == "ones":
        return np.ones(spec.shape, dtype=spec.dtype), []
    if spec.init == "zeros":
        return np.zeros(spec.shape, dtype=spec.dtype), []
    if spec.init == "normal":
        rng = np.random.Generator(np.random.SFC64([seed, zlib.crc32(name.encode())]))
        return (rng.standard_normal(spec.shape, dtype=np.float32) * np.float32(spec.scale)), []
    # torch's default for conv and linear layers: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), seeded per
    # name and chunk so that values depend neither on other parameters nor on thread timing
    out = np.empty(spec.shape, dtype=np.float32)
    flat = out.reshape(-1)
    key = [seed, zlib.crc32(name.encode())]
    bound = spec.scale or 1.0 / np.sqrt(spec.fan_in)
    starts = range(0, max(flat.size, 1), _CHUNK)
    if pool is None or flat.size < _CHUNK // 8:
        for st in starts:
            _fill_uniform(flat, st, bound, key)
        return out, []
    return out, [pool.submit(_fill_uniform, flat, st, bound, key) for st in starts]


class PendingArray:
    """An array whose random fill may still be running; `result()` waits for it."""
    __slots__ = ("array", "futures")

    def __init__(self, array, futures):
        self.array, self.futures = array, futures

    @property
    def shape(self):
        return self.array.shape

    @property
    def dtype(self):
        return self.array.dtype

    def result(self) -> np.ndarray:
        for f in self.futures:
            f.result()
        self.futures = []
        return self.array


def init_weights(graph: Graph, seed: int = 0, wait: bool = True) -> dict:
    """Deterministic random weights for every parameter and buffer of the graph.

    The fills run on a few threads. With wait=False the values are `PendingArray`s, so
    that a writer can start on the first parameters while later ones are generated."""
    from .param_memory import check_params_fit
    check_params_fit(graph, purpose="its random weights")     # a located error, not a MemoryError
    pool = _executor()
    pending = {name: PendingArray(*_init_one(name, spec, seed, pool))
               for name, spec in graph.state_layout().items()}
    if wait:
        return {name: p.result() for name, p in pending.items()}
    return pending


def resolve(value) -> np.ndarray:
    return value.result() if isinstance(value, PendingArray) else value


def load_weights(path: str | Path) -> dict:
    """Read a .npz archive or a torch state_dict (.pt / .pth) into numpy arrays."""
    from .source_files import UnreadableFile, check_regular
    p = Path(path)
    if not p.exists():
        raise UsageError(f"weights file '{path}' does not exist")
    try:
        check_regular(p)
    except UnreadableFile as e:
        raise UsageError(f"cannot read weights from '{path}': {e.reason}") from None
    if p.suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception as e:  # noqa: BLE001 - zipfile, zlib, numpy: all mean "not a usable .npz"
            raise UsageError(f"cannot read weights from '{path}': {_reason(e)}") from None
    if p.suffix in (".pt", ".pth"):
        from .torch_support import require_torch
        torch = require_torch("loading .pt weights")
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many kinds here; all mean "not a state_dict file"
            raise UsageError(f"cannot read weights from '{path}': {_reason(e)}") from None
        if hasattr(obj, "state_dict"):
            obj = obj.state_dict()
        if not isinstance(obj, dict):
            raise UsageError(f"'{path}' holds no state_dict")
        return from_state_dict(obj, where=f"'{path}'")
    raise UsageError(f"weights file '{path}': use a .npz archive or a torch .pt/.pth state_dict")


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def from_state_dict(state: dict, where: str = "the state_dict") -> dict:
    """numpy arrays from a state_dict of tensors or arrays. Half-precision and bfloat16 tensors
    are widened to float32 and sparse ones made dense; keys must be strings."""
    out = {}
    for k, v in state.items():
        if not isinstance(k, str):
            raise UsageError(f"{where} has a key {k!r} of type {type(k).__name__}; "
                             "state_dict keys are parameter paths (strings)")
        if hasattr(v, "detach"):
            v = v.detach()
            if getattr(v, "layout", None) is not None and str(v.layout) != "torch.strided":
                v = v.to_dense()
            if v.dtype.is_floating_point and v.element_size() < 4:     # float16, bfloat16
                v = v.float()
            try:
                v = v.cpu().numpy()
            except (TypeError, RuntimeError) as e:   # quantized, meta and other special tensors
                raise UsageError(f"{where}: {k} cannot be read as an array ({_reason(e)})") from None
        out[k] = np.asarray(v)
    return out


# numpy dtype kinds a weight may have: floats, signed and unsigned ints (converted to the
# parameter's dtype); strings, objects, complex numbers and the like are refused
_WEIGHT_KINDS = frozenset("fiu")


def check_weights(graph: Graph, weights: dict) -> dict:
    """Every parameter present with the right shape; returns float32/int64 arrays."""
    layout = graph.state_layout()
    missing = [k for k, s in layout.items() if k not in weights and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in weights if k not in layout]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected[:5])}" + (" ..." if len(unexpected) > 5 else ""))
    out = {}
    for k, spec in layout.items():
        if k not in weights:
            continue
        arr = np.asarray(weights[k])
        if arr.dtype.kind not in _WEIGHT_KINDS:
            problems.append(f"{k} has dtype {arr.dtype}, not a real number type")
            continue
        if tuple(arr.shape) != tuple(spec.shape):
            problems.append(f"{k} has shape {list(arr.shape)}, the network needs {list(spec.shape)}")
            continue
        out[k] = arr.astype(spec.dtype, copy=False)
    if problems:
        raise UsageError(f"weights do not fit network {graph.name}: " + "; ".join(problems))
    for k, spec in layout.items():
        out.setdefault(k, np.zeros(spec.shape, dtype=spec.dtype))
    return out
