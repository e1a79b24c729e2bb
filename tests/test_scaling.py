"""Work that must grow linearly with a spec, checked by counting rather than timing
(benchmarks/scaling.py times it), and the imports `netdsl check` can do without."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import netdsl
from netdsl.ir import elaborate as E
from netdsl.ir.graph import Graph

ROOT = Path(__file__).resolve().parent.parent


class _CountingList(list):
    scans = 0

    def __iter__(self):
        _CountingList.scans += 1
        return super().__iter__()


class _CountingGraph(Graph):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.inputs = _CountingList()
        self.outputs = _CountingList()


def test_declaring_inputs_and_outputs_does_not_rescan_them(monkeypatch):
    # each `input` and `output` used to look through every earlier one: quadratic in their number
    n = 300
    body = "\n".join(f"    input x{i}: f32[1, 2]" for i in range(n))
    body += "\n" + "\n".join(f"    output y{i} = x{i}" for i in range(n))
    monkeypatch.setattr(E, "Graph", _CountingGraph)
    _CountingList.scans = 0
    graph = netdsl.loads("network Many {\n" + body + "\n}").graph
    assert len(graph.inputs) == n and len(graph.outputs) == n
    assert _CountingList.scans < 20


def test_a_long_chain_records_each_constraint_once():
    # 200 identical layers on symbolic sizes used to record 200 copies of `H >= 1` and the like
    layers = "\n".join("    Conv2d(4, 3, padding = 1)\n    ReLU" for _ in range(100))
    net = netdsl.loads("network Chain {\n    input x: f32[N, 4, H, W]\n" + layers + "\n    output y = x\n}")
    keys = [(c.kind, str(c.a), str(c.b), c.r) for c in net.graph.constraints]
    assert len(keys) == len(set(keys)) and len(keys) <= 6


def test_recorded_constraints_keep_the_first_of_identical_ones():
    from netdsl.passes.constraints import Constraint
    from netdsl.ir import dims as D
    recorded = E.RecordedConstraints()
    h = D.sym("H")
    first = Constraint("ge", h, 1, 0, "first", None, ())
    recorded.append(first)
    recorded.append(Constraint("ge", D.add(D.sym("H"), 0), 1, 0, "second", None, ()))
    recorded.append(Constraint("ge", h, 2, 0, "other", None, ()))
    assert [c.message for c in recorded] == ["first", "other"]


def test_check_imports_neither_numpy_nor_lark_nor_onnx(tmp_path):
    # start-up: a spec whose input-size constraints all hold trivially needs none of them
    code = ("import sys\nfrom netdsl.cli import main\n"
            "rc = main(['check', 'examples/resnet.net', '--network', 'ResNet50'])\n"
            "print(rc, sorted(m for m in ('numpy', 'lark', 'onnx', 'torch') if m in sys.modules))\n")
    env = {**os.environ, "NETDSL_CACHE_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                   timeout=120)   # the first run writes the parser-table cache
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "0 []"


def test_constraints_that_exclude_sizes_are_still_solved():
    # the shortcut for trivially true constraints must not hide the others
    net = netdsl.loads("network P {\n    input x: f32[1, 1, H, W]\n    output y = x -> Conv2d(1, 5) "
                       "-> MaxPool2d(2)\n}")
    assert net.summary()["constraints"] == ["H ≥ 6", "W ≥ 6"]


def test_onnx_builder_names_and_attributes_match_onnx_helper():
    from onnx import helper
    from netdsl.backends.onnx.builder import OnnxBuilder
    b = OnnxBuilder(17, {})
    b.reserve("relu_2")
    names = [b.fresh("relu") for _ in range(4)]
    assert names == ["relu", "relu_1", "relu_3", "relu_4"]     # the smallest free, as before
    out = b.add("Conv", ["x", "w"], "y", pads=[1, 1, 1, 1], group=1, alpha=0.5, auto_pad="NOTSET",
                flag=True, none=None)
    ref = helper.make_node("Conv", ["x", "w"], [out], name=b.nodes[-1].name, pads=[1, 1, 1, 1],
                           group=1, alpha=0.5, auto_pad="NOTSET", flag=True, none=None)
    assert b.nodes[-1].SerializeToString() == ref.SerializeToString()
