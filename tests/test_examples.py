"""The example networks reproduce their papers and torchvision: parameter counts, MACs, shapes,
input-size constraints and state_dict layouts.

Expected values come from outside the compiler: torchvision's published figures
(the project's reference figures), the papers, or arithmetic done here from the
configuration tables, never from netdsl's own output.
"""
from pathlib import Path

import pytest

import netdsl

ROOT = Path(__file__).resolve().parents[1]
VGG_FILE = ROOT / "examples" / "vgg.net"
UNET_FILE = ROOT / "examples" / "unet.net"

# ---- VGG: the configuration table, written the way torchvision writes it ---------------------
# ints are 3x3 convs (padding 1) with that many channels, "M" a 2x2 max-pool, and (c, 1) a 1x1
# conv (config C only) and "LRN" a LocalResponseNorm (A-LRN only); cfgs "A", "B", "D", "E" are
# torchvision.models.vgg.cfgs verbatim.
CFGS = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, (256, 1), "M", 512, 512, (512, 1), "M",
          512, 512, (512, 1), "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"],
}

# network -> (config, batch_norm)
VGG_NETWORKS = {
    "VGG11": ("A", False), "VGG13": ("B", False),
    "VGG16": ("D", False), "VGG19": ("E", False),
    "VGG11_BN": ("A", True), "VGG13_BN": ("B", True),
    "VGG16_BN": ("D", True), "VGG19_BN": ("E", True),
    "VGG_A": ("A", False), "VGG_A_LRN": ("A-LRN", False), "VGG_B": ("B", False),
    "VGG_C": ("C", False), "VGG_D": ("D", False), "VGG_E": ("E", False),
}

# torchvision 0.29 model docs (num_params) and figures.md
TORCHVISION_PARAMS = {
    "VGG11": 132_863_336, "VGG13": 133_047_848, "VGG16": 138_357_544, "VGG19": 143_667_240,
    "VGG11_BN": 132_868_840, "VGG13_BN": 133_053_736, "VGG16_BN": 138_365_992,
    "VGG19_BN": 143_678_248,
}
# figures.md: GMACs at 1x3x224x224
FIGURE_GMACS = {"VGG11": 7.609, "VGG16": 15.47, "VGG16_BN": 15.47, "VGG19": 19.632}
# Simonyan & Zisserman, Table 2: number of parameters (in millions)
PAPER_MPARAMS = {"VGG_A": 133, "VGG_A_LRN": 133, "VGG_B": 133, "VGG_C": 134, "VGG_D": 138,
                 "VGG_E": 144}


def _convs(cfg):
    """(out_channels, kernel) per conv, "M" per pool."""
    for v in cfg:
        if v != "LRN":
            yield v if v == "M" else (v if isinstance(v, tuple) else (v, 3))


def vgg_params(cfg, bn, num_classes=1000):
    total, cin = 0, 3
    for v in _convs(cfg):
        if v == "M":
            continue
        c, k = v
        total += k * k * cin * c + c + (2 * c if bn else 0)
        cin = c
    dims = [cin * 7 * 7, 4096, 4096, num_classes]
    return total + sum(i * o + o for i, o in zip(dims, dims[1:]))


def vgg_macs(cfg, size=224, num_classes=1000):
    total, cin, h = 0, 3, size
    for v in _convs(cfg):
        if v == "M":
            h //= 2
            continue
        c, k = v
        total += k * k * cin * c * h * h
        cin = c
    dims = [cin * 7 * 7, 4096, 4096, num_classes]
    return total + sum(i * o for i, o in zip(dims, dims[1:]))


def torchvision_vgg_keys(cfg, bn):
    """state_dict keys of torchvision.models.VGG built by make_layers(cfg, batch_norm=bn)."""
    keys, i = [], 0
    for v in cfg:
        if v in ("M", "LRN"):
            i += 1                                  # MaxPool2d, LocalResponseNorm
            continue
        keys += [f"features.{i}.weight", f"features.{i}.bias"]
        i += 1
        if bn:
            keys += [f"features.{i}.{n}" for n in
                     ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
            i += 1
        i += 1                                      # ReLU
    for j in (0, 3, 6):                             # Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear
        keys += [f"classifier.{j}.weight", f"classifier.{j}.bias"]
    return keys


def vgg(name, **params):
    return netdsl.load(VGG_FILE, network=name, **params)


def test_vgg_arithmetic_matches_torchvision():
    # the arithmetic below is the oracle for the other tests: check it against torchvision first
    for name, want in TORCHVISION_PARAMS.items():
        cfg, bn = VGG_NETWORKS[name]
        assert vgg_params(CFGS[cfg], bn) == want, name
    for name, gmacs in FIGURE_GMACS.items():
        assert vgg_macs(CFGS[VGG_NETWORKS[name][0]]) == pytest.approx(gmacs * 1e9, rel=5e-4), name


@pytest.mark.parametrize("name", TORCHVISION_PARAMS)
def test_vgg_param_counts_match_torchvision(name):
    assert vgg(name).param_count() == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name", sorted(VGG_NETWORKS))
def test_vgg_param_counts_match_the_config_table(name):
    cfg, bn = VGG_NETWORKS[name]
    net = vgg(name)
    assert net.param_count() == vgg_params(CFGS[cfg], bn)
    assert net.summary()["params"] == net.param_count()
    if name in PAPER_MPARAMS:
        assert round(net.param_count() / 1e6) == PAPER_MPARAMS[name]


def test_vgg_reference_figures():
    assert vgg("VGG11").param_count() == 132_863_336
    assert vgg("VGG16").param_count() == 138_357_544
    assert vgg("VGG16_BN").param_count() == 138_365_992
    assert vgg("VGG19").param_count() == 143_667_240
    for name, gmacs in FIGURE_GMACS.items():
        macs = vgg(name).summary(inputs=(1, 3, 224, 224))["macs"]
        assert macs == pytest.approx(gmacs * 1e9, rel=5e-3), name


@pytest.mark.parametrize("name", sorted(VGG_NETWORKS))
def test_vgg_macs_match_the_config_table(name):
    cfg = CFGS[VGG_NETWORKS[name][0]]
    s = vgg(name).summary(inputs=(1, 3, 224, 224))
    assert s["macs"] == pytest.approx(vgg_macs(cfg), rel=5e-3)
    assert s["outputs"] == [{"name": "logits", "shape": [1, 1000]}]


@pytest.mark.parametrize("name", ["VGG16", "VGG16_BN", "VGG_C", "VGG_A_LRN"])
def test_vgg_state_dict_layout_is_torchvisions(name):
    cfg, bn = VGG_NETWORKS[name]
    layout = vgg(name).state_layout()
    assert list(layout) == torchvision_vgg_keys(CFGS[cfg], bn)
    assert tuple(layout["features.0.weight"]) == (64, 3, 3, 3)
    assert tuple(layout["classifier.0.weight"]) == (4096, 512 * 7 * 7)
    assert tuple(layout["classifier.6.weight"]) == (1000, 4096)


@pytest.mark.parametrize("name", ["VGG16", "VGG16_BN"])
def test_vgg_torch_module_loads_torchvision_keys(name):
    pytest.importorskip("torch")
    cfg, bn = VGG_NETWORKS[name]
    model = vgg(name, width=8, hidden=16).to_torch()      # the layout does not depend on widths
    assert list(model.state_dict()) == torchvision_vgg_keys(CFGS[cfg], bn)


def test_vgg16_state_dict_keys():
    # torchvision's vgg16: 13 convs at these Sequential indices, three Linears in the classifier
    conv_idx = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    want = [f"features.{i}.{p}" for i in conv_idx for p in ("weight", "bias")]
    want += [f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]
    assert list(vgg("VGG16").state_layout()) == want


def test_vgg_c_has_1x1_convs_in_the_last_three_stages():
    layers = vgg("VGG_C").summary(inputs=(1, 3, 224, 224))["layers"]
    layout = vgg("VGG_C").state_layout()
    k1 = [k for k, s in layout.items() if k.endswith(".weight") and tuple(s[2:]) == (1, 1)]
    assert len(k1) == 3
    widths = [layer["output_shape"][1] for layer in layers if layer["path"] + ".weight" in k1]
    assert widths == [256, 512, 512]


def test_vgg_a_lrn_places_lrn_before_the_first_pool():
    # Table 1, column A-LRN: conv3-64, LRN, maxpool, ...
    layers = [(x["path"], x["op"]) for x in vgg("VGG_A_LRN").summary()["layers"]]
    assert layers[:4] == [("features.0", "Conv2d"), ("features.1", "ReLU"),
                          ("features.2", "LocalResponseNorm"), ("features.3", "MaxPool2d")]
    assert sum(op == "LocalResponseNorm" for _, op in layers) == 1
    lrn = vgg("VGG_A_LRN").graph.nodes[2].attrs
    assert (lrn["size"], lrn["alpha"], lrn["beta"], lrn["k"]) == (5, 5e-4, 0.75, 2.0)
    # with two convs in the first stage it still comes once, after both
    ops = [x["op"] for x in vgg("VGG13", lrn=True).summary()["layers"]][:6]
    assert ops == ["Conv2d", "ReLU", "Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"]


def test_vgg_needs_32_pixels():
    assert vgg("VGG16").summary()["constraints"] == ["H ≥ 32", "W ≥ 32"]
    assert vgg("VGG16").summary(inputs=(1, 3, 32, 32))["outputs"][0]["shape"] == [1, 1000]
    with pytest.raises(netdsl.NetDSLError):
        vgg("VGG16").summary(inputs=(1, 3, 31, 224))


def test_vgg_parameters_can_be_overridden():
    net = vgg("VGG16_BN", num_classes=10, width=8, hidden=64)
    assert net.summary(inputs=(2, 3, 64, 64))["outputs"][0]["shape"] == [2, 10]
    layout = net.state_layout()
    assert tuple(layout["features.0.weight"]) == (8, 3, 3, 3)
    assert tuple(layout["classifier.0.weight"]) == (64, 64 * 7 * 7)


# ---- U-Net ------------------------------------------------------------------------------------

def unet_params(in_ch=1, classes=2, base=64, depth=4, bn=False):
    """U-Net parameters by level: DoubleConv down, up-conv (2x2, halving), DoubleConv up."""
    def conv3(cin, c):
        return 9 * cin * c + (2 * c if bn else c)   # BatchNorm's weight and bias replace the bias

    total, cin = 0, in_ch
    for level in range(depth + 1):
        c = base * 2 ** level
        total += conv3(cin, c) + conv3(c, c)
        if level < depth:
            total += 4 * (2 * c) * c + c             # ConvTranspose2d(2c -> c, 2, stride 2)
            total += conv3(2 * c, c) + conv3(c, c)   # decoder on the concatenation
        cin = c
    return total + base * classes + classes


# Fig. 1 of the paper: (channels, size) after each level's two encoder convs, after the up-conv
# into the level, and after its two decoder convs; level 0 is the top, 4 the bottom.
PAPER_ENC = [(64, 568), (128, 280), (256, 136), (512, 64), (1024, 28)]
PAPER_UP = [(64, 392), (128, 200), (256, 104), (512, 56)]
PAPER_DEC = [(64, 388), (128, 196), (256, 100), (512, 52)]


def unet(**params):
    return netdsl.load(UNET_FILE, **params)


def test_unet_params():
    assert unet_params() == 31_030_658                 # the arithmetic agrees with figures.md
    assert unet().param_count() == 31_030_658
    net = unet(pad=1, bn=True, base=8, in_ch=3, classes=5, depth=3)
    assert net.param_count() == unet_params(in_ch=3, classes=5, base=8, depth=3, bn=True)


def test_unet_paper_shapes():
    s = unet().summary(inputs=(1, 1, 572, 572))
    assert s["inputs"] == [{"name": "image", "shape": [1, 1, 572, 572]}]
    assert s["outputs"] == [{"name": "mask", "shape": [1, 2, 388, 388]}]
    shapes = {layer["path"]: layer["output_shape"] for layer in s["layers"]}
    for level, (c, size) in enumerate(PAPER_ENC):
        prefix = "body" + ".inner" * level
        assert shapes[f"{prefix}.enc.conv2"] == [1, c, size, size], level
        if level < len(PAPER_UP):
            c_up, up = PAPER_UP[level]
            assert shapes[f"{prefix}.up"] == [1, c_up, up, up], level
            c_dec, dec = PAPER_DEC[level]
            assert shapes[f"{prefix}.dec.conv2"] == [1, c_dec, dec, dec], level
    assert shapes["head"] == [1, 2, 388, 388]


def test_unet_macs_match_arithmetic():
    # every 3x3 conv: 9 * cin * cout * out_h * out_w; up-convs: 4 * cin * cout * in_h * in_w
    sizes_in = [572, 284, 140, 68, 32]
    want, cin = 0, 1
    for level, (c, _) in enumerate(PAPER_ENC):
        h = sizes_in[level]
        want += 9 * cin * c * (h - 2) ** 2 + 9 * c * c * (h - 4) ** 2
        cin = c
    for level, (c, up) in enumerate(PAPER_UP):
        want += 4 * (2 * c) * c * (up // 2) ** 2
        want += 9 * (2 * c) * c * (up - 2) ** 2 + 9 * c * c * (up - 4) ** 2
    want += 64 * 2 * 388 * 388
    assert unet().summary(inputs=(1, 1, 572, 572))["macs"] == pytest.approx(want, rel=5e-3)


def test_unet_valid_constraint():
    assert unet().summary()["constraints"] == ["H ≡ 12 (mod 16), H ≥ 188",
                                               "W ≡ 12 (mod 16), W ≥ 188"]
    # the smallest tile: 188 -> 4; one step (16) smaller fails, as do sizes off the lattice
    assert unet().summary(inputs=(1, 1, 188, 188))["outputs"][0]["shape"] == [1, 2, 4, 4]
    with pytest.raises(netdsl.NetDSLError):
        unet().summary(inputs=(1, 1, 172, 172))


def test_unet_rejects_570_at_the_center_crop():
    with pytest.raises(netdsl.NetDSLError) as info:
        unet().summary(inputs=(1, 1, 570, 570))
    err = info.value
    lines = UNET_FILE.read_text(encoding="utf-8").splitlines()
    [(line, col)] = [(i + 1, text.index("center_crop(") + 1) for i, text in enumerate(lines)
                     if "center_crop(" in text and not text.lstrip().startswith("#")]
    assert Path(err.file).resolve() == UNET_FILE.resolve()
    assert (err.line, err.col) == (line, col)
    assert "center_crop" in err.message and "odd margin" in err.message
    rendered = err.render()
    assert rendered.startswith(f"{err.file}:{line}:{col}: error: ")
    assert "in block Level" in rendered


def test_padded_unet_constraint():
    net = unet(pad=1)
    constraints = net.summary()["constraints"]
    assert any("H ≡ 0 (mod 16)" in c for c in constraints)
    assert constraints == ["H ≡ 0 (mod 16), H ≥ 16", "W ≡ 0 (mod 16), W ≥ 16"]
    assert net.summary(inputs=(1, 1, 64, 48))["outputs"][0]["shape"] == [1, 2, 64, 48]
    with pytest.raises(netdsl.NetDSLError):
        net.summary(inputs=(1, 1, 56, 64))


def test_unet_bn_state_dict_layout():
    layout = unet(pad=1, bn=True).state_layout()
    assert "body.enc.conv1.bias" not in layout
    for key in ("body.enc.conv1.weight", "body.enc.bn1.running_var", "body.enc.bn2.weight",
                "body.inner.inner.inner.inner.enc.conv2.weight", "body.up.weight", "body.dec.bn2.bias",
                "head.weight", "head.bias"):
        assert key in layout, key
    assert tuple(layout["body.up.weight"]) == (128, 64, 2, 2)   # ConvTranspose2d: [in, out, k, k]


def test_examples_readme_lists_every_example():
    readme = (ROOT / "examples" / "README.md").read_text(encoding="utf-8")
    for f in sorted((ROOT / "examples").glob("*.net")):
        n_lines = len(f.read_text(encoding="utf-8").splitlines())
        assert f"`{f.name}`" in readme, f.name
        assert f"{n_lines} lines" in readme, (f.name, n_lines)


# ---- the standard library the examples import ---------------------------------------------------

def test_std_blocks_are_documented_and_usable():
    from netdsl.ir.program import STD_DIR, load_program
    program = load_program(path=STD_DIR / "blocks.net")
    assert {"ConvBNReLU", "DoubleConv"} <= set(program.blocks)
    for name, block in program.blocks.items():
        assert block.doc, f"std block {name} has no docstring"
    net = netdsl.loads("""import "std/blocks.net"
        network T { input x: f32[1, 3, 32, 32]
            output y = x -> stem: ConvBNReLU(16, 7, stride = 2) -> a: ConvBNReLU(8, 1, bn = false)
                         -> b: DoubleConv(4, pad = 1, bn = true) -> c: DoubleConv(4) }""")
    assert net.summary()["outputs"][0]["shape"] == [1, 4, 12, 12]
    layout = net.state_layout()
    assert tuple(layout["stem.conv.weight"]) == (16, 3, 7, 7) and "stem.conv.bias" not in layout
    assert "stem.bn.running_mean" in layout and "a.conv.bias" in layout and "a.bn.weight" not in layout
    assert "b.bn2.weight" in layout and "b.conv1.bias" not in layout and "c.conv2.bias" in layout
