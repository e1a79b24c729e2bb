"""Weights that cannot fit in memory are refused before anything is allocated, with a located
error naming the layer and the size, instead of a raw MemoryError (or the OOM killer)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import netdsl
from netdsl import param_memory
from netdsl.errors import NetDSLError, ResourceLimitError

ROOT = Path(__file__).resolve().parent.parent

# fc.weight is 2**20 x 2**16 float32: 256 GiB
HUGE = """\
network Huge {
    input x: f32[N, 65536]
    output y = x -> ReLU -> fc: Linear(1048576)
}
"""


def test_random_weights_over_memory_are_a_located_error():
    net = netdsl.loads(HUGE, name="huge.net")
    assert net.param_count() == 2 ** 36 + 2 ** 20        # analysis still works
    with pytest.raises(ResourceLimitError) as e:
        net.init_weights()
    err = e.value
    assert (err.file, err.line, err.col) == ("huge.net", 3, 33)
    assert "fc: Linear needs 256.0 GiB for fc.weight [1048576, 65536]" in err.message
    assert "of memory available" in err.message
    with pytest.raises(ResourceLimitError):
        net.to_onnx()
    with pytest.raises(ResourceLimitError):
        net.save_onnx(os.devnull)


def test_to_torch_over_memory_is_a_located_error():
    pytest.importorskip("torch")
    net = netdsl.loads(HUGE, name="huge.net")
    with pytest.raises(ResourceLimitError, match="fc: Linear needs 256.0 GiB"):
        net.to_torch()


def test_the_estimate_counts_what_is_available(monkeypatch):
    net = netdsl.loads("""\
network Small {
    input x: f32[N, 64]
    output y = x -> a: Linear(64) -> b: Linear(256)
}
""", name="small.net")
    need = (64 * 64 + 64 + 256 * 64 + 256) * 4
    monkeypatch.setattr(param_memory, "available_bytes", lambda: need)
    assert set(net.init_weights()) == {"a.weight", "a.bias", "b.weight", "b.bias"}
    monkeypatch.setattr(param_memory, "available_bytes", lambda: need - 1)
    with pytest.raises(ResourceLimitError) as e:
        net.init_weights()
    assert (e.value.line, e.value.col) == (3, 41)         # b holds the largest parameter
    assert e.value.message.startswith("b: Linear needs 0.1 MiB for b.weight [256, 64]; network "
                                      "Small needs 0.1 MiB for its random weights")
    monkeypatch.setattr(param_memory, "available_bytes", lambda: None)     # unknown: go ahead
    net.init_weights()


def test_cli_compile_over_memory_exits_1(tmp_path):
    spec = tmp_path / "huge.net"
    spec.write_text(HUGE)
    out = tmp_path / "huge.onnx"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-m", "netdsl", "compile", str(spec), "-t", "onnx", "-o", str(out)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1, r.stderr
    assert f"{spec}:3:33: error: fc: Linear needs 256.0 GiB" in r.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["huge.net"]
    assert isinstance(ResourceLimitError("x"), NetDSLError)
