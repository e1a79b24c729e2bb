"""Loading source files: parsing, resolving imports, collecting definitions."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ImportFailure, NameLookupError, NetDSLError, Span
from ..frontend import ast as A
from ..frontend.parser import parse
from ..source_files import UnreadableFile, read_source

STD_DIR = Path(__file__).resolve().parent.parent / "std"
MAX_IMPORT_DEPTH = 100     # a chain of imports longer than this is surely a generated mistake


@dataclass
class Program:
    """All loaded files. Each file has a namespace: what it imports, shadowed by what it
    defines itself. A block's body resolves names in the namespace of its own file."""
    blocks: dict = field(default_factory=dict)      # main file's namespace: name -> BlockDef
    networks: dict = field(default_factory=dict)    # main file's namespace: name -> network def
    main_networks: list = field(default_factory=list)   # networks defined in the main file itself
    main_source: str = "<string>"
    _modules: dict = field(default_factory=dict)    # resolved path -> namespace
    _stack: list = field(default_factory=list)
    errors: list | None = None      # a list: the main file's definition and import errors are
                                    # collected here (for editors) instead of raised

    def add_text(self, text: str, name: str, base_dir: Path | None, main: bool,
                 module: A.Module | None = None) -> dict:
        module = parse(text, name) if module is None else module
        ns: dict = {}
        own: set = set()
        collect = main and self.errors is not None
        for item in module.items:
            try:
                if isinstance(item, A.Import):
                    for k, v in self._import(item, base_dir).items():
                        if k in ns and ns[k] is not v:
                            err = NameLookupError(f"'{k}' is defined both at {ns[k].span.location()} and at "
                                                  f"{v.span.location()}", item.span)
                            if not collect:
                                raise err
                            self.errors.append(err)
                            continue
                        ns[k] = v
                else:
                    self._define(ns, own, item)
                    item.ns = ns
                    if main and not isinstance(item, A.BLOCKS):
                        self.main_networks.append(item.name)
            except NetDSLError as err:
                if not collect:
                    raise
                if isinstance(item, A.Import):
                    err.import_span = item.span     # where the main file took in what failed
                self.errors.append(err)
        if main:
            self.blocks = {k: v for k, v in ns.items() if isinstance(v, A.BLOCKS)}
            self.networks = {k: v for k, v in ns.items() if not isinstance(v, A.BLOCKS)}
        return ns

    def add_file(self, path: Path, main: bool, span: Span | None = None) -> dict:
        resolved = path.resolve()
        key = str(resolved)
        if key in self._stack:
            chain = " -> ".join(Path(p).name for p in self._stack[self._stack.index(key):] + [key])
            raise ImportFailure(f"cyclic import: {chain}", span)
        if key in self._modules:
            return self._modules[key]
        if len(self._stack) >= MAX_IMPORT_DEPTH:
            raise ImportFailure(f"imports nested more than {MAX_IMPORT_DEPTH} files deep", span)
        try:
            text = read_source(resolved)
        except UnreadableFile as e:
            reason = e.reason
            if span is None:
                raise ImportFailure(f"cannot read '{path}': {reason}") from None
            raise ImportFailure(f"cannot import '{path}': {reason}", span) from None
        self._stack.append(key)
        try:
            ns = self.add_text(text, _display_name(path, main), resolved.parent, main)
        finally:
            self._stack.pop()
        self._modules[key] = ns
        return ns

    def _import(self, item: A.Import, base_dir: Path | None) -> dict:
        rel = item.path
        for c in import_candidates(rel, base_dir):
            try:
                found = c.exists() and not c.is_dir()    # a FIFO or device is refused by add_file
            except OSError as e:        # a name the system refuses (too long, ...)
                raise ImportFailure(f"cannot import '{rel}': {e.strerror or e}", item.span) from None
            if found:
                return self.add_file(c, main=False, span=item.span)
        raise ImportFailure(f"cannot find '{rel}' to import"
                            + ("" if rel.startswith("std/") else " (looked beside this file and in std/)"),
                            item.span)

    def _define(self, ns: dict, own: set, item):
        from .registry import get
        what = "block" if isinstance(item, A.BLOCKS) else "network"
        if get(item.name) is not None:
            raise NameLookupError(f"'{item.name}' is a built-in layer; give the {what} another name",
                                  item.span)
        if item.name in own:
            raise NameLookupError(f"'{item.name}' is already defined at {ns[item.name].span.location()}",
                                  item.span)
        _check_signature(item)
        own.add(item.name)
        ns[item.name] = item    # a file's own definition shadows an imported one


def import_candidates(rel: str, base_dir: Path | None) -> list:
    """Where `import "rel"` in a file in base_dir looks, in order: "std/..." in the standard
    library; anything else beside the importing file, then in the standard library."""
    if rel.startswith("std/"):
        return [STD_DIR / rel[4:]]
    return ([base_dir / rel] if base_dir is not None else []) + [STD_DIR / rel]


def _check_signature(item):
    """No name twice among a definition's parameters and input tensors."""
    seen: dict = {}
    for p in getattr(item, "params", None) or []:
        if isinstance(p, A.Param):
            if p.name in seen:
                raise NameLookupError(f"parameter '{p.name}' of {item.name} is declared twice", p.span)
            seen[p.name] = "parameter"
    for n in getattr(item, "inputs", None) or []:
        if n in seen:
            raise NameLookupError(f"'{n}' of block {item.name} is both an input and a {seen[n]}"
                                  if seen[n] == "parameter" else f"input '{n}' of block {item.name} "
                                  "is listed twice", item.span)
        seen[n] = "input"
    outs = getattr(item, "outputs", None) or []
    for i, n in enumerate(outs):
        if n in outs[:i]:
            raise NameLookupError(f"output '{n}' of block {item.name} is listed twice", item.span)


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
