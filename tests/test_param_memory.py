"""Weights that cannot fit in memory are refused before anything is allocated, with a located
error naming the layer and the size, instead of a raw MemoryError (or the OOM killer)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import netdsl
from netdsl import memory, param_memory
from netdsl.errors import ResourceLimitError

ROOT = Path(__file__).resolve().parent.parent

# the CLI on a machine with 8 GiB free, whatever this one has
SMALL_MACHINE_CLI = """\
import sys
from netdsl import param_memory
param_memory.available_bytes = lambda: 8 << 30
from netdsl.cli import main
sys.exit(main(sys.argv[1:]))
"""

# fc.weight is 2**20 x 2**16 float32: 256 GiB
HUGE = """\
network Huge {
    input x: f32[N, 65536]
    output y = x -> ReLU -> fc: Linear(1048576)
}
"""

# what the HUGE tests see as free memory, whatever the machine has: they must never allocate
SMALL_MACHINE = 8 << 30


@pytest.fixture
def small_machine(monkeypatch):
    monkeypatch.setattr(param_memory, "available_bytes", lambda: SMALL_MACHINE)


def test_random_weights_over_memory_are_a_located_error(small_machine):
    net = netdsl.loads(HUGE, name="huge.net")
    assert net.param_count() == 2 ** 36 + 2 ** 20        # analysis still works
    with pytest.raises(ResourceLimitError) as e:
        net.init_weights()
    err = e.value
    assert (err.file, err.line, err.col) == ("huge.net", 3, 33)
    assert "fc: Linear needs 256.0 GiB for fc.weight [1048576, 65536]" in err.message
    assert "more than the 8.0 GiB of memory available" in err.message
    with pytest.raises(ResourceLimitError):
        net.to_onnx()
    with pytest.raises(ResourceLimitError):
        net.save_onnx(os.devnull)


def test_to_torch_over_memory_is_a_located_error(small_machine):
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
    r = subprocess.run([sys.executable, "-c", SMALL_MACHINE_CLI, "compile", str(spec), "-t", "onnx",
                        "-o", str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1, r.stderr
    assert f"{spec}:3:33: error: fc: Linear needs 256.0 GiB" in r.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["huge.net"]


# ---- what "available" means: the least of the machine's and the cgroup's --------------------

def fake_cgroup(root, files: dict):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def cgroup(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "CGROUP_ROOT", str(tmp_path))
    monkeypatch.setattr(memory, "_machine_available", lambda: 64 << 30)     # a big host
    return tmp_path


def test_a_cgroup_v2_limit_counts(cgroup):
    assert memory.available_bytes() == 64 << 30            # no cgroup files: the machine's
    fake_cgroup(cgroup, {"memory.max": "4294967296\n", "memory.current": "1073741824\n"})
    assert memory.available_bytes() == 3 << 30
    fake_cgroup(cgroup, {"memory.stat": "anon 1\nfile 536870912\ninactive_file 536870912\n"})
    assert memory.available_bytes() == (3 << 30) + (512 << 20)     # inactive cache is reclaimable
    assert not memory.fits(4 << 30) and memory.fits(3 << 30)
    fake_cgroup(cgroup, {"memory.max": "max\n"})
    assert memory.available_bytes() == 64 << 30            # 'max': no limit
    fake_cgroup(cgroup, {"memory.max": "80000000000\n"})
    assert memory.available_bytes() == 64 << 30            # a limit above the machine's free memory


def test_a_cgroup_v1_limit_counts(cgroup):
    v1 = {"memory/memory.limit_in_bytes": "2147483648\n", "memory/memory.usage_in_bytes": "536870912\n"}
    fake_cgroup(cgroup, v1)
    assert memory.available_bytes() == (2 << 30) - (512 << 20)
    fake_cgroup(cgroup, {"memory/memory.limit_in_bytes": "9223372036854771712\n"})   # v1's "unlimited"
    assert memory.available_bytes() == 64 << 30
    fake_cgroup(cgroup, {"memory/memory.limit_in_bytes": "1073741824\n",
                         "memory/memory.usage_in_bytes": "2147483648\n"})          # over its limit
    assert memory.available_bytes() == 0


@pytest.mark.parametrize("files", [
    {"memory.max": "garbage\n", "memory.current": "1\n"},
    {"memory.max": "", "memory.current": "1\n"},
    {"memory.max": "1073741824\n"},                                      # no usage
    {"memory.max": "1073741824\n", "memory.current": "-5\n"},
    {"memory/memory.limit_in_bytes": "1073741824\n", "memory/memory.usage_in_bytes": "x\n"},
])
def test_unreadable_cgroup_files_are_ignored(cgroup, files):
    fake_cgroup(cgroup, files)
    assert memory.available_bytes() == 64 << 30


def test_a_bad_memory_stat_is_ignored(cgroup):
    fake_cgroup(cgroup, {"memory.max": "4294967296\n", "memory.current": "1073741824\n",
                         "memory.stat": "inactive_file lots\n"})
    assert memory.available_bytes() == 3 << 30


def test_human_bytes():
    assert memory.human_bytes(256 << 30) == "256.0 GiB"
    assert memory.human_bytes(3 << 19) == "1.5 MiB"
