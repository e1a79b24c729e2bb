"""Writing output files without destroying anything: the one writer behind `save_onnx`,
`save_torch_source` and `netdsl compile -o`.

What happens depends on what is at the path:

- a regular file, or nothing: the content goes to a temporary file beside it, which is
  fsync'ed and renamed over the path, so the path holds either its old content or the
  complete new one (an existing file keeps its permission bits);
- a symlink (also a dangling one, also a chain of them): it is followed, and its target is
  replaced as above; the link stays;
- anything else (a character device such as /dev/null, a FIFO, a socket): it is opened and
  written directly, never replaced;
- "-": standard output;
- an open file object: written as is.

Temporary files are named `.NAME.netdsl-PID.tmp`, and held under an exclusive flock while
being written. SIGINT and SIGTERM (and SIGHUP) while writing remove them; one left by a killed
process (SIGKILL, a crash) is removed by the next write of the same output, once no process
holds its lock (PIDs are per PID namespace, so two containers sharing a directory cannot judge
each other's by PID; where flock is unavailable, the PID is the fallback).

Several outputs (ONNX external data: the data file, then the model) are committed together:
every temporary file is fsync'ed first, then they are renamed back to back with SIGINT, SIGTERM
and SIGHUP held off, so that a signal cannot fall between the renames.
"""
from __future__ import annotations

import io
import os
import re
import signal
import stat
import sys
import threading

from .errors import OutputError, UsageError

try:
    import fcntl
except ImportError:          # not POSIX: stale temporary files are judged by PID
    fcntl = None

STDOUT = "-"

_TMP_TAG = ".netdsl-"
_active: set = set()            # temporary files this process is writing now
_active_lock = threading.Lock()


def write_outputs(parts, require_regular: bool = False) -> None:
    """Write every (target, emit) of `parts`: `emit(f)` writes bytes to the binary file `f`.

    Nothing is committed until every part has been written; then the parts are committed in
    order (for ONNX external data: the data file first, then the model that refers to it).
    With `require_regular`, a target that is not a regular file (or a new path) is refused."""
    with _cleanup_on_termination():
        sinks = []
        try:
            for target, emit in parts:
                sink = _open_sink(target, require_regular)
                sinks.append(sink)
                emit(sink)
            for sink in sinks:           # everything on disk before anything is renamed
                sink.prepare()
            with _signals_held():
                for sink in sinks:
                    sink.commit()
        except BaseException:
            for sink in reversed(sinks):
                sink.discard()
            raise


def is_file_object(target) -> bool:
    return hasattr(target, "write")


def path_text(target) -> str:
    """An output path as a str: a str, an os.PathLike, or bytes (decoded as the OS does);
    anything else is a UsageError naming it."""
    if isinstance(target, (str, bytes, os.PathLike)):
        try:
            return os.fsdecode(target)
        except TypeError:            # __fspath__ returned something else
            pass
    raise UsageError(f"an output is a path (str or os.PathLike), '-' or an open file, got {target!r}")


def describe(target) -> str:
    if is_file_object(target):
        return f"'{getattr(target, 'name', None)}'" if isinstance(getattr(target, "name", None), str) \
            else "the file object"
    return "standard output" if str(target) == STDOUT else f"'{target}'"


# ---- progress ---------------------------------------------------------------------------------

PROGRESS_MIN_BYTES = 64 << 20     # smaller outputs are written without a progress bar
_PROGRESS_STEP = 16 << 20         # the bar moves at least every this many bytes


def with_progress(emit, total: int, description: str):
    """`emit` (which writes about `total` bytes to the file it is given), drawing a progress bar
    while it writes when `total` is PROGRESS_MIN_BYTES or more (netdsl.progress: on a terminal
    only, or when NETDSL_PROGRESS=1)."""
    if total < PROGRESS_MIN_BYTES:
        return emit

    def emit_with_bar(f):
        from .progress import progress_bar
        with progress_bar(total, description) as bar:
            emit(_Counted(f, bar))
    return emit_with_bar


class _Counted:
    """A file whose writes advance a progress bar (large ones in steps)."""

    def __init__(self, f, bar):
        self._f, self._bar = f, bar

    def write(self, data) -> int:
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        for start in range(0, len(view), _PROGRESS_STEP):
            piece = view[start:start + _PROGRESS_STEP]
            self._f.write(piece)
            self._bar.advance(len(piece))
        return len(view)


# ---- sinks: a binary file-like object with write(), commit() and discard() ------------------

class _Sink:
    """Writes every byte of each buffer (a raw write may write only part of it), and reports
    a failed write as an OutputError that names the output."""

    def __init__(self, file, label: str, pipe: bool = False):
        self._file = file
        self.label = label
        self._pipe = pipe           # standard output: a closed pipe is left to the CLI (exit 0)

    def write(self, data) -> int:
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        total = len(view)
        try:
            while view:
                n = self._file.write(view)
                if n is None:        # a non-blocking file that is full: nothing was written
                    raise OutputError(f"cannot write {self.label}: it would block")
                view = view[n:]
        except OSError as e:
            self._failed(e)
        return total

    def _failed(self, e: OSError):
        if self._pipe and isinstance(e, BrokenPipeError):
            raise e
        raise OutputError(f"cannot write {self.label}: {e.strerror or e}") from None

    def prepare(self) -> None:
        """Make the content durable before any output is committed."""

    def commit(self) -> None:
        flush = getattr(self._file, "flush", None)      # a file-like object may have no flush()
        try:
            if flush is not None:
                flush()
        except OSError as e:
            self._failed(e)

    def discard(self) -> None:
        pass


class _Direct(_Sink):
    """A device, FIFO or socket: opened and written in place (a FIFO waits for a reader)."""

    def __init__(self, path: str, label: str):
        try:
            fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as e:
            raise OutputError(f"cannot write {label}: {e.strerror or e}") from None
        super().__init__(io.FileIO(fd, "wb", closefd=True), label)

    def commit(self) -> None:
        try:
            self._file.close()
        except OSError as e:
            self._failed(e)

    def discard(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass


class _Stdout(_Sink):
    def __init__(self):
        try:
            sys.stdout.flush()
            # unbuffered, so that nothing is left half-written in a buffer after a failure
            raw = io.FileIO(sys.stdout.fileno(), "wb", closefd=False)
        except (AttributeError, OSError, ValueError):     # a replaced sys.stdout (io.UnsupportedOperation)
            raw = getattr(sys.stdout, "buffer", None)
            if raw is None:
                raise OutputError("cannot write standard output: it takes no bytes here") from None
        super().__init__(raw, "standard output", pipe=True)


class _FileObject(_Sink):
    def __init__(self, f):
        super().__init__(f, describe(f))
        self._text = isinstance(f, io.TextIOBase)

    def write(self, data) -> int:
        if self._text:       # torch source into a file opened in text mode
            try:
                self._file.write(bytes(data).decode("utf-8"))
            except OSError as e:
                self._failed(e)
            return len(data)
        if isinstance(self._file, io.RawIOBase):     # may write only part of a buffer
            return super().write(data)
        try:
            self._file.write(data)
        except OSError as e:
            self._failed(e)
        return len(data)


class _Atomic(_Sink):
    """A temporary file beside `path`, renamed onto it by commit()."""

    def __init__(self, path: str, label: str, mode: int | None):
        directory, name = os.path.split(path)
        self._dir = directory or "."
        self._path = path
        _remove_stale(self._dir, name)
        self._tmp, fd = _create_temp(self._dir, name, label)
        try:
            if mode is not None:          # an existing file keeps its permission bits
                os.fchmod(fd, mode)
            file = io.FileIO(fd, "wb", closefd=True)
        except BaseException:
            os.close(fd)
            self.discard()
            raise
        super().__init__(file, label)
        self._written = self._flushed = 0

    def write(self, data) -> int:
        n = super().write(data)
        self._written += n
        if self._written - self._flushed >= _WRITEBACK_STEP:     # a large file: see _start_writeback
            _start_writeback(self._file.fileno(), self._flushed, self._written - self._flushed)
            self._flushed = self._written
        return n

    def prepare(self) -> None:
        try:
            os.fsync(self._file.fileno())
        except OSError as e:
            self._failed(e)

    def commit(self) -> None:
        try:
            # renamed before closing: closing drops the lock that keeps _remove_stale away
            os.replace(self._tmp, self._path)
        except OSError as e:
            self._failed(e)
        self._forget()
        self._tmp = None
        try:
            self._file.close()
        except OSError:
            pass
        _fsync_dir(self._dir)

    def discard(self) -> None:
        if self._tmp is None:        # committed already
            return
        try:
            self._file.close()
        except (OSError, AttributeError):
            pass
        try:
            os.unlink(self._tmp)
        except OSError:
            pass
        self._forget()

    def _forget(self):
        with _active_lock:
            _active.discard(self._tmp)


def _open_sink(target, require_regular: bool) -> _Sink:
    if is_file_object(target):
        if require_regular:
            raise OutputError(f"cannot write {describe(target)}: this output needs a file path")
        return _FileObject(target)
    text = path_text(target)
    if text == STDOUT:
        if require_regular:
            raise OutputError("cannot write standard output: this output needs a file path")
        return _Stdout()
    label = f"'{text}'"
    if not text:
        raise OutputError("cannot write '': the output path is empty")
    if text.endswith(("/", os.sep)) and not os.path.isdir(text):
        # realpath drops the slash: 'out/' would otherwise become a file named 'out'
        raise OutputError(f"cannot write {label}: a path ending in '/' names a directory, not a file")
    path = os.path.realpath(text)        # follows symlinks, dangling ones and chains included
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return _Atomic(path, label, None)
    except OSError as e:                 # a symlink loop, a component that is not a directory ...
        raise OutputError(f"cannot write {label}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"cannot write {label}: it is a directory")
    if stat.S_ISREG(st.st_mode):
        return _Atomic(path, label, stat.S_IMODE(st.st_mode) & 0o777)
    if require_regular:
        raise OutputError(f"cannot write {label}: it is not a regular file, and this output "
                          "needs one (or a new path)")
    return _Direct(path, label)


# ---- temporary files ------------------------------------------------------------------------

_NAME_BYTES = 200     # "." + 200 bytes + ".netdsl-" + PID + "-999.tmp" stays within 255 bytes


def _temp_prefix(name: str) -> str:
    """`.NAME.netdsl-`, NAME cut to _NAME_BYTES bytes (file name limits count bytes, and a
    UTF-8 character may take four) without cutting a character in half."""
    raw = os.fsencode(name)
    if len(raw) > _NAME_BYTES:
        for end in range(_NAME_BYTES, _NAME_BYTES - 4, -1):
            try:
                name = raw[:end].decode("utf-8")
                break
            except UnicodeDecodeError:
                continue
        else:                # not UTF-8: cut the bytes as they are
            name = os.fsdecode(raw[:_NAME_BYTES])
    return f".{name}{_TMP_TAG}"


def _create_temp(directory: str, name: str, label: str):
    prefix = _temp_prefix(name)
    pid = os.getpid()
    with _active_lock:
        for k in range(1000):
            tmp = os.path.join(directory, f"{prefix}{pid}{'-%d' % k if k else ''}.tmp")
            try:
                # 0o666 minus the umask, as a new file made by open() would get
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
            except FileExistsError:
                continue
            except OSError as e:
                raise OutputError(f"cannot write {label}: {e.strerror or e}") from None
            if not _lock_new(fd, tmp):       # another process took it for stale in between
                os.close(fd)
                continue
            _active.add(tmp)
            return tmp, fd
    raise OutputError(f"cannot write {label}: too many temporary files beside it")


def _remove_stale(directory: str, name: str) -> None:
    """Remove temporary files for this output left by processes that no longer run."""
    prefix = _temp_prefix(name)
    pattern = re.compile(re.escape(prefix) + r"([0-9]+)(?:-[0-9]+)?\.tmp\Z")
    try:
        entries = [e.name for e in os.scandir(directory) if e.name.startswith(prefix)]
    except OSError:
        return
    me = os.getpid()
    for entry in entries:
        m = pattern.match(entry)
        if not m:
            continue
        full = os.path.join(directory, entry)
        pid = int(m.group(1))
        with _active_lock:
            if pid == me and full in _active:
                continue
            if fcntl is not None:
                _remove_if_unlocked(full)
            elif not _process_alive(pid):
                try:
                    os.unlink(full)
                except OSError:
                    pass


def _lock_new(fd: int, path: str) -> bool:
    """Lock a temporary file just made; False if it has been removed meanwhile (taken for a
    stale one by another process between its creation and the lock)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another process holds it, about to remove it
        return False
    except OSError:          # a file system without flock: no lock, as where fcntl is missing
        return True
    return _same_file(fd, path)


def _remove_if_unlocked(path: str) -> None:
    """Remove a temporary file that no process holds locked (its writer is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return               # not ours to judge (unreadable, gone already)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _same_file(fd, path):          # still the file that was locked, not a new one
            os.unlink(path)
    except OSError:
        pass                 # locked: being written
    finally:
        os.close(fd)


def _same_file(fd: int, path: str) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _process_alive(pid: int) -> bool:
    if os.name != "posix":
        return True          # no cheap test: keep the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


_WRITEBACK_STEP = 32 << 20
_sync_file_range = []


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing a large file's pages to disk while the rest is still
    being generated, so that the fsync at the end has little left to wait for (Linux only)."""
    if not _sync_file_range:
        fn = None
        if sys.platform.startswith("linux"):
            try:
                import ctypes
                fn = ctypes.CDLL(None, use_errno=True).sync_file_range
                fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
            except (OSError, AttributeError):
                fn = None
        _sync_file_range.append(fn)
    fn = _sync_file_range[0]
    if fn is not None:
        fn(fd, offset, length, 2)       # SYNC_FILE_RANGE_WRITE: start write-back, do not wait


def _fsync_dir(directory: str) -> None:
    """Make the rename durable; not every platform or file system allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- termination ------------------------------------------------------------------------------

class _Terminated(BaseException):
    """Raised by the handler below so that a terminating signal unwinds through the same
    clean-up as Ctrl-C does; the signal is delivered again afterwards."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


class _signals_held:
    """Block SIGINT, SIGTERM and SIGHUP (delivered when unblocked) while the outputs are
    renamed, so that none falls between two renames; only in the main thread, where Python
    runs handlers, and where pthread_sigmask exists."""

    def __enter__(self):
        self.old = None
        if hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread():
            self.old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, *_SIGNALS})
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.old)
        return False


class _cleanup_on_termination:
    """While writing, turn SIGTERM/SIGHUP into an exception (only in the main thread, and only
    where the signal is not ignored); afterwards restore the previous handlers, and re-deliver
    the signal so that the process ends as it would have (exit status 128 + signal)."""

    def __enter__(self):
        self.previous = {}
        self.fired = False
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in _SIGNALS:
            old = signal.getsignal(sig)
            if old is signal.SIG_IGN or old is None:      # None: a handler not set from Python
                continue
            self.previous[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.fired:           # a second signal during the clean-up: let it finish
            return
        self.fired = True
        raise _Terminated(signum)

    def __exit__(self, kind, value, tb):
        for sig, old in self.previous.items():
            signal.signal(sig, old)
        if isinstance(value, _Terminated):
            signal.raise_signal(value.signum)        # the default action ends the process here
            raise OutputError(f"writing was interrupted by signal {signal.Signals(value.signum).name}") \
                from None
        return False
