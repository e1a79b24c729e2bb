"""IR: graph, dims, the op registry and elaboration (AST -> graph)."""
