"""The ONNX target: emitted without torch, checked, dynamic dims, value_info,
deterministic bytes, opset choice, weights shared with the torch target."""
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import netdsl
from netdsl.errors import NetDSLError

SPEC = """
network Small(width: int = 4) {
    input x: f32[N, 3, H, W]
    y = x -> c1: Conv2d(width, 3, padding = 1) -> bn: BatchNorm2d -> ReLU -> MaxPool2d(2)
    z = y -> c2: Conv2d(width, 3, padding = 1)
    output out = (y + z) -> AdaptiveAvgPool2d(2) -> Flatten -> fc: Linear(5)
    output feat = z
}
"""


@pytest.fixture(scope="module")
def net():
    return netdsl.loads(SPEC, name="small.net")


def test_onnx_path_never_imports_torch(tmp_path):
    code = f"""
import sys, netdsl
net = netdsl.loads({SPEC!r})
net.summary()
model = net.to_onnx()
net.save_onnx({str(tmp_path / 'm.onnx')!r})
assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_model_passes_the_full_checker_and_has_value_info_for_every_intermediate(net):
    model = net.to_onnx()
    onnx.checker.check_model(model, full_check=True)
    g = model.graph
    produced = {o for n in g.node for o in n.output}
    declared = {v.name for v in g.value_info} | {o.name for o in g.output}
    ir_values = {v.name for n in net.graph.nodes for v in n.outputs}
    assert ir_values <= declared
    assert ir_values <= produced


def test_dims_are_dynamic_where_the_spec_is_symbolic(net):
    model = net.to_onnx()
    x = model.graph.input[0]
    assert [d.dim_param or d.dim_value for d in x.type.tensor_type.shape.dim] == ["N", 3, "H", "W"]
    feat = [o for o in model.graph.output if o.name == "feat"][0]
    assert [d.dim_param or d.dim_value for d in feat.type.tensor_type.shape.dim] == ["N", 4, "H // 2", "W // 2"]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 8, 8), (3, 3, 12, 20)]:
        out, feat_v = sess.run(None, {"x": np.random.rand(*shape).astype(np.float32)})
        assert out.shape == (shape[0], 5)
        assert feat_v.shape == (shape[0], 4, shape[2] // 2, shape[3] // 2)


def test_bytes_are_deterministic_and_seed_dependent(net, tmp_path):
    a = net.to_onnx(seed=1).SerializeToString()
    b = netdsl.loads(SPEC, name="small.net").to_onnx(seed=1).SerializeToString()
    c = net.to_onnx(seed=2).SerializeToString()
    assert a == b and a != c
    net.save_onnx(tmp_path / "m.onnx", seed=1)
    assert onnx.load(tmp_path / "m.onnx") == net.to_onnx(seed=1)


def test_opset_is_selectable_and_checked(net):
    for opset in (13, 17, 18, 21):
        model = net.to_onnx(opset=opset)
        assert model.opset_import[0].version == opset
        onnx.checker.check_model(model, full_check=True)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        sess.run(None, {"x": np.zeros((1, 3, 8, 8), np.float32)})
    with pytest.raises(NetDSLError, match="opset 9 is not supported"):
        net.to_onnx(opset=9)


def test_initializers_are_named_as_state_dict_keys_and_weights_can_be_given(net):
    weights = net.init_weights(seed=5)
    weights["bn.running_mean"] = np.linspace(-1, 1, 4).astype(np.float32)
    model = net.to_onnx(weights=weights)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for k, v in weights.items():
        if k.endswith("num_batches_tracked"):
            continue
        assert np.array_equal(inits[k], v)


def test_bad_weights_are_reported(net, tmp_path):
    weights = net.init_weights()
    weights["c1.weight"] = np.zeros((1, 1), np.float32)
    del weights["fc.bias"]
    with pytest.raises(NetDSLError) as e:
        net.to_onnx(weights=weights)
    assert "missing fc.bias" in e.value.message
    assert "c1.weight has shape [1, 1], the network needs [4, 3, 3, 3]" in e.value.message
    path = tmp_path / "w.npz"
    np.savez(path, **net.init_weights())
    assert net.to_onnx(weights=str(path)) == net.to_onnx()


def test_torch_state_dict_weights_give_the_same_outputs():
    torch = pytest.importorskip("torch")
    net = netdsl.loads(SPEC)
    model = net.to_torch(seed=11).eval()
    with torch.no_grad():
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.running_mean.uniform_(-1, 1)
    proto = net.to_onnx(weights=model.state_dict())
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 10, 14)).astype(np.float32)
    got = sess.run(None, {"x": x})
    with torch.no_grad():
        ref = [t.numpy() for t in model(torch.from_numpy(x))]
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_weights_from_a_torch_pt_file(tmp_path):
    torch = pytest.importorskip("torch")
    net = netdsl.loads(SPEC)
    model = net.to_torch(seed=4)
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    proto = net.to_onnx(weights=str(path))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert np.array_equal(inits["fc.weight"], model.fc.weight.detach().numpy())


def test_a_failed_save_leaves_no_file_and_keeps_an_existing_one(net, tmp_path):
    bad = net.init_weights()
    bad["fc.weight"] = np.zeros((2, 2), np.float32)
    target = tmp_path / "new.onnx"
    with pytest.raises(NetDSLError):
        net.save_onnx(target, weights=bad)
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"previous")
    with pytest.raises(NetDSLError):
        net.save_onnx(target, weights=bad)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.onnx"]
    net.save_onnx(target)
    onnx.checker.check_model(str(target), full_check=True)


@pytest.mark.parametrize("external", [False, True])
def test_streamed_random_weights_are_those_of_to_onnx(tmp_path, external):
    """save_onnx generates large random weights chunk by chunk while writing them (several
    chunks of one parameter, and small parameters between): the same values as to_onnx."""
    from onnx import numpy_helper
    from netdsl.weights import _CHUNK
    net = netdsl.loads("network A { input x: f32[N, 2100]\n"
                       " output y = x -> Linear(2048) -> ReLU -> Linear(700) -> Linear(10) }")
    assert 2100 * 2048 > _CHUNK and 2048 * 700 >= _CHUNK // 8       # two chunks; one lazy chunk
    net.save_onnx(tmp_path / "m.onnx", seed=5, external_data=external)
    got = onnx.load(str(tmp_path / "m.onnx"))
    ref = net.to_onnx(seed=5)
    a = {t.name: numpy_helper.to_array(t) for t in got.graph.initializer}
    b = {t.name: numpy_helper.to_array(t) for t in ref.graph.initializer}
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert np.abs(a["linear.weight"]).max() > 0


@pytest.mark.parametrize("dims", ["N, H, W, 6", "2, 5, 7, 6"])
def test_a_channels_last_linear_is_one_gemm_over_the_rows(dims):
    """Linear with a bias on [N, H, W, C] (ConvNeXt's and Swin's MLPs) is Reshape -> Gemm ->
    Reshape, symbolic sizes or not (onnxruntime makes MatMul + Add a Gemm only for fixed sizes;
    otherwise it fuses the Add into the next GELU, which runs slower); the same values as torch."""
    from parity_util import assert_parity
    net = netdsl.loads(f"""network Net {{
    input x: f32[{dims}]
    output y = x -> Linear(8) -> GELU -> Linear(3, bias = false)
}}""")
    model = net.to_torch().eval()
    assert_parity(net, model, [(2, 5, 7, 6)] + ([(1, 3, 4, 6)] if dims.startswith("N") else []))
    ops = [n.op_type for n in onnx.load_from_string(net.to_onnx(weights=model).SerializeToString()).graph.node]
    assert ops.count("Gemm") == 1 and ops.count("MatMul") == 1, ops
