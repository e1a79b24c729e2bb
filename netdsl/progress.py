"""Progress bars for long operations (writing weights, `netdsl run --repeat N`).

    with progress_bar(total, "writing weights", unit="B") as bar:
        for chunk in chunks:
            ...
            bar.advance(len(chunk))

A bar is drawn on stderr only when stderr is a terminal: output piped or redirected stays exactly
as without a bar. The environment variable NETDSL_PROGRESS overrides that: "0" never draws one,
"1" always does (tests use it). Without a bar, `progress_bar` yields a no-op object and imports
nothing (rich is imported only when a bar is drawn).
"""
from __future__ import annotations

import contextlib
import os
import sys

__all__ = ["progress_bar", "enabled"]


class _NoBar:
    """What `progress_bar` yields when no bar is drawn."""
    __slots__ = ()

    def advance(self, n: int = 1) -> None:
        pass


class _Bar:
    __slots__ = ("_progress", "_task")

    def __init__(self, progress, task):
        self._progress = progress
        self._task = task

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)


def enabled(stream=None) -> bool:
    """Whether a bar is drawn on `stream` (stderr by default)."""
    flag = os.environ.get("NETDSL_PROGRESS", "")
    if flag == "0":
        return False
    if flag == "1":
        return True
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):     # closed or replaced by an object without isatty
        return False


@contextlib.contextmanager
def progress_bar(total: int, description: str, unit: str = "B"):
    """A context manager yielding an object with `.advance(n)`: a rich progress bar over
    `total` units on stderr when `enabled()`, else a no-op. unit "B" shows sizes and the
    transfer rate (kB, MB, ...); any other unit shows "done/total unit" and the rate per unit."""
    if not enabled() or total <= 0:
        yield _NoBar()
        return
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress,
                               TaskProgressColumn, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn, TransferSpeedColumn)

    console = Console(file=sys.stderr, force_terminal=os.environ.get("NETDSL_PROGRESS") == "1"
                      or None)
    if unit == "B":
        amount = [DownloadColumn(), TransferSpeedColumn()]
    else:
        amount = [MofNCompleteColumn(), TextColumn(unit)]
    columns = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), *amount,
               TimeElapsedColumn(), TimeRemainingColumn()]
    # stdout is left alone: what a command prints while the bar runs stays on stdout
    with Progress(*columns, console=console, transient=False, redirect_stdout=False,
                  redirect_stderr=False) as progress:
        task = progress.add_task(description, total=total)
        yield _Bar(progress, task)
