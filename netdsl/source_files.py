"""Reading input files safely: only regular files, and only up to a size limit.

`netdsl check /dev/zero` must not read forever, and a FIFO must not hang the compiler, so a
file is opened without blocking, checked with fstat, and read with a bound.
"""
from __future__ import annotations

import os
import stat

MAX_SOURCE_BYTES = 16 * 1024 * 1024     # a .net file (or import) larger than this is refused

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


class UnreadableFile(Exception):
    """Why a file cannot be read, in words (`reason`)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def file_kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path) -> int:
    """A read-only descriptor of `path` (symlinks followed), which must be a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise UnreadableFile(e.strerror or str(e)) from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError as e:
        os.close(fd)
        raise UnreadableFile(e.strerror or str(e)) from None
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UnreadableFile(f"it is {file_kind(mode)}, not a regular file")
    return fd


def check_regular(path) -> None:
    """Raise UnreadableFile unless `path` is a readable regular file."""
    os.close(open_regular(path))


def read_source(path, limit: int = MAX_SOURCE_BYTES) -> str:
    """The UTF-8 text of a regular file of at most `limit` bytes."""
    fd = open_regular(path)
    try:
        with os.fdopen(fd, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise UnreadableFile(e.strerror or str(e)) from None
    if len(data) > limit:
        raise UnreadableFile(f"it is larger than {limit // (1024 * 1024)} MiB, the limit for a source file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableFile("not readable as UTF-8 text") from None
