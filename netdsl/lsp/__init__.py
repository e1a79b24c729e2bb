"""`netdsl lsp`: a language server for .net specs over stdio, built on pygls.

`server.py` wires the LSP requests to the features, each in its own module: `diagnostics`,
`hover`, `definition`, `completion`, `symbols` (and formatting, in `server`). They all work on a
`document.Document`: a text, the `netdsl.analysis.Analysis` of it and the definitions in scope
(`scope.py`). Nothing here imports torch or onnx.
"""
