"""ChannelShuffle, chunk, StochasticDepth and LayerNorm2d (netdsl/ir/ops/channels.py): values against
independent references (numpy, torch.chunk and, where it imports, torchvision), train/eval
semantics of stochastic depth, the ONNX forms chosen, and located errors. The torch-vs-onnxruntime
parity at two sizes is in test_ops_parity.py, the gradchecks in test_gradients.py."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import netdsl
from netdsl import errors as E
from netdsl.errors import NetDSLError

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")


def build(body: str, decl: str = "[N, 6, H, W]") -> netdsl.Network:
    return netdsl.loads(f"network T {{\n    input x: f32{decl}\n{body}\n}}\n", name="t.net")


def session(net, weights, opset=17):
    model = net.to_onnx(weights, opset=opset)
    onnx.checker.check_model(model, full_check=True)
    return model, ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def run_both(net, x, weights=None, opset=17):
    """(torch eval outputs, onnxruntime outputs) as lists of numpy arrays."""
    weights = net.init_weights() if weights is None else weights
    with torch.no_grad():
        ref = net.to_torch(weights).eval()(torch.from_numpy(x))
    ref = [r.numpy() for r in (ref if isinstance(ref, tuple) else (ref,))]
    _, sess = session(net, weights, opset)
    return ref, sess.run(None, {"x": x})


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---- ChannelShuffle ----------------------------------------------------------------------------
def shuffle_ref(x, g):
    """torchvision's channel_shuffle in numpy: view [N, g, C / g, ...], swap dims 1 and 2, flatten."""
    n, c = x.shape[:2]
    return x.reshape(n, g, c // g, *x.shape[2:]).swapaxes(1, 2).reshape(x.shape)


@pytest.mark.parametrize("decl,shape,g", [("[N, 6, H, W]", (2, 6, 3, 4), 2), ("[N, 6, H, W]", (1, 6, 2, 5), 3),
                                          ("[N, 8, L]", (2, 8, 5), 4), ("[N, 4, D, H, W]", (1, 4, 2, 3, 2), 2)])
def test_channel_shuffle_values(decl, shape, g):
    net = build(f"    output y = x -> ChannelShuffle({g})", decl)
    x = rand(*shape)
    want = shuffle_ref(x, g)
    assert not np.array_equal(want, x)          # a real permutation
    for opset in (13, 17):
        (ref,), (got,) = run_both(net, x, opset=opset)
        assert np.array_equal(ref, want) and np.array_equal(got, want)


def test_channel_shuffle_onnx_is_one_gather():
    net = build("    output y = x -> ChannelShuffle(3)")
    model, _ = session(net, net.init_weights())
    assert [n.op_type for n in model.graph.node] == ["Gather"]


def test_channel_shuffle_in_shufflenet_unit():
    """ShuffleNetV2's stride-1 unit: split the channels, transform one half, concat, shuffle."""
    net = build("""    a, b = chunk(x, 2)
    output y = concat(a, b -> Conv2d(3, 1) -> BatchNorm2d -> ReLU) -> ChannelShuffle(2)""")
    ref, got = run_both(net, rand(2, 6, 5, 4))
    np.testing.assert_allclose(ref[0], got[0], atol=1e-5)
    assert np.array_equal(ref[0][:, 0::2], rand(2, 6, 5, 4)[:, :3])     # the untouched half, interleaved


# ---- chunk -------------------------------------------------------------------------------------
@pytest.mark.parametrize("size,chunks", [(6, 2), (7, 3), (6, 4), (5, 5), (3, 5), (1, 2)])
def test_chunk_follows_torch_chunk(size, chunks):
    parts = torch.chunk(torch.arange(size), chunks)
    names = [f"p{i}" for i in range(len(parts))]
    outs = "\n".join(f"    output {n} = {n}" for n in names)
    net = build(f"    {', '.join(names)} = chunk(x, {chunks})\n{outs}" if len(names) > 1 else
                f"    output p0 = chunk(x, {chunks})[0]", f"[N, {size}, L]")
    assert [v.shape[1] for _, v in net.graph.outputs] == [len(p) for p in parts]
    x = rand(2, size, 3)
    model, _ = session(net, net.init_weights())
    assert [n.op_type for n in model.graph.node] == (["Split"] if len(parts) > 1 else ["Identity"])
    ref, got = run_both(net, x)
    want = np.split(x, np.cumsum([len(p) for p in parts])[:-1], axis=1)
    for r, o, w in zip(ref, got, want, strict=True):
        assert np.array_equal(r, w) and np.array_equal(o, w)


def test_chunk_chained_and_negative_dim():
    net = build("    a, b = x -> chunk(2, dim = -1)\n    output y = b\n    output z = a", "[N, 3, 4]")
    x = rand(2, 3, 4)
    ref, got = run_both(net, x)
    assert np.array_equal(ref[0], x[..., 2:]) and np.array_equal(got[1], x[..., :2])


@pytest.mark.parametrize("opset", [13, 17, 18, 21])
def test_chunk_of_a_symbolic_dim_follows_torch_chunk(opset):
    """On a symbolic dim: torch.chunk's parts (ceil(H / 3) twice, the rest last) at every size
    where they are 3, through one ONNX file; the sizes where torch.chunk makes fewer (H = 1, 2,
    4) are refused, by `check` and by the generated module's guard, as a concrete H is."""
    net = build("    a, b, c = chunk(x, 3, dim = 2)\n    output y = a\n    output z = c", "[N, 6, H, W]")
    assert "H ≥ 5, or H ∈ {3}" in net.summary_text()
    model, sess = session(net, net.init_weights(), opset)
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Split"] if opset >= 18 else ops[-1] == "Split" and "Shape" in ops    # sizes at run time
    module = net.to_torch()
    for h in (3, 5, 7, 9, 11):
        x = rand(1, 6, h, 2)
        parts = torch.chunk(torch.from_numpy(x), 3, dim=2)
        assert len(parts) == 3
        for got in (sess.run(None, {"x": x}), [t.numpy() for t in module(torch.from_numpy(x))]):
            assert np.array_equal(got[0], parts[0].numpy()) and np.array_equal(got[1], parts[2].numpy())
    with pytest.raises(ValueError, match=r"H ≥ 5, or H ∈ \{3\}"):      # the generated size guard
        module(torch.zeros(1, 6, 4, 2))
    for h in (1, 2, 4):
        with pytest.raises(NetDSLError, match="cannot unpack 2 values into 3 names|cannot unpack 1 value"):
            net.summary(inputs={"x": (1, 6, h, 2)})


def test_chunk_of_a_symbolic_batch_dim():
    net = build("    a, b = chunk(x, 2, dim = 0)\n    output y = concat(b, a)", "[N, 2]")
    x = rand(4, 2)
    ref, got = run_both(net, x)
    assert np.array_equal(ref[0], np.concatenate([x[2:], x[:2]], 1)) and np.array_equal(got[0], ref[0])


# ---- StochasticDepth ---------------------------------------------------------------------------
DEPTH = "    output y = x -> StochasticDepth({})"


def test_stochastic_depth_is_identity_in_eval_and_onnx():
    net = build(DEPTH.format("0.5"), "[N, 3, H, W]")
    x = rand(4, 3, 2, 2)
    module = net.to_torch().eval()
    assert torch.equal(module(torch.from_numpy(x)), torch.from_numpy(x))
    model, sess = session(net, net.init_weights())
    assert [n.op_type for n in model.graph.node] == ["Identity"]
    assert np.array_equal(sess.run(None, {"x": x})[0], x)


def test_stochastic_depth_row_mode_in_training():
    """Each sample kept (scaled by 1 / (1 - p)) or zeroed, independently; calls differ; about p of
    the samples dropped; the gradient is the mask over the keep probability."""
    p = 0.3
    net = build(DEPTH.format(p), "[N, 3, H, W]")
    module = net.to_torch().train()
    torch.manual_seed(0)
    x = torch.from_numpy(rand(400, 3, 2, 2)).requires_grad_()
    y = module(x)
    ratio = (y / x).detach().reshape(400, -1)
    kept = ratio[:, 0] != 0
    assert torch.allclose(ratio[kept], torch.tensor(1 / (1 - p))) and (ratio[~kept] == 0).all()
    assert 0.2 < float((~kept).float().mean()) < 0.4
    y.sum().backward()
    assert torch.allclose(x.grad, (ratio != 0).float().reshape(x.shape) / (1 - p))
    assert not torch.equal(module(x), module(x))         # a new draw every call
    assert torch.equal(module.eval()(x), x)


def test_stochastic_depth_batch_mode_drops_the_whole_batch():
    net = build("    output y = x -> StochasticDepth(0.5, mode = 'batch')", "[N, 3]")
    module = net.to_torch().train()
    x = torch.from_numpy(rand(8, 3))
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        y = module(x)
        assert torch.equal(y, torch.zeros_like(x)) or torch.allclose(y, x * 2)
        seen.add(bool((y == 0).all()))
    assert seen == {True, False}


def test_stochastic_depth_p_0_and_1():
    x = torch.from_numpy(rand(4, 3))
    assert torch.equal(build(DEPTH.format("0.0"), "[N, 3]").to_torch().train()(x), x)
    assert torch.equal(build(DEPTH.format("p = 1"), "[N, 3]").to_torch().train()(x), torch.zeros_like(x))


def test_stochastic_depth_residual_block_trains():
    """A residual branch under stochastic depth (ConvNeXt's pattern): gradients reach the branch's
    weights in training; the module's output varies between calls."""
    net = build("    output y = x + (x -> Conv2d(3, 3, padding = 1) -> StochasticDepth(0.5))", "[N, 3, H, W]")
    module = net.to_torch().train()
    x = torch.from_numpy(rand(8, 3, 4, 4))
    torch.manual_seed(1)
    out = module(x)
    out.square().sum().backward()
    assert float(module.conv2d.weight.grad.abs().max()) > 0
    assert not torch.equal(out, module(x))


def _torchvision():
    return pytest.importorskip("torchvision")


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_stochastic_depth_draws_as_torchvision(mode):
    """With the same seed the generated module drops exactly what torchvision.ops.StochasticDepth does."""
    tv = _torchvision()
    net = build(f"    output y = x -> StochasticDepth(0.4, mode = '{mode}')", "[N, 3, H, W]")
    module = net.to_torch().train()
    ref = tv.ops.StochasticDepth(0.4, mode).train()
    x = torch.from_numpy(rand(16, 3, 2, 2))
    for seed in range(5):
        torch.manual_seed(seed)
        a = module(x)
        torch.manual_seed(seed)
        assert torch.equal(a, ref(x))


# ---- LayerNorm2d -------------------------------------------------------------------------------
def ln2d_ref(x, w, b, eps):
    mean = x.mean(1, keepdims=True, dtype=np.float64)
    var = ((x - mean) ** 2).mean(1, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    return (y * w.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1)).astype(np.float32)


@pytest.mark.parametrize("opset", [13, 16, 17, 21])
@pytest.mark.parametrize("args", ["eps = 1e-6", "elementwise_affine = false"])
def test_layernorm2d_values(opset, args):
    net = build(f"    output y = x -> LayerNorm2d({args})", "[N, 5, H, W]")
    node = net.graph.nodes[0]
    affine = node.attrs["elementwise_affine"]
    assert sorted(node.params) == (["bias", "weight"] if affine else [])
    rng = np.random.default_rng(1)
    w, b = rng.uniform(0.5, 1.5, 5).astype(np.float32), rng.normal(0, 1, 5).astype(np.float32)
    weights = {"layer_norm2d.weight": w, "layer_norm2d.bias": b} if affine else {}
    if not affine:
        w, b = np.ones(5, np.float32), np.zeros(5, np.float32)
    for shape in ((2, 5, 3, 4), (1, 5, 6, 1)):
        x = rand(*shape) * 3 + 1
        want = ln2d_ref(x, w, b, node.attrs["eps"])
        (ref,), (got,) = run_both(net, x, weights, opset)
        np.testing.assert_allclose(ref, want, atol=1e-5)
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert np.abs(want - x).max() > 0.5


def test_layernorm2d_onnx_form():
    """Transpose, LayerNormalization over the last axis, Transpose (from opset 17); below it,
    no LayerNormalization exists and the ReduceMean form over dim 1 serves."""
    net = build("    output y = x -> LayerNorm2d")
    m17, _ = session(net, net.init_weights(), 17)
    assert [n.op_type for n in m17.graph.node] == ["Transpose", "LayerNormalization", "Transpose"]
    m13, _ = session(net, net.init_weights(), 13)
    assert "LayerNormalization" not in {n.op_type for n in m13.graph.node}
    assert "ReduceMean" in {n.op_type for n in m13.graph.node}


def test_layernorm2d_matches_torchvision():
    """torchvision.models.convnext.LayerNorm2d: the same state_dict (strict) and bit-equal outputs."""
    _torchvision()
    from torchvision.models.convnext import LayerNorm2d
    ref = LayerNorm2d(6, eps=1e-6)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.normal_()
    module = build("    output y = x -> LayerNorm2d(eps = 1e-6)").to_torch()
    module.layer_norm2d.load_state_dict(ref.state_dict(), strict=True)
    x = torch.from_numpy(rand(2, 6, 5, 3))
    assert torch.equal(module(x), ref(x))


def test_channel_shuffle_matches_torchvision():
    _torchvision()
    from torchvision.models.shufflenetv2 import channel_shuffle
    x = torch.from_numpy(rand(2, 12, 3, 3))
    module = build("    output y = x -> ChannelShuffle(4)", "[N, 12, H, W]").to_torch()
    assert torch.equal(module(x), channel_shuffle(x, 4))


# ---- errors ------------------------------------------------------------------------------------
def fail(src: str) -> NetDSLError:
    with pytest.raises(NetDSLError) as info:
        netdsl.loads(src, name="t.net").summary()
    err = info.value
    assert err.span is not None and "^" in err.render()
    return err


def net(body: str, decl: str = "[N, 6, H, W]") -> str:
    return f"network T {{ input x: f32{decl}\n{body}\n}}\n"


ERRORS = [
    (net("output y = x -> ChannelShuffle(4)"), "2:17", "ChannelShuffle: the 6 channels do not divide into groups=4",
     E.ShapeError),
    (net("output y = x -> ChannelShuffle(0)"), "2:17", "ChannelShuffle: 'groups' must be positive, got 0", E.ValueRangeError),
    (net("output y = x -> ChannelShuffle(2)", "[N, 6]"), "2:17", "ChannelShuffle: expects an input of rank >= 3",
     E.ShapeError),
    (net("output y = x -> ChannelShuffle(2)", "[N, C, H, W]"), "2:17",
     "ChannelShuffle: the number of channels (dim 1) must be known at compile time", E.ShapeError),
    (net("output y = x -> ChannelShuffle"), "2:17", "ChannelShuffle", E.NetDSLError),
    (net("a, b = chunk(x, 0)\noutput y = a"), "2:8", "chunk: 'chunks' must be positive, got 0", E.ValueRangeError),
    (net("a, b = chunk(x, 2, dim = 4)\noutput y = a"), "2:8", "chunk: dim=4 is out of range for a rank-4 input",
     E.ShapeError),
    (net("a, b, c, d = chunk(x, 4)\noutput y = a"), "2:1", "cannot unpack 3 values into 4 names", E.NetDSLError),
    (net("a, b = chunk(x, 2, dim = 2)\noutput y = a", "[N, 6, 7, W]"), None, None, None),   # 7 -> 4 + 3: fine
    (net("a, b, c, d = chunk(x, 4, dim = 2)\noutput y = a", "[N, 6, 4, W]"), None, None, None),  # 4 in 4: 4 parts
    (net("a, b, c, d = chunk(x, 4, dim = 2)\noutput y = a", "[N, 6, 6, W]"), "2:1",
     "cannot unpack 3 values into 4 names", E.NetDSLError),          # ... but 6 in 4 makes 3 (2, 2, 2)
    (net("output y = x -> StochasticDepth(1.5)"), "2:17", "StochasticDepth: 'p' must be in [0, 1], got 1.5", E.ValueRangeError),
    (net("output y = x -> StochasticDepth(-0.1)"), "2:17", "StochasticDepth: 'p' must be in [0, 1], got -0.1",
     E.ValueRangeError),
    (net("output y = x -> StochasticDepth(0.1, mode = 'col')"), "2:17", "StochasticDepth: 'mode' must be one of 'row', 'batch', got 'col'",
     E.ValueRangeError),
    (net("output y = x -> StochasticDepth"), "2:17", "StochasticDepth", E.NetDSLError),
    (net("output y = x -> LayerNorm2d", "[N, 6, L]"), "2:17", "LayerNorm2d: expects a [N, C, H, W] input of rank 4",
     E.ShapeError),
    (net("output y = x -> LayerNorm2d(eps = 0.0)"), "2:17", "LayerNorm2d: 'eps' must be positive, got 0.0", E.ValueRangeError),
    (net("output y = x -> LayerNorm2d", "[N, C, H, W]"), "2:17",
     "LayerNorm2d: the number of channels (dim 1) must be known at compile time", E.ShapeError),
]


@pytest.mark.parametrize("src,where,message,cls", ERRORS, ids=[f"e{i}" for i in range(len(ERRORS))])
def test_errors_are_located(src, where, message, cls):
    if where is None:
        netdsl.loads(src).summary()
        return
    err = fail(src)
    assert isinstance(err, cls), type(err)
    assert f"{err.line}:{err.col}" == where, err.render()
    assert err.message.startswith(message), err.message


# ---- sign analysis (StochasticPool2d needs non-negative inputs) ---------------------------------
@pytest.mark.parametrize("chain,source", [("ReLU -> ChannelShuffle(2)", None), ("Conv2d(6, 1) -> ChannelShuffle(3)", "Conv2d"),
                                          ("ReLU -> StochasticDepth(0.2)", None),
                                          ("Conv2d(6, 1) -> StochasticDepth(0.2)", "Conv2d"),
                                          ("ReLU -> LayerNorm2d", "LayerNorm2d")])
def test_sign_analysis_sees_through_the_new_ops(chain, source):
    src = net(f"output y = x -> {chain} -> StochasticPool2d(2)")
    if source is None:
        netdsl.loads(src).summary()
        return
    err = fail(src)
    assert isinstance(err, E.ValueRangeError) and f"it comes from a {source}" in err.message


def test_sign_analysis_follows_chunk():
    netdsl.loads(net("a, b = x -> ReLU -> chunk(2)\noutput y = b -> StochasticPool2d(2)")).summary()
    err = fail(net("a, b = x -> Conv2d(4, 1) -> chunk(2)\noutput y = b -> StochasticPool2d(2)"))
    assert "it comes from a Conv2d" in err.message


def test_chunk_is_a_tuple_whatever_the_sizes():
    """torch.chunk returns a tuple, also of one part; so does chunk, so that a spec's meaning
    never depends on a size (2 chunks of 1 channel make one part, still a tuple)."""
    net = build("    t = chunk(x, 2)\n    output y = t[0] -> ReLU\n    output n = x -> chunk(1) -> ReLU", "[N, 1, L]")
    assert [(len(v.shape), v.shape[1]) for _, v in net.graph.outputs] == [(3, 1), (3, 1)]
    ref, got = run_both(net, rand(2, 1, 3))
    for r, o in zip(ref, got, strict=True):
        np.testing.assert_allclose(r, o, atol=1e-6)
        np.testing.assert_allclose(r, np.maximum(rand(2, 1, 3), 0), atol=1e-6)
