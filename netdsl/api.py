"""The embedded Python API: load(), loads() and Network."""
from __future__ import annotations

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
        return Network(self.program, self.name, self.params, _input_map(self.graph, inputs))

    # ---- analysis
    def summary(self, inputs=None) -> dict:
        """Layers, output shapes, parameters, MACs and input-size constraints (JSON-ready)."""
        from .passes.summary import summarize
        net = self.with_inputs(inputs) if inputs is not None else self
        return summarize(net.graph)

    def summary_text(self, inputs=None) -> str:
        from .passes.summary import format_text
        net = self.with_inputs(inputs) if inputs is not None else self
        return format_text(net.summary(), net.graph.doc)

    @property
    def constraints(self) -> list:
        return self.summary()["constraints"]

    def param_count(self) -> int:
        return self.graph.param_count()

    def state_layout(self) -> dict:
        """state_dict key -> shape, for every parameter and buffer."""
        return {k: s.shape for k, s in self.graph.state_layout().items()}

    # ---- weights
    def init_weights(self, seed: int = 0) -> dict:
        from .weights import init_weights
        return init_weights(self.graph, seed)

    def _weights(self, weights, seed: int, wait: bool = True) -> dict:
        from .weights import check_weights, from_state_dict, init_weights, load_weights
        if weights is None:
            return init_weights(self.graph, seed, wait=wait)
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
        return build_module(self.graph, self._weights(weights, seed), self.torch_source())

    def to_onnx(self, weights=None, opset: int = 17, seed: int = 0):
        """An onnx.ModelProto (built without torch); same weights rules as to_torch."""
        from .backends.onnx import to_model
        return to_model(self.graph, self._weights(weights, seed), opset)

    def save_onnx(self, path, weights=None, opset: int = 17, seed: int = 0) -> None:
        """Write the ONNX model to `path` (atomically), streaming the weights."""
        from .atomic import atomic_write
        from .backends.onnx.export import write_model
        weights = self._weights(weights, seed, wait=False)   # written while still being generated
        with atomic_write(path) as f:
            write_model(self.graph, weights, f, opset)

    def save_torch_source(self, path) -> None:
        """Write the standalone PyTorch source to `path` (atomically)."""
        from .atomic import atomic_write
        source = self.torch_source()
        with atomic_write(path, "w") as f:
            f.write(source)

    def __repr__(self):
        return f"<netdsl.Network {self.name} {self.params}>"


def _input_map(graph: Graph, inputs) -> dict:
    if isinstance(inputs, dict):
        return {k: _shape_tuple(v, k) for k, v in inputs.items()}
    if len(graph.inputs) != 1:
        raise UsageError(f"network {graph.name} has {len(graph.inputs)} inputs: give shapes by name")
    return {graph.inputs[0].name: _shape_tuple(inputs, graph.inputs[0].name)}


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


def load(path, network: str | None = None, **params) -> Network:
    """Load a .net file and pick a network (default: the file's only one)."""
    program = load_program(path=Path(path))
    return Network(program, choose_network(program, network), params)


def loads(text: str, network: str | None = None, name: str = "<string>", **params) -> Network:
    """Like load, from source text."""
    program = load_program(text=text, name=name)
    return Network(program, choose_network(program, network), params)
