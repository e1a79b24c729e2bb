"""SpatialPyramidPool2d (He et al. 2014) and LPPool2d.

- the pyramid against an independent numpy reference (bins written out per level, levels
  flattened channel-major and concatenated), through the torch module and through ONE ONNX file
  with symbolic H, W at sizes no level divides (where torch.onnx.export of adaptive pooling
  fails, pytorch#42653);
- the paper's bins (window ceil(a/n), stride floor(a/n)): which sizes they fit, as a derived
  constraint on symbolic sizes (`summary`, `netdsl check`, the torch module's size checks), a
  located error on concrete ones, and agreement of that rule with torch's own pooling;
- located errors for bad levels and arguments, and for windows larger than the input;
- LPPool2d against (sum x^p)^(1/p), and torch's divisor for a window clipped by ceil_mode.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import netdsl
from netdsl.errors import NetDSLError

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")


def net_of(layer: str, decl: str = "[N, 3, H, W]") -> netdsl.Network:
    return netdsl.loads(f"network T {{\n    input x: f32{decl}\n    output y = x -> {layer}\n}}\n",
                        name="t.net")


def bins_of(length: int, n: int, rule: str) -> list:
    """(start, end) of each bin along an axis: adaptive pooling's or the paper's."""
    if rule == "adaptive":
        return [(i * length // n, -(-(i + 1) * length // n)) for i in range(n)]
    k, s = -(-length // n), length // n
    out = [(i * s, i * s + k) for i in range(n)]
    assert out[-1][1] <= length, "the paper's bins overrun: the size should have been refused"
    return out


def reference_spp(x: np.ndarray, levels, mode: str, rule: str) -> np.ndarray:
    n_, c, h, w = x.shape
    flat = []
    for n in levels:
        y = np.empty((n_, c, n, n), np.float32)
        for i, (h0, h1) in enumerate(bins_of(h, n, rule)):
            for j, (w0, w1) in enumerate(bins_of(w, n, rule)):
                win = x[:, :, h0:h1, w0:w1]
                y[:, :, i, j] = win.max(axis=(2, 3)) if mode == "max" else win.mean(axis=(2, 3))
        flat.append(y.reshape(n_, c * n * n))         # channel-major: [N, C, n, n] -> [N, C n^2]
    return np.concatenate(flat, axis=1)


def run_both(net, sizes, seed=0):
    """(input, torch output, onnxruntime output) at each size, from one module and ONE ONNX file."""
    weights = net.init_weights(seed)
    module = net.to_torch(weights).eval()
    model = net.to_onnx(weights)
    onnx.checker.check_model(model, full_check=True)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[2:] == ["H", "W"], dims          # one file for every size
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    for shape in sizes:
        x = rng.standard_normal(shape).astype(np.float32)
        with torch.no_grad():
            want = module(torch.from_numpy(x)).numpy()
        yield x, want, sess.run(None, {"x": x})[0]


# ---- values ---------------------------------------------------------------------------------

SPP_CASES = [
    ([4, 2, 1], "max", "adaptive", [(2, 3, 9, 11), (1, 3, 13, 7), (1, 3, 5, 6)]),
    ([3, 2, 1], "avg", "adaptive", [(2, 3, 10, 7), (1, 3, 4, 17)]),
    ([6, 3, 2, 1], "max", "paper", [(2, 3, 13, 19), (1, 3, 7, 26)]),
    ([4, 3, 1], "avg", "paper", [(2, 3, 9, 13), (1, 3, 10, 14)]),
    ([2, 5], "avg", "paper", [(1, 3, 11, 16), (1, 3, 6, 12)]),
]


@pytest.mark.parametrize("levels,mode,rule,sizes", SPP_CASES, ids=[f"{c[1]}-{c[2]}-{c[0]}" for c in SPP_CASES])
def test_pyramid_matches_reference_in_torch_and_one_onnx_file(levels, mode, rule, sizes):
    net = net_of(f"SpatialPyramidPool2d(levels = {levels}, mode = '{mode}', bins = '{rule}')")
    assert [str(d) for d in net.graph.outputs[0][1].shape] == ["N", str(3 * sum(n * n for n in levels))]
    for x, got_torch, got_onnx in run_both(net, sizes):
        want = reference_spp(x, levels, mode, rule)
        assert got_torch.shape == got_onnx.shape == want.shape == (x.shape[0], 3 * sum(n * n for n in levels))
        np.testing.assert_allclose(got_torch, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_onnx, want, rtol=1e-5, atol=1e-5)
        assert np.abs(want).max() > 0.1 and len(np.unique(want)) > want.size // 4   # not vacuous


def test_the_two_bin_rules_differ_where_the_reference_says_so():
    """At 10 and level 4, adaptive bins are [0,3) [2,5) [5,8) [7,10), the paper's [0,3) [2,5)
    [4,7) [6,9): the outputs must differ (so the cases above test the rule, not just pooling)."""
    got = {}
    for rule in ("adaptive", "paper"):       # the same seed: the same input
        (_, out, _), = run_both(net_of(f"SpatialPyramidPool2d([4], bins = '{rule}')"), [(1, 3, 10, 10)], seed=1)
        got[rule] = out
    assert np.abs(got["adaptive"] - got["paper"]).max() > 1e-3


def test_pyramid_after_a_conv_feeds_a_linear_at_any_size():
    net = netdsl.loads("""network T {
    input x: f32[N, 3, H, W]
    output y = x -> Conv2d(5, 3) -> SpatialPyramidPool2d([3, 1]) -> fc: Linear(4)
}""")
    outs = [(x, t, o) for x, t, o in run_both(net, [(2, 3, 9, 14), (2, 3, 23, 6)])]
    for _, t, o in outs:
        assert t.shape == (2, 4)
        np.testing.assert_allclose(o, t, rtol=1e-4, atol=1e-5)
    assert np.abs(outs[0][1] - outs[1][1]).max() > 1e-3


# ---- the paper's bins: which sizes fit ------------------------------------------------------

def torch_paper_bins(a: int, n: int) -> int:
    """How many windows torch's max_pool2d gives with the paper's window and stride."""
    if a // n == 0:
        return 0
    y = torch.nn.functional.max_pool2d(torch.zeros(1, 1, a, 1), (-(-a // n), 1), (a // n, 1))
    return y.shape[2]


def test_paper_rule_accepts_exactly_the_sizes_where_torch_gives_n_bins():
    """Concrete sizes: accepted iff torch's pooling with the paper's window and stride gives n
    bins. Symbolic sizes: the torch module's size check (from the derived constraint) raises
    on exactly the other sizes."""
    sym = net_of("SpatialPyramidPool2d(levels = [2, 3, 4, 5, 6, 7], bins = 'paper')", "[N, 1, H, 64]")
    module = sym.to_torch().eval()
    accepted = 0
    for a in range(1, 61):
        fits = all(torch_paper_bins(a, n) == n for n in (2, 3, 4, 5, 6, 7))
        try:
            sym.summary(inputs=(1, 1, a, 64))
            concrete = True
        except NetDSLError as e:
            assert e.span is not None and "level" in e.message
            concrete = False
        assert concrete == fits, a
        try:
            with torch.no_grad():
                out = module(torch.zeros(1, 1, a, 64))
            assert out.shape == (1, sum(n * n for n in range(2, 8)))
            guarded = True
        except ValueError:
            guarded = False
        assert guarded == fits, a
        accepted += fits
    assert 10 < accepted < 50


def test_paper_rule_is_reported_as_a_derived_constraint(tmp_path, capsys):
    from netdsl.cli import main
    net = net_of("SpatialPyramidPool2d(levels = [4, 2, 1], bins = 'paper')")
    assert net.summary()["constraints"] == ["H ≥ 12, or H ∈ {4, 5, 8–10}", "W ≥ 12, or W ∈ {4, 5, 8–10}"]
    src = tmp_path / "spp.net"
    src.write_text("network S {\n    input x: f32[N, 3, H, 13]\n"
                   "    output y = x -> SpatialPyramidPool2d(levels = [6, 3, 2, 1], bins = \"paper\")\n}\n")
    assert main(["check", str(src)]) == 0
    out = capsys.readouterr().out
    assert "input sizes that work: H ≥ 30, or H ∈ {6, 7, 12–14, 18–21, 24–28}" in out
    # adaptive bins need only H, W >= the largest level
    assert net_of("SpatialPyramidPool2d([6, 3, 2, 1])").summary()["constraints"] == ["H ≥ 6", "W ≥ 6"]


def test_paper_rule_in_the_onnx_metadata():
    from netdsl.passes.size_rules import METADATA_KEY, violation
    import json
    model = net_of("SpatialPyramidPool2d(levels = [4, 1], bins = 'paper')").to_onnx()
    record = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    assert violation(record, {"x": (1, 3, 9, 13)}) is None
    message = violation(record, {"x": (1, 3, 7, 13)})
    assert message and "level 4" in message and "H = 7" in message


def test_paper_rule_message_brackets_a_derived_size():
    """After a stride-2 conv the pooled size is `(H + 1) // 2 - 1`: the rule's text must read
    ceil(((H + 1) // 2 - 1) / 4), not ceil((H + 1) // 2 - 1 / 4) (which means something else)."""
    net = net_of("Conv2d(4, 3, stride = 2) -> SpatialPyramidPool2d(levels = [4, 1], bins = 'paper')")
    with pytest.raises(ValueError) as e:
        net.to_torch()(torch.rand(1, 3, 15, 19))        # pooled size 7 on H: 6 bins, not 4
    message = str(e.value)
    assert "window ceil(((H + 1) // 2 - 1) / 4), stride floor(((H + 1) // 2 - 1) / 4)" in message, message
    assert "only when ((H + 1) // 2 - 1) mod 4 <= ((H + 1) // 2 - 1) // 4" in message, message
    # a plain input dim needs no brackets
    net = net_of("SpatialPyramidPool2d(levels = [4, 1], bins = 'paper')")
    with pytest.raises(ValueError) as e:
        net.to_torch()(torch.rand(1, 3, 7, 13))
    assert "window ceil(H / 4)" in str(e.value) and "only when H mod 4 <= H // 4" in str(e.value)


def _mask(pred):
    from netdsl.passes.constraints import LIMIT
    return np.array([v >= 1 and pred(v) for v in range(LIMIT + 1)])


@pytest.mark.parametrize("pred,text", [
    (lambda v: 5 * (v // 4) >= v, "H ≥ 12, or H ∈ {4, 5, 8–10}"),
    (lambda v: (v % 4 == 0 and v >= 100) or v in (7, 9, 20, 21, 22, 23), "H ≡ 0 (mod 4), H ≥ 100, or H ∈ {7, 9, 20–23}"),
    (lambda v: v % 3 != 1 and v >= 50 or v == 2, "H mod 3 ∈ {0, 2}, H ≥ 50, or H ∈ {2}"),
    (lambda v: v % 16 == 12 and v >= 188, "H ≡ 12 (mod 16), H ≥ 188"),       # periodic from the first size
    (lambda v: 3 <= v <= 9, "3 ≤ H ≤ 9"),                                     # finite sets: as before
    (lambda v: v in (4, 5, 8), "H ∈ {4, 5, 8}"),
])
def test_describe_sizes_that_are_periodic_only_from_some_size_on(pred, text):
    from netdsl.passes.constraints import describe
    assert describe("H", _mask(pred)) == text


@pytest.mark.parametrize("decl,levels,needle", [
    ("[N, 3, 7, 16]", "[4, 2, 1]", "level 4: with the paper's bins (window ceil(7 / 4) = 2, stride floor(7 / 4) = 1), "
                                   "dim 2 of size 7 gives 6 bins, not 4"),
    ("[N, 3, 16, 11]", "[1, 4]", "level 4: with the paper's bins (window ceil(11 / 4) = 3, stride floor(11 / 4) = 2), "
                                 "dim 3 of size 11 gives 5 bins, not 4"),
    ("[N, 3, 5, 6]", "[3]", "dim 2 of size 5 gives 4 bins, not 3"),
    ("[N, 3, 3, 8]", "[4, 2]", "level 4: dim 2 has size 3, fewer than the 4 bins of the level"),
])
def test_paper_rule_on_a_failing_concrete_size_is_a_located_error(decl, levels, needle):
    with pytest.raises(NetDSLError) as e:
        net_of(f"SpatialPyramidPool2d(levels = {levels}, bins = \"paper\")", decl)
    assert needle in e.value.message
    text = e.value.render()
    assert text.startswith("t.net:3:21: error: SpatialPyramidPool2d: ") and "^^^" in text


# ---- located errors -------------------------------------------------------------------------

@pytest.mark.parametrize("layer,needle", [
    ("SpatialPyramidPool2d(levels = [])", "'levels' must name at least one level"),
    ("SpatialPyramidPool2d(levels = [4, 0, 1])", "'levels' must be positive, got [4, 0, 1]"),
    ("SpatialPyramidPool2d(levels = [2, -1])", "'levels' must be positive"),
    ("SpatialPyramidPool2d(levels = [2.5])", "'levels' must be an int, got float 2.5"),
    ("SpatialPyramidPool2d(levels = ['4'])", "'levels' must be an int, got str '4'"),
    ("SpatialPyramidPool2d(mode = 'min')", "'mode' must be one of 'max', 'avg'"),
    ("SpatialPyramidPool2d(bins = 'fixed')", "'bins' must be one of 'adaptive', 'paper'"),
    ("Flatten -> SpatialPyramidPool2d", "expects a [N, C, H, W] input of rank 4"),
    ("SpatialPyramidPool2d([8, 4])", "dim 3 is 5, but adaptive bins need at least as many positions as "
                                     "the largest level, 8"),
    ("LPPool2d(2, 7)", "output dim 3 would be 0"),
    ("LPPool2d(2, [3, 7], stride = 2, ceil_mode = true)", "output dim 3 would be 0"),
    ("LPPool2d(0, 2)", "'norm_type' must be positive"),
    ("LPPool2d(-2, 2)", "'norm_type' must be positive"),
    ("LPPool2d(2)", "missing argument 'kernel_size'"),
])
def test_bad_arguments_are_located_errors(layer, needle):
    with pytest.raises(NetDSLError) as e:
        net_of(layer, "[N, 3, 9, 5]")
    assert needle in e.value.message, e.value.message
    text = e.value.render()
    assert text.startswith("t.net:3:") and "^^^" in text


def test_window_larger_than_a_symbolic_input_is_a_derived_constraint():
    assert net_of("LPPool2d(2, [5, 3])").summary()["constraints"] == ["H ≥ 5", "W ≥ 3"]


# ---- LPPool2d ----------------------------------------------------------------------------------

def reference_lp(x, p, k, s, ceil_mode):
    """torch's definition: the window's sum of x^p, scaled by k_h k_w / (its elements inside the
    input) when ceil_mode clips it, to the power 1 / p."""
    n_, c, h, w = x.shape
    def starts(length, kk, ss):
        count = (-(-(length - kk) // ss) if ceil_mode else (length - kk) // ss) + 1
        if ceil_mode and (count - 1) * ss >= length:
            count -= 1
        return [i * ss for i in range(count)]
    hs, ws = starts(h, k[0], s[0]), starts(w, k[1], s[1])
    out = np.empty((n_, c, len(hs), len(ws)), np.float64)
    for i, h0 in enumerate(hs):
        for j, w0 in enumerate(ws):
            win = x[:, :, h0:h0 + k[0], w0:w0 + k[1]].astype(np.float64)
            inside = win.shape[2] * win.shape[3]
            out[:, :, i, j] = ((win ** p).sum(axis=(2, 3)) * (k[0] * k[1] / inside)) ** (1 / p)
    return out


LP_CASES = [(2.0, (3, 3), (2, 2), False), (2.0, (3, 3), (2, 2), True), (1.0, (2, 3), (3, 2), True),
            (3.0, (2, 2), (2, 2), True), (1.5, (4, 2), (3, 3), True)]


@pytest.mark.parametrize("p,k,s,ceil", LP_CASES, ids=[str(c) for c in LP_CASES])
def test_lp_pool_matches_reference(p, k, s, ceil):
    layer = f"LPPool2d({p}, [{k[0]}, {k[1]}], stride = [{s[0]}, {s[1]}], ceil_mode = {str(ceil).lower()})"
    net = net_of("Sigmoid -> " + layer)          # x^p of a negative x is NaN for p = 1.5
    clipped = False
    for x, got_torch, got_onnx in run_both(net, [(2, 3, 9, 11), (1, 3, 16, 7)]):
        xs = 1 / (1 + np.exp(-x.astype(np.float64)))
        want = reference_lp(xs, p, k, s, ceil)
        np.testing.assert_allclose(got_torch, want, rtol=1e-4)
        np.testing.assert_allclose(got_onnx, want, rtol=1e-4)
        for axis, (kk, ss) in enumerate(zip(k, s), 2):
            clipped |= ceil and (want.shape[axis] - 1) * ss + kk > x.shape[axis]
    if ceil:
        assert clipped, "no clipped window: the ceil-mode divisor is not tested"


def test_lp_pool_window_wider_than_the_input_in_ceil_mode():
    """torch keeps one window clipped to the input (kernel 6 over 5), divided by 5, not 6."""
    net = net_of("LPPool2d(2, [3, 6], stride = 2, ceil_mode = true)")
    assert net.summary()["constraints"] == ["H ≥ 2", "W ≥ 5"]
    for x, got_torch, got_onnx in run_both(net, [(1, 3, 9, 5), (2, 3, 4, 5)]):
        want = reference_lp(x, 2.0, (3, 6), (2, 2), True)
        assert want.shape[3] == 1
        np.testing.assert_allclose(got_torch, want, rtol=1e-4)
        np.testing.assert_allclose(got_onnx, want, rtol=1e-4)
