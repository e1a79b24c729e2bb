"""Exit codes and bad options: every bad value a user can give gets a clean message and exit 1
(a problem with the spec, a file or a value) or 2 (a malformed or contradictory command line),
never 3 (an internal error). Also the input files the compiler agrees to read, and the API
raising at the call that caused an error."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest

import netdsl
from netdsl.cli import main
from netdsl.errors import NetDSLError, UsageError

SPEC = """\
network Tiny {
    input x: f32[N, 3, H, W]
    output y = x -> conv: Conv2d(4, 3, padding = 1) -> ReLU
}
"""


@pytest.fixture
def spec(tmp_path):
    p = tmp_path / "tiny.net"
    p.write_text(SPEC)
    return p


@pytest.fixture
def onnx_file(spec, tmp_path):
    out = tmp_path / "tiny.onnx"
    netdsl.load(spec).save_onnx(out)
    return out


def cli(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


# ---- usage errors: exit 2 ------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["check", "{spec}", "--input", "x=1x3x-128x128"], "expected NAME=DIMS"),
    (["check", "{spec}", "--input", "x=0x3x128x128"], "dims must be positive"),
    (["compile", "{spec}", "-t", "onnx", "-o", "{out}", "--seed", "-1"], "a seed is an integer from 0"),
    (["compile", "{spec}", "-t", "onnx", "-o", "{out}", "--seed", str(2 ** 64)], "a seed is an integer"),
    (["compile", "{spec}", "-t", "onnx", "-o", "{out}", "--opset", "12"], "opset 12 is not supported"),
    (["compile", "{spec}", "-t", "onnx", "-o", "{out}", "--opset", "22"], "opset 22 is not supported"),
    (["compile", "{spec}", "-t", "torch", "-o", "{out}", "--opset", "17"], "--opset applies to --target onnx"),
    (["check", "{spec}", "--input", "x=1x3x8x8", "--input", "x=1x3x8x8"], "--input x given twice"),
    (["check", "{spec}", "--input", "1x3x8x8", "--input", "x=1x3x8x8"], "--input x given twice"),
    (["check", "{spec}", "--set", "a=1", "--set", "a=2"], "--set a given twice"),
    (["run", "{onnx}", "--input", "x=1x3x8x8", "--input", "x=1x3x8x8"], "--input x given twice"),
    (["run", "{onnx}", "--opset", "17"], "--opset applies to .net specs"),
    (["run", "{onnx}", "--weights", "w.npz"], "--weights applies to .net specs"),
])
def test_usage_errors_exit_2(capsys, spec, onnx_file, tmp_path, args, message):
    fill = {"spec": spec, "onnx": onnx_file, "out": tmp_path / "out.x"}
    rc, _, err = cli(capsys, *[a.format(**fill) for a in args])
    assert rc == 2, err
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "out.x").exists()


def test_seed_range_in_the_api(spec):
    net = netdsl.load(spec, inputs=(1, 3, 8, 8))
    for bad in (-1, 2 ** 64, 1.5, True, "3"):
        with pytest.raises(UsageError, match="a seed is an integer"):
            net.to_onnx(seed=bad)
    assert net.to_onnx(seed=np.int64(3)).graph.initializer


# ---- bad weights files: exit 1 -------------------------------------------------------------

def _compile_with(capsys, spec, tmp_path, weights):
    return cli(capsys, "compile", spec, "-t", "onnx", "-o", tmp_path / "w.onnx", "--weights", weights)


def _good_weights(spec):
    return {k: np.ones(s, np.float32) for k, s in netdsl.load(spec).state_layout().items()}


def test_npz_with_string_dtype(capsys, spec, tmp_path):
    w = _good_weights(spec)
    w["conv.bias"] = np.array(["a", "b", "c", "d"])
    np.savez(tmp_path / "w.npz", **w)
    rc, _, err = _compile_with(capsys, spec, tmp_path, tmp_path / "w.npz")
    assert rc == 1, err
    assert "conv.bias has dtype <U1, not a real number type" in err


def test_npz_complex_is_refused(capsys, spec, tmp_path):
    w = _good_weights(spec)
    w["conv.bias"] = w["conv.bias"] + 1j
    np.savez(tmp_path / "w.npz", **w)
    rc, _, err = _compile_with(capsys, spec, tmp_path, tmp_path / "w.npz")
    assert rc == 1, err
    assert "conv.bias has dtype complex64, not a real number type" in err
    assert not (tmp_path / "w.onnx").exists()


def test_npz_truncated(capsys, spec, tmp_path):
    np.savez(tmp_path / "full.npz", **_good_weights(spec))
    data = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "w.npz").write_bytes(data[: len(data) // 2])
    rc, _, err = _compile_with(capsys, spec, tmp_path, tmp_path / "w.npz")
    assert rc == 1, err
    assert f"cannot read weights from '{tmp_path / 'w.npz'}'" in err
    assert "Traceback" not in err


def test_npz_not_a_zip(capsys, spec, tmp_path):
    (tmp_path / "w.npz").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    rc, _, err = _compile_with(capsys, spec, tmp_path, tmp_path / "w.npz")
    assert rc == 1 and "cannot read weights from" in err, err


def test_weights_fifo_is_refused(capsys, spec, tmp_path):
    os.mkfifo(tmp_path / "w.npz")
    rc, _, err = _compile_with(capsys, spec, tmp_path, tmp_path / "w.npz")
    assert rc == 1, err
    assert "a FIFO (named pipe), not a regular file" in err


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_pt_half_precision_is_converted(capsys, spec, tmp_path, dtype):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    state = {k: torch.randn(s).to(getattr(torch, dtype)) for k, s in netdsl.load(spec).state_layout().items()}
    torch.save(state, tmp_path / "w.pt")
    rc, _, err = _compile_with(capsys, spec, tmp_path, tmp_path / "w.pt")
    assert rc == 0, err
    import onnx
    from onnx import numpy_helper
    got = {t.name: numpy_helper.to_array(t) for t in onnx.load(tmp_path / "w.onnx").graph.initializer}
    for k, v in state.items():
        np.testing.assert_array_equal(got[k], v.float().numpy())


def test_pt_sparse_is_made_dense(capsys, spec, tmp_path):
    torch = pytest.importorskip("torch")
    state = {k: torch.randn(s) for k, s in netdsl.load(spec).state_layout().items()}
    state["conv.bias"] = torch.tensor([0.0, 2.0, 0.0, 3.0]).to_sparse()
    torch.save(state, tmp_path / "w.pt")
    rc, _, err = _compile_with(capsys, spec, tmp_path, tmp_path / "w.pt")
    assert rc == 0, err
    net = netdsl.load(spec)
    model = net.to_torch(weights=tmp_path / "w.pt")
    assert model.state_dict()["conv.bias"].tolist() == [0.0, 2.0, 0.0, 3.0]


def test_pt_with_non_string_keys(capsys, spec, tmp_path):
    torch = pytest.importorskip("torch")
    state = {k: torch.randn(s) for k, s in netdsl.load(spec).state_layout().items()}
    state[3] = torch.zeros(1)
    torch.save(state, tmp_path / "w.pt")
    rc, _, err = _compile_with(capsys, spec, tmp_path, tmp_path / "w.pt")
    assert rc == 1, err
    assert "has a key 3 of type int; state_dict keys are parameter paths (strings)" in err


def test_state_dict_half_precision_through_the_api(spec):
    torch = pytest.importorskip("torch")
    net = netdsl.load(spec, inputs=(1, 3, 8, 8))
    state = {k: torch.randn(s, dtype=torch.bfloat16) for k, s in net.state_layout().items()}
    model = net.to_torch(weights=state)
    assert model.state_dict()["conv.weight"].dtype == torch.float32
    assert torch.equal(model.state_dict()["conv.weight"], state["conv.weight"].float())


# ---- run: inputs too large to make --------------------------------------------------------

def test_run_input_too_large(capsys, tmp_path):
    p = tmp_path / "huge.net"
    p.write_text("network Huge {\n    input x: f32[1, 3, 1000000000, 1000000000]\n"
                 "    output y = x -> ReLU\n}\n")
    rc, _, err = cli(capsys, "run", p)
    assert rc == 1, err
    assert "input 'x' of shape [1, 3, 1000000000, 1000000000] has 3,000,000,000,000,000,000 elements" in err


# ---- input files: only regular files, up to a size limit ----------------------------------

def test_check_refuses_a_fifo(capsys, tmp_path):
    os.mkfifo(tmp_path / "pipe.net")
    rc, _, err = cli(capsys, "check", tmp_path / "pipe.net")    # would block forever if opened plainly
    assert rc == 1
    assert err.strip() == f"netdsl: error: cannot read '{tmp_path / 'pipe.net'}': it is a FIFO (named pipe), " \
                          "not a regular file"


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_check_refuses_a_device(capsys, tmp_path):
    node = tmp_path / "zero.net"
    os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 5))     # a private /dev/zero
    rc, _, err = cli(capsys, "check", node)     # would grow without bound if read to the end
    assert rc == 1
    assert "it is a character device, not a regular file" in err


def test_import_of_a_fifo(capsys, tmp_path):
    os.mkfifo(tmp_path / "pipe.net")
    (tmp_path / "main.net").write_text('import "pipe.net"\nnetwork A {\n    input x: f32[1]\n'
                                       '    output y = x\n}\n')
    rc, _, err = cli(capsys, "check", tmp_path / "main.net")
    assert rc == 1
    assert err.startswith(f"{tmp_path / 'main.net'}:1:1: error: cannot import '{tmp_path / 'pipe.net'}': "
                          "it is a FIFO (named pipe), not a regular file")


def test_check_refuses_a_huge_file(capsys, tmp_path):
    from netdsl.source_files import MAX_SOURCE_BYTES
    big = tmp_path / "big.net"
    with open(big, "wb") as f:
        f.write(SPEC.encode())
        f.write(b"#" * MAX_SOURCE_BYTES)
    rc, _, err = cli(capsys, "check", big)
    assert rc == 1
    assert "it is larger than 16 MiB, the limit for a source file" in err
    big.write_bytes(SPEC.encode() + b"#" * (MAX_SOURCE_BYTES - len(SPEC) - 1))   # just under
    assert cli(capsys, "check", big)[0] == 0


# ---- the API fails early --------------------------------------------------------------------

def test_load_rejects_unknown_parameter_at_once(spec):
    with pytest.raises(NetDSLError, match="clases"):
        netdsl.load(spec, clases=3)


def test_loads_rejects_a_bad_layer_argument_at_once():
    text = SPEC.replace("padding = 1", "stide = 1")
    with pytest.raises(NetDSLError) as info:
        netdsl.loads(text, name="t.net")
    assert info.value.span is not None and info.value.span.line == 3
    assert "stide" in info.value.message


def test_load_with_inputs_for_networks_that_need_them():
    text = "network F {\n    input x: f32[N, 3, H, W]\n    output y = x -> Flatten -> Linear(10)\n}\n"
    with pytest.raises(NetDSLError):
        netdsl.loads(text)
    net = netdsl.loads(text, inputs=(2, 3, 4, 4))
    assert net.summary()["outputs"] == [{"name": "y", "shape": [2, 10]}]


def test_str_of_an_error_has_no_cli_prefix(spec):
    with pytest.raises(NetDSLError) as info:
        netdsl.load(spec, network="Nope")
    assert not str(info.value).startswith("netdsl:")
    assert str(info.value) == info.value.message
    with pytest.raises(NetDSLError) as info:
        netdsl.loads(SPEC.replace("Conv2d(4", "Conv2d(-4"), name="t.net")
    assert str(info.value).startswith("t.net:3:")

# ---- what reaches the terminal ----------------------------------------------------------------

def test_terminal_escapes_are_shown_not_acted_on(capsys, tmp_path):
    p = tmp_path / "esc.net"
    p.write_text('network E {\n    "clears \\x1b[2J the \\u202e screen"\n    input x: f32[1, 3, 8, 8]\n'
                 '    output y = x -> ReLU\n}\n')
    rc, out, err = cli(capsys, "summary", p)
    assert rc == 0, err
    assert "clears \\x1b[2J the \\u202e screen" in out and "\x1b" not in out and "\u202e" not in out
    rc, out, _ = cli(capsys, "summary", p, "--json")
    assert rc == 0 and "\x1b" not in out and "\u202e" not in out
    p.write_text("network E {\n    input x: f32[1, 3, 8, 8]  # \x1b[31m red\n    output y = x -> Conv2d(4, 9)\n}\n")
    rc, _, err = cli(capsys, "check", p)
    assert rc == 1 and "\x1b" not in err and "\\x1b[31m" not in err     # the error line is line 3
    p.write_text("network E {\n    input x: f32[1, 3, 8, 8]\n    output y = \x1b[31mx -> Conv2d(4, 9)\n}\n")
    rc, _, err = cli(capsys, "check", p)
    assert rc == 1 and "\x1b" not in err
    line, caret = err.splitlines()[1:3]
    assert line == "        output y = \ufffd[31mx -> Conv2d(4, 9)"     # one character for one
    assert "unexpected character '\\x1b'" in err and caret.index("^") == line.index("\ufffd")


# ---- run: .onnx files from elsewhere ------------------------------------------------------------

def test_run_refuses_a_fifo_model(capsys, tmp_path):
    os.mkfifo(tmp_path / "pipe.onnx")
    rc, _, err = cli(capsys, "run", tmp_path / "pipe.onnx")     # would block forever if opened plainly
    assert rc == 1
    assert "it is a FIFO (named pipe), not a regular file" in err


@pytest.mark.parametrize("record", [
    '{"format": 1, "symbols": ["H"]}',
    '{"format": 1, "symbols": {"H": [5]}}',
    '{"format": 1, "symbols": {"H": [["x", "2"]]}}',
    '{"format": 1, "symbols": {"H": [["x", 2]]}, "constraints": [{"kind": "ge", "a": "int(H * 1e308) * 10", '
    '"b": "1", "r": 0}]}',
    '{"format": 1, "symbols": {}, "constraints": [{"kind": "mod", "a": "' + "(" * 5000 + "1" + ")" * 5000 + '", '
    '"b": "2", "r": 0}]}',
    '[1, 2]',
    'not json',
])
def test_run_survives_a_malformed_constraints_record(capsys, onnx_file, record):
    import onnx
    model = onnx.load(onnx_file)
    for p in model.metadata_props:
        if p.key == "netdsl.constraints":
            p.value = record
            break
    else:
        model.metadata_props.add(key="netdsl.constraints", value=record)
    onnx.save(model, onnx_file)
    rc, out, err = cli(capsys, "run", onnx_file, "--input", "1x3x8x8", "--repeat", "1")
    assert rc == 0, err
    assert "cannot read its netdsl.constraints metadata" in err and "input sizes not checked" in err
    assert "output y: [1, 4, 8, 8]" in out
