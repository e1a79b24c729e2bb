"""`netdsl fmt`: being written (issue 10)."""
from __future__ import annotations

NAME = "fmt"


def add_parser(sub, common) -> None:
    sub.add_parser(NAME, help="(being written)")


def run(args) -> int:
    raise NotImplementedError(NAME)
