"""Module paths: explicit names, index names inside groups, and readable automatic names.

Automatic names (``relu``, ``relu_1``, ``conv2d``...) are given when a scope
closes, so that they never take a name the user writes later in the same scope.
"""
from __future__ import annotations

import re

from ..errors import NameLookupError, Span

_SEGMENT = re.compile(r"^[A-Za-z0-9_]+$")


def snake(name: str) -> str:
    """ReLU -> relu, MaxPool2d -> max_pool2d, DoubleConv -> double_conv."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z][a-z])", "_", name).lower()


class Segment:
    __slots__ = ("name", "hint")

    def __init__(self, name: str | None, hint: str = ""):
        self.name, self.hint = name, hint


class ModuleScope:
    def __init__(self, prefix: tuple, index_mode: bool = False):
        self.prefix = prefix            # tuple of Segments
        self.index_mode = index_mode    # inside [...]: unnamed items are numbered 0, 1, ...
        self.counter = 0
        self.taken: dict[str, Span | None] = {}
        self.auto: list[Segment] = []

    def child(self, label: str | None, hint: str, span: Span | None, item: bool = True) -> tuple:
        """The path of a new layer or block instance in this scope."""
        if label is not None:
            if not _SEGMENT.match(label):
                raise NameLookupError(f"'{label}' is not a valid layer name (letters, digits and _ only)", span)
            if label in self.taken:
                first = self.taken[label]
                where = f" (first used at {first.location()})" if first else ""
                raise NameLookupError(f"the name '{label}' is already used in this scope{where}", span)
            self.taken[label] = span
            seg = Segment(label)
        elif self.index_mode and item:
            name = str(self.counter)
            if name in self.taken:
                raise NameLookupError(f"the name '{name}' is already used in this group", span)
            self.taken[name] = span
            seg = Segment(name)
        else:
            seg = Segment(None, hint)
            self.auto.append(seg)
        if item and self.index_mode:
            self.counter += 1
        return self.prefix + (seg,)

    def close(self):
        # the smallest free `base`, `base_1`, `base_2`, ...; names are never freed, so each
        # base's search resumes where its last one ended (linear, not quadratic, in the count)
        resume: dict[str, int] = {}
        for seg in self.auto:
            base = seg.hint or "layer"
            k = resume.get(base, 0)
            name = f"{base}_{k}" if k else base
            while name in self.taken:
                k += 1
                name = f"{base}_{k}"
            resume[base] = k
            self.taken[name] = None
            seg.name = name
        self.auto = []


def render(path: tuple) -> str:
    return ".".join(seg.name for seg in path)
