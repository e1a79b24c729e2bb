"""Regression tests for bugs found reviewing the detection change (issue 8): an arity error that
was a Python traceback, a top-k size the IR claimed static while it can be 0, detection ops
whose generated torch code used an undefined context, and an anchor-count mismatch that
`netdsl check` let through."""
import numpy as np
import pytest

import netdsl
from netdsl.cli import main
from netdsl.errors import NetDSLError
from netdsl.ir import dims as D

DET = """network E {{
    input images: f32[N, 3, H, W]
    x, sizes = detection_transform(images, min_size = 64, max_size = 96)
    f = x -> Conv2d(8, 3, stride = 4, padding = 1)
{body}
}}"""


@pytest.mark.parametrize("args,count", [("f, p", "2 tensors"), ("f", "1 tensor")])
def test_multiscale_roi_align_arity_is_a_located_error(args, count, tmp_path, capsys):
    body = f"    p = anchors(f, x)\n    output y = multiscale_roi_align({args})"
    with pytest.raises(NetDSLError, match=r"^<string>:6:\d+: error: multiscale_roi_align: takes one or more "
                                          rf"feature maps, then boxes, batch_index and image_sizes; got {count}"):
        netdsl.loads(DET.format(body=body)).summary()
    spec = tmp_path / "bad.net"
    spec.write_text(DET.format(body=body))
    code = main(["check", str(spec)])
    err = capsys.readouterr().err
    assert code != 0 and "internal error" not in err and "multiscale_roi_align: takes" in err


TOPK1 = """network T {
    input x: f32[N, 4]
    k = remove_small_boxes(x, min_size = 1.0)
    s = take(select(x, 1, 2), k)
    v, j = topk(s, k = 1)
    output y = v
    output i = j
}"""


def test_topk_1_of_a_data_dependent_size_may_keep_none():
    """min(1, K) is 0 when K is: the IR's size is data-dependent (bound 1), not 1."""
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    net = netdsl.loads(TOPK1)
    (dim,) = net.graph.outputs[0][1].shape
    assert D.is_dynamic(dim) and D.dyn_atoms(dim)[0].bound == 1
    model = net.to_torch().eval()
    sess = ort.InferenceSession(net.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
    big = np.array([[0, 0, 5, 5], [0, 0, 9, 2], [1, 1, 1.5, 9]], np.float32)     # 2 boxes >= 1 x 1
    for x, rows in ((big, 1), (np.zeros((3, 4), np.float32), 0)):
        with torch.no_grad():
            ref = [t.numpy() for t in model(torch.from_numpy(x))]
        got = sess.run(None, {"x": x})
        assert [r.shape for r in ref] == [g.shape for g in got] == [(rows,), (rows,)]
        if rows:
            assert ref[0][0] == got[0][0] == 9.0 and ref[1][0] == got[1][0] == 1


CONTEXT_ONLY = """network S {
    input x: f32[N, 8]
    v, i = topk(x, k = 1, dim = 1)
    b = x -> Linear(4)
    r, ri = sample_rois(b, select(i, 1, 0))
    output y = r
    output z = b
    output w = ri
}"""


def test_context_ops_run_without_a_detection_transform():
    """sample_rois (a context op) in a network without detection_transform: the generated
    forward makes its own context (no targets) instead of naming an undefined `det`."""
    torch = pytest.importorskip("torch")
    net = netdsl.loads(CONTEXT_ONLY)
    model = net.to_torch(seed=0)
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    for mode in (model.eval, model.train):
        mode()
        with torch.no_grad():
            r, b, ri = model(x)
        assert torch.equal(r, b) and b.abs().sum() > 0                 # eval / no targets: identity
        assert torch.equal(ri, x.argmax(1))


def test_rpn_anchor_count_mismatch_is_a_located_error():
    """The maps' sizes are data-dependent after the transform (so H * W * A = anchors is left to
    run time), yet 6 anchors per location against a 3-anchor head is provably wrong."""
    body = ("    o, d = f -> rpn: RPNHead(3)\n    a = anchors(f, x, sizes = [16, 32])\n"
            "    p, i = rpn_proposals(o, d, a, sizes)\n    output y = p")
    with pytest.raises(NetDSLError, match=r"^<string>:7:\d+: error: rpn_proposals: anchor set 0 has 6 anchors "
                                          r"per location, objectness map 0 has 3"):
        netdsl.loads(DET.format(body=body)).summary()
    ok = netdsl.loads(DET.format(body=body.replace("RPNHead(3)", "RPNHead(6)")))
    assert D.is_dynamic(ok.graph.outputs[0][1].shape[0])


@pytest.mark.parametrize("body,message", [
    ("output y = i -> Linear(4)", r"Linear: input 1 is an int64 tensor"),
    ("output y = v + i", r"add: input 2 is an int64 tensor"),
    ("output y = concat(i, v, dim = 1)", r"concat: its input tensors have different element types \(int64, float32\)"),
])
def test_float_ops_refuse_int64_indices(body, message):
    """topk's indices into a float op compiled, then failed in torch (a dtype error) or gave an
    ONNX model that does not type-check: now a located error."""
    text = f"network Q {{\n    input x: f32[N, 8]\n    v, i = topk(x, k = 3)\n    {body}\n}}"
    with pytest.raises(NetDSLError, match=r"^<string>:4:\d+: error: " + message):
        netdsl.loads(text).summary()
    # moving indices around stays allowed, and keeps int64
    ok = netdsl.loads("network Q {\n    input x: f32[N, 8]\n    v, i = topk(x, k = 3)\n"
                      "    output y = concat(i, i, dim = 1) -> reshape(shape = [-1])\n"
                      "    output z = take(x, select(i, 1, 0))\n}")
    assert [v.dtype for _, v in ok.graph.outputs] == ["int64", "float32"]


def test_rpn_proposals_refuses_levels_out_of_order():
    """The delta maps given in another order than the objectness maps: the compiler cannot
    compare their (data-dependent) sizes, and the torch module paired level 0's objectness with
    level 1's deltas without a word. Now a ValueError naming the level."""
    torch = pytest.importorskip("torch")
    spec = """network E {
    input images: f32[N, 3, H, W]
    x, sizes = detection_transform(images, min_size = 64, max_size = 96)
    f1 = x -> Conv2d(8, 3, stride = 4, padding = 1)
    f2 = f1 -> Conv2d(8, 3, stride = 2, padding = 1)
    o1, o2, d1, d2 = RPNHead(f1, f2, num_anchors = 3)
    p, i = rpn_proposals(o1, o2, DELTAS, anchors(f1, x, sizes = [16]), anchors(f2, x, sizes = [32]), sizes)
    output y = p
}"""
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        good = netdsl.loads(spec.replace("DELTAS", "d1, d2")).to_torch(seed=0).eval()(images)
        assert good.shape[0] > 0
        bad = netdsl.loads(spec.replace("DELTAS", "d2, d1")).to_torch(seed=0).eval()
        with pytest.raises(ValueError, match=r"objectness map 0 is \[1, 3, 16, 16\] but delta map 0 is "
                                             r"\[1, 12, 8, 8\]"):
            bad(images)
