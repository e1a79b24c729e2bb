"""A non-editable install (a built wheel) carries the grammar and the standard library."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("hatchling")
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "-q", "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    (whl,) = out.glob("netdsl-*.whl")
    return whl


def test_wheel_contains_grammar_and_std(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "netdsl/grammars/netdsl.lark" in names
    assert any(n.startswith("netdsl/std/") and n.endswith(".net") for n in names)
    assert any(n.endswith("entry_points.txt") for n in names)
    for asset in ("dagre.min.js", "dagre.LICENSE", "graph.js", "graph.css"):   # the HTML graph view
        assert f"netdsl/graphview/static/{asset}" in names, asset


def test_installed_wheel_works_outside_the_source_tree(wheel, tmp_path):
    site = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                          "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    spec = tmp_path / "net.net"
    spec.write_text('import "std/blocks.net"\n'
                    "network T { input x: f32[1, 3, 16, 16]\n"
                    "  output y = x -> Conv2d(4, 3) -> ReLU }\n")
    probe = ("import netdsl, sys; net = netdsl.load(sys.argv[1]); print(netdsl.__file__); "
             "print(net.graph.outputs[0][1].shape)")
    env = {**os.environ, "PYTHONPATH": str(site)}
    res = subprocess.run([sys.executable, "-c", probe, str(spec)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith(str(site))
    assert lines[1] == "(1, 4, 14, 14)"
