"""Weights as safetensors: `--weights X.safetensors` / `weights=` read without torch (memory-
mapped), `Network.save_safetensors` and `netdsl compile --target safetensors` write them, and
large weight files get a progress bar on a terminal (NETDSL_PROGRESS=1 here) and nothing extra
otherwise."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

import netdsl
from netdsl.cli import main
from netdsl.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent

SPEC = """\
network Small(width: int = 6, classes: int = 5) {
    "A small classifier with BatchNorm (float and int64 buffers)."
    input x: f32[N, 3, H, W]
    output logits = x -> conv: Conv2d(width, 3, padding = 1) -> bn: BatchNorm2d -> ReLU
                      -> conv2: Conv2d(width, 3, padding = 1, bias = false)
                      -> mean(dims = [2, 3]) -> fc: Linear(classes)
}
"""

# 4096 * 4352 + 4352 floats: 71 MB, over the 64 MiB progress-bar threshold
BIG = """\
network Big {
    input x: f32[1, 4096]
    output y = x -> fc: Linear(4352)
}
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("st")
    spec = d / "small.net"
    spec.write_text(SPEC)
    return d, spec


@pytest.fixture(scope="module")
def net(files):
    return netdsl.load(files[1])


def _initializers(model) -> dict:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _randomised(net, seed=1) -> dict:
    """init_weights with non-trivial BatchNorm statistics and counter."""
    w = net.init_weights(seed)
    rng = np.random.default_rng(seed)
    w["bn.running_mean"] = rng.normal(0, 1, 6).astype(np.float32)
    w["bn.running_var"] = rng.uniform(0.5, 2, 6).astype(np.float32)
    w["bn.num_batches_tracked"] = np.array(7, dtype=np.int64)
    return w


def _run(model, x):
    import onnxruntime as ort
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


# ---- writing -----------------------------------------------------------------------------------

def test_save_then_compile_gives_identical_initializers(net, files):
    path = files[0] / "w.safetensors"
    net.save_safetensors(path, seed=5)
    direct, loaded = net.to_onnx(seed=5), net.to_onnx(weights=path)
    a, b = _initializers(direct), _initializers(loaded)
    assert a.keys() == b.keys() and len(a) >= 8
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    assert direct.SerializeToString() == loaded.SerializeToString()
    other = _initializers(net.to_onnx(seed=6))       # the comparison can fail: seeds differ
    assert not np.array_equal(other["conv.weight"], a["conv.weight"])


def test_file_is_read_by_the_safetensors_library(net, files):
    path = files[0] / "lib.safetensors"
    weights = _randomised(net)
    net.save_safetensors(str(path), weights=weights)
    got = load_file(path)
    assert set(got) == set(net.state_layout())
    for k, v in weights.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape and np.array_equal(got[k], v), k
    assert got["bn.num_batches_tracked"].dtype == np.int64 and got["bn.num_batches_tracked"] == 7
    with safe_open(path, framework="numpy") as f:
        assert f.metadata() == {"netdsl.network": "Small", "netdsl.source": str(files[1])}
    # the header: an 8-byte length, JSON padded to a multiple of 8, tensors aligned to their type
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert n % 8 == 0
    header = json.loads(raw[8:8 + n])
    for k, entry in header.items():
        if k != "__metadata__":
            assert entry["data_offsets"][0] % (8 if entry["dtype"] == "I64" else 4) == 0, k


def test_torch_loads_it_strictly_into_the_generated_module(net, files):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file as torch_load
    path = files[0] / "torch.safetensors"
    weights = _randomised(net, seed=3)
    net.save_safetensors(path, weights=weights)
    module = net.to_torch(seed=9).eval()              # other weights first: the load must change them
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 11)).astype(np.float32)
    before = module(torch.from_numpy(x)).detach().numpy()
    module.load_state_dict(torch_load(path), strict=True)
    after = module(torch.from_numpy(x)).detach().numpy()
    assert not np.allclose(before, after)
    assert int(module.state_dict()["bn.num_batches_tracked"]) == 7
    ref = _run(net.to_onnx(weights=weights), x)
    np.testing.assert_allclose(after, ref, rtol=1e-4, atol=1e-5)
    assert np.abs(ref).max() > 1e-3 and not np.allclose(ref[0], ref[1])


def test_save_given_weights_from_a_state_dict_and_an_open_file(net, files):
    pytest.importorskip("torch")
    module = net.to_torch(seed=4)
    path = files[0] / "from_module.safetensors"
    with open(path, "wb") as f:
        net.save_safetensors(f, weights=module)
    got = load_file(path)
    for k, v in module.state_dict().items():
        assert np.array_equal(got[k], v.numpy()), k
    with pytest.raises(UsageError, match="binary mode"):
        with open(files[0] / "text.safetensors", "w") as f:
            net.save_safetensors(f)


def test_random_weights_match_init_weights_and_stream(files):
    """Large random parameters are generated while being written (LazyUniform); the values are
    those of init_weights."""
    net = netdsl.loads("network M { input x: f32[1, 1024]  output y = x -> fc: Linear(1200) }")
    path = files[0] / "m.safetensors"
    net.save_safetensors(path, seed=11)
    got, want = load_file(path), net.init_weights(11)
    assert np.array_equal(got["fc.weight"], want["fc.weight"]) and got["fc.weight"].std() > 0.01


def test_failed_write_leaves_the_old_file(net, files):
    path = files[0] / "keep.safetensors"
    path.write_bytes(b"old")
    with pytest.raises(UsageError, match="do not fit"):
        net.save_safetensors(path, weights={"conv.weight": np.zeros((6, 3, 3, 3), np.float32)})
    assert path.read_bytes() == b"old"
    assert [p.name for p in files[0].iterdir() if ".netdsl-" in p.name] == []


# ---- reading -----------------------------------------------------------------------------------

def test_loaded_arrays_are_memory_mapped(net, files):
    from netdsl.weights import load_weights
    path = files[0] / "mm.safetensors"
    net.save_safetensors(path, seed=2)
    arrays = load_weights(path)
    w = arrays["conv.weight"]
    assert not w.flags.owndata and w.flags.writeable      # a private (copy-on-write) map
    base = w
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    import mmap
    assert isinstance(base, mmap.mmap), type(base)
    w[...] = 0                                             # private: the file is unchanged
    assert np.abs(load_file(path)["conv.weight"]).max() > 0


def test_torchvision_style_dtypes(net, files):
    """F16 is converted to the parameter's dtype, BF16 widened by its bits, F64 narrowed, I32
    counters widened: as .pt loading does."""
    w = _randomised(net, seed=5)
    path = files[0] / "dtypes.safetensors"
    half = {k: v.astype(np.float16) if v.dtype == np.float32 else v.astype(np.int32) for k, v in w.items()}
    save_file(half, path)
    got = _initializers(net.to_onnx(weights=path))
    assert got["conv.weight"].dtype == np.float32
    assert np.array_equal(got["conv.weight"], half["conv.weight"].astype(np.float32))
    from netdsl.weights import check_weights, load_weights
    checked = check_weights(net.graph, load_weights(path))
    assert checked["bn.num_batches_tracked"].dtype == np.int64 and checked["bn.num_batches_tracked"] == 7
    assert checked["bn.running_var"].dtype == np.float32
    save_file({k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in w.items()}, path)
    assert np.array_equal(_initializers(net.to_onnx(weights=path))["fc.weight"], w["fc.weight"])


def test_bfloat16_is_widened_exactly(net, files):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as torch_save
    w = _randomised(net, seed=6)
    state = {k: torch.from_numpy(v).to(torch.bfloat16) if v.dtype == np.float32 else torch.from_numpy(v)
             for k, v in w.items()}
    path = files[0] / "bf16.safetensors"
    torch_save(state, path)
    got = _initializers(net.to_onnx(weights=path))
    want = state["conv.weight"].float().numpy()
    assert np.array_equal(got["conv.weight"], want)
    assert not np.array_equal(want, w["conv.weight"])          # bf16 did round: not vacuous


def test_no_torch_is_imported(files):
    path = files[0] / "notorch.safetensors"
    code = (f"import sys, netdsl\n"
            f"net = netdsl.load({str(files[1])!r})\n"
            f"net.save_safetensors({str(path)!r})\n"
            f"m = net.to_onnx(weights={str(path)!r})\n"
            f"from netdsl.cli import main\n"
            f"assert main(['compile', {str(files[1])!r}, '-t', 'onnx', '-o', {str(files[0] / 'nt.onnx')!r}, "
            f"'--weights', {str(path)!r}]) == 0\n"
            f"assert 'torch' not in sys.modules, 'torch imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def _cli_error(capsys, *args) -> str:
    rc = main(list(args))
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    return err


def test_errors(net, files, capsys):
    d, spec = files
    base = ["compile", str(spec), "-t", "onnx", "-o", str(d / "e.onnx"), "--weights"]
    garbage = d / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    err = _cli_error(capsys, *base, str(garbage))
    assert "garbage.safetensors': not a valid safetensors file" in err, err
    good = d / "good.safetensors"
    net.save_safetensors(good)
    truncated = d / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-10])
    assert "not a valid safetensors file" in _cli_error(capsys, *base, str(truncated))
    empty = d / "empty.safetensors"
    empty.write_bytes(b"")
    assert "not a valid safetensors file" in _cli_error(capsys, *base, str(empty))
    # a dtype netdsl does not read: name the tensor and the dtype
    header = json.dumps({"conv.weight": {"dtype": "C64", "shape": [2], "data_offsets": [0, 16]}}).encode()
    header += b" " * (-len(header) % 8)
    odd = d / "complex.safetensors"
    odd.write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
    err = _cli_error(capsys, *base, str(odd))
    assert "tensor conv.weight has dtype C64" in err and "BF16" in err, err
    # missing, unexpected and misshapen keys: check_weights' messages
    w = dict(load_file(good))
    del w["conv.weight"]
    w["extra.weight"] = np.zeros(3, np.float32)
    w["fc.bias"] = np.zeros(4, np.float32)
    bad = d / "keys.safetensors"
    save_file(w, bad)
    err = _cli_error(capsys, *base, str(bad))
    assert "weights do not fit network Small" in err and "missing conv.weight" in err, err
    assert "unexpected extra.weight" in err and "fc.bias has shape [4], the network needs [5]" in err, err
    boolean = d / "bool.safetensors"
    save_file({**load_file(good), "conv.bias": np.ones(6, bool)}, boolean)
    assert "conv.bias has dtype bool, not a real number type" in _cli_error(capsys, *base, str(boolean))
    assert "does not exist" in _cli_error(capsys, *base, str(d / "nope.safetensors"))
    # run reads them too
    err = _cli_error(capsys, "run", str(spec), "--input", "1x3x8x8", "--repeat", "1", "--weights", str(bad))
    assert "missing conv.weight" in err


# ---- command line --------------------------------------------------------------------------------

def test_compile_target_safetensors(net, files, capsys):
    d, spec = files
    out = d / "cli.safetensors"
    assert main(["compile", str(spec), "--target", "safetensors", "-o", str(out), "--seed", "5"]) == 0
    err = capsys.readouterr().err
    assert f"wrote {out} (safetensors, network Small" in err
    api = d / "api.safetensors"
    net.save_safetensors(api, seed=5)
    assert out.read_bytes() == api.read_bytes()
    # to standard output
    r = subprocess.run([sys.executable, "-m", "netdsl", "compile", str(spec), "-t", "safetensors", "-o", "-",
                        "--seed", "5"], capture_output=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout == api.read_bytes(), r.stderr
    # converting: a .npz (or .pt) state_dict to safetensors, and back through --weights
    w = _randomised(net, seed=8)
    np.savez(d / "w.npz", **w)
    conv = d / "conv.safetensors"
    assert main(["compile", str(spec), "-t", "safetensors", "--weights", str(d / "w.npz"), "-o", str(conv)]) == 0
    got = load_file(conv)
    assert all(np.array_equal(got[k], v) for k, v in w.items())
    onnx_out = d / "conv.onnx"
    assert main(["compile", str(spec), "-t", "onnx", "--weights", str(conv), "-o", str(onnx_out)]) == 0
    assert np.array_equal(_initializers(onnx.load(onnx_out))["bn.running_var"], w["bn.running_var"])
    capsys.readouterr()


@pytest.mark.parametrize("flag", [["--opset", "13"], ["--external-data"]])
def test_compile_target_safetensors_refuses_onnx_options(files, capsys, flag):
    d, spec = files
    rc = main(["compile", str(spec), "-t", "safetensors", "-o", str(d / "x.safetensors"), *flag])
    assert rc == 2
    assert f"{flag[0]} applies to --target onnx" in capsys.readouterr().err


def test_help_mentions_safetensors(capsys):
    assert main(["compile", "--help"]) == 0
    out = capsys.readouterr().out
    assert "safetensors" in out and ".safetensors file" in out
    assert main(["run", "--help"]) == 0
    assert ".safetensors" in capsys.readouterr().out


# ---- progress --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_spec(files):
    p = files[0] / "big.net"
    p.write_text(BIG)
    return p


@pytest.mark.parametrize("target", ["safetensors", "onnx", "onnx-external"])
def test_progress_bar_on_large_writes(big_spec, files, capsys, monkeypatch, target):
    d = files[0]
    out = d / f"big-{target}.out"
    args = ["compile", str(big_spec), "-t", target.split("-")[0], "-o", str(out)]
    if target == "onnx-external":
        args.append("--external-data")
    monkeypatch.setenv("NETDSL_PROGRESS", "1")
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "writing Big" in err and "MB" in err, err          # the bar, with sizes
    assert out.stat().st_size > 64 << 20 or Path(str(out) + ".data").stat().st_size > 64 << 20


def test_no_progress_without_a_terminal(big_spec, net, files, capsys, monkeypatch):
    monkeypatch.delenv("NETDSL_PROGRESS", raising=False)
    d = files[0]
    out = d / "quiet.safetensors"
    assert main(["compile", str(big_spec), "-t", "safetensors", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"wrote {out} (safetensors, network Big, {4096 * 4352 + 4352:,} params)\n"
    # small outputs get no bar even when forced
    monkeypatch.setenv("NETDSL_PROGRESS", "1")
    assert main(["compile", str(files[1]), "-t", "safetensors", "-o", str(d / "small.safetensors")]) == 0
    assert "writing" not in capsys.readouterr().err


def test_no_progress_in_a_piped_process(big_spec, files):
    """A real process with stderr a pipe: exactly the one line, no bar, no escape codes."""
    env = {k: v for k, v in os.environ.items() if k != "NETDSL_PROGRESS"}
    out = files[0] / "piped.onnx"
    r = subprocess.run([sys.executable, "-m", "netdsl", "compile", str(big_spec), "-t", "onnx", "-o", str(out)],
                       capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == f"wrote {out} (onnx, network Big, {4096 * 4352 + 4352:,} params)\n"
