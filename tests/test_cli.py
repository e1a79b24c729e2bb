"""The `netdsl` command line, run as `python -m netdsl` in a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent

UNET = """\
block DoubleConv(c: int, pad: int = 0, bn: bool = false) {
    conv1: Conv2d(c, 3, padding = pad, bias = not bn)
    if bn { bn1: BatchNorm2d }
    ReLU
    conv2: Conv2d(c, 3, padding = pad, bias = not bn)
    if bn { bn2: BatchNorm2d }
    ReLU
}

block Level(c: int, depth: int, pad: int) (x) -> y {
    skip = x -> enc: DoubleConv(c, pad)
    if depth == 0 { return skip }
    up = skip -> MaxPool2d(2) -> inner: Level(2 * c, depth - 1, pad)
              -> up: ConvTranspose2d(c, 2, stride = 2)
    return concat(center_crop(skip, like = up), up, dim = 1) -> dec: DoubleConv(c, pad)
}

network UNet(in_ch: int = 1, classes: int = 2, base: int = 64, depth: int = 4, pad: int = 0) {
    input image: f32[N, in_ch, H, W]
    output mask = image -> body: Level(base, depth, pad) -> head: Conv2d(classes, 1)
}
"""

SMALL = """\
network Small(width: int = 4, classes: int = 10) {
    "A tiny classifier."
    input x: f32[N, 3, 16, 16]
    output logits = x -> conv: Conv2d(width, 3, padding = 1) -> ReLU -> MaxPool2d(2)
                      -> Flatten -> fc: Linear(classes)
}
"""

TWO = """\
network A { input x: f32[1, 4]  output y = x -> Linear(2) }
network B { input x: f32[1, 4]  output y = x -> Linear(3) }
"""

BAD_SHAPE = """\
network Bad {
    input x: f32[1, 3, 8, 8]
    a = x -> Conv2d(4, 3)
    b = x -> Conv2d(4, 1)
    output y = a + b
}
"""

# Runs the CLI in-process and then asserts that torch was never imported.
NO_TORCH = """\
import sys
from netdsl.cli import main
rc = main(sys.argv[1:])
assert "torch" not in sys.modules, "torch was imported"
sys.exit(rc)
"""


def netdsl(*args, cwd=None, script=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "netdsl", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


@pytest.fixture
def specs(tmp_path):
    d = tmp_path / "specs"
    d.mkdir()
    for name, text in {"unet.net": UNET, "small.net": SMALL, "two.net": TWO, "bad.net": BAD_SHAPE}.items():
        (d / name).write_text(text)
    return d


# ---- help and usage -----------------------------------------------------------------

def test_help_lists_commands():
    r = netdsl("--help")
    assert r.returncode == 0
    for cmd in ("check", "summary", "compile", "run"):
        assert cmd in r.stdout


@pytest.mark.parametrize("cmd", ["check", "summary", "compile", "run"])
def test_subcommand_help(cmd):
    r = netdsl(cmd, "--help")
    assert r.returncode == 0
    assert "--set" in r.stdout and "--network" in r.stdout


@pytest.mark.parametrize("args", [
    [],                                             # no command
    ["frobnicate", "x.net"],                        # unknown command
    ["check"],                                      # no file
    ["compile", "x.net", "-o", "y"],                # no --target
    ["compile", "x.net", "--target", "tflite", "-o", "y"],
    ["check", "x.net", "--set", "depth"],           # not KEY=VALUE
    ["check", "x.net", "--set", "1x=3"],            # key not a name
    ["check", "x.net", "--input", "image=1x3xHx4"],  # dims not numbers
    ["check", "x.net", "--input", "image=1x3x"],
    ["run", "x.net", "--provider", "tpu"],
    ["compile", "x.net", "--target", "onnx", "-o", "y", "--opset", "seventeen"],
    ["compile", "x.net", "--target", "torch", "-o", "y", "--weights", "w.npz"],
])
def test_usage_errors_exit_2(args):
    r = netdsl(*args)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "usage:" in r.stderr or "error:" in r.stderr


# ---- check --------------------------------------------------------------------------

def test_check_ok(specs):
    r = netdsl("check", str(specs / "unet.net"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: UNet: inputs image [N, 1, H, W]; outputs mask [N, 2, ")
    assert "31,030,658 params" in r.stdout
    assert "H ≡ 12 (mod 16), H ≥ 188" in r.stdout
    assert "W ≡ 12 (mod 16), W ≥ 188" in r.stdout


def test_check_with_set_and_input(specs):
    r = netdsl("check", str(specs / "unet.net"), "--set", "depth=1", "--set", "base=8",
               "--input", "image=1x1x92x92")
    assert r.returncode == 0, r.stderr
    assert "inputs image [1, 1, 92, 92]; outputs mask [1, 2, 76, 76]" in r.stdout


def test_check_does_not_import_torch(specs):
    r = netdsl("check", str(specs / "unet.net"), "--set", "depth=2", script=NO_TORCH)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: UNet")


def test_check_shape_error_exit_1(specs):
    r = netdsl("check", str(specs / "bad.net"))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    first = r.stderr.splitlines()[0]
    assert first.startswith(f"{specs / 'bad.net'}:5:16: error: add: ")
    assert "    output y = a + b" in r.stderr
    assert "^^^^^" in r.stderr


def test_check_missing_file_exit_1(tmp_path):
    r = netdsl("check", str(tmp_path / "nope.net"))
    assert r.returncode == 1
    assert r.stderr.strip() == f"netdsl: error: cannot read '{tmp_path / 'nope.net'}': No such file or directory"


def test_check_directory_exit_1(tmp_path):
    r = netdsl("check", str(tmp_path))
    assert r.returncode == 1
    assert "is a directory" in r.stderr


def test_two_networks_need_network_flag(specs):
    r = netdsl("check", str(specs / "two.net"))
    assert r.returncode == 1
    assert "defines 2 networks; choose one with --network: A, B" in r.stderr
    r = netdsl("check", str(specs / "two.net"), "--network", "B")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: B: inputs x [1, 4]; outputs y [1, 3]; 15 params")
    r = netdsl("check", str(specs / "two.net"), "--network", "C")
    assert r.returncode == 1
    assert "error: no network 'C'" in r.stderr


def test_bad_set_values_exit_1(specs):
    f = str(specs / "unet.net")
    r = netdsl("check", f, "--set", "depth=x")
    assert r.returncode == 1
    assert r.stderr.startswith("--set depth:1:1: error: unknown name 'x'")
    r = netdsl("check", f, "--set", "depth=true")
    assert r.returncode == 1
    assert "error: --set depth must be an int, got bool" in r.stderr
    r = netdsl("check", f, "--set", "dpeth=3")
    assert r.returncode == 1
    assert "UNet has no parameter 'dpeth' (did you mean 'depth'?)" in r.stderr
    r = netdsl("check", f, "--set", "depth=(3")
    assert r.returncode == 1
    assert r.stderr.startswith("--set depth:1:3: error: unexpected end of file")


def test_bad_input_values_exit_1(specs):
    f = str(specs / "unet.net")
    r = netdsl("check", f, "--input", "image=1x1x572")
    assert r.returncode == 1
    assert "--input image: the network declares 4 dims ([N, 1, H, W]), got 3" in r.stderr
    r = netdsl("check", f, "--input", "image=1x3x572x572")
    assert r.returncode == 1
    assert "--input image: dim 1 is fixed to 1 by the network, got 3" in r.stderr
    r = netdsl("check", f, "--input", "img=1x1x572x572")
    assert r.returncode == 1
    assert "network UNet has no input 'img' (its inputs: image) (did you mean 'image'?)" in r.stderr
    r = netdsl("check", f, "--input", "image=1x1x0x572")     # a malformed option, as a negative dim is
    assert r.returncode == 2
    assert "dims must be positive" in r.stderr


# ---- summary --------------------------------------------------------------------------

def test_summary_text(specs):
    r = netdsl("summary", str(specs / "small.net"))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("network Small\n  A tiny classifier.\n")
    assert "conv" in out and "Conv2d" in out and "[N, 4, 16, 16]" in out
    assert "parameters: 2,682" in out


def test_summary_json(specs):
    r = netdsl("summary", str(specs / "unet.net"), "--json", "--set", "depth=2")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert set(s) >= {"network", "inputs", "outputs", "params", "macs", "constraints", "layers"}
    assert s["network"] == "UNet"
    assert s["inputs"] == [{"name": "image", "shape": ["N", 1, "H", "W"]}]
    assert s["outputs"][0]["name"] == "mask"
    assert isinstance(s["params"], int) and s["params"] > 0
    assert isinstance(s["macs"], str)           # symbolic: depends on N, H, W
    assert s["constraints"] == ["H ≡ 0 (mod 4), H ≥ 44", "W ≡ 0 (mod 4), W ≥ 44"]
    layer = s["layers"][0]
    # issue 10 added keys (depth, trainable_params, activation_bytes, receptive_field): these stay
    assert set(layer) >= {"path", "op", "output_shape", "params", "frozen_params", "macs"}
    assert s["trainable_params"] == s["params"] and s["frozen_params"] == 0
    assert layer["path"] == "body.enc.conv1" and layer["op"] == "Conv2d"
    assert sum(x["params"] for x in s["layers"]) == s["params"]


def test_summary_json_concrete_macs(specs):
    r = netdsl("summary", str(specs / "small.net"), "--json", "--input", "x=2x3x16x16")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert isinstance(s["macs"], int)
    assert s["outputs"] == [{"name": "logits", "shape": [2, 10]}]


def test_summary_does_not_import_torch(specs):
    r = netdsl("summary", str(specs / "small.net"), "--json", script=NO_TORCH)
    assert r.returncode == 0, r.stderr


# ---- compile ----------------------------------------------------------------------------

def test_compile_onnx_runs_in_onnxruntime(specs, tmp_path):
    import onnx
    import onnxruntime as ort
    out = tmp_path / "unet.onnx"
    r = netdsl("compile", str(specs / "unet.net"), "--target", "onnx", "-o", str(out),
               "--set", "depth=2", "--set", "base=8", script=NO_TORCH)
    assert r.returncode == 0, r.stderr
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"image": np.zeros((1, 1, 188, 188), np.float32)})
    assert y.shape == (1, 2, 148, 148)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["specs", "unet.onnx"]   # no temp file left


def test_compile_onnx_opset_and_seed(specs, tmp_path):
    import onnx
    a, b, c = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "c.onnx"
    assert netdsl("compile", str(specs / "small.net"), "-t", "onnx", "-o", str(a)).returncode == 0
    assert netdsl("compile", str(specs / "small.net"), "-t", "onnx", "-o", str(b),
                  "--seed", "1", "--opset", "13").returncode == 0
    assert netdsl("compile", str(specs / "small.net"), "-t", "onnx", "-o", str(c)).returncode == 0
    assert a.read_bytes() == c.read_bytes()          # deterministic
    mb = onnx.load(str(b))
    assert mb.opset_import[0].version == 13
    assert a.read_bytes() != b.read_bytes()
    r = netdsl("compile", str(specs / "small.net"), "-t", "onnx", "-o", str(c), "--opset", "5")
    assert r.returncode == 2 and "opset 5 is not supported" in r.stderr


def test_compile_onnx_with_npz_weights(specs, tmp_path):
    import onnxruntime as ort
    w = {"conv.weight": np.ones((4, 3, 3, 3), np.float32), "conv.bias": np.zeros(4, np.float32),
         "fc.weight": np.zeros((10, 256), np.float32), "fc.bias": np.arange(10, dtype=np.float32)}
    np.savez(tmp_path / "w.npz", **w)
    out = tmp_path / "small.onnx"
    r = netdsl("compile", str(specs / "small.net"), "-t", "onnx", "-o", str(out),
               "--weights", str(tmp_path / "w.npz"), script=NO_TORCH)
    assert r.returncode == 0, r.stderr
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": np.random.rand(2, 3, 16, 16).astype(np.float32)})
    np.testing.assert_allclose(y, np.tile(np.arange(10, dtype=np.float32), (2, 1)))
    del w["fc.bias"]
    np.savez(tmp_path / "w2.npz", **w)
    r = netdsl("compile", str(specs / "small.net"), "-t", "onnx", "-o", str(out),
               "--weights", str(tmp_path / "w2.npz"))
    assert r.returncode == 1 and "missing fc.bias" in r.stderr


def test_compile_torch_source_is_standalone(specs, tmp_path):
    out = tmp_path / "small_model.py"
    r = netdsl("compile", str(specs / "small.net"), "--target", "torch", "-o", str(out), script=NO_TORCH)
    assert r.returncode == 0, r.stderr
    src = out.read_text()
    assert "netdsl" not in src.replace("generated by netdsl", "")
    check = (
        "import sys, importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('small_model', {str(out)!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "assert not any(m == 'netdsl' or m.startswith('netdsl.') for m in sys.modules)\n"
        "import torch\n"
        "m = mod.Small()\n"
        "assert isinstance(m, torch.nn.Module)\n"
        "y = m(torch.zeros(2, 3, 16, 16))\n"
        "assert tuple(y.shape) == (2, 10), y.shape\n"
        "print('ok')\n")
    # run with a clean PYTHONPATH and from tmp_path so that netdsl cannot be imported from the repo
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=tmp_path,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_compile_to_stdout(specs):
    r = netdsl("compile", str(specs / "small.net"), "--target", "torch", "-o", "-")
    assert r.returncode == 0, r.stderr
    assert "class Small(nn.Module)" in r.stdout


def test_failed_compile_leaves_no_file(specs, tmp_path):
    out = tmp_path / "bad.onnx"
    r = netdsl("compile", str(specs / "bad.net"), "--target", "onnx", "-o", str(out))
    assert r.returncode == 1
    assert "error: add:" in r.stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["specs"]     # no temporary file left either


def test_failed_compile_keeps_existing_output(specs, tmp_path):
    for target, name in (("onnx", "keep.onnx"), ("torch", "keep.py")):
        out = tmp_path / name
        out.write_bytes(b"previous contents")
        r = netdsl("compile", str(specs / "bad.net"), "--target", target, "-o", str(out))
        assert r.returncode == 1
        assert out.read_bytes() == b"previous contents"
        r = netdsl("compile", str(specs / "small.net"), "--target", target, "-o", str(out),
                   "--set", "width=0")
        assert r.returncode == 1
        assert "'out_channels' must be positive, got 0" in r.stderr
        assert out.read_bytes() == b"previous contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.onnx", "keep.py", "specs"]


def test_compile_unwritable_output_exit_1(specs, tmp_path):
    out = tmp_path / "no" / "such" / "dir" / "m.onnx"
    r = netdsl("compile", str(specs / "small.net"), "--target", "onnx", "-o", str(out))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert f"netdsl: error: cannot write '{out}': No such file or directory" in r.stderr
    r = netdsl("compile", str(specs / "small.net"), "--target", "onnx", "-o", str(tmp_path))
    assert r.returncode == 1
    assert "is a directory" in r.stderr


# ---- run --------------------------------------------------------------------------------

def test_run_net_file(specs):
    r = netdsl("run", str(specs / "small.net"), "--repeat", "3")
    assert r.returncode == 0, r.stderr
    assert "ran network Small on CPUExecutionProvider with inputs x [1, 3, 16, 16]" in r.stdout
    assert "  output logits: [1, 10] float32" in r.stdout
    assert "latency:" in r.stdout and "median of 3 runs" in r.stdout


def test_run_symbolic_dims_need_input(specs):
    f = str(specs / "unet.net")
    r = netdsl("run", f, "--set", "depth=1", "--set", "base=4")
    assert r.returncode == 1
    assert ("netdsl: error: input 'image' has the symbolic dim H (dim 2 of [N, 1, H, W]); "
            "give its size with --input image=1x1xHxW") in r.stderr
    assert "note: input sizes that work: H ≡ 0 (mod 2), H ≥ 18" in r.stderr
    r = netdsl("run", f, "--set", "depth=1", "--set", "base=4", "--input", "image=2x1x92x92",
               "--repeat", "2")
    assert r.returncode == 0, r.stderr
    assert "  output mask: [2, 2, 76, 76] float32" in r.stdout
    r = netdsl("run", f, "--set", "depth=1", "--set", "base=4", "--input", "image=1x1x91x92")
    assert r.returncode == 1
    assert "error: " in r.stderr and "Traceback" not in r.stderr


def test_run_onnx_file(specs, tmp_path):
    out = tmp_path / "u.onnx"
    assert netdsl("compile", str(specs / "unet.net"), "-t", "onnx", "-o", str(out),
                  "--set", "depth=1", "--set", "base=4").returncode == 0
    r = netdsl("run", str(out))
    assert r.returncode == 1
    assert "input 'image' has the symbolic dim H" in r.stderr
    r = netdsl("run", str(out), "--input", "1x1x92x92", "--repeat", "2")
    assert r.returncode == 0, r.stderr
    assert "  output mask: [1, 2, 76, 76] float32" in r.stdout
    r = netdsl("run", str(out), "--input", "image=1x3x92x92")
    assert r.returncode == 1 and "dim 1 is fixed to 1 by the model, got 3" in r.stderr
    r = netdsl("run", str(out), "--set", "depth=3")
    assert r.returncode == 2 and "--set applies to .net specs" in r.stderr


def test_run_not_an_onnx_file(tmp_path):
    f = tmp_path / "junk.onnx"
    f.write_bytes(b"\x00\x01garbage\xff" * 10)
    r = netdsl("run", str(f))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "error:" in r.stderr


def test_run_cuda_unavailable(specs):
    import onnxruntime as ort
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here")
    r = netdsl("run", str(specs / "small.net"), "--provider", "cuda")
    assert r.returncode == 1
    assert "--provider cuda: onnxruntime has no CUDAExecutionProvider here" in r.stderr


# ---- in-process: main() returns codes ---------------------------------------------------

def test_main_returns_codes(specs, capsys):
    from netdsl.cli import main
    assert main(["check", str(specs / "small.net")]) == 0
    assert main(["check", str(specs / "bad.net")]) == 1
    assert main(["check"]) == 2
    assert main(["--help"]) == 0
    capsys.readouterr()


def test_keyboard_interrupt_exit_130(specs, monkeypatch, capsys):
    from netdsl import cli

    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setitem(cli._COMMANDS, "check", interrupted)
    assert cli.main(["check", str(specs / "small.net")]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_onnx_file_given_to_check(tmp_path):
    f = tmp_path / "m.onnx"
    f.write_bytes(b"\x08\x07")
    r = netdsl("check", str(f))
    assert r.returncode == 1
    assert f"netdsl: error: '{f}' is an ONNX model; `netdsl check` takes a .net spec" in r.stderr


def test_version():
    import netdsl as pkg
    r = netdsl("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"netdsl {pkg.__version__}"


def test_syntax_error_renders_source_and_caret(tmp_path):
    f = tmp_path / "s.net"
    f.write_text("network T { input x: f32[1, 3]\n  output y = x -> Linear(4,, 2)\n}\n")
    r = netdsl("check", str(f))
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        f"{f}:2:28: error: unexpected ','",
        "      output y = x -> Linear(4,, 2)",
        "                               ^",
    ]


def test_input_makes_a_symbolic_network_concrete(tmp_path):
    f = tmp_path / "flat.net"
    f.write_text("network F { input x: f32[N, 3, H, W]\n output y = x -> Flatten -> Linear(10) }\n")
    r = netdsl("check", str(f))
    assert r.returncode == 1
    assert "Linear: the number of input features (last dim) must be known at compile time" in r.stderr
    r = netdsl("check", str(f), "--input", "2x3x4x4")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: F: inputs x [2, 3, 4, 4]; outputs y [2, 10]; 490 params")
    r = netdsl("run", str(f), "--input", "x=1x3x4x4", "--repeat", "1")
    assert r.returncode == 0, r.stderr
    assert "  output y: [1, 10] float32" in r.stdout


def test_input_on_a_specialised_network_with_list_arguments():
    # `network VGG16 = VGG([[3, 3], ...])`: --input resolves the alias before elaborating
    r = netdsl("summary", str(ROOT / "examples" / "vgg.net"), "--network", "VGG16",
               "--input", "image=1,3,224,224", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["inputs"] == [{"name": "image", "shape": [1, 3, 224, 224]}]
    assert s["macs"] == 15_470_264_320
