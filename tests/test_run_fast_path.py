"""`netdsl run` fixes an ONNX model's symbolic input dims (dim_params) for onnxruntime.

The input shapes are known before the session starts, so `run` passes every dim_param they fix
to SessionOptions.add_free_dimension_override_by_name, and onnxruntime plans the graph for the
concrete sizes (with symbolic sizes its memory planner copies a fused convolution's residual on
every run). Checked here: the session `run` builds sees concrete input shapes; its outputs equal
those of a plain session on the symbolic file at two sizes; dims that share a dim_param get one
size (an input left out takes it, two different sizes are a clear error).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import netdsl
from netdsl import cli

ROOT = Path(__file__).resolve().parent.parent

# a residual block: onnxruntime fuses the add into the second 1x1 convolution (its Sum input)
RES = """\
network Res {
    input image: f32[N, 3, H, W]
    h = image -> stem: Conv2d(8, 3, padding = 1) -> ReLU
    r = h -> c1: Conv2d(8, 1) -> bn1: BatchNorm2d -> ReLU -> c2: Conv2d(8, 1) -> bn2: BatchNorm2d
    s = h + r
    output y = s -> ReLU -> MaxPool2d(2)
}
"""

# Runs `netdsl run` in-process with onnxruntime.InferenceSession wrapped to print the input
# and output shapes each session it creates sees, then checks that torch was never imported.
CAPTURE = """\
import sys
import onnxruntime as ort
real = ort.InferenceSession
def spy(*args, **kwargs):
    s = real(*args, **kwargs)
    print("SESSION", [i.shape for i in s.get_inputs()], [o.shape for o in s.get_outputs()])
    return s
ort.InferenceSession = spy
from netdsl.cli import main
rc = main(sys.argv[1:])
assert "torch" not in sys.modules, "torch was imported"
sys.exit(rc)
"""


def netdsl_run(*args, script=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-c", script, "run", *args] if script else \
        [sys.executable, "-m", "netdsl", "run", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def res_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fast") / "res.onnx"
    netdsl.loads(RES).save_onnx(path, seed=3)
    shape = onnx.load(str(path)).graph.input[0].type.tensor_type.shape
    dims = [d.dim_param or d.dim_value for d in shape.dim]
    assert dims == ["N", 3, "H", "W"]          # the file itself stays symbolic
    return path


def shared_model(path: Path, b_dims=("N", "C")) -> Path:
    """y = a + b, inputs a: [N, C] and b: b_dims (dims named alike are one size)."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", "C"])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, list(b_dims))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "C"])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "shared", [a, b], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_run_session_sees_concrete_sizes(res_file):
    """The session `netdsl run` creates has the input's N, H, W fixed (a plain session on the
    same file keeps them symbolic), at two sizes, and the run does not import torch."""
    plain = ort.InferenceSession(str(res_file), providers=["CPUExecutionProvider"])
    assert plain.get_inputs()[0].shape == ["N", 3, "H", "W"]
    for dims, out in (("2x3x20x24", [2, 8, 10, 12]), ("1x3x14x10", [1, 8, 7, 5])):
        r = netdsl_run(str(res_file), "--input", f"image={dims}", "--repeat", "1", script=CAPTURE)
        assert r.returncode == 0, r.stderr
        shape = [int(d) for d in dims.split("x")]
        assert f"SESSION [{shape}] [{out}]" in r.stdout, r.stdout
        assert f"output y: {out} float32" in r.stdout


def test_session_options_overrides(res_file):
    """_session_options sets one override per dim_param the inputs fix: a session on them
    rejects another size, which a plain session runs."""
    shapes, values = cli._input_shapes_onnx(res_file.read_bytes(), [("image", (1, 3, 12, 16))], "res")
    assert shapes == {"image": (1, 3, 12, 16)} and values == {"N": 1, "H": 12, "W": 16}
    s = ort.InferenceSession(str(res_file), cli._session_options(ort, values),
                             providers=["CPUExecutionProvider"])
    assert s.get_inputs()[0].shape == [1, 3, 12, 16]
    other = {"image": np.zeros((1, 3, 12, 18), np.float32)}
    with pytest.raises(Exception, match="invalid dimensions"):
        s.run(None, other)
    plain = ort.InferenceSession(str(res_file), providers=["CPUExecutionProvider"])
    assert plain.run(None, other)[0].shape == (1, 8, 6, 9)


@pytest.mark.parametrize("shape", [(1, 3, 16, 20), (2, 3, 22, 12)])
def test_outputs_unchanged_with_fixed_sizes(res_file, shape):
    """One symbolic file, two sizes: the session with the sizes fixed computes what a plain
    session computes (and not something trivial)."""
    _, values = cli._input_shapes_onnx(res_file.read_bytes(), [("image", shape)], "res")
    fixed = ort.InferenceSession(str(res_file), cli._session_options(ort, values),
                                 providers=["CPUExecutionProvider"])
    plain = ort.InferenceSession(str(res_file), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(sum(shape)).standard_normal(shape, dtype=np.float32)
    got, want = fixed.run(None, {"image": x})[0], plain.run(None, {"image": x})[0]
    assert got.shape == (shape[0], 8, shape[2] // 2, shape[3] // 2)
    assert np.abs(want).max() > 0.1 and np.std(want) > 0.01
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    y = fixed.run(None, {"image": x + 1})[0]
    assert np.abs(y - got).max() > 1e-3              # the output depends on the input


def test_net_spec_run_has_no_symbols_left():
    """A .net spec is compiled for the concrete sizes: nothing is left to override."""
    net = netdsl.loads(RES).with_inputs({"image": (1, 3, 8, 8)})
    model = net.to_onnx()
    assert cli._declared_inputs(model) == [("image", [1, 3, 8, 8])]     # no dim_param to fix
    symbolic = netdsl.loads(RES).to_onnx().SerializeToString()
    assert cli._input_shapes_onnx(symbolic, [("image", (1, 3, 8, 8))], "Res")[1] == \
        {"N": 1, "H": 8, "W": 8}


def test_shared_symbol_fills_an_input_left_out(tmp_path):
    """b: [N, C] takes N and C from --input a (before: N defaulted to 1 and C was an error)."""
    f = shared_model(tmp_path / "shared.onnx")
    r = netdsl_run(str(f), "--input", "a=3x5", "--repeat", "1")
    assert r.returncode == 0, r.stderr
    assert "with inputs a [3, 5], b [3, 5]" in r.stdout
    assert "output y: [3, 5] float32" in r.stdout


def test_shared_symbol_batch_default(tmp_path):
    """Nothing given: N defaults to 1 for both inputs; C (not the first dim) must be given."""
    f = shared_model(tmp_path / "shared.onnx", b_dims=("N", 5))
    r = netdsl_run(str(f))
    assert r.returncode == 1
    assert "input 'a' has the symbolic dim C (dim 1 of [N, C]); give its size with --input a=DIMS" \
        in r.stderr
    r = netdsl_run(str(f), "--input", "a=1x5", "--repeat", "1")
    assert r.returncode == 0, r.stderr
    assert "with inputs a [1, 5], b [1, 5]" in r.stdout


def test_shared_symbol_two_sizes_is_an_error(tmp_path):
    f = shared_model(tmp_path / "shared.onnx")
    r = netdsl_run(str(f), "--input", "a=3x5", "--input", "b=2x5")
    assert r.returncode == 1
    assert ("netdsl: error: --input b: dim 0 is N, which --input a sets to 3, got 2 "
            "(dims named alike are one size)") in r.stderr
    assert "Traceback" not in r.stderr


def test_unnamed_dim_still_shown_as_question_mark(tmp_path):
    f = shared_model(tmp_path / "shared.onnx", b_dims=("N", ""))     # b's dim 1 has no name
    r = netdsl_run(str(f), "--input", "a=2x5")
    assert r.returncode == 1
    assert "input 'b' has the symbolic dim ? (dim 1 of [N, ?]); give its size with --input b=DIMS" \
        in r.stderr
    r = netdsl_run(str(f), "--input", "a=2x5", "--input", "b=2x5", "--repeat", "1")
    assert r.returncode == 0, r.stderr


def test_readme_snippet_fixes_sizes(res_file):
    """The README's onnxruntime snippet (sizes fixed at session start) runs as written, on
    this file in place of fcn.onnx."""
    import re
    text = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S)
              if "add_free_dimension_override_by_name" in b]
    assert len(blocks) == 1
    scope: dict = {}
    exec(blocks[0].replace('"fcn.onnx"', repr(str(res_file))), scope)
    sess = scope["sess"]
    assert sess.get_inputs()[0].shape == [1, 3, 256, 320]
    y = sess.run(None, {"image": np.ones((1, 3, 256, 320), np.float32)})[0]
    assert y.shape == (1, 8, 128, 160) and np.abs(y).max() > 0
