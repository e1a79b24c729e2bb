"""`netdsl lsp`: the language server (netdsl.lsp), over stdio."""
from __future__ import annotations

NAME = "lsp"


def add_parser(sub, common) -> None:
    p = sub.add_parser(
        NAME, help="run the language server (LSP over stdio) for editors",
        description="Run netdsl's language server, speaking the Language Server Protocol over "
                    "standard input and output: diagnostics (every error, with its range), hover "
                    "(output shapes, parameters and MACs of layers; signatures and docs of blocks, "
                    "networks and layers), go to definition (across imports and into std/), "
                    "completion and document symbols. Editors start it themselves; see docs/lsp.md "
                    "for VS Code and Neovim. Does not import torch.")
    p.add_argument("--stdio", action="store_true",
                   help="use standard input and output (the default and only transport; accepted "
                        "because some clients pass it)")
    p.add_argument("--log-file", metavar="FILE",
                   help="write the server's log (pygls's and netdsl's) to FILE")


def run(args) -> int:
    import gc
    import logging
    gc.enable()     # the CLI turns the cycle collector off for its one-shot commands
    if getattr(args, "log_file", None):
        try:
            handler = logging.FileHandler(args.log_file, encoding="utf-8")
        except OSError as e:
            from ..errors import OutputError
            raise OutputError(f"cannot write the log file '{args.log_file}': {e.strerror or e}") from None
        logging.basicConfig(handlers=[handler], level=logging.DEBUG)
    from ..lsp.server import main
    return main()
