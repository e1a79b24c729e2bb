"""Output files: what `save_onnx`, `save_torch_source` and `netdsl compile -o` do to what is at
the path (regular file, symlink, device, FIFO, socket, standard output), errors that name the
path, and temporary files that never outlive a write (SIGTERM) or the next write (SIGKILL).

Device nodes and FIFOs are private ones made in tmp_path, never the system's."""
from __future__ import annotations

import io
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import onnx
import pytest

import netdsl
from netdsl.errors import NetDSLError, OutputError, UsageError

ROOT = Path(__file__).resolve().parent.parent

SPEC = """\
network Small {
    input x: f32[N, 3, 8, 8]
    output y = x -> conv: Conv2d(4, 3, padding = 1) -> Flatten -> fc: Linear(5)
}
"""


@pytest.fixture(scope="module")
def net():
    return netdsl.loads(SPEC, name="small.net")


@pytest.fixture(scope="module")
def model_bytes(net):
    from netdsl.backends.onnx.export import StreamedModel
    buf = io.BytesIO()
    StreamedModel(net.graph, net.init_weights()).write_inline(buf)
    return buf.getvalue()


def run_cli(*args, stdout=subprocess.PIPE, script=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "netdsl", *args]
    return subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, env=env, timeout=120)


def spec_file(tmp_path) -> str:
    path = tmp_path / "small.net"
    path.write_text(SPEC)
    return str(path)


def char_device(path: Path, major: int, minor: int) -> Path:
    """A private device node (1,3 is a null device, 1,7 a full one), or skip where none can be made."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(major, minor))
        os.close(os.open(path, os.O_WRONLY))     # a file system mounted nodev refuses to open it
    except OSError as e:
        pytest.skip(f"cannot make and open a device node here: {e}")
    return path


def leftovers(directory: Path) -> list:
    return sorted(p.name for p in directory.iterdir() if ".netdsl-" in p.name or p.name.endswith(".tmp"))


# ---- regular files and symlinks ----------------------------------------------------------------

def test_a_regular_file_is_replaced_atomically_and_keeps_its_mode(net, model_bytes, tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old")
    out.chmod(0o640)
    inode = out.stat().st_ino
    net.save_onnx(out)
    assert out.read_bytes() == model_bytes
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert out.stat().st_ino != inode            # a new file renamed into place, not rewritten
    assert leftovers(tmp_path) == []
    new = tmp_path / "new.onnx"
    umask = os.umask(0o022)
    try:
        net.save_onnx(new)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(new.stat().st_mode) == 0o644


def test_a_symlink_is_followed_and_its_target_replaced(net, model_bytes, tmp_path):
    target = tmp_path / "real.onnx"
    target.write_bytes(b"old")
    link = tmp_path / "link.onnx"
    link.symlink_to("real.onnx")
    net.save_onnx(link)
    assert link.is_symlink() and os.readlink(link) == "real.onnx"
    assert target.read_bytes() == model_bytes
    # dangling, and a chain of links into another directory
    (tmp_path / "sub").mkdir()
    dangling = tmp_path / "dangling.py"
    dangling.symlink_to(tmp_path / "sub" / "made.py")
    net.save_torch_source(dangling)
    assert dangling.is_symlink()
    assert "class Small(nn.Module)" in (tmp_path / "sub" / "made.py").read_text()
    first = tmp_path / "first.onnx"
    second = tmp_path / "second.onnx"
    second.symlink_to("sub/chained.onnx")
    first.symlink_to("second.onnx")
    net.save_onnx(first)
    assert first.is_symlink() and second.is_symlink()
    assert (tmp_path / "sub" / "chained.onnx").read_bytes() == model_bytes
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "sub") == []


def test_cli_follows_a_symlink(tmp_path):
    link = tmp_path / "link.onnx"
    link.symlink_to("target.onnx")
    r = run_cli("compile", spec_file(tmp_path), "-t", "onnx", "-o", str(link))
    assert r.returncode == 0, r.stderr
    assert link.is_symlink()
    onnx.checker.check_model(str(tmp_path / "target.onnx"), full_check=True)


# ---- devices, FIFOs, sockets: written in place, never replaced ---------------------------------

def test_cli_writes_a_null_device_in_place(tmp_path):
    null = char_device(tmp_path / "null", 1, 3)
    for target in ("onnx", "torch"):
        r = run_cli("compile", spec_file(tmp_path), "-t", target, "-o", str(null))
        assert r.returncode == 0, r.stderr.decode()
        st = os.lstat(null)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert leftovers(tmp_path) == []


def test_a_full_device_is_a_clean_error_naming_the_path(net, tmp_path):
    full = char_device(tmp_path / "full", 1, 7)
    with pytest.raises(OutputError) as e:
        net.save_onnx(full)
    assert f"cannot write '{full}': No space left on device" in str(e.value)
    r = run_cli("compile", spec_file(tmp_path), "-t", "onnx", "-o", str(full))
    assert r.returncode == 1
    assert f"netdsl: error: cannot write '{full}': No space left on device" in r.stderr.decode()
    assert stat.S_ISCHR(os.lstat(full).st_mode)
    assert leftovers(tmp_path) == []


def test_stdout_on_a_full_device_exits_1(tmp_path):
    full = char_device(tmp_path / "full", 1, 7)
    for target in ("onnx", "torch"):
        with open(full, "wb") as f:
            r = run_cli("compile", spec_file(tmp_path), "-t", target, "-o", "-", stdout=f)
        err = r.stderr.decode()
        assert r.returncode == 1, err
        assert "netdsl: error: cannot write standard output: No space left on device" in err
        assert "Traceback" not in err and "Exception ignored" not in err


def test_stdout_to_a_closed_pipe_is_quiet(tmp_path):
    r = subprocess.run(f"{sys.executable} -m netdsl compile {spec_file(tmp_path)} -t onnx -o - | head -c 1",
                       shell=True, capture_output=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and len(r.stdout) == 1
    assert b"Traceback" not in r.stderr and b"Exception ignored" not in r.stderr


def test_a_fifo_is_written_in_place(net, model_bytes, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    try:
        net.save_onnx(fifo)
        reader.join(timeout=30)
    finally:
        if reader.is_alive():        # still waiting for a writer: let it go
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert got == [model_bytes]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert leftovers(tmp_path) == []


def test_a_socket_is_not_replaced(net, tmp_path):
    path = tmp_path / "s"
    if len(str(path)) > 100:
        pytest.skip("tmp_path too long for a unix socket")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(path))
        with pytest.raises(OutputError, match=f"cannot write '{re.escape(str(path))}'"):
            net.save_onnx(path)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    finally:
        sock.close()
    assert leftovers(tmp_path) == []


# ---- API errors and file objects ---------------------------------------------------------------

def test_api_errors_are_netdsl_errors_that_name_the_path(net, tmp_path):
    missing = tmp_path / "no" / "such" / "m.onnx"
    for save in (net.save_onnx, net.save_torch_source):
        with pytest.raises(OutputError) as e:
            save(missing)
        assert isinstance(e.value, NetDSLError) and not isinstance(e.value, OSError)
        assert f"cannot write '{missing}': No such file or directory" in str(e.value)
        with pytest.raises(OutputError, match="is a directory"):
            save(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="Not a directory"):
        net.save_onnx(tmp_path / "file" / "m.onnx")
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    with pytest.raises(OutputError, match="cannot write"):
        net.save_onnx(loop)
    assert loop.is_symlink()


def test_file_objects(net, model_bytes, tmp_path):
    text = io.StringIO()
    net.save_torch_source(text)
    assert text.getvalue() == net.torch_source()
    binary = io.BytesIO()
    net.save_torch_source(binary)
    assert binary.getvalue() == net.torch_source().encode("utf-8")
    with pytest.raises(NetDSLError, match="binary mode"):
        net.save_onnx(io.StringIO())
    with open(tmp_path / "m.onnx", "wb") as f:
        net.save_onnx(f)
    assert (tmp_path / "m.onnx").read_bytes() == model_bytes


def test_file_objects_without_flush_and_bad_paths(net, model_bytes, tmp_path):
    class Collect:                    # write() is all a file object needs
        def __init__(self):
            self.parts = []

        def write(self, data):
            self.parts.append(bytes(data))
            return len(data)

    sink = Collect()
    net.save_onnx(sink)
    assert b"".join(sink.parts) == model_bytes
    net.save_torch_source(sink)
    for bad in (123, 4.5, None, ["m.onnx"]):
        for save in (net.save_onnx, net.save_torch_source):
            with pytest.raises(UsageError) as e:
                save(bad)
            assert repr(bad) in str(e.value)
    with pytest.raises(UsageError, match="123"):
        net.save_onnx(123, external_data=True)
    # bytes paths are paths, as for open()
    net.save_onnx(os.fsencode(tmp_path / "b.onnx"))
    assert (tmp_path / "b.onnx").read_bytes() == model_bytes
    net.save_onnx(os.fsencode(tmp_path / "e.onnx"), external_data=True)
    assert (tmp_path / "e.onnx.data").is_file()
    assert leftovers(tmp_path) == []


def test_api_dash_is_standard_output(net, capfdbinary):
    net.save_torch_source("-")
    assert capfdbinary.readouterr().out == net.torch_source().encode("utf-8")


# ---- temporary files -----------------------------------------------------------------------------

def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# Holds an exclusive flock on the file named by argv[1], as a writer does, until stdin closes.
HOLD_LOCK = """\
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


def test_stale_temporary_files_are_judged_by_their_lock_not_their_pid(net, tmp_path):
    pytest.importorskip("fcntl")
    dead = tmp_path / f".m.onnx.netdsl-{_dead_pid()}.tmp"
    mine = tmp_path / f".m.onnx.netdsl-{os.getpid()}.tmp"      # not one this process is writing
    # a live PID, but PIDs are per namespace: in another container it names someone else
    unlocked = tmp_path / f".m.onnx.netdsl-{os.getppid()}.tmp"
    # a PID dead here, but the file is locked: a writer (in another container) is at work
    locked = tmp_path / f".m.onnx.netdsl-{_dead_pid()}-1.tmp"
    other = tmp_path / f".other.onnx.netdsl-{_dead_pid()}.tmp"  # another output's: not ours to judge
    for p in (dead, mine, unlocked, locked, other):
        p.write_bytes(b"partial")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(locked)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"
        net.save_onnx(tmp_path / "m.onnx")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()
    onnx.checker.check_model(str(tmp_path / "m.onnx"))
    assert leftovers(tmp_path) == sorted([locked.name, other.name])
    net.save_onnx(tmp_path / "m.onnx")          # its writer is gone: now it is stale
    assert leftovers(tmp_path) == [other.name]


def test_the_temporary_file_is_locked_while_being_written(net, tmp_path):
    fcntl = pytest.importorskip("fcntl")
    seen = []

    def emit(f):
        (tmp,) = [p for p in tmp_path.iterdir() if ".netdsl-" in p.name]
        fd = os.open(tmp, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        seen.append(tmp.name)
        f.write(b"content")

    from netdsl.output import write_outputs
    write_outputs([(tmp_path / "m.bin", emit)])
    assert len(seen) == 1 and (tmp_path / "m.bin").read_bytes() == b"content"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("char", ["e", "\u00e9", "\u20ac", "\U0001f600"])
def test_temporary_names_of_long_names_stay_within_255_bytes(net, tmp_path, char):
    from netdsl.output import _temp_prefix
    name = char * (250 // len(char.encode())) + ".py"       # a valid name, up to 253 bytes
    assert len(name.encode()) <= 255
    prefix = _temp_prefix(name).encode()                     # valid UTF-8, or encode() raises
    assert len(prefix + b"4194304-999.tmp") <= 255
    out = tmp_path / name
    net.save_torch_source(out)
    assert "class Small(nn.Module)" in out.read_text()
    assert leftovers(tmp_path) == []


# A child that writes a model and stops in the middle of it (waiting for a weight, as when
# random fills are slow), says so, and waits to be killed.
MID_WRITE = """\
import sys, time
import netdsl.backends.onnx.export as export
real = export._array
def slow(weights, name, spec):
    if name == "fc.weight":
        print("writing", flush=True)
        time.sleep(60)
    return real(weights, name, spec)
export._array = slow
from netdsl.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _kill_mid_write(tmp_path, sig):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen([sys.executable, "-c", MID_WRITE, "compile", spec_file(tmp_path),
                              "-t", "onnx", "-o", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert child.stdout.readline() == b"writing\n"
        temps = leftovers(tmp_path)
        assert temps == [f".m.onnx.netdsl-{child.pid}.tmp"]      # a recognisable name
        child.send_signal(sig)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
    assert out.read_bytes() == b"previous"
    return child.returncode, out


# SIGTERM ends the process as SIGTERM does (status 143 in a shell); Ctrl-C exits with 130
@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, 130)])
def test_sigterm_mid_write_removes_the_temporary_file(tmp_path, sig, status):
    rc, out = _kill_mid_write(tmp_path, sig)
    assert rc == status
    assert leftovers(tmp_path) == []


def test_sigkill_leaves_a_temporary_file_that_the_next_write_removes(net, tmp_path):
    rc, out = _kill_mid_write(tmp_path, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    assert len(leftovers(tmp_path)) == 1
    net.save_onnx(out)
    onnx.checker.check_model(str(out))
    assert leftovers(tmp_path) == []


def test_signal_handlers_are_restored_after_writing(net, tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    net.save_onnx(tmp_path / "m.onnx")
    assert signal.getsignal(signal.SIGTERM) is before
