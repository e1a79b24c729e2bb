"""Where the grammar file lives: inside the installed package, or beside it in a checkout."""
from pathlib import Path

_PKG = Path(__file__).resolve().parent.parent


def grammar_file() -> Path:
    for candidate in (_PKG / "grammars" / "netdsl.lark", _PKG.parent / "grammars" / "netdsl.lark"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("netdsl.lark not found: the netdsl installation is incomplete")
