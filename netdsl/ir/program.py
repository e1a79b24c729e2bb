"""Loading source files: parsing, resolving imports, collecting definitions."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ImportFailure, NameLookupError, Span
from ..frontend import ast as A
from ..frontend.parser import parse

STD_DIR = Path(__file__).resolve().parent.parent / "std"


@dataclass
class Program:
    blocks: dict = field(default_factory=dict)      # name -> BlockDef
    networks: dict = field(default_factory=dict)    # name -> NetworkDef | NetworkAlias
    main_networks: list = field(default_factory=list)   # networks of the file loaded first
    main_source: str = "<string>"
    _loaded: set = field(default_factory=set)
    _stack: list = field(default_factory=list)

    def add_text(self, text: str, name: str, base_dir: Path | None, main: bool):
        module = parse(text, name)
        for item in module.items:
            if isinstance(item, A.Import):
                self._import(item, base_dir)
            elif isinstance(item, A.BlockDef):
                self._define(self.blocks, item, "block")
            else:
                self._define(self.networks, item, "network")
                if main:
                    self.main_networks.append(item.name)

    def add_file(self, path: Path, main: bool, span: Span | None = None):
        resolved = path.resolve()
        key = str(resolved)
        if key in self._stack:
            chain = " -> ".join(Path(p).name for p in self._stack[self._stack.index(key):] + [key])
            raise ImportFailure(f"cyclic import: {chain}", span)
        if key in self._loaded:
            return
        try:
            text = resolved.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else "not readable as UTF-8 text"
            if span is None:
                raise ImportFailure(f"cannot read '{path}': {reason}") from None
            raise ImportFailure(f"cannot import '{path}': {reason}", span) from None
        self._stack.append(key)
        try:
            self.add_text(text, _display_name(path, main), resolved.parent, main)
        finally:
            self._stack.pop()
        self._loaded.add(key)

    def _import(self, item: A.Import, base_dir: Path | None):
        rel = item.path
        candidates = []
        if rel.startswith("std/"):
            candidates.append(STD_DIR / rel[4:])
        else:
            if base_dir is not None:
                candidates.append(base_dir / rel)
            candidates.append(STD_DIR / rel)
        for c in candidates:
            if c.is_file():
                return self.add_file(c, main=False, span=item.span)
        raise ImportFailure(f"cannot find '{rel}' to import"
                            + ("" if rel.startswith("std/") else " (looked beside this file and in std/)"),
                            item.span)

    def _define(self, table: dict, item, what: str):
        from .registry import get
        if get(item.name) is not None:
            raise NameLookupError(f"'{item.name}' is a built-in layer; give the {what} another name",
                                  item.span)
        other = self.blocks.get(item.name) or self.networks.get(item.name)
        if other is not None:
            raise NameLookupError(f"'{item.name}' is already defined at {other.span.location()}", item.span)
        table[item.name] = item


def _display_name(path: Path, main: bool) -> str:
    try:
        return str(path.resolve().relative_to(STD_DIR.parent.resolve()).as_posix())
    except ValueError:
        return str(path)


def load_program(path: str | Path | None = None, text: str | None = None,
                 name: str = "<string>") -> Program:
    prog = Program()
    if text is not None:
        prog.main_source = name
        prog.add_text(text, name, Path(name).parent if path is None and name != "<string>" else
                      (Path(path).parent if path else Path.cwd()), main=True)
    else:
        prog.main_source = str(path)
        prog.add_file(Path(path), main=True)
    return prog
