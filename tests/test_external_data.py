"""ONNX external data: models over protobuf's 2 GiB limit (Linear(2**28) on 3 features is
4.3 GB) are written as a .onnx plus a data file; `external_data=True` / `--external-data`
does so at any size. The tests force it, or lower the limit, to stay small and fast."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import netdsl
from netdsl.backends.onnx import export
from netdsl.errors import NetDSLError, UsageError

ROOT = Path(__file__).resolve().parent.parent

SPEC = """\
network Wide {
    input x: f32[N, 3]
    output y = x -> fc: Linear(3000) -> ReLU -> head: Linear(2)
}
"""


@pytest.fixture(scope="module")
def net():
    return netdsl.loads(SPEC, name="wide.net")


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "netdsl", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def outputs(model_path, x):
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_forced_external_data_is_valid_and_computes_the_same(net, tmp_path):
    inline = tmp_path / "inline.onnx"
    assert net.save_onnx(inline, seed=3) is None
    out = tmp_path / "m.onnx"
    data = net.save_onnx(out, seed=3, external_data=True)
    assert data == str(out) + ".data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inline.onnx", "m.onnx", "m.onnx.data"]
    onnx.checker.check_model(str(out), full_check=True)
    head = onnx.load(str(out), load_external_data=False)
    assert out.stat().st_size < 4096              # the weights are all in the data file
    for t in head.graph.initializer:
        if t.name in ("fc.weight", "fc.bias", "head.weight", "head.bias"):
            assert t.data_location == onnx.TensorProto.EXTERNAL
            info = {e.key: e.value for e in t.external_data}
            assert info["location"] == "m.onnx.data"
            if int(info["length"]) >= 4096:
                assert int(info["offset"]) % 4096 == 0
    # the same tensors as the single-file model
    full = onnx.load(str(out))
    ref = onnx.load(str(inline))
    got = {t.name: onnx.numpy_helper.to_array(t) for t in full.graph.initializer}
    for t in ref.graph.initializer:
        np.testing.assert_array_equal(got[t.name], onnx.numpy_helper.to_array(t))
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(outputs(out, x), outputs(inline, x))


def test_over_the_limit_external_data_is_automatic(net, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "PROTOBUF_LIMIT", 10_000)
    out = tmp_path / "m.onnx"
    assert net.save_onnx(out) == str(out) + ".data"
    onnx.checker.check_model(str(out), full_check=True)
    with pytest.raises(UsageError, match="over protobuf's 2 GiB limit"):
        net.save_onnx(tmp_path / "n.onnx", external_data=False)
    with pytest.raises(UsageError, match="needs a file path, not standard output"):
        net.save_onnx("-")
    assert not (tmp_path / "n.onnx").exists()


def test_external_data_needs_regular_files(net, tmp_path):
    import io
    with pytest.raises(UsageError, match="needs a file path"):
        net.save_onnx(io.BytesIO(), external_data=True)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(NetDSLError, match="not a regular file"):
        net.save_onnx(fifo, external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]     # nothing written, no temp


def test_a_failed_write_keeps_both_files(net, tmp_path):
    out = tmp_path / "m.onnx"
    net.save_onnx(out, external_data=True, seed=1)
    before = out.read_bytes(), (tmp_path / "m.onnx.data").read_bytes()
    bad = net.init_weights()
    bad["head.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(NetDSLError):
        net.save_onnx(out, weights=bad, external_data=True)
    assert (out.read_bytes(), (tmp_path / "m.onnx.data").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]


def test_through_a_symlink_the_data_goes_beside_the_target(net, tmp_path):
    # onnx and onnxruntime look for `location` in the directory of the model's real path
    # (onnxruntime refuses data outside it), so the data file is beside the link's target
    (tmp_path / "a").mkdir()
    (tmp_path / "sub").mkdir()
    link = tmp_path / "a" / "link.onnx"
    link.symlink_to("../sub/real.onnx")
    data = net.save_onnx(link, seed=2, external_data=True)
    real = tmp_path / "sub" / "real.onnx"
    assert data == str(real) + ".data"
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["link.onnx"] and link.is_symlink()
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["real.onnx", "real.onnx.data"]
    head = onnx.load(str(real), load_external_data=False)
    assert {e.value for t in head.graph.initializer for e in t.external_data if e.key == "location"} \
        == {"real.onnx.data"}
    onnx.checker.check_model(os.path.realpath(link), full_check=True)
    inline = tmp_path / "inline.onnx"
    net.save_onnx(inline, seed=2)
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(outputs(os.path.realpath(link), x), outputs(inline, x))
    # a link in the same directory as its target can be opened by itself
    near = tmp_path / "sub" / "near.onnx"
    near.symlink_to("real.onnx")
    net.save_onnx(near, seed=2, external_data=True)
    onnx.checker.check_model(str(near), full_check=True)
    np.testing.assert_array_equal(outputs(near, x), outputs(inline, x))


def test_every_file_is_synced_before_the_renames_which_hold_off_signals(net, tmp_path, monkeypatch):
    import signal
    import stat
    from netdsl import output
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):        # not the directory, after a rename
            events.append("fsync")
        return real_fsync(fd)

    def replace(src, dst):
        held = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        events.append(("replace", os.path.basename(dst), signal.SIGTERM in held and signal.SIGINT in held))
        return real_replace(src, dst)

    monkeypatch.setattr(output.os, "fsync", fsync)
    monkeypatch.setattr(output.os, "replace", replace)
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    net.save_onnx(tmp_path / "m.onnx", external_data=True)
    files = [e for e in events if e == "fsync"]
    renames = [e for e in events if e != "fsync"]
    assert renames == [("replace", "m.onnx.data", True), ("replace", "m.onnx", True)]
    assert len(files) >= 2 and events[:len(files)] == files      # both synced before either rename
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
    onnx.checker.check_model(str(tmp_path / "m.onnx"), full_check=True)


def test_cli_external_data_compiles_and_runs(tmp_path):
    spec = tmp_path / "wide.net"
    spec.write_text(SPEC)
    out = tmp_path / "m.onnx"
    r = run_cli("compile", str(spec), "-t", "onnx", "-o", str(out), "--external-data")
    assert r.returncode == 0, r.stderr
    assert f"weights in {out}.data" in r.stderr
    onnx.checker.check_model(str(out), full_check=True)
    r = run_cli("run", str(out), "--repeat", "1")
    assert r.returncode == 0, r.stderr
    assert "output y: [1, 2] float32" in r.stdout
    r = run_cli("compile", str(spec), "-t", "onnx", "-o", "-", "--external-data")
    assert r.returncode == 2 and "give -o FILE" in r.stderr
    r = run_cli("compile", str(spec), "-t", "torch", "-o", str(tmp_path / "m.py"), "--external-data")
    assert r.returncode == 2 and "--external-data applies to --target onnx" in r.stderr


def test_run_of_a_spec_over_the_limit_is_a_clean_error(tmp_path, monkeypatch, capsys):
    from netdsl.cli import main
    spec = tmp_path / "wide.net"
    spec.write_text(SPEC)
    monkeypatch.setattr(export, "PROTOBUF_LIMIT", 10_000)
    assert main(["run", str(spec), "--repeat", "1"]) == 1
    assert "over protobuf's 2 GiB limit" in capsys.readouterr().err
