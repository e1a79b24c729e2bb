"""Frontend: text -> AST (Lark grammar, LALR, strict, with spans)."""
from .parser import parse

__all__ = ["parse"]
