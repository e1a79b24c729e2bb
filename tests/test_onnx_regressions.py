"""ONNX-target bugs found by the differential fuzzer (tests/fuzz): each spec here once gave a
model that the checker or onnxruntime refused. Every model must pass the full checker, load and
run in onnxruntime at its default optimisation level, and agree with the torch target."""
import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import netdsl
from netdsl.errors import NetDSLError

ort.set_default_logger_severity(4)      # the failures are asserted, not logged


def _session(model, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _agrees_with_torch(net, shapes, opsets=(17,)):
    """Check, run and compare every output; returns the last model."""
    import torch
    rng = np.random.default_rng(0)
    feeds = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    module = net.to_torch().eval()
    with torch.no_grad():
        want = module(*map(torch.from_numpy, feeds))
    want = [t.numpy() for t in (want if isinstance(want, (tuple, list)) else [want])]
    for opset in opsets:
        model = net.to_onnx(opset=opset)
        onnx.checker.check_model(model, full_check=True)
        sess = _session(model)
        got = sess.run(None, {i.name: f for i, f in zip(sess.get_inputs(), feeds)})
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=f"opset {opset}")
    return model


# ---- value names: the graph's input and output names are its interface ------------------------

NAME_CASES = {
    # the fuzzer's case: a layer labelled `y` names its value `y`, the output `y` is another value
    "layer_label_is_an_output_name": ("""
network Net {
    input x: f32[N, 9]
    t1 = x -> y: Tanh -> Identity
    output y = t1 + x
}""", [(2, 9)]),
    "block_output_named_like_the_network_output": ("""
block B() (x) -> y {
    y = x -> ReLU
}
network Net {
    input x: f32[N, 3, 4, 4]
    t = x -> B
    output y = resize(t, like = t)
}""", [(2, 3, 4, 4)]),
    "several_layer_labels_are_output_names": ("""
network Net {
    input x: f32[N, 9]
    t = x -> a: Tanh -> b: ReLU -> c: Sigmoid
    output c = t + x
    output b = t * x
    output a = x -> Tanh
}""", [(2, 9)]),
    "layer_labelled_like_an_input": ("""
network Net {
    input x: f32[N, 9]
    input z: f32[N, 9]
    t = x -> z: Tanh
    output y = t + z
}""", [(2, 9), (2, 9)]),
    "an_output_is_an_input": ("""
network Net {
    input x: f32[N, 9]
    t = x -> y: Tanh
    output y = x
    output z = t
}""", [(2, 9)]),
    "one_value_under_several_output_names": ("""
network Net {
    input x: f32[N, 9]
    t = x -> a: Tanh
    output a = t
    output b = t
    output t = t
}""", [(2, 9)]),
    "outputs_named_like_the_builders_constants": ("""
network Net {
    input x: f32[N, 3, 4, 4]
    t = x -> sizes: ReLU -> resize(size = [6, 7], mode = 'bilinear')
    output scales = x -> resize(scale = 2)
    output sizes_1 = t
    output merged_shape = t + t
    output merged = t -> resized: ReLU
}""", [(2, 3, 4, 4)]),
    # constants made before a param of the same name is used to take its initializer name
    "param_named_like_an_earlier_constant": ("""
network Net {
    input x: f32[N, 3, 4, 4]
    t = x -> resize(scale = 2)
    param scales: f32[1, 3, 8, 8] = normal(1.0)
    param half: f32[1, 3, 8, 8] = normal(1.0)
    output y = t + scales + half
    output z = x -> GELU
}""", [(2, 3, 4, 4)]),
    "gelu_constants_then_params": ("""
network Net {
    input x: f32[N, 9]
    t = x -> GELU
    param half: f32[1, 9] = normal(1.0)
    param sqrt2: f32[1, 9] = normal(1.0)
    output y = t + half + sqrt2
}""", [(2, 9)]),
}


@pytest.mark.parametrize("case", sorted(NAME_CASES))
def test_value_names_never_collide_with_the_interface_or_initializers(case):
    src, shapes = NAME_CASES[case]
    net = netdsl.loads(src)
    # opset 13 also makes the GELU constants (Gelu is an op from 20 on)
    model = _agrees_with_torch(net, shapes, opsets=(13, 17))
    g = model.graph
    assert [i.name for i in g.input] == [v.name for v in net.graph.inputs]
    assert [o.name for o in g.output] == [name for name, _ in net.graph.outputs]
    inits = [t.name for t in g.initializer]
    assert len(inits) == len(set(inits))
    assert set(net.state_layout()) <= set(inits)          # weights keep their state_dict names
    produced = [o for n in g.node for o in n.output]
    assert len(produced) == len(set(produced))
    assert not set(produced) & (set(inits) | {i.name for i in g.input})


# ---- resize: onnxruntime's transpose optimiser and the linear Resize ---------------------------

def test_bilinear_resize_between_transposes_runs_at_the_default_optimisation_level():
    """The fuzzer's case: valid ONNX that onnxruntime ran at ORT_ENABLE_BASIC and refused at
    ORT_ENABLE_ALL ("'Linear' mode only supports ... 4-D inputs with the corresponding
    outermost 2 scale values being 1") once the Transposes were moved through the Resize."""
    net = netdsl.loads("""
network Net {
    input x: f32[N, 3, H, W]
    output y = x -> permute(dims = [0, 2, 3, 1])
                 -> resize(size = [18, 5], mode = 'bilinear', align_corners = true) -> transpose(1, 2) -> ReLU
}""")
    _agrees_with_torch(net, [(2, 3, 7, 6)], opsets=range(13, 22))


def _resize_spec(how, mode, align_corners, dims):
    arg = {"whole scale": "scale = 2", "scale": "scale = [1.5, 2.5]", "size": "size = [9, 5]",
           "like": "like = z"}[how]
    mode_args = (f"mode = 'bilinear', align_corners = {str(align_corners).lower()}" if mode == "bilinear"
                 else "mode = 'nearest'")
    like = "    input z: f32[1, 1, 9, 5]\n" if how == "like" else ""
    return f"""network Net {{
    input x: f32[{dims}]
{like}    p = x -> permute(dims = [0, 2, 3, 1])
    output y = resize(p, {arg}, {mode_args}) -> transpose(1, 2) -> ReLU
}}"""


RESIZE_CASES = [(how, mode, ac) for how, mode, ac in itertools.product(
    ["whole scale", "scale", "size", "like"], ["nearest", "bilinear"], [False, True])
    if not (mode == "nearest" and ac)]


@pytest.mark.parametrize("how,mode,align_corners", RESIZE_CASES)
@pytest.mark.parametrize("dims", ["N, 3, H, W", "2, 3, 7, 6"])
def test_every_resize_form_survives_transposes_at_every_opset(how, mode, align_corners, dims):
    net = netdsl.loads(_resize_spec(how, mode, align_corners, dims))
    shapes = [(2, 3, 7, 6)] + ([(1, 1, 9, 5)] if how == "like" else [])
    _agrees_with_torch(net, shapes, opsets=range(13, 22))


# ---- a dilated max-pooling window that holds only padding ----------------------------------------
# torch gives -inf there and onnxruntime the lowest float (found by tests/fuzz/diff_fuzz.py): the
# checker refuses the sizes where it happens, exactly those.

def test_a_window_of_only_padding_is_a_located_error():
    src = ("network A {\n    input x: f32[N, 3, 1, W]\n"
           "    output y = x -> MaxPool2d(2, stride = 1, padding = [1, 1], dilation = 2)\n}\n")
    with pytest.raises(NetDSLError) as info:
        netdsl.loads(src, name="t.net")
    assert info.value.header() == ("t.net:3:21: error: MaxPool2d: dim 2: with dilation 2 and padding 1, a "
                                   "window would hold only padding unless the size is at least 2")
    sym = netdsl.loads(src.replace("f32[N, 3, 1, W]", "f32[N, 3, H, W]"))
    assert sym.constraints == ["H ≥ 2", "W ≥ 2"]


def test_the_checker_refuses_exactly_the_sizes_with_windows_of_only_padding():
    import torch
    checked = 0
    for k, d, s, ceil in itertools.product([1, 2, 3], [1, 2, 3], [1, 2, 3], ["false", "true"]):
        for p, size in itertools.product(range(k // 2 + 1), range(1, 9)):
            spec = (f"network A {{ input x: f32[1, 1, {size}, 1]\n output y = x -> MaxPool2d([{k}, 1], "
                    f"stride = [{s}, 1], padding = [{p}, 0], dilation = [{d}, 1], ceil_mode = {ceil}) }}")
            try:
                netdsl.loads(spec)
                accepted = True
            except NetDSLError:
                accepted = False
            try:
                y = torch.nn.functional.max_pool2d(torch.zeros(1, 1, size, 1), (k, 1), (s, 1), (p, 0), (d, 1),
                                                   ceil_mode=ceil == "true")
                works = y.numel() > 0 and bool(torch.isfinite(y).all())
            except RuntimeError:
                works = False
            assert accepted == works, spec
            checked += 1
    assert checked > 700
