"""The `netdsl` command line: check, summary, compile and run `.net` specs; graph, fmt and lsp
(in netdsl/commands/) draw, format and serve them to editors.

Exit codes: 0 success, 1 an error in the spec or in the values given (reported as
``file:line:col: error: message`` with the source line), 2 a malformed command
line, 3 an internal compiler error (a bug: please report it), 130 interrupted.

Nothing on the path of `check`, `summary`, `graph`, `fmt`, `lsp` and
`compile --target onnx|torch|safetensors` imports torch; only `--weights model.pt` does (`--weights model.safetensors` does not).
"""
from __future__ import annotations

import argparse
import gc
import os
import re
import sys
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
    if any(int(p) == 0 for p in parts):
        raise argparse.ArgumentTypeError(f"dims must be positive, got {text!r}")
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


def _seed(text: str) -> int:
    from .api import check_seed
    from .errors import UsageError
    try:
        return check_seed(_int(text))
    except UsageError as e:
        raise argparse.ArgumentTypeError(e.message) from None


def _opset(text: str) -> int:
    from .backends.opsets import MAX_OPSET, MIN_OPSET
    v = _int(text)
    if not MIN_OPSET <= v <= MAX_OPSET:
        raise argparse.ArgumentTypeError(f"opset {v} is not supported (choose {MIN_OPSET} to {MAX_OPSET})")
    return v


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
        "summary", help="per-layer output shapes, parameters, MACs, memory and receptive fields",
        description="Print a table of every layer, nested under its groups and block instances "
                    "(which show their layers' totals): op, output shape, parameters (trainable "
                    "and frozen), MACs, activation memory (the bytes of the layer's output) and "
                    "receptive field (size and jump in input pixels, on convolutional paths), "
                    "then totals, memory estimates and input-size constraints. Symbolic dims stay "
                    "symbolic unless fixed with --input. Does not import torch.")
    _common(s)
    s.add_argument("--json", action="store_true",
                   help="print one JSON object instead of a table: network, inputs, outputs, params, "
                        "macs, constraints, dynamic_dims (data-dependent sizes), layers, modules "
                        "(groups and block instances), memory estimates (docs/summary.md)")
    s.add_argument("--depth", type=_positive_int, default=None, metavar="K",
                   help="show rows nested less than K levels deep (1: top-level layers, groups and "
                        "blocks only, with their totals); the table only")

    k = sub.add_parser(
        "compile", help="generate an ONNX model, standalone PyTorch source or a weights file",
        description="Compile a network. --target onnx writes a serialized ONNX ModelProto (built "
                    "without torch) with weights from --weights or deterministic random ones from "
                    "--seed; --target torch writes a standalone Python module that needs only torch; "
                    "--target safetensors writes those weights as a .safetensors file keyed by "
                    "state_dict path (e.g. to convert a .pt state_dict: --weights model.pt). "
                    "A regular OUT is replaced atomically: a failed or interrupted compile leaves it "
                    "untouched. A symlink is followed; a device or FIFO is written in place. ONNX "
                    "models over 2 GiB keep their weights in OUT.data (external data).")
    _common(k)
    k.add_argument("--target", "-t", choices=("onnx", "torch", "safetensors"), required=True,
                   help="what to generate")
    k.add_argument("-o", "--output", metavar="OUT", required=True,
                   help="output file ('-' for standard output); a symlink is followed, a device "
                        "such as /dev/null is written in place")
    k.add_argument("--external-data", action="store_true",
                   help="--target onnx: keep the weights in a data file beside OUT (OUT.data), as "
                        "is done anyway for models over protobuf's 2 GiB limit")
    _model_options(k, seed_help="seed of the deterministic random weights (default 0)",
                   weights_help="weights for --target onnx or safetensors: a .safetensors file (read "
                                "without torch), a .npz archive or a torch state_dict (.pt/.pth), "
                                "keyed by parameter path as in the state_dict")

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
                        "when they take over 2 s together). With N, a progress bar on stderr when "
                        "it is a terminal (NETDSL_PROGRESS=0 turns it off)")
    _model_options(r, seed_help="seed of the random weights and the random input (default 0)",
                   weights_help="weights: a .safetensors file (read without torch), a .npz archive "
                                "or a torch .pt/.pth state_dict, keyed by parameter path")

    # Commands kept in their own modules (netdsl/commands/); each adds its parser and runs itself.
    from .commands import EXTRA_COMMANDS
    for command in EXTRA_COMMANDS:
        command.add_parser(sub, _common)
    return p


def _model_options(parser: argparse.ArgumentParser, seed_help: str, weights_help: str):
    """--opset, --seed and --weights, shared by compile and run."""
    parser.add_argument("--opset", type=_opset, default=None, metavar="N",
                        help="ONNX opset version, 13 to 21 (default 17)")
    parser.add_argument("--seed", type=_seed, default=0, metavar="N", help=seed_help)
    parser.add_argument("--weights", metavar="FILE", help=weights_help)


# ---- entry point -----------------------------------------------------------------------

def main(argv=None) -> int:
    if argv is None:
        # The `netdsl` process itself (Python callers pass argv): it builds one program and
        # exits, so Python's cycle collector stays off for all of it, not only while parsing
        # and elaborating (netdsl.gc_pause says why that pays).
        gc.disable()
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:     # --help, --version (0) and usage errors (2)
            return e.code if isinstance(e.code, int) else EXIT_USAGE
        _check_command_line(args)
        return _command(args.command)(args)
    except KeyboardInterrupt:
        print("netdsl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPT
    except MemoryError:
        print("netdsl: error: out of memory (is the network, or a size given to it, far too large?)",
              file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # noqa: BLE001 - the last line of defence, see below
        from .errors import CommandLineError, NetDSLError
        if isinstance(e, CommandLineError):     # worded as argparse words its usage errors
            print(f"netdsl {getattr(args, 'command', '')}: error: {e.message}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(e, NetDSLError):
            print(_terminal_safe(e.render()), file=sys.stderr)
            return EXIT_ERROR
        if isinstance(e, BrokenPipeError):
            return EXIT_OK
        traceback.print_exc()
        print("netdsl: internal error: this is a bug in netdsl; please report it with the input "
              "that caused it", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        _cancel_background_work()


# Characters that a terminal would act on rather than show: C0 controls other than newline and
# tab, DEL and the C1 controls (colours, cursor moves, clearing the screen), and the bidirectional
# overrides that can make text read differently from what it is.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _terminal_safe(text: str) -> str:
    """`text` with every character a terminal would act on written as an escape (\\x1b)."""
    return _UNSAFE.sub(lambda m: repr(m.group())[1:-1] if ord(m.group()) < 0x100 else
                       f"\\u{ord(m.group()):04x}", text)


def _check_command_line(args):
    """Options that contradict each other or the kind of FILE: usage errors (exit 2), found
    before any file is read. Fills in defaults that depend on what was given."""
    from .backends.opsets import DEFAULT_OPSET
    if args.command == "compile" and args.target == "safetensors":
        if args.opset is not None:
            raise _usage("--opset applies to --target onnx")
        if args.external_data:
            raise _usage("--external-data applies to --target onnx")
    elif args.command == "compile" and args.target != "onnx":
        if args.weights is not None:
            raise _usage("--weights applies to --target onnx (the torch source takes weights with "
                         "model.load_state_dict)")
        if args.opset is not None:
            raise _usage("--opset applies to --target onnx")
        if args.external_data:
            raise _usage("--external-data applies to --target onnx")
    if args.command == "compile" and args.external_data and args.output == "-":
        raise _usage("--external-data writes OUT and a data file beside it: give -o FILE, not -o -")
    if args.command == "run" and Path(args.file).suffix.lower() == ".onnx":
        for flag, given in (("--network", args.network), ("--set", args.sets),
                            ("--weights", args.weights), ("--opset", args.opset)):
            if given:
                raise _usage(f"{flag} applies to .net specs; an .onnx model runs as it is")
    keys = [key for key, _ in getattr(args, "sets", ())]
    for key in keys:
        if keys.count(key) > 1:
            raise _usage(f"--set {key} given twice")
    names = [name for name, _ in getattr(args, "inputs", ())]
    for name in names:
        if names.count(name) > 1:
            raise _usage(f"--input {name} given twice" if name else
                         "--input without a NAME given twice; name each input, as NAME=DIMS")
    if hasattr(args, "opset") and args.opset is None:
        args.opset = DEFAULT_OPSET


def _usage(message: str):
    from .errors import CommandLineError
    return CommandLineError(message)


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
        overrides[key] = parse_override(value, key)
    inputs = _input_shapes(program, name, args.inputs) if args.inputs else None
    return Network(program, name, overrides, inputs)


def _input_shapes(program, name, given) -> dict:
    """--input values by input name. The names come from the network's declarations, not from
    elaborating it: with symbolic sizes it may not elaborate at all (Flatten -> Linear)."""
    from .api import _shape_tuple, declared_inputs
    names = declared_inputs(program, name)
    out = {}
    for key, dims in given:
        if key is None:
            if len(names) != 1:
                raise _error(f"network {name} has {len(names)} inputs ({', '.join(names)}): "
                             f"name the one to shape, as NAME=DIMS")
            key = names[0]
        if key in out:
            raise _usage(f"--input {key} given twice")
        out[key] = _shape_tuple(dims, key)
    return out


def _shape_text(shape) -> str:
    from .ir import dims as D
    return D.fmt_shape(shape)


# ---- check / summary --------------------------------------------------------------------

def cmd_check(args) -> int:
    from .passes.summary import dynamic_dims, dynamic_text
    net = _load(args)
    g = net.graph
    constraints = net.constraints       # before printing: an unsatisfiable one is the error
    ins = ", ".join(f"{v.name} {_shape_text(v.shape)}" for v in g.inputs)
    outs = ", ".join(f"{n} {_shape_text(v.shape)}" for n, v in g.outputs)
    n_frozen = net.frozen_param_count()
    frozen = f" ({n_frozen:,} frozen)" if n_frozen else ""
    print(_terminal_safe(f"ok: {net.name}: inputs {ins}; outputs {outs}; {net.param_count():,} params{frozen}"))
    for c in constraints:
        print(f"  input sizes that work: {c}")
    for entry in dynamic_dims(g):
        print(_terminal_safe(f"  data-dependent size {dynamic_text(entry)}"))
    return EXIT_OK


def cmd_summary(args) -> int:
    net = _load(args)
    if args.json:
        import json
        print(_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}",
                          json.dumps(net.summary(), indent=2, ensure_ascii=False)))
    else:
        print(_terminal_safe(net.summary_text(depth=args.depth)))
    return EXIT_OK


# ---- compile ---------------------------------------------------------------------------------

def cmd_compile(args) -> int:
    net = _load(args)
    net.constraints     # reports unsatisfiable input-size constraints before generating anything
    data = None
    if args.target == "onnx":
        data = net.save_onnx(args.output, weights=args.weights, opset=args.opset, seed=args.seed,
                             external_data=True if args.external_data else None)
    elif args.target == "safetensors":
        net.save_safetensors(args.output, weights=args.weights, seed=args.seed)
    else:
        net.save_torch_source(args.output)
    if args.output != "-":
        extra = f", weights in {data}" if data else ""
        print(_terminal_safe(f"wrote {args.output} ({args.target}, network {net.name}, "
                             f"{net.param_count():,} params{extra})"), file=sys.stderr)
    return EXIT_OK


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
        from .source_files import UnreadableFile, open_regular
        try:
            with open(open_regular(args.file), "rb") as f:     # never a FIFO or a device
                data = f.read()
        except (UnreadableFile, OSError) as e:
            raise _error(f"cannot read '{args.file}': {getattr(e, 'reason', None) or e.strerror or e}") \
                from None
        label = args.file
        given, dim_values = _input_shapes_onnx(data, args.inputs, args.file)
        data = os.path.realpath(args.file)      # by path: onnxruntime finds external data beside it
    else:
        from .backends.onnx.export import PROTOBUF_LIMIT
        net = _load(args)
        net = _with_checked_inputs(net)
        model = net.to_onnx(weights=args.weights, opset=args.opset, seed=args.seed)
        if model.ByteSize() > PROTOBUF_LIMIT:
            raise _error(f"network {net.name} is {model.ByteSize() / 2 ** 30:.2f} GiB as ONNX, over "
                         "protobuf's 2 GiB limit: compile it with `netdsl compile --target onnx -o "
                         "FILE.onnx` (written with external data) and run FILE.onnx")
        data = model.SerializeToString()
        label = f"network {net.name}"
        given = {v.name: tuple(int(d) for d in v.shape) for v in net.graph.inputs}
        dim_values = {}     # compiled for the given sizes: no symbolic input dim is left

    _check_input_memory(given)
    options = _session_options(ort, dim_values)
    try:
        session = ort.InferenceSession(data, sess_options=options, providers=[provider])
    except Exception as e:  # noqa: BLE001 - onnxruntime reports bad models with many exception types
        raise _error(f"onnxruntime cannot load {label}: {_ort_message(e)}") from None
    if provider not in session.get_providers():
        raise _error(f"--provider {args.provider}: onnxruntime could not start {provider}")
    _check_recorded_sizes(session, given, label)

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
            feeds[inp.name] = rng.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)
        elif dtype == np.bool_:
            feeds[inp.name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            feeds[inp.name] = rng.integers(0, 10, shape).astype(dtype)

    import time
    from .progress import progress_bar
    names = [o.name for o in session.get_outputs()]
    try:
        outputs = session.run(names, feeds)          # warm-up
        times = []
        budget_end = time.perf_counter() + 2.0
        # a bar over --repeat N timed runs on a terminal (none when stderr is not one)
        with progress_bar(args.repeat or 0, "timed runs", unit="runs") as bar:
            while len(times) < (args.repeat or 10):
                t0 = time.perf_counter()
                session.run(names, feeds)
                times.append(time.perf_counter() - t0)
                bar.advance(1)
                if args.repeat is None and len(times) >= 3 and time.perf_counter() > budget_end:
                    break
    except Exception as e:  # noqa: BLE001
        raise _error(f"onnxruntime failed to run {label}: {_ort_message(e)}") from None
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())
    print(_terminal_safe(f"ran {label} on {provider} with inputs {shapes}"))
    for name, value in zip(names, outputs):      # names from a model made elsewhere may hold anything
        print(_terminal_safe(f"  output {name}: {list(value.shape)} {value.dtype}"))
    times.sort()
    n = len(times)
    median = times[n // 2] if n % 2 else (times[n // 2 - 1] + times[n // 2]) / 2
    print(f"  latency: {median * 1e3:.3f} ms (median of {n} run{'s' * (n != 1)})")
    return EXIT_OK


def _check_input_memory(shapes: dict):
    """Refuse random inputs that cannot fit in memory (at 8 bytes an element, the widest)."""
    from .memory import fits, human_bytes
    total = 0
    for name, shape in shapes.items():
        count = 1
        for d in shape:
            count *= int(d)
        total += count * 8
        if not fits(total):
            raise _error(f"input '{name}' of shape {list(shape)} has {count:,} elements: the random "
                         f"inputs would need {human_bytes(total)}, more than this machine has free; "
                         "give smaller sizes with --input")


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")


def _ort_message(e: Exception) -> str:
    """onnxruntime's (or onnx's) message, cleaned: first line, no colour codes, no status prefix."""
    text = [line.strip() for line in _ANSI.sub("", str(e)).splitlines() if line.strip()]
    return _ORT_PREFIX.sub("", text[0]) if text else type(e).__name__


def _check_recorded_sizes(session, shapes: dict, label: str) -> None:
    """The input-size constraints that netdsl recorded in the model's metadata, checked on
    the concrete input shapes before anything runs (other sizes may run silently and compute
    something else)."""
    from .passes.size_rules import METADATA_KEY, RecordError, violation
    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if text is None:
        return
    import json
    try:
        problem = violation(json.loads(text), shapes, label)
    except (ValueError, RecordError) as e:     # json's errors are ValueErrors
        print(_terminal_safe(f"netdsl run: warning: {label}: cannot read its {METADATA_KEY} metadata "
                             f"({e}); input sizes not checked"), file=sys.stderr)
        return
    if problem:
        raise _error(problem)


def _with_checked_inputs(net):
    """The network elaborated on concrete input shapes (--input, batch 1 by default); sizes its
    constraints reject are a located error, with the sizes that work as notes."""
    from .api import Network
    from .errors import ShapeError
    try:
        sized = net.with_inputs(_concrete_inputs(net))
        sized.constraints       # elaborated on those sizes; a rejected one raises here
    except ShapeError as e:
        if not e.notes:
            try:
                symbolic = Network(net.program, net.name, net.params)
                e.notes += tuple(f"input sizes that work: {c}" for c in symbolic.constraints)
            except Exception:  # noqa: BLE001 - the symbolic network may not elaborate (Flatten -> Linear)
                pass
        raise
    return sized


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
                err.notes = tuple(f"input sizes that work: {c}" for c in net.constraints)
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


def _session_options(ort, dim_values: dict):
    """The SessionOptions `run` creates its session with. Every symbolic input dim (an ONNX
    dim_param such as N, H, W) that the run's input shapes fix is fixed for onnxruntime too
    (add_free_dimension_override_by_name), so that it plans the graph for the concrete sizes:
    with symbolic sizes its memory planner cannot prove that a fused convolution's residual
    input and its output have one size, and copies the residual on every run."""
    options = ort.SessionOptions()
    options.log_severity_level = 4     # fatal only: its errors reach the user as netdsl's messages
    for name, value in dim_values.items():
        options.add_free_dimension_override_by_name(name, int(value))
    return options


def _declared_inputs(model) -> list:
    """(name, dims) for each input of an ONNX model that is not an initializer; a dim is its
    value (an int), its dim_param (a str), or None when the model names neither."""
    init_names = {t.name for t in model.graph.initializer}
    out = []
    for inp in model.graph.input:
        if inp.name in init_names:
            continue
        dims = []
        for d in inp.type.tensor_type.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
        out.append((inp.name, dims))
    return out


def _input_shapes_onnx(data: bytes, given, label) -> tuple:
    """Shapes for an .onnx model's inputs from --input, and the size each symbolic input dim
    (dim_param) then has. An input left out takes the sizes that other inputs give its
    dim_params, and a symbolic first dim defaults to 1."""
    import onnx
    _init_dtypes()
    try:
        model = onnx.load_from_string(data)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise _error(f"'{label}' is not an ONNX model: {_ort_message(e)}") from None
    declared_inputs = _declared_inputs(model)
    names = [name for name, _ in declared_inputs]
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
    out, values, source = {}, {}, {}
    for name, declared in declared_inputs:          # the given inputs first: they fix the symbols
        if name not in byname:
            continue
        dims = byname[name]
        if len(dims) != len(declared):
            raise _error(f"--input {name}: the model declares {len(declared)} dims "
                         f"({_fmt_onnx(declared)}), got {len(dims)}")
        for i, (want, got) in enumerate(zip(declared, dims)):
            if isinstance(want, int) and want != got:
                raise _error(f"--input {name}: dim {i} is fixed to {want} by the model, got {got}")
            if got < 1:
                raise _error(f"--input {name}: dims must be positive, got {list(dims)}")
            if isinstance(want, str):
                if want in values and values[want] != got:
                    raise _error(f"--input {name}: dim {i} is {want}, which {source[want]} sets to "
                                 f"{values[want]}, got {got} (dims named alike are one size)")
                values.setdefault(want, got)
                source.setdefault(want, f"--input {name}")
        out[name] = tuple(dims)
    for name, declared in declared_inputs:
        if name in byname:
            continue
        dims = []
        for i, d in enumerate(declared):
            if isinstance(d, int) and d > 0:
                dims.append(d)
            elif d is not None and d in values:
                dims.append(values[d])
            elif i == 0:
                dims.append(1)
                if d is not None:
                    values[d] = 1
            else:
                raise _error(f"input '{name}' has the symbolic dim {'?' if d is None else d} (dim {i} of "
                             f"{_fmt_onnx(declared)}); give its size with --input {name}=DIMS")
        out[name] = tuple(dims)
    return {name: out[name] for name in names}, values


def _fmt_onnx(dims) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


_COMMANDS = {"check": cmd_check, "summary": cmd_summary, "compile": cmd_compile, "run": cmd_run}


def _command(name: str):
    """The function that runs command `name`: one of the above or one of netdsl/commands/."""
    if name in _COMMANDS:
        return _COMMANDS[name]
    from .commands import EXTRA_COMMANDS
    return next(c.run for c in EXTRA_COMMANDS if c.NAME == name)
