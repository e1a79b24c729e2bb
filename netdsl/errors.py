"""Source spans and the compiler's errors.

Every error a user can see is a `NetDSLError`: it carries the span of the source
text it is about, and renders as ``file:line:col: error: message`` followed by
the source line, a caret under the offending text, and, when the error happened
inside a block, the chain of instantiations that led there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import difflib


@dataclass(frozen=True)
class Source:
    """A named piece of source text (a file, or a string given to `loads`)."""
    name: str
    text: str

    def line(self, lineno: int) -> str:
        # split on "\n" only, as the lexer counts lines (str.splitlines also splits on \f, \v, ...)
        lines = self.text.split("\n")
        return lines[lineno - 1].rstrip("\r") if 0 < lineno <= len(lines) else ""


@dataclass(frozen=True)
class Span:
    source: Source = field(repr=False, compare=False)
    line: int
    col: int
    end_line: int = 0
    end_col: int = 0

    @property
    def file(self) -> str:
        return self.source.name

    def location(self) -> str:
        return f"{self.source.name}:{self.line}:{self.col}"

    def __str__(self) -> str:
        return self.location()


class NetDSLError(Exception):
    """Base class of every error the compiler reports to users."""
    kind = "error"

    def __init__(self, message: str, span: Span | None = None,
                 trace: tuple[tuple[str, Span], ...] = (), notes: tuple[str, ...] = ()):
        super().__init__(message)
        self.message = message
        self.span = span
        self.trace = tuple(trace)   # (block name, instantiation span), innermost first
        self.notes = tuple(notes)

    @property
    def file(self) -> str | None:
        return self.span.file if self.span else None

    @property
    def line(self) -> int | None:
        return self.span.line if self.span else None

    @property
    def col(self) -> int | None:
        return self.span.col if self.span else None

    def with_trace(self, name: str, span: Span) -> "NetDSLError":
        self.trace = self.trace + ((name, span),)
        return self

    def header(self) -> str:
        where = f"{self.span.location()}: " if self.span else "netdsl: "
        return f"{where}error: {self.message}"

    def render(self) -> str:
        out = [self.header()]
        if self.span:
            out += _excerpt(self.span)
        i = 0
        while i < len(self.trace):
            name, span = self.trace[i]
            repeat = 1
            while i + repeat < len(self.trace) and self.trace[i + repeat][0] == name and \
                    self.trace[i + repeat][1].location() == span.location():
                repeat += 1
            times = f" ({repeat} nested instances)" if repeat > 1 else ""
            out.append(f"  in block {name}, instantiated at {span.location()}{times}")
            out += ["  " + line for line in _excerpt(span)]
            i += repeat
        out += [f"  note: {n}" for n in self.notes]
        return "\n".join(out)

    def __str__(self) -> str:
        # the located header without the CLI's "netdsl: " prefix when there is no location
        return self.header() if self.span else self.message


# control characters (tab aside) and bidirectional overrides in a quoted source line are shown
# as one replacement character each, so that the caret below still lines up
_INVISIBLE = {c: "\ufffd" for c in [*range(0, 9), *range(10, 32), *range(0x7f, 0xa0),
                                     *range(0x202a, 0x202f), *range(0x2066, 0x206a)]}


def _excerpt(span: Span) -> list[str]:
    text = span.source.line(span.line).translate(_INVISIBLE)
    if not text:
        return []
    width = 1
    if span.end_line == span.line and span.end_col > span.col:
        width = span.end_col - span.col
    pad = "".join("\t" if ch == "\t" else " " for ch in text[: span.col - 1])
    return [f"    {text}", f"    {pad}{'^' * width}"]


class ParseError(NetDSLError):
    """The text is not valid netdsl syntax."""


class NameLookupError(NetDSLError):
    """An unknown name: variable, layer, block, network, argument or parameter."""


class TypeMismatchError(NetDSLError):
    """A value of the wrong type, a missing or surplus argument."""


class ValueRangeError(NetDSLError):
    """A value of the right type but outside what is allowed (e.g. a size <= 0)."""


class ShapeError(NetDSLError):
    """Shapes that do not fit together, or an input size a network cannot take."""


class RecursionLimitError(NetDSLError):
    """Block instantiation nested deeper than the limit."""


class ImportFailure(NetDSLError):
    """An import that cannot be found, read, or that forms a cycle."""


class UsageError(NetDSLError):
    """A bad value given from outside the source: --set, --input, API arguments."""


class CommandLineError(UsageError):
    """A malformed or contradictory command line (the CLI exits with status 2)."""


class BackendError(NetDSLError):
    """A target cannot express something, or a dependency it needs is missing."""


class OutputError(UsageError):
    """An output that cannot be written: a missing directory, a full disk, a directory given."""


class ResourceLimitError(NetDSLError):
    """A network that needs more memory (or another resource) than the machine has."""


def suggest(name: str, candidates) -> str:
    """A ' (did you mean 'x'?)' suffix for a misspelled name, or ''.

    Compares case-insensitively (`relu` -> `ReLU`), and also offers a candidate that the name
    starts with or that starts with the name (`integer` -> `int`, `BatchNorm` -> `BatchNorm2d`)."""
    pool = sorted({c for c in candidates if isinstance(c, str) and c != name})
    if not pool or not name:
        return ""
    lower: dict = {}
    for c in pool:
        lower.setdefault(c.lower(), c)
    key = name.lower()
    close = difflib.get_close_matches(key, list(lower), n=1, cutoff=0.7)
    if not close:
        prefixed = [c for c in lower if min(len(c), len(key)) >= 3 and (c.startswith(key) or key.startswith(c))]
        if prefixed:
            close = [max(prefixed, key=lambda c: difflib.SequenceMatcher(None, key, c).ratio())]
    return f" (did you mean '{lower[close[0]]}'?)" if close else ""
