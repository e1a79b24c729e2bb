"""Weights as numpy arrays keyed by state_dict name: deterministic random init, loading
from .safetensors files (without torch), .npz files or torch state_dicts (.pt), checked
against the graph, and writing them as safetensors."""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from .errors import UsageError
from .ir.graph import Graph, ParamSpec, param_key


_CHUNK = 1 << 22          # elements per independently seeded piece of a large parameter
_pool = None


def _executor():
    global _pool
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor
        _pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 2), thread_name_prefix="netdsl-init")
    return _pool


def _fill_chunk(part: np.ndarray, index: int, bound: float, key: list, normal: bool = False) -> None:
    """U(-bound, bound), or N(0, bound^2) when `normal`, into `part`, chunk `index` of a
    parameter; numpy releases the GIL here."""
    rng = np.random.Generator(np.random.SFC64(key + [index]))
    if normal:
        rng.standard_normal(out=part, dtype=np.float32)
        part *= np.float32(bound)
        return
    rng.random(out=part, dtype=np.float32)
    part *= np.float32(2 * bound)
    part -= np.float32(bound)


def _fill_uniform(flat: np.ndarray, start: int, bound: float, key: list, normal: bool = False) -> None:
    """U(-bound, bound) (or N(0, bound^2)) into flat[start:start + _CHUNK]."""
    _fill_chunk(flat[start:start + _CHUNK], start // _CHUNK, bound, key, normal)


def _uniform_key(name: str, spec: ParamSpec, seed: int):
    """The seed and the bound (the std of a normal one)."""
    if spec.init == "normal":
        return [seed, zlib.crc32(name.encode())], spec.scale
    return [seed, zlib.crc32(name.encode())], spec.scale or 1.0 / np.sqrt(spec.fan_in)


def _chunked(spec: ParamSpec, size: int) -> bool:
    """Whether a random parameter is generated chunk by chunk (seeded per chunk): every uniform
    one, and normal ones that are large (a small one is one draw, as it always was)."""
    return spec.init == "uniform" or (spec.init == "normal" and size >= _CHUNK // 8)


def _init_one(name: str, spec: ParamSpec, seed: int, pool):
    """The array, or (array, futures) when its random fill runs on `pool`."""
    if spec.init == "ones":
        return np.ones(spec.shape, dtype=spec.dtype), []
    if spec.init == "zeros":
        return np.zeros(spec.shape, dtype=spec.dtype), []
    if spec.init == "constant":
        return np.full(spec.shape, spec.scale, dtype=spec.dtype), []
    if spec.init == "bilinear":
        return bilinear_kernel(spec.shape), []
    if spec.init == "relative_position_index":
        return relative_position_index_for(spec), []
    if spec.init == "relative_coords_table":
        return relative_coords_table(spec.shape[1], spec.shape[2]), []
    size = int(np.prod(spec.shape, dtype=np.int64))
    if spec.init == "normal" and not _chunked(spec, size):
        rng = np.random.Generator(np.random.SFC64([seed, zlib.crc32(name.encode())]))
        return (rng.standard_normal(spec.shape, dtype=np.float32) * np.float32(spec.scale)), []
    # torch's default for conv and linear layers: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), seeded per
    # name and chunk so that values depend neither on other parameters nor on thread timing
    # (and so large normal ones, e.g. `init = kaiming_normal()`)
    out = np.empty(spec.shape, dtype=np.float32)
    flat = out.reshape(-1)
    key, bound = _uniform_key(name, spec, seed)
    normal = spec.init == "normal"
    starts = range(0, max(flat.size, 1), _CHUNK)
    if pool is None or flat.size < _CHUNK // 8:
        for st in starts:
            _fill_uniform(flat, st, bound, key, normal)
        return out, []
    return out, [pool.submit(_fill_uniform, flat, st, bound, key, normal) for st in starts]


def bilinear_kernel(shape: tuple) -> np.ndarray:
    """FCN's upsampling kernel on each channel of a transposed convolution's weight
    [in, out / groups, kh, kw] with in == out: weight[i, i % (out / groups)] (netdsl.ir.init).
    Computed in float64 as the torch target's helper does, so the values are identical."""
    cin, per_group = shape[0], shape[1]
    filt = np.ones((), dtype=np.float64)
    for k in shape[2:]:
        factor = (k + 1) // 2
        center = factor - 1 if k % 2 == 1 else factor - 0.5
        axis = 1 - np.abs(np.arange(k, dtype=np.float64) - center) / factor
        filt = np.multiply.outer(filt, axis)
    out = np.zeros(shape, dtype=np.float32)
    channels = np.arange(cin)
    out[channels, channels % per_group] = filt.astype(np.float32)
    return out


def relative_position_index(wh: int, ww: int) -> np.ndarray:
    """[wh * ww, wh * ww] int64: for tokens i, j of a wh x ww window (row-major), the row of
    the relative position bias table holding offset (dy, dx) = pos(i) - pos(j):
    (dy + wh - 1) * (2 * ww - 1) + dx + ww - 1. torchvision's relative_position_index of
    MaxViT (and, flattened, of Swin)."""
    ys, xs = np.divmod(np.arange(wh * ww), ww)
    dy = ys[:, None] - ys[None, :] + wh - 1
    dx = xs[:, None] - xs[None, :] + ww - 1
    return (dy * (2 * ww - 1) + dx).astype(np.int64)


def relative_position_index_for(spec: ParamSpec) -> np.ndarray:
    """The buffer of a ParamSpec of init "relative_position_index": fan_in is the window's
    width; shape [n, n] or, flattened, [n * n] with n = wh * ww tokens."""
    n = spec.shape[0] if len(spec.shape) == 2 else int(round(np.sqrt(spec.shape[0])))
    ww = spec.fan_in
    return relative_position_index(n // ww, ww).reshape(spec.shape).astype(spec.dtype)


def relative_coords_table(th: int, tw: int) -> np.ndarray:
    """[1, th, tw, 2] float32: Swin V2's log-spaced relative coordinates for a window of
    (th + 1) / 2 x (tw + 1) / 2 (torchvision's ShiftedWindowAttentionV2 buffer): each offset
    d in -(w - 1) .. w - 1 becomes t = 8 d / (w - 1), then sign(t) log2(|t| + 1) / 3, in
    float32 and in torchvision's order of operations."""
    wh, ww = (th + 1) // 2, (tw + 1) // 2
    dy = np.arange(-(wh - 1), wh, dtype=np.float32)
    dx = np.arange(-(ww - 1), ww, dtype=np.float32)
    t = np.stack(np.meshgrid(dy, dx, indexing="ij"), axis=-1)[None].copy()
    t[..., 0] /= np.float32(wh - 1)
    t[..., 1] /= np.float32(ww - 1)
    t *= np.float32(8)
    return (np.sign(t) * np.log2(np.abs(t) + np.float32(1.0)) / np.float32(3.0)).astype(np.float32)


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


class LazyUniform:
    """A uniform-random parameter not made yet: `stream_bytes` generates it chunk by chunk
    into a few reused buffers as a writer consumes it, so that writing a large model neither
    holds all its weights in memory nor pays for first touching every page of them (on some
    machines that alone costs as much as generating the numbers). `result()` makes the whole
    array; either way the values are those `init_weights` gives. A large normal parameter
    (`normal`: `bound` is its std) is one too."""
    __slots__ = ("shape", "dtype", "size", "key", "bound", "normal")

    def __init__(self, name: str, spec: ParamSpec, seed: int):
        self.shape, self.dtype = tuple(spec.shape), np.dtype(np.float32)
        self.size = int(np.prod(self.shape, dtype=np.int64))
        self.key, self.bound = _uniform_key(name, spec, seed)
        self.normal = spec.init == "normal"

    def chunks(self) -> int:
        return -(-self.size // _CHUNK)

    def result(self) -> np.ndarray:
        out = np.empty(self.shape, dtype=np.float32)
        flat = out.reshape(-1)
        for c in range(self.chunks()):
            _fill_chunk(flat[c * _CHUNK:(c + 1) * _CHUNK], c, self.bound, self.key, self.normal)
        return out


def init_weights(graph: Graph, seed: int = 0, wait: bool = True, lazy: bool = False) -> dict:
    """Deterministic random weights for every parameter and buffer of the graph.

    The fills run on a few threads. With wait=False the values are `PendingArray`s, so
    that a writer can start on the first parameters while later ones are generated; with
    lazy=True large uniform ones are `LazyUniform`s, made only as `stream_bytes` writes them."""
    from .param_memory import check_params_fit
    layout = graph.state_layout()
    check_params_fit(graph, purpose="its random weights")     # a located error, not a MemoryError
    pool = _executor()
    out = {}
    for name, spec in layout.items():
        size = int(np.prod(spec.shape, dtype=np.int64))
        if lazy and _chunked(spec, size) and size >= _CHUNK // 8:
            out[name] = LazyUniform(name, spec, seed)
        else:
            out[name] = PendingArray(*_init_one(name, spec, seed, pool))
    if wait:
        return {name: resolve(v) for name, v in out.items()}
    return out


def resolve(value) -> np.ndarray:
    return value.result() if isinstance(value, (PendingArray, LazyUniform)) else value


_STREAM_AHEAD = 3         # chunks being generated while one is written


def stream_bytes(values: list):
    """(index, bytes) pieces that together are the little-endian raw data of each of `values`
    in turn: a LazyUniform, or a function returning an array (called when its turn comes).
    LazyUniform chunks are generated on the thread pool a few chunks ahead, across
    parameters, into _STREAM_AHEAD + 1 reused buffers."""
    from collections import deque
    jobs = [(i, v, c) for i, v in enumerate(values)
            for c in (range(v.chunks()) if isinstance(v, LazyUniform) else (None,))]
    buffers = [None] * (_STREAM_AHEAD + 1)
    pool = _executor()
    in_flight: deque = deque()

    def start(j: int):
        i, v, c = jobs[j]
        if c is None:
            in_flight.append(None)
            return
        slot = j % len(buffers)
        if buffers[slot] is None:
            buffers[slot] = np.empty(_CHUNK, dtype=np.float32)
        part = buffers[slot][:min(_CHUNK, v.size - c * _CHUNK)]
        in_flight.append((part, pool.submit(_fill_chunk, part, c, v.bound, v.key, v.normal)))

    for j in range(min(_STREAM_AHEAD, len(jobs))):
        start(j)
    for j, (i, v, c) in enumerate(jobs):
        job = in_flight.popleft()
        if j + _STREAM_AHEAD < len(jobs):
            start(j + _STREAM_AHEAD)     # into the buffer written before this one: free again
        if job is None:
            arr = np.ascontiguousarray(v())
        else:
            arr, future = job
            future.result()
        yield i, memoryview(arr.astype(arr.dtype.newbyteorder("<"), copy=False)).cast("B")


def load_weights(path: str | Path) -> dict:
    """Read a .safetensors file, a .npz archive or a torch state_dict (.pt / .pth) into numpy
    arrays (a .safetensors file memory-mapped, not copied; torch is imported only for .pt)."""
    from .source_files import UnreadableFile, check_regular
    p = Path(path)
    if not p.exists():
        raise UsageError(f"weights file '{path}' does not exist")
    try:
        check_regular(p)
    except UnreadableFile as e:
        raise UsageError(f"cannot read weights from '{path}': {e.reason}") from None
    if p.suffix == ".safetensors":
        return load_safetensors(p, where=f"'{path}'")
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
    raise UsageError(f"weights file '{path}': use a .safetensors file, a .npz archive or a torch "
                     ".pt/.pth state_dict")


# ---- safetensors ---------------------------------------------------------------------------------

# safetensors dtype -> the numpy dtype its bytes are read as (the format is little-endian).
# BF16 is read as its 16 bits and widened to float32 (a bfloat16 is a float32's upper half), as
# .pt loading widens it; F16 stays float16 until check_weights converts it to the parameter's
# dtype. BOOL is read so that check_weights can refuse it by name, as it does for .npz.
_SAFETENSORS_READ = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
                     "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
                     "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}
# numpy dtype -> safetensors dtype, for writing
_SAFETENSORS_WRITE = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
                      np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int16): "I16",
                      np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8", np.dtype(np.bool_): "BOOL"}


def load_safetensors(path: str | Path, where: str | None = None) -> dict:
    """The tensors of a .safetensors file as numpy arrays, without torch.

    The safetensors library reads and validates the header (a malformed or truncated file, or
    overlapping tensors, are refused there); the tensors themselves are then views of a private
    (copy-on-write) memory map of the file, so nothing is read before it is used and nothing is
    copied unless it must be converted. The library checks that the tensors lie back to back in
    the order `offset_keys` gives, right after the 8-byte length and the header it measures,
    which is where each one's bytes are taken from."""
    import mmap
    where = where or f"'{path}'"
    try:
        from safetensors import safe_open
    except ImportError:      # a core dependency; only a broken install lacks it
        raise UsageError(f"cannot read weights from {where}: reading .safetensors needs the "
                         "safetensors package (pip install safetensors)") from None
    try:
        with safe_open(str(path), framework="numpy") as f:
            entries = []
            for key in _offset_order(f, path):
                piece = f.get_slice(key)
                entries.append((key, piece.get_dtype(), tuple(piece.get_shape())))
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError: all mean "not readable as safetensors"
        raise UsageError(f"cannot read weights from {where}: not a valid safetensors file "
                         f"({_reason(e)})") from None
    for key, dtype, _ in entries:
        if dtype not in _SAFETENSORS_READ:
            raise UsageError(f"cannot read weights from {where}: tensor {key} has dtype {dtype}, which "
                             f"netdsl does not read (it reads {', '.join(_SAFETENSORS_READ)})")
    try:
        with open(path, "rb") as fh:
            start = 8 + int.from_bytes(fh.read(8), "little")
            buffer = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY) if entries else b""
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read weights from {where}: {_reason(e)}") from None
    out, offset = {}, start
    for key, dtype, shape in entries:
        np_dtype = np.dtype(_SAFETENSORS_READ[dtype])
        count = int(np.prod(shape, dtype=np.int64))
        try:
            arr = np.frombuffer(buffer, dtype=np_dtype, count=count, offset=offset).reshape(shape)
        except ValueError:      # the file shrank since the library read it
            raise UsageError(f"cannot read weights from {where}: the file is truncated") from None
        offset += count * np_dtype.itemsize
        if dtype == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[key] = arr
    return out


def _offset_order(f, path) -> list:
    """The tensors' names in the order of their bytes in the file: `offset_keys()` (safetensors
    0.6 and later), else sorted by the offsets in the header, which the library has validated."""
    if hasattr(f, "offset_keys"):
        return list(f.offset_keys())
    import json
    with open(path, "rb") as fh:
        header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
    return sorted(f.keys(), key=lambda k: tuple(header[k]["data_offsets"]))


def safetensors_writer(layout: dict, values: dict, metadata: dict | None = None):
    """(size in bytes, emit(f)) for a .safetensors file of `values` (arrays, PendingArrays or
    LazyUniforms, keyed as `layout`: name -> ParamSpec), streamed as `stream_bytes` gives
    them, so that random weights are generated while being written and never all held.

    The safetensors library's writers take every tensor in memory at once and write to a path of
    their own; this writes the same format (an 8-byte little-endian header length, the JSON
    header padded with spaces to a multiple of 8, the tensors back to back) to the file object
    netdsl.output gives, so that it is atomic like every other output. 8-byte types come first,
    so that every tensor is aligned to its type's size within the file."""
    import json
    order = sorted(layout, key=lambda k: -np.dtype(layout[k].dtype).itemsize)     # stable sort
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name in order:
        spec = layout[name]
        dtype = np.dtype(spec.dtype)
        if dtype not in _SAFETENSORS_WRITE:
            raise UsageError(f"parameter {name} has dtype {dtype}, which safetensors cannot hold")
        nbytes = int(np.prod(spec.shape, dtype=np.int64)) * dtype.itemsize
        header[name] = {"dtype": _SAFETENSORS_WRITE[dtype], "shape": [int(d) for d in spec.shape],
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    head = len(text).to_bytes(8, "little") + text

    def source(name):
        value, dtype = values[name], layout[name].dtype
        if isinstance(value, LazyUniform):
            return value
        return lambda: np.ascontiguousarray(resolve(value), dtype=dtype)

    def emit(f) -> None:
        f.write(head)
        for _, piece in stream_bytes([source(name) for name in order]):
            f.write(piece)
    return len(head) + offset, emit


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
    # a FrozenBatchNorm2d takes a BatchNorm2d's state and drops its counter, as torchvision's
    # (and the torch target's) does in load_state_dict
    dropped = {param_key(n.path, "num_batches_tracked") for n in graph.nodes if n.op == "FrozenBatchNorm2d"}
    unexpected = [k for k in weights if k not in layout and k not in dropped]
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
