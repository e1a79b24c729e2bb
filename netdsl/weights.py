"""Weights as numpy arrays keyed by state_dict name: deterministic random init, and
loading from .npz files or torch state_dicts (.pt), checked against the graph."""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from .errors import UsageError
from .ir.graph import Graph, ParamSpec


def _init_one(name: str, spec: ParamSpec, seed: int) -> np.ndarray:
    if spec.init == "ones":
        return np.ones(spec.shape, dtype=spec.dtype)
    if spec.init == "zeros":
        return np.zeros(spec.shape, dtype=spec.dtype)
    # torch's default for conv and linear layers: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    # Seeded per name so that one parameter's values do not depend on the others.
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    bound = 1.0 / np.sqrt(spec.fan_in)
    out = rng.random(spec.shape, dtype=np.float32)
    out *= np.float32(2 * bound)
    out -= np.float32(bound)
    return out


def init_weights(graph: Graph, seed: int = 0) -> dict:
    """Deterministic random weights for every parameter and buffer of the graph."""
    return {name: _init_one(name, spec, seed) for name, spec in graph.state_layout().items()}


def load_weights(path: str | Path) -> dict:
    """Read a .npz archive or a torch state_dict (.pt / .pth) into numpy arrays."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"weights file '{path}' does not exist")
    if p.suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read weights from '{path}': {e}") from None
    if p.suffix in (".pt", ".pth"):
        from .torch_support import require_torch
        torch = require_torch("loading .pt weights")
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many kinds here; all mean "not a state_dict file"
            raise UsageError(f"cannot read weights from '{path}': {e}") from None
        if hasattr(obj, "state_dict"):
            obj = obj.state_dict()
        if not isinstance(obj, dict):
            raise UsageError(f"'{path}' holds no state_dict")
        return from_state_dict(obj)
    raise UsageError(f"weights file '{path}': use a .npz archive or a torch .pt/.pth state_dict")


def from_state_dict(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        if hasattr(v, "detach"):
            v = v.detach().cpu().numpy()
        out[k] = np.asarray(v)
    return out


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
        if tuple(arr.shape) != tuple(spec.shape):
            problems.append(f"{k} has shape {list(arr.shape)}, the network needs {list(spec.shape)}")
            continue
        out[k] = arr.astype(spec.dtype, copy=False)
    if problems:
        raise UsageError(f"weights do not fit network {graph.name}: " + "; ".join(problems))
    for k, spec in layout.items():
        out.setdefault(k, np.zeros(spec.shape, dtype=spec.dtype))
    return out
