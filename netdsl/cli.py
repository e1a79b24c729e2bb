"""The `netdsl` command line: check, summary, compile and run `.net` specs.

Exit codes: 0 success, 1 an error in the spec or in the values given (reported as
``file:line:col: error: message`` with the source line), 2 a malformed command
line, 3 an internal compiler error (a bug: please report it), 130 interrupted.

Nothing on the path of `check`, `summary` and `compile --target onnx|torch`
imports torch; only `--weights model.pt` does.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import traceback
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPT = 0, 1, 2, 3, 130

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DIMS = re.compile(r"[0-9]+(?:[xX,][0-9]+)*\Z")


# ---- argument types: a malformed flag is a usage error (exit 2) --------------------------

def _set_arg(text: str):
    key, eq, value = text.partition("=")
    key = key.strip()
    if not eq or not _KEY.match(key) or not value.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. depth=3), got {text!r}")
    return key, value


def _input_arg(text: str):
    name, eq, dims = text.rpartition("=")
    name, dims = name.strip(), dims.strip().replace(" ", "")
    if (eq and not _KEY.match(name)) or not _DIMS.match(dims):
        raise argparse.ArgumentTypeError(
            f"expected NAME=DIMS such as image=1x3x224x224 (or just DIMS for a network with one "
            f"input), got {text!r}")
    parts = re.split(r"[xX,]", dims)
    if any(len(p) > 12 for p in parts):
        raise argparse.ArgumentTypeError(f"a dim in {text!r} is far too large")
    return (name or None), tuple(int(d) for d in parts)


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


# ---- the parser ------------------------------------------------------------------------

_EPILOG = """\
exit status: 0 success, 1 an error in the spec or in the values given,
2 a malformed command line, 3 an internal error (a bug in netdsl), 130 interrupted.

examples:
  netdsl check examples/unet.net
  netdsl summary examples/unet.net --set depth=3 --input image=1x1x572x572
  netdsl compile examples/unet.net --target onnx -o unet.onnx
  netdsl compile examples/vgg.net --network VGG16 --target torch -o vgg16.py
  netdsl run unet.onnx --input image=1x1x572x572
"""


def _common(parser: argparse.ArgumentParser, inputs_help: str | None = None,
            file_help: str = "a .net spec"):
    parser.add_argument("file", metavar="FILE", help=file_help)
    g = parser.add_argument_group("network selection")
    g.add_argument("--network", metavar="NAME",
                   help="which network of FILE to use (default: the file's only network)")
    g.add_argument("--set", dest="sets", metavar="KEY=VALUE", action="append", type=_set_arg,
                   default=[],
                   help="override a network parameter; VALUE is a netdsl expression "
                        "(--set depth=3 --set 'layers=[2, 2, 2, 2]' --set block=BasicBlock); repeatable")
    g.add_argument("--input", dest="inputs", metavar="NAME=DIMS", action="append", type=_input_arg,
                   default=[],
                   help=inputs_help or "give an input a concrete shape, e.g. image=1x3x224x224 "
                        "(NAME= may be left out when the network has one input); repeatable")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="netdsl",
        description="Compile .net architecture specs to PyTorch modules and ONNX graphs.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import __version__
    p.add_argument("--version", action="version", version=f"netdsl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser(
        "check", help="parse, elaborate and shape-check a spec",
        description="Parse FILE, elaborate the network and infer every shape. Prints the network's "
                    "inputs, outputs, parameter count and the input sizes it accepts. Does not "
                    "import torch.")
    _common(c)

    s = sub.add_parser(
        "summary", help="per-layer output shapes, parameters and MACs",
        description="Print a table of every layer: module path, op, output shape, parameters and "
                    "MACs, with totals and input-size constraints. Symbolic dims stay symbolic "
                    "unless fixed with --input.")
    _common(s)
    s.add_argument("--json", action="store_true",
                   help="print one JSON object instead of a table: network, inputs, outputs, params, "
                        "macs, constraints, layers")

    k = sub.add_parser(
        "compile", help="generate an ONNX model or standalone PyTorch source",
        description="Compile a network. --target onnx writes a serialized ONNX ModelProto (built "
                    "without torch) with weights from --weights or deterministic random ones from "
                    "--seed; --target torch writes a standalone Python module that needs only torch. "
                    "The output is written atomically: a failed compile leaves OUT untouched.")
    _common(k)
    k.add_argument("--target", "-t", choices=("onnx", "torch"), required=True, help="what to generate")
    k.add_argument("-o", "--output", metavar="OUT", required=True,
                   help="output file ('-' for standard output)")
    _model_options(k, seed_help="seed of the deterministic random weights (default 0)",
                   weights_help="weights for --target onnx: a .npz archive or a torch state_dict "
                                "(.pt/.pth) keyed by parameter path")

    r = sub.add_parser(
        "run", help="run a spec or an .onnx model on random input with onnxruntime",
        description="Compile FILE (a .net spec; or use an .onnx model as is), feed it random input "
                    "and run it with onnxruntime. Prints every output's name and shape and the median "
                    "latency. A symbolic batch dim (the first) defaults to 1; give other symbolic dims "
                    "with --input.")
    _common(r, inputs_help="the shape of an input, e.g. image=1x3x224x224 (NAME= may be left out "
                           "when there is one input); needed for symbolic dims other than the batch",
            file_help="a .net spec, or an .onnx model (by its .onnx suffix)")
    r.add_argument("--provider", choices=("cpu", "cuda"), default="cpu",
                   help="onnxruntime execution provider (default cpu)")
    r.add_argument("--repeat", type=_positive_int, default=None, metavar="N",
                   help="timed runs; the median is reported (default: 10, or fewer, but at least 3, "
                        "when they take over 2 s together)")
    _model_options(r, seed_help="seed of the random weights and the random input (default 0)",
                   weights_help="weights: a .npz archive or a torch .pt state_dict")
    return p


def _model_options(parser: argparse.ArgumentParser, seed_help: str, weights_help: str):
    """--opset, --seed and --weights, shared by compile and run."""
    parser.add_argument("--opset", type=_int, default=17, metavar="N",
                        help="ONNX opset version (default 17)")
    parser.add_argument("--seed", type=_int, default=0, metavar="N", help=seed_help)
    parser.add_argument("--weights", metavar="FILE", help=weights_help)


# ---- entry point -----------------------------------------------------------------------

def main(argv=None) -> int:
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:     # --help, --version (0) and usage errors (2)
            return e.code if isinstance(e.code, int) else EXIT_USAGE
        if args.command == "compile" and args.weights and args.target != "onnx":
            print("netdsl compile: error: --weights applies to --target onnx (the torch source takes "
                  "weights with model.load_state_dict)", file=sys.stderr)
            return EXIT_USAGE
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("netdsl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPT
    except MemoryError:
        print("netdsl: error: out of memory (is the network, or a size given to it, far too large?)",
              file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # noqa: BLE001 - the last line of defence, see below
        from .errors import NetDSLError
        if isinstance(e, NetDSLError):
            print(e.render(), file=sys.stderr)
            return EXIT_ERROR
        if isinstance(e, BrokenPipeError):
            return EXIT_OK
        traceback.print_exc()
        print("netdsl: internal error: this is a bug in netdsl; please report it with the input "
              "that caused it", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        _cancel_background_work()


def _cancel_background_work():
    """Drop weight fills still queued (after an error or Ctrl-C), so that exiting does not wait."""
    weights = sys.modules.get("netdsl.weights")
    pool = getattr(weights, "_pool", None)
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)
        weights._pool = None


def _error(message: str):
    from .errors import UsageError
    return UsageError(message)


# ---- loading --------------------------------------------------------------------------------

def _load(args):
    """The Network that FILE, --network, --set and --input describe."""
    from .api import Network
    from .ir.elaborate import choose_network, parse_override
    from .ir.program import load_program

    path = Path(args.file)
    if path.is_dir():
        raise _error(f"'{args.file}' is a directory, not a .net file")
    if path.suffix.lower() == ".onnx":
        raise _error(f"'{args.file}' is an ONNX model; `netdsl {args.command}` takes a .net spec "
                     "(only `netdsl run` runs an .onnx model)")
    program = load_program(path=path)
    name = choose_network(program, args.network)
    overrides = {}
    for key, value in args.sets:
        if key in overrides:
            raise _error(f"--set {key} given twice")
        overrides[key] = parse_override(value, key)
    inputs = _input_shapes(program, name, args.inputs) if args.inputs else None
    return Network(program, name, overrides, inputs)


def _input_shapes(program, name, given) -> dict:
    """--input values by input name. The names come from the network's declarations, not from
    elaborating it: with symbolic sizes it may not elaborate at all (Flatten -> Linear)."""
    from .api import _shape_tuple
    names = _declared_inputs(program, name)
    out = {}
    for key, dims in given:
        if key is None:
            if len(names) != 1:
                raise _error(f"network {name} has {len(names)} inputs ({', '.join(names)}): "
                             f"name the one to shape, as NAME=DIMS")
            key = names[0]
        if key in out:
            raise _error(f"--input {key} given twice")
        out[key] = _shape_tuple(dims, key)
    return out


def _declared_inputs(program, name) -> list:
    from .frontend import ast as A
    from .ir.elaborate import Elaborator
    defn = Elaborator(program)._resolve_network(name)[0]
    names, stack = [], list(reversed(defn.body))
    while stack:
        st = stack.pop()
        if isinstance(st, A.InputDecl):
            if st.name not in names:
                names.append(st.name)
        elif isinstance(st, A.If):
            for _, body in reversed(st.branches):
                stack.extend(reversed(body))
            stack.extend(reversed(st.orelse or []))
        elif isinstance(st, A.For):
            stack.extend(reversed(st.body))
    return names


def _shape_text(shape) -> str:
    from .ir import dims as D
    return D.fmt_shape(shape)


# ---- check / summary --------------------------------------------------------------------

def cmd_check(args) -> int:
    net = _load(args)
    summary = net.summary()
    g = net.graph
    ins = ", ".join(f"{v.name} {_shape_text(v.shape)}" for v in g.inputs)
    outs = ", ".join(f"{n} {_shape_text(v.shape)}" for n, v in g.outputs)
    print(f"ok: {net.name}: inputs {ins}; outputs {outs}; {summary['params']:,} params")
    for c in summary["constraints"]:
        print(f"  input sizes that work: {c}")
    return EXIT_OK


def cmd_summary(args) -> int:
    net = _load(args)
    if args.json:
        import json
        print(json.dumps(net.summary(), indent=2, ensure_ascii=False))
    else:
        print(net.summary_text())
    return EXIT_OK


# ---- compile ---------------------------------------------------------------------------------

def cmd_compile(args) -> int:
    net = _load(args)
    net.summary()       # reports unsatisfiable input-size constraints before generating anything
    if args.target == "onnx":
        from .backends.onnx.export import write_model
        weights = net._weights(args.weights, args.seed, wait=False)   # generated while being written

        def emit(f):
            write_model(net.graph, weights, f, args.opset)
    else:
        source = net.torch_source().encode("utf-8")

        def emit(f):
            f.write(source)
    _write_atomic(args.output, emit)
    if args.output != "-":
        print(f"wrote {args.output} ({args.target}, network {net.name}, {net.param_count():,} params)",
              file=sys.stderr)
    return EXIT_OK


def _write_atomic(out: str, emit):
    """Call `emit(binary_file)` on a temporary file in the directory of `out`, then os.replace it
    onto `out`: `out` is either its old self or the complete new content, never partial, and
    no temporary file is left behind whatever fails."""
    if out == "-":
        import io
        buf = io.BytesIO()
        emit(buf)
        sys.stdout.flush()
        sys.stdout.buffer.write(buf.getvalue())
        sys.stdout.buffer.flush()
        return
    path = Path(out)
    if path.is_dir():
        raise _error(f"cannot write '{out}': it is a directory")
    directory = path.parent if str(path.parent) else Path(".")
    tmp = None
    try:
        try:
            mode = os.stat(path).st_mode & 0o777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            emit(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise _error(f"cannot write '{out}': {e.strerror or e}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


# ---- run ----------------------------------------------------------------------------------------

def cmd_run(args) -> int:
    import numpy as np
    import onnxruntime as ort

    provider = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}[args.provider]
    _init_dtypes()
    available = ort.get_available_providers()
    if provider not in available:
        raise _error(f"--provider {args.provider}: onnxruntime has no {provider} here "
                     f"(available: {', '.join(available)}); install onnxruntime-gpu with a "
                     f"matching CUDA, or use --provider cpu")

    if Path(args.file).suffix.lower() == ".onnx":
        for flag, given in (("--network", args.network), ("--set", args.sets), ("--weights", args.weights)):
            if given:
                raise _error(f"{flag} applies to .net specs, not to an .onnx model")
        try:
            data = Path(args.file).read_bytes()
        except OSError as e:
            raise _error(f"cannot read '{args.file}': {e.strerror or e}") from None
        label = args.file
        given = _input_shapes_onnx(data, args.inputs, args.file)
    else:
        net = _load(args)
        net = net.with_inputs(_concrete_inputs(net))
        net.summary()
        data = net.to_onnx(weights=args.weights, opset=args.opset, seed=args.seed).SerializeToString()
        label = f"network {net.name}"
        given = {v.name: tuple(int(d) for d in v.shape) for v in net.graph.inputs}

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(data, sess_options=options, providers=[provider])
    except Exception as e:  # noqa: BLE001 - onnxruntime reports bad models with many exception types
        raise _error(f"onnxruntime cannot load {label}: {_ort_message(e)}") from None
    if provider not in session.get_providers():
        raise _error(f"--provider {args.provider}: onnxruntime could not start {provider}")

    rng = np.random.default_rng(args.seed)
    feeds = {}
    for inp in session.get_inputs():
        shape = given.get(inp.name)
        if shape is None:
            raise _error(f"{label}: no shape for input '{inp.name}'")
        dtype = _ORT_DTYPES.get(inp.type)
        if dtype is None:
            raise _error(f"{label}: input '{inp.name}' has type {inp.type}, which `run` cannot feed")
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[inp.name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            feeds[inp.name] = rng.integers(0, 10, shape).astype(dtype)

    import time
    names = [o.name for o in session.get_outputs()]
    try:
        outputs = session.run(names, feeds)          # warm-up
        times = []
        budget_end = time.perf_counter() + 2.0
        while len(times) < (args.repeat or 10):
            t0 = time.perf_counter()
            session.run(names, feeds)
            times.append(time.perf_counter() - t0)
            if args.repeat is None and len(times) >= 3 and time.perf_counter() > budget_end:
                break
    except Exception as e:  # noqa: BLE001
        raise _error(f"onnxruntime failed to run {label}: {_ort_message(e)}") from None
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())
    print(f"ran {label} on {provider} with inputs {shapes}")
    for name, value in zip(names, outputs):
        print(f"  output {name}: {list(value.shape)} {value.dtype}")
    times.sort()
    n = len(times)
    median = times[n // 2] if n % 2 else (times[n // 2 - 1] + times[n // 2]) / 2
    print(f"  latency: {median * 1e3:.3f} ms (median of {n} run{'s' * (n != 1)})")
    return EXIT_OK


def _ort_message(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _concrete_inputs(net) -> dict:
    """Input shapes for `run`: given ones, with a symbolic leading (batch) dim defaulting to 1;
    any other symbolic dim needs --input."""
    from .ir import dims as D
    values = {}
    for v in net.graph.inputs:
        if v.shape and not D.is_static(v.shape[0]):
            for s in D.symbols(v.shape[0]):
                values.setdefault(s, 1)
    out = {}
    for v in net.graph.inputs:
        dims = []
        for i, d in enumerate(v.shape):
            d = D.substitute(d, values) if not D.is_static(d) else d
            if not D.is_static(d):
                err = _error(f"input '{v.name}' has the symbolic dim {D.fmt(d)} (dim {i} of "
                             f"{_shape_text(v.shape)}); give its size with --input "
                             f"{v.name}={'x'.join(_example_dims(v.shape, values))}")
                err.notes = tuple(f"input sizes that work: {c}" for c in net.summary()["constraints"])
                raise err
            dims.append(int(d))
        out[v.name] = tuple(dims)
    return out


def _example_dims(shape, values) -> list:
    from .ir import dims as D
    out = []
    for d in shape:
        if D.is_static(d):
            out.append(str(int(d)))
        else:
            sub = D.substitute(d, values)
            out.append(str(int(sub)) if D.is_static(sub) else D.fmt(d))
    return out


_ORT_DTYPES = {}


def _init_dtypes():
    import numpy as np
    _ORT_DTYPES.update({
        "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
        "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
        "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
    })


def _input_shapes_onnx(data: bytes, given, label) -> dict:
    """Shapes for an .onnx model's inputs from --input, defaulting a symbolic first dim to 1."""
    import onnx
    _init_dtypes()
    try:
        model = onnx.load_from_string(data)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise _error(f"'{label}' is not an ONNX model: {_ort_message(e)}") from None
    init_names = {t.name for t in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in init_names]
    names = [i.name for i in graph_inputs]
    byname = {}
    for name, dims in given:
        if name is None:
            if len(names) != 1:
                raise _error(f"'{label}' has {len(names)} inputs ({', '.join(names)}): name the one "
                             f"to shape, as NAME=DIMS")
            name = names[0]
        if name not in names:
            from .errors import suggest
            raise _error(f"'{label}' has no input '{name}' (its inputs: {', '.join(names)})"
                         + suggest(name, names))
        byname[name] = dims
    out = {}
    for inp in graph_inputs:
        declared = []
        for d in inp.type.tensor_type.shape.dim:
            declared.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
        if inp.name in byname:
            dims = byname[inp.name]
            if len(dims) != len(declared):
                raise _error(f"--input {inp.name}: the model declares {len(declared)} dims "
                             f"({_fmt_onnx(declared)}), got {len(dims)}")
            for i, (want, got) in enumerate(zip(declared, dims)):
                if isinstance(want, int) and want != got:
                    raise _error(f"--input {inp.name}: dim {i} is fixed to {want} by the model, got {got}")
                if got < 1:
                    raise _error(f"--input {inp.name}: dims must be positive, got {list(dims)}")
            out[inp.name] = tuple(dims)
            continue
        dims = []
        for i, d in enumerate(declared):
            if isinstance(d, int) and d > 0:
                dims.append(d)
            elif i == 0:
                dims.append(1)
            else:
                raise _error(f"input '{inp.name}' has the symbolic dim {d} (dim {i} of "
                             f"{_fmt_onnx(declared)}); give its size with --input {inp.name}=DIMS")
        out[inp.name] = tuple(dims)
    return out


def _fmt_onnx(dims) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


_COMMANDS = {"check": cmd_check, "summary": cmd_summary, "compile": cmd_compile, "run": cmd_run}
