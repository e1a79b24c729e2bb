"""The embedded Python API: load(), loads() and Network."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import UsageError
from .ir.elaborate import Elaborator, choose_network
from .ir.graph import Graph
from .ir.program import Program, load_program


class Network:
    """One network of a spec, with its parameters bound. Build targets from it."""

    def __init__(self, program: Program, name: str, params: dict, inputs: dict | None = None):
        self.program = program
        self.name = name
        self.params = dict(params)
        self._inputs = dict(inputs or {})
        self._graph: Graph | None = None

    @property
    def graph(self) -> Graph:
        if self._graph is None:
            self._graph = Elaborator(self.program).network(self.name, self.params, self._inputs)
        return self._graph

    @property
    def doc(self) -> str | None:
        return self.graph.doc

    def with_inputs(self, inputs) -> "Network":
        """The same network with concrete input shapes ({name: (1, 3, 224, 224)}, or one shape)."""
        return Network(self.program, self.name, self.params,
                       _input_map(declared_inputs(self.program, self.name), self.name, inputs))

    # ---- analysis
    def summary(self, inputs=None) -> dict:
        """Layers, output shapes, parameters, MACs and input-size constraints (JSON-ready)."""
        from .passes.summary import summarize
        net = self.with_inputs(inputs) if inputs is not None else self
        return summarize(net.graph)

    def summary_text(self, inputs=None, depth: int | None = None) -> str:
        """The `netdsl summary` table; `depth` hides rows nested that deep or deeper (1: the
        top-level layers, groups and block instances only)."""
        from .passes.summary import format_text
        net = self.with_inputs(inputs) if inputs is not None else self
        return format_text(net.summary(), net.graph.doc, depth=depth)

    @property
    def constraints(self) -> list:
        """The input sizes that work, as text (summary()["constraints"], without the rest of the
        summary); an unsatisfiable constraint raises its located error."""
        from .passes.size_rules import sizes_that_work
        return sizes_that_work(self.graph)

    def param_count(self) -> int:
        """Elements of all parameters, trainable and frozen (buffers excluded)."""
        return self.graph.param_count()

    def trainable_param_count(self) -> int:
        return self.graph.trainable_param_count()

    def frozen_param_count(self) -> int:
        """Elements of the parameters frozen by `frozen = true` or `freeze`."""
        return self.graph.frozen_param_count()

    def state_layout(self) -> dict:
        """state_dict key -> shape, for every parameter and buffer."""
        return {k: s.shape for k, s in self.graph.state_layout().items()}

    # ---- weights
    def init_weights(self, seed: int = 0) -> dict:
        from .weights import init_weights
        return init_weights(self.graph, check_seed(seed))

    def _weights(self, weights, seed: int, wait: bool = True, lazy: bool = False) -> dict:
        from .weights import check_weights, from_state_dict, init_weights, load_weights
        if weights is None:
            return init_weights(self.graph, check_seed(seed), wait=wait, lazy=lazy)
        if isinstance(weights, (str, Path)):
            weights = load_weights(weights)
        elif hasattr(weights, "state_dict") and callable(weights.state_dict):
            weights = from_state_dict(weights.state_dict())
        elif isinstance(weights, dict):
            weights = from_state_dict(weights)
        else:
            raise UsageError("weights must be a state_dict, a dict of arrays, a module or a file path")
        return check_weights(self.graph, weights)

    # ---- targets
    def torch_source(self) -> str:
        """Standalone PyTorch source for this network (imports only torch)."""
        from .backends.torch import generate_source
        return generate_source(self.graph)

    def to_torch(self, weights=None, seed: int = 0):
        """A live torch.nn.Module; weights from `weights` or deterministic from `seed`."""
        from .backends.torch.live import build_module
        from .param_memory import check_params_fit
        # the module's own parameters, and the arrays loaded into them
        check_params_fit(self.graph, copies=2, purpose="a torch module with its weights")
        return build_module(self.graph, self._weights(weights, seed), self.torch_source())

    def to_onnx(self, weights=None, opset: int = 17, seed: int = 0):
        """An onnx.ModelProto (built without torch); same weights rules as to_torch."""
        from .backends.onnx import to_model
        return to_model(self.graph, self._weights(weights, seed), opset)

    def save_onnx(self, path, weights=None, opset: int = 17, seed: int = 0,
                  external_data: bool | None = None):
        """Write the ONNX model to `path`, streaming the weights; see `netdsl.output` for what
        happens to what is at the path (a file is replaced atomically, a symlink followed, a
        device written in place; "-" is standard output; an open binary file is written).

        A model over protobuf's 2 GiB limit keeps its weights in a data file beside it,
        `PATH.data` ("external data"); `external_data=True` does so at any size, False never.
        When PATH is a symlink, the data file goes beside (and is named after) its target.
        Returns the data file's path, or None when the weights are inside the .onnx file."""
        from .backends.onnx.export import PROTOBUF_LIMIT, StreamedModel
        from .output import describe, is_file_object, path_text, with_progress, write_outputs
        if external_data not in (None, True, False):
            raise UsageError(f"external_data is True, False or None (automatic), got {external_data!r}")
        if is_file_object(path):
            if _is_text_file(path):
                raise UsageError(f"save_onnx writes bytes: open {describe(path)} in binary mode ('wb')")
        else:
            path = path_text(path)        # a UsageError for what is not a path
        model = StreamedModel(self.graph, {}, opset)     # the size is known before any weight is made
        size = model.inline_size()
        too_big = (f"network {self.name} is {size / 2 ** 30:.2f} GiB as ONNX, over protobuf's 2 GiB "
                   "limit for one file: ") if size > PROTOBUF_LIMIT else ""
        if external_data is None:
            external_data = bool(too_big)
        elif not external_data and too_big:
            raise UsageError(too_big + "write it with external data")
        if external_data and (is_file_object(path) or str(path) == "-"):
            raise UsageError(f"{too_big}external data is written as a .onnx plus a data file beside "
                             f"it, which needs a file path, not {describe(path)}")
        # random weights are generated while being written, the large ones chunk by chunk
        model.weights = self._weights(weights, seed, wait=False, lazy=True)
        label = f"writing {self.name}"
        if not external_data:
            write_outputs([(path, with_progress(model.write_inline, size, label))])
            return None
        # the model is written to a symlink's target: the data file must be beside that,
        # since `location` is relative to the model's own directory
        data_path = (os.path.realpath(path) if os.path.islink(path) else path) + ".data"
        location = os.path.basename(data_path)
        head = model.external_model(location)
        # the data first: a model that refers to it is only ever committed after it
        write_outputs([(data_path, with_progress(model.write_data, model.data_size(), label)),
                       (path, lambda f: f.write(head))], require_regular=True)
        return data_path

    def save_safetensors(self, path, weights=None, seed: int = 0) -> None:
        """Write the network's weights (from `weights`, same rules as to_torch, or the
        deterministic random ones of `seed`) as a .safetensors file keyed by state_dict path,
        with metadata `netdsl.network` and `netdsl.source`; loads as is with
        `safetensors.torch.load_file` into the torch target (or torchvision's model) and as
        `--weights` / `weights=`. Written as save_onnx writes (atomically, streaming random
        weights as they are generated; "-" and open binary files too)."""
        from .output import describe, is_file_object, path_text, with_progress, write_outputs
        from .weights import safetensors_writer
        if is_file_object(path):
            if _is_text_file(path):
                raise UsageError(f"save_safetensors writes bytes: open {describe(path)} in binary mode ('wb')")
        else:
            path = path_text(path)
        from .ir.graph import graph_source
        metadata = {"netdsl.network": self.name}
        if graph_source(self.graph):
            metadata["netdsl.source"] = graph_source(self.graph)
        values = self._weights(weights, seed, wait=False, lazy=True)
        size, emit = safetensors_writer(self.graph.state_layout(), values, metadata)
        write_outputs([(path, with_progress(emit, size, f"writing {self.name} weights"))])

    def save_torch_source(self, path) -> None:
        """Write the standalone PyTorch source to `path`, with the same rules as save_onnx
        (an open file may be binary or text)."""
        from .output import write_outputs
        source = self.torch_source().encode("utf-8")
        write_outputs([(path, lambda f: f.write(source))])

    def __repr__(self):
        return f"<netdsl.Network {self.name} {self.params}>"


def _is_text_file(f) -> bool:
    import io
    return isinstance(f, io.TextIOBase)


def _input_map(names: list, network: str, inputs) -> dict:
    if isinstance(inputs, dict):       # unknown names are reported by elaboration, located
        return {k: _shape_tuple(v, k) for k, v in inputs.items()}
    if len(names) != 1:
        raise UsageError(f"network {network} has {len(names)} inputs ({', '.join(names)}): "
                         "give shapes by name")
    return {names[0]: _shape_tuple(inputs, names[0])}


def declared_inputs(program: Program, name: str) -> list:
    """The names of a network's inputs, from its declarations rather than from elaborating it:
    with symbolic sizes it may not elaborate at all (Flatten -> Linear)."""
    from .frontend import ast as A
    defn = Elaborator(program)._resolve_network(name)[0]
    names, seen, stack = [], set(), list(reversed(defn.body))
    while stack:
        st = stack.pop()
        if isinstance(st, A.InputDecl):
            if st.name not in seen:      # a set: a network may declare thousands of inputs
                seen.add(st.name)
                names.append(st.name)
        elif isinstance(st, A.If):
            for _, body in reversed(st.branches):
                stack.extend(reversed(body))
            stack.extend(reversed(st.orelse or []))
        elif isinstance(st, A.For):
            stack.extend(reversed(st.body))
    return names


def check_seed(seed) -> int:
    import operator
    try:
        value = operator.index(seed) if not isinstance(seed, bool) else None
    except TypeError:
        value = None
    if value is None or not 0 <= value < 2 ** 64:
        raise UsageError(f"a seed is an integer from 0 to 2**64 - 1, got {seed!r}")
    return value


def _shape_tuple(v, name) -> tuple:
    try:
        dims = tuple(int(d) for d in v)
    except (TypeError, ValueError):
        raise UsageError(f"input '{name}': a shape is a sequence of ints, got {v!r}") from None
    if any(d <= 0 for d in dims):
        raise UsageError(f"input '{name}': dims must be positive, got {list(dims)}")
    if any(d > 2 ** 31 - 1 for d in dims):
        raise UsageError(f"input '{name}': dims must be at most {2 ** 31 - 1:,}, got {list(dims)}")
    return dims


def load(path, network: str | None = None, *, inputs=None, **params) -> Network:
    """Load a .net file and pick a network (default: the file's only one), elaborated at once so
    that any error in it, or in `params`, is raised here. `inputs` gives concrete input shapes
    ({name: (1, 3, 224, 224)}, or one shape), for networks that need them to elaborate."""
    return _elaborated(load_program(path=Path(path)), network, inputs, params)


def loads(text: str, network: str | None = None, name: str = "<string>", *, inputs=None,
          **params) -> Network:
    """Like load, from source text."""
    return _elaborated(load_program(text=text, name=name), network, inputs, params)


def _elaborated(program: Program, network: str | None, inputs, params: dict) -> Network:
    net = Network(program, choose_network(program, network), params)
    if inputs is not None:
        net = net.with_inputs(inputs)
    net.graph       # elaborate now: errors belong to the call that caused them
    return net
