"""resize: one rule for output sizes and source positions, followed by shape inference, the
torch target and the ONNX target (see "resize" in docs/language.md).

The rule is torch's `F.interpolate(scale_factor=s)`: an output length is floor(L * s) with the
product rounded to a double (50 * 2.3 = 114), and the positions read come from 1 / s, not from
L / out. The ONNX graph computes both as torch does, for static and symbolic sizes."""
from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netdsl
from netdsl.errors import ShapeError
from netdsl.ir import dims as D

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

BILINEAR_RTOL = 1e-4     # bilinear weights: float32 rounding, amplified by the coordinate at large sizes


def build(body: str) -> netdsl.Network:
    return netdsl.loads("network resize_case {\n" + body + "\n}")


class Both:
    """One network compiled once to a torch module and once to an ONNX session."""

    def __init__(self, body: str, opset: int | None = None):
        self.net = build(body)
        self.module = self.net.to_torch().eval()
        model = self.net.to_onnx(**({} if opset is None else {"opset": opset}))
        onnx.checker.check_model(model, full_check=True)
        self.metadata = {p.key: p.value for p in model.metadata_props}
        self.sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        self.name = self.sess.get_inputs()[0].name

    def run(self, x: np.ndarray):
        """(inferred shape, torch output, onnxruntime output) for input x."""
        shape = self.net.summary(inputs=x.shape)["outputs"][0]["shape"]
        with torch.no_grad():
            want = self.module(torch.from_numpy(x)).numpy()
        got = self.sess.run(None, {self.name: x})[0]
        return shape, want, got


def positions(shape) -> np.ndarray:
    """An input whose every value names its own position, so nearest picks can be read back."""
    return np.arange(math.prod(shape), dtype=np.float32).reshape(shape)


def sample(shape, mode: str, rng) -> np.ndarray:
    """Positions for nearest (exact picks); random values for bilinear, where a ramp would
    hide a shifted coordinate under the relative tolerance."""
    return positions(shape) if mode == "nearest" else rng.standard_normal(shape, dtype=np.float32)


def rejected(length: int, s: float, mode: str) -> bool:
    """Whether the rule refuses resizing `length` by `s`: an empty output, or (nearest) an
    output of exactly 1 or 2 times the length from a scale just above 1 or 2, where torch's
    kernels disagree with each other."""
    out = math.floor(length * s)
    if out < 1:
        return True
    if mode != "nearest":
        return False
    r = float(np.float32(1 / s))
    return (1 < s < 1.5 and r < 1 and out == length) or (2 < s < 2.5 and r < 0.5 and out == 2 * length)


def assert_agree(shape, want, got, mode, label=""):
    assert list(want.shape) == shape, f"{label}: torch {list(want.shape)}, inferred {shape}"
    assert got.shape == want.shape, f"{label}: onnxruntime {list(got.shape)}, torch {list(want.shape)}"
    if mode == "nearest":
        assert np.array_equal(got, want), f"{label}: nearest picked other positions"
    else:
        scale = max(float(np.abs(want).max()), 1.0)
        err = float(np.abs(got - want).max()) if want.size else 0.0
        assert err <= BILINEAR_RTOL * scale, f"{label}: max error {err:.3g} vs scale {scale:.3g}"


# ---- the reported failures -----------------------------------------------------------------
def test_static_width_is_torchs_floor():
    """50 * 2.3 is 114.99999999999999 in double: torch gives 114, netdsl inferred 115."""
    both = Both("input x: f32[1, 1, 1, 50]\noutput y = resize(x, scale = [1, 2.3])")
    shape, want, got = both.run(positions((1, 1, 1, 50)))
    assert shape == [1, 1, 1, 114]
    assert_agree(shape, want, got, "nearest")


def test_symbolic_width_is_torchs_floor():
    both = Both("input x: f32[1, 1, 1, W]\noutput y = resize(x, scale = [1, 2.3])")
    for w in (10, 50, 51, 100):
        shape, want, got = both.run(positions((1, 1, 1, w)))
        assert shape[3] == math.floor(w * 2.3)
        assert_agree(shape, want, got, "nearest", f"W={w}")


def test_scale_and_size_of_the_same_length_add_up():
    both = Both("input x: f32[1, 1, 1, 50]\n"
                "output y = resize(x, scale = [1, 2.3]) + resize(x, size = [1, 114])")
    shape, want, got = both.run(positions((1, 1, 1, 50)))
    assert shape == [1, 1, 1, 114]
    assert_agree(shape, want, got, "nearest")


def test_scale_and_size_of_other_lengths_are_rejected():
    with pytest.raises(ShapeError, match="114 vs 115"):
        build("input x: f32[1, 1, 1, 50]\n"
              "output y = resize(x, scale = [1, 2.3]) + resize(x, size = [1, 115])").summary()


def test_bilinear_then_linear_loads_in_onnxruntime():
    """The ONNX Resize's own output length (115, float32) disagreed with the Linear after it."""
    both = Both("input x: f32[1, 1, 1, 50]\n"
                "output y = resize(x, scale = [1, 2.3], mode = 'bilinear') -> Linear(3)")
    x = np.random.default_rng(0).standard_normal((1, 1, 1, 50), dtype=np.float32)
    shape, want, got = both.run(x)
    assert shape == [1, 1, 1, 3]
    assert_agree(shape, want, got, "bilinear")


@pytest.mark.parametrize("align_corners", [False, True])
def test_bilinear_symbolic_width_is_torchs_floor(align_corners):
    both = Both("input x: f32[1, 2, H, W]\n"
                f"output y = resize(x, scale = [1.1, 2.3], mode = 'bilinear', "
                f"align_corners = {str(align_corners).lower()})")
    rng = np.random.default_rng(1)
    for h, w in ((114, 50), (115, 10), (3, 7)):
        shape, want, got = both.run(rng.standard_normal((1, 2, h, w), dtype=np.float32))
        assert shape[2:] == [math.floor(h * 1.1), math.floor(w * 2.3)]
        assert_agree(shape, want, got, "bilinear", f"{h}x{w}")


def test_nearest_1_1_sizes_where_torch_disagrees_with_itself_are_refused():
    """Scale 1.1 keeps W = 3 at 3. torch copies those columns while out_h + out_w <= 128
    (H = 114: 125 + 3) and reads floor(j / 1.1) beyond (H = 115: 126 + 3), so the rule
    refuses such sizes; where W grows, all three agree at both heights."""
    both = Both("input x: f32[1, 1, H, W]\noutput y = resize(x, scale = 1.1)")
    for h in (114, 115):
        with pytest.raises(ShapeError, match="needs dim 3 to grow beyond its size"):
            both.net.summary(inputs=(1, 1, h, 3))
        shape, want, got = both.run(positions((1, 1, h, 10)))
        assert shape == [1, 1, math.floor(h * 1.1), 11]
        assert_agree(shape, want, got, "nearest", f"H={h}")
    with pytest.raises(ShapeError, match=r":3:\d+: error: resize: mode 'nearest' with scale 1.1"):
        build("input x: f32[1, 1, 114, 3]\noutput y = resize(x, scale = 1.1)").summary()
    assert both.net.constraints == ["H ≥ 10", "W ≥ 10"]


def test_symbolic_size_is_kept_exact():
    """A scale whose double is a small fraction stays a plain floor division; others keep
    torch's rounding as an expression of their own."""
    net = build("input x: f32[N, 3, H, W]\noutput y = resize(x, scale = [1.5, 2.3])")
    h, w = net.graph.outputs[0][1].shape[2:]
    assert h == D.floordiv(D.mul(D.sym("H"), 3), 2)
    assert D.substitute(w, {"W": 10}) == 23 and D.substitute(w, {"W": 50}) == 114
    assert D.evaluate(w, {"W": np.arange(1, 6)}).tolist() == [math.floor(v * 2.3) for v in range(1, 6)]


def test_scaled_size_in_a_later_layer_compiles_and_is_checked():
    """A later layer's size rule on floor(H * 1.1) reaches the torch module's input checks and
    the ONNX file's recorded rules, written as int(H * 1.1), torch's own rounding."""
    both = Both("input x: f32[N, 3, H, W]\n"
                "output y = resize(x, scale = [1.1, 2.3], mode = 'bilinear') -> Conv2d(4, 5)")
    assert both.net.constraints == ["H ≥ 5", "W ≥ 3"]
    x = np.random.default_rng(0).standard_normal((2, 3, 20, 30), dtype=np.float32)
    assert_agree(*both.run(x), "bilinear")
    with pytest.raises(ValueError, match=r"floor\(H \* 1.1\) - 4 ≥ 1"):
        both.module(torch.zeros(1, 3, 4, 30))
    from netdsl.passes import size_rules
    record = json.loads(both.metadata[size_rules.METADATA_KEY])
    assert "int(H * 1.1) - 4" in [rule["a"] for rule in record["constraints"]]
    assert size_rules.violation(record, {"x": (2, 3, 20, 30)}) is None
    assert "floor(H * 1.1) - 4 ≥ 1" in size_rules.violation(record, {"x": (1, 3, 4, 30)})


def test_empty_output_is_an_error():
    with pytest.raises(ShapeError, match="resize"):
        build("input x: f32[1, 3, 4, 3]\noutput y = resize(x, scale = 0.3)").summary()


# ---- differential sweep: every length 1..40 and some large ones, one session per case --------
SCALES = [(1.5, 0.75), (2, 3), (0.6, 1.05), (1.1, 2.3), (0.7, 3.7), (1.25, 0.5), (2.05, 1), (3, 2.5)]
MODES = [("nearest", False), ("bilinear", False), ("bilinear", True)]
SWEEP_SIZES = [(h, 41 - h) for h in range(1, 41)] + [(114, 115), (115, 114), (97, 50), (200, 1)]


def _case_id(p):
    (mode, ac), scale = p
    return f"{mode}{'-ac' if ac else ''}-{scale[0]}x{scale[1]}"


@pytest.mark.parametrize("params", [(m, s) for m in MODES for s in SCALES], ids=_case_id)
def test_sweep_symbolic(params):
    (mode, ac), (sh, sw) = params
    body = f"resize(x, scale = [{sh}, {sw}], mode = '{mode}'" + \
           (", align_corners = true)" if ac else ")")
    both = Both(f"input x: f32[N, 2, H, W]\noutput y = {body}")
    rng = np.random.default_rng(0)
    for h, w in SWEEP_SIZES:
        x = sample((1, 2, h, w), mode, rng)
        if rejected(h, sh, mode) or rejected(w, sw, mode):
            with pytest.raises(ShapeError):
                both.net.summary(inputs=x.shape)
            continue
        assert_agree(*both.run(x), mode, f"{body} at {h}x{w}")


@pytest.mark.parametrize("mode, ac", MODES, ids=["nearest", "bilinear", "bilinear-ac"])
def test_sweep_static(mode, ac):
    """Static sizes take another path in the ONNX emitter (constant positions and weights)."""
    rng = np.random.default_rng(0)
    for (sh, sw), (h, w) in zip(SCALES * 2, [(114, 115), (50, 1), (1, 50), (7, 3), (3, 7), (10, 10),
                                              (9, 13), (40, 39), (2, 2), (115, 114), (5, 17),
                                              (17, 5), (33, 34), (1, 1), (6, 4), (4, 6), (11, 12),
                                              (13, 11), (100, 20), (20, 100), (8, 8), (31, 29),
                                              (29, 31), (64, 64)]):
        ac_s = ", align_corners = true" if ac else ""
        spec = (f"input x: f32[1, 2, {h}, {w}]\n"
                f"output y = resize(x, scale = [{sh}, {sw}], mode = '{mode}'{ac_s})")
        if rejected(h, sh, mode) or rejected(w, sw, mode):
            with pytest.raises(ShapeError):
                build(spec).summary()
            continue
        both = Both(spec)
        x = sample((1, 2, h, w), mode, rng)
        assert_agree(*both.run(x), mode, f"{sh}x{sw} at {h}x{w}")


@pytest.mark.parametrize("opset", [13, 21])
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_symbolic_graph_at_other_opsets(mode, opset):
    both = Both(f"input x: f32[N, 2, H, W]\noutput y = resize(x, scale = [1.1, 0.7], mode = '{mode}')", opset)
    rng = np.random.default_rng(2)
    for h, w in ((114, 115), (10, 3), (33, 20)):
        x = sample((2, 2, h, w), mode, rng)
        assert_agree(*both.run(x), mode, f"opset {opset} at {h}x{w}")


# ---- fuzz: random scales, modes and sizes through check and both backends ------------------
@st.composite
def resize_cases(draw):
    def scale():
        # as written in a spec: a decimal literal with one to three places, or an integer
        places = draw(st.integers(0, 3))
        return round(draw(st.integers(1, 8 * 10 ** places)) / 10 ** places, places)
    mode = draw(st.sampled_from(["nearest", "bilinear"]))
    ac = mode == "bilinear" and draw(st.booleans())
    scales = (scale(), scale())
    sizes = [(draw(st.integers(1, 60)), draw(st.integers(1, 60))) for _ in range(3)]
    return mode, ac, scales, sizes


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resize_cases())
def test_fuzz_resize_scales(case):
    mode, ac, (sh, sw), sizes = case
    body = f"resize(x, scale = [{sh!r}, {sw!r}], mode = '{mode}'" + (", align_corners = true)" if ac else ")")
    both = Both(f"input x: f32[1, 1, H, W]\noutput y = {body}")
    rng = np.random.default_rng(0)
    for h, w in sizes:
        x = sample((1, 1, h, w), mode, rng)
        want_hw = [math.floor(h * sh), math.floor(w * sw)]
        if rejected(h, sh, mode) or rejected(w, sw, mode):
            with pytest.raises(ShapeError):
                both.net.summary(inputs=x.shape)
            continue
        shape, want, got = both.run(x)
        assert shape[2:] == want_hw
        assert_agree(shape, want, got, mode, f"{body} at {h}x{w}")
