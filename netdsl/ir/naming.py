"""Module paths: explicit names, index names inside groups, and readable automatic names.

Automatic names (``relu``, ``relu_1``, ``conv2d``...) are given when a scope
closes, so that they never take a name the user writes later in the same scope.
"""
from __future__ import annotations

import re
from functools import lru_cache

from ..errors import NameLookupError, Span

_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")    # a whole name: used with fullmatch

# The attributes torch.nn.Module assigns on a built module (train()/eval() set `training`,
# compile() `_compiled_call_impl`, backward hooks `_is_full_backward_hook`): a child or a
# parameter of that name would make those calls fail. Every other name works in the torch
# target (tests/test_codegen_names.py derives this set from torch's source).
TORCH_ASSIGNED = frozenset({"training", "_compiled_call_impl", "_is_full_backward_hook"})


def check_label(label: str, span: Span | None, trace: tuple = ()) -> str:
    """`label` if it can name a layer: a path segment, so no dots, and nothing a state_dict
    key or a generated module could not hold (fullmatch: `$` would let a final newline by)."""
    if not _SEGMENT.fullmatch(label):
        shown = label if label.isprintable() else repr(label)[1:-1]
        raise NameLookupError(f"'{shown}' is not a valid layer name (ASCII letters, digits, _ and - only)",
                              span, trace)
    if label in TORCH_ASSIGNED:
        raise NameLookupError(f"'{label}' cannot name a layer or param: torch's modules set an attribute "
                              "of that name themselves", span, trace)
    return label


@lru_cache(maxsize=4096)      # called for every layer, with few distinct names
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

    def child(self, label: str | None, hint: str, span: Span | None, item: bool = True,
              trace: tuple = ()) -> tuple:
        """The path of a new layer or block instance in this scope (trace: the instantiations
        that led here, for the error of a name used twice: a block spliced twice)."""
        if label is not None:      # checked by check_label where the elaborator builds it
            if label in self.taken:
                first = self.taken[label]
                where = f" (first used at {first.location()})" if first else ""
                raise NameLookupError(f"the name '{label}' is already used in this scope{where}", span, trace)
            self.taken[label] = span
            seg = Segment(label)
        elif self.index_mode and item:
            name = str(self.counter)
            if name in self.taken:
                raise NameLookupError(f"the name '{name}' is already used in this group", span, trace)
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
            while name in self.taken or name in TORCH_ASSIGNED:
                k += 1
                name = f"{base}_{k}"
            resume[base] = k
            self.taken[name] = None
            seg.name = name
        self.auto = []


def render(path: tuple) -> str:
    return ".".join(seg.name for seg in path)
