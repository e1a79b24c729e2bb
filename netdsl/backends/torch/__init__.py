"""PyTorch target: readable standalone Python source, and a live nn.Module built from it."""
from .codegen import generate_source

__all__ = ["generate_source"]
