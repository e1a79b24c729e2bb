"""Commands kept in their own modules. Each module has NAME, `add_parser(sub, common)` (common
adds FILE, --network, --set and --input, as `netdsl.cli._common` does) and `run(args) -> int`.
Importing them must stay cheap: no torch, no onnx, no heavy work at import time."""
from . import fmt, graph, lsp

EXTRA_COMMANDS = (graph, fmt, lsp)
