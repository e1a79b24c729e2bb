"""`netdsl summary`: the nested table (groups and block instances with their totals), trainable
and frozen parameters, activation memory, receptive fields, and the JSON fields issue 10 added
beside the existing ones."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import netdsl
from netdsl.passes.summary import format_text
from test_cli import SMALL, netdsl as cli   # tests/ is on sys.path under pytest

ROOT = Path(__file__).resolve().parent.parent
EX = ROOT / "examples"


@pytest.fixture(scope="module")
def resnet18():
    net = netdsl.load(EX / "resnet.net", network="ResNet18", inputs={"image": (1, 3, 224, 224)})
    return net, net.summary()


def rf(summary, path):
    entry = {x["path"]: x for x in summary["layers"] + summary["modules"]}[path]
    f = entry["receptive_field"]
    return None if f is None else (f["size"], f["jump"])


# ---- the table ----------------------------------------------------------------------------------

def test_resnet18_table_nests_groups_and_blocks(resnet18):
    net, s = resnet18
    text = net.summary_text()
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["layer", "op"])
    assert lines[head].split() == ["layer", "op", "output", "shape", "trainable", "frozen", "MACs",
                                   "activations", "RF", "(jump)"]
    rows = lines[head + 2:]
    labels = [re.match(r" *\S+", r[2:]).group() for r in rows[:rows.index("")]]
    # composite rows before their layers, indented two spaces a level
    i = labels.index("layer1")
    assert labels[i:i + 3] == ["layer1", "  0", "    conv1"]
    row = rows[i + 1].split()
    assert row[:2] == ["0", "BasicBlock"] and row[2:6] == ["[1,", "64,", "56,", "56]"]
    assert row[6:9] == ["73,984", "0", "231,211,008"]           # the block's totals
    j = labels.index("    downsample", labels.index("layer2"))
    assert labels[j + 1:j + 3] == ["      0", "      1"]
    assert rows[j].split()[1] == "group"
    # the last row of the stem and the head
    assert rows[0].split()[:2] == ["conv1", "Conv2d"] and rows[0].split()[-2:] == ["7", "(2)"]
    assert rows[labels.index("fc")].split()[-1] == "-"          # no receptive field after Flatten
    assert "  parameters: 11,689,512 (trainable 11,689,512, frozen 0)" in lines
    assert "  forward activations: 35,934,112 B (34.3 MiB), the outputs of all 77 layers, each kept " \
           "(training keeps them for the backward pass)" in lines
    assert "  parameter memory: 46,758,048 B (44.6 MiB), buffers 38,560 B (37.7 KiB)" in lines
    assert "  input size: 602,112 B (588.0 KiB)" in lines


def test_totals_are_the_sums_of_the_layers(resnet18):
    _, s = resnet18
    layers = s["layers"]
    assert sum(x["params"] for x in layers) == s["params"] == 11_689_512
    assert sum(x["macs"] for x in layers) == s["macs"]
    assert sum(x["activation_bytes"] for x in layers) == s["activation_bytes"]
    assert s["input_bytes"] == 3 * 224 * 224 * 4
    assert s["param_bytes"] == 4 * s["params"]
    assert s["total_bytes"] == s["input_bytes"] + s["activation_bytes"] + s["param_bytes"] + \
        s["buffer_bytes"]
    for m in s["modules"]:          # a composite's totals are its layers'
        inside = [x for x in layers if x["path"].startswith(m["path"] + ".")]
        assert len(inside) == m["layers"] > 0
        assert m["params"] == sum(x["params"] for x in inside)
        assert m["macs"] == sum(x["macs"] for x in inside)
        assert m["activation_bytes"] == sum(x["activation_bytes"] for x in inside)
        assert m["output_shape"] == inside[-1]["output_shape"]
    kinds = {m["path"]: (m["kind"], m["op"], m["depth"]) for m in s["modules"]}
    assert kinds["layer1"] == ("group", "group", 0)
    assert kinds["layer1.0"] == ("block", "BasicBlock", 1)
    assert kinds["layer2.0.downsample"] == ("group", "group", 2)
    assert len(s["modules"]) == 4 + 8 + 3


def test_activation_memory_is_numel_times_itemsize(resnet18):
    _, s = resnet18
    conv1 = s["layers"][0]
    assert conv1["path"] == "conv1" and conv1["activation_bytes"] == 64 * 112 * 112 * 4
    fc = s["layers"][-1]
    assert fc["activation_bytes"] == 1000 * 4 and fc["depth"] == 0
    assert {x["path"]: x["depth"] for x in s["layers"]}["layer2.0.downsample.0"] == 3


def test_depth_collapses_nested_rows(resnet18):
    net, _ = resnet18
    text = net.summary_text(depth=1)
    body = text.split("-----\n", 1)[1].split("\n\n")[0].splitlines()
    labels = [r.split()[0] for r in body]
    assert labels == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4",
                      "avgpool", "flatten", "fc"]
    assert all(not r.startswith("    ") for r in body)
    two = net.summary_text(depth=2)
    assert "    0  " in two and "      conv1" not in two
    assert "parameters: 11,689,512" in text


def test_cli_depth_and_help(tmp_path):
    r = cli("summary", "--help")
    assert r.returncode == 0 and "--depth K" in r.stdout and "receptive field" in r.stdout
    spec = str(EX / "resnet.net")
    r = cli("summary", spec, "--network", "ResNet18", "--depth", "1")
    assert r.returncode == 0, r.stderr
    assert "\n  layer1 " in r.stdout and "BasicBlock" not in r.stdout
    r = cli("summary", spec, "--network", "ResNet18", "--depth", "0")
    assert r.returncode == 2 and "positive integer" in r.stderr


# ---- frozen parameters ------------------------------------------------------------------------

FROZEN = """\
network F {
    input x: f32[1, 3, 8, 8]
    x = x -> stem: [
        Conv2d(4, 3, padding = 1, frozen = true)
        BatchNorm2d
    ] -> ReLU
    output y = x -> head: Conv2d(2, 1)
}
"""


def test_frozen_and_trainable_columns():
    net = netdsl.loads(FROZEN)
    s = net.summary()
    by = {x["path"]: x for x in s["layers"]}
    assert by["stem.0"]["frozen_params"] == by["stem.0"]["params"] == 3 * 4 * 9 + 4
    assert by["stem.0"]["trainable_params"] == 0
    assert by["stem.1"]["trainable_params"] == 8 and by["stem.1"]["frozen_params"] == 0
    stem = s["modules"][0]
    assert (stem["path"], stem["trainable_params"], stem["frozen_params"]) == ("stem", 8, 112)
    assert s["buffer_bytes"] == 4 * 4 * 2 + 8      # running mean and var; num_batches_tracked
    rows = {line.split()[0]: line.split() for line in net.summary_text().splitlines()[6:11]}
    assert rows["stem"][6:8] == ["8", "112"] and rows["0"][6:8] == ["0", "112"]
    assert "  parameters: 130 (trainable 18, frozen 112)" in net.summary_text()


# ---- receptive fields -----------------------------------------------------------------------------

def fields(body, size="1, 3, 64, 64"):
    net = netdsl.loads(f"network T {{\n    input x: f32[{size}]\n{body}\n}}\n")
    s = net.summary()
    return {x["path"]: (None if x["receptive_field"] is None else
                        (x["receptive_field"]["size"], x["receptive_field"]["jump"]))
            for x in s["layers"]}


def test_rf_of_a_3x3_stack():
    f = fields("    output y = x -> a: Conv2d(4, 3) -> b: Conv2d(4, 3) -> r: ReLU -> c: Conv2d(4, 3)")
    assert f == {"a": ([3, 3], [1, 1]), "b": ([5, 5], [1, 1]), "r": ([5, 5], [1, 1]),
                 "c": ([7, 7], [1, 1])}


def test_rf_of_a_strided_stack_and_rectangular_kernels():
    f = fields("    output y = x -> a: Conv2d(4, 3, stride = 2) -> b: Conv2d(4, 3, stride = 2)\n"
               "        -> p: MaxPool2d(2) -> c: Conv2d(4, (1, 3)) -> q: AvgPool2d(3, stride = 1)")
    # r' = r + (k - 1) j, j' = j s
    assert f["a"] == ([3, 3], [2, 2])
    assert f["b"] == ([7, 7], [4, 4])
    assert f["p"] == ([11, 11], [8, 8])
    assert f["c"] == ([11, 27], [8, 8])
    assert f["q"] == ([27, 43], [8, 8])


def test_rf_with_dilation():
    f = fields("    output y = x -> a: Conv2d(4, 3, dilation = 2) -> b: Conv2d(4, 3, stride = 2)\n"
               "        -> c: Conv2d(4, 3, dilation = 3) -> d: MaxPool2d(3, stride = 1, dilation = 2)",
               size="1, 3, 96, 96")
    assert f["a"] == ([5, 5], [1, 1])                     # dilated kernel: 2 * (3 - 1) + 1
    assert f["b"] == ([7, 7], [2, 2])
    assert f["c"] == ([7 + 6 * 2] * 2, [2, 2])
    assert f["d"] == ([19 + 4 * 2] * 2, [2, 2])


def test_rf_at_merges_and_where_it_ends():
    f = fields("""\
    a = x -> a: Conv2d(4, 3, padding = 1)
    b = x -> b1: Conv2d(4, 3, padding = 1) -> b2: Conv2d(4, 3, padding = 1)
    s = add(a, b)
    c = concat(a, b, dim = 1)
    d = x -> d: Conv2d(4, 1, stride = 2)
    e = center_crop(a, like = d)
    bad = add(d, e)
    g = s -> GlobalAvgPool2d
    se = mul(s, g)
    t = s -> permute((0, 2, 3, 1)) -> lin: Linear(8) -> ln: LayerNorm -> permute((0, 3, 1, 2))
    output y = t
    output z = s -> Flatten -> fc: Linear(3)
    output w = se
    output v = bad
    output u = c""")
    assert f["add"] == ([5, 5], [1, 1])                   # the larger of 3 and 5, same jump
    assert f["concat"] == ([5, 5], [1, 1])
    assert f["center_crop"] == ([3, 3], [1, 1])
    assert f["add_1"] is None                             # jumps 2 and 1 differ
    assert f["global_avg_pool2d"] is None and f["mul"] is None      # the whole input in view
    assert f["lin"] == ([5, 5], [1, 1]) and f["ln"] == ([5, 5], [1, 1])   # over channels only
    assert f["permute_1"] == ([5, 5], [1, 1])
    assert f["flatten"] is None and f["fc"] is None


def test_rf_through_transposed_convs_and_adaptive_pools():
    f = fields("""\
    d = x -> a: Conv2d(4, 3, stride = 2, padding = 1) -> b: Conv2d(4, 3, stride = 2, padding = 1)
    u = d -> up: ConvTranspose2d(4, 2, stride = 2) -> c: Conv2d(4, 3, padding = 1)
    v = u -> up2: ConvTranspose2d(4, 3, stride = 2, padding = 1, output_padding = 1)
    w = v -> up3: ConvTranspose2d(4, 2, stride = 2)
    p = d -> ap: AdaptiveAvgPool2d((8, 8))
    q = d -> aq: AdaptiveAvgPool2d((5, 5))
    output y = w
    output z = p
    output o = q""")
    assert f["b"] == ([7, 7], [4, 4])
    assert f["up"] == ([7, 7], [2, 2])      # each output sees one input: floor((2 - 1) / 2) = 0
    assert f["c"] == ([11, 11], [2, 2])
    assert f["up2"] == ([13, 13], [1, 1])   # floor((3 - 1) / 2) = 1 input more
    assert f["up3"] is None                 # finer than the input's pixels
    assert f["ap"] == ([11, 11], [8, 8])    # 16 -> 8: a pooling with kernel = stride = 2
    assert f["aq"] is None                  # 16 -> 5: windows of varying sizes


def test_rf_matches_the_gradient_of_the_generated_torch_module():
    """The field of a centre output element is where its gradient on the input is non-zero, with
    positive weights (no cancellation) and average pools: measured on netdsl's torch module."""
    torch = pytest.importorskip("torch")
    spec = """\
    a = x -> c1: Conv2d(4, 3, padding = 1) -> ReLU -> c2: Conv2d(4, 3, stride = 2, padding = 1)
    b = x -> sc: Conv2d(4, 1, stride = 2)
    s = add(a, b) -> p: AvgPool2d(3, stride = 2, padding = 1)
    output y = s -> c3: Conv2d(4, 3, dilation = 2, padding = 2) -> c4: Conv2d(4, (3, 5), padding = (1, 2))"""
    net = netdsl.loads(f"network T {{\n    input x: f32[1, 3, 64, 64]\n{spec}\n}}\n")
    size, jump = rf(net.summary(), "c4")
    assert jump == [4, 4] and size[0] != size[1]
    module = net.to_torch().double()
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(0.1)
    x = torch.ones(1, 3, 64, 64, dtype=torch.float64, requires_grad=True)
    y = module(x)
    y = y[0] if isinstance(y, (tuple, list)) else y
    y[0, 0, 8, 8].backward()
    g = x.grad[0].abs().sum(0)
    rows = (g.sum(1) > 0).nonzero().flatten()
    cols = (g.sum(0) > 0).nonzero().flatten()
    assert [int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)] == size


@pytest.mark.parametrize("file, network, path, size, jump", [
    # AlexNet conv5 163/16 and pool5 195/32, VGG16 conv5_3 196/16 and pool5 212/32 (Araujo et
    # al., Distill 2019, list 195 and 212 for the networks' last pooled maps); ResNet-18 435/32,
    # ResNet-50 (torchvision's v1.5 layout) 427/32 at layer4's output. Each was also measured
    # on torchvision's own models by the gradient method of the test above.
    ("alexnet.net", "AlexNet", "features.10", 163, 16),
    ("alexnet.net", "AlexNet", "features.12", 195, 32),
    ("vgg.net", "VGG16", "features.28", 196, 16),
    ("vgg.net", "VGG16", "features.30", 212, 32),
    ("resnet.net", "ResNet18", "layer4", 435, 32),
    ("resnet.net", "ResNet50", "layer4", 427, 32),
])
def test_rf_of_published_networks(file, network, path, size, jump):
    s = netdsl.load(EX / file, network=network).summary()
    assert rf(s, path) == ([size, size], [jump, jump])


def test_unet_decoder_gets_back_to_the_input_resolution():
    s = netdsl.load(EX / "unet.net").summary()
    assert rf(s, "head")[1] == [1, 1] and rf(s, "head")[0][0] > 100


# ---- JSON: additive, symbolic and concrete ------------------------------------------------------

OLD_LAYER_KEYS = {"path", "op", "output_shape", "params", "frozen_params", "macs"}


def test_json_keeps_every_old_key_and_value(tmp_path):
    spec = tmp_path / "small.net"
    spec.write_text(SMALL)
    r = cli("summary", str(spec), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    # the schema before issue 10, with its values: the previous version's output, verbatim
    old = {"network": "Small", "inputs": [{"name": "x", "shape": ["N", 3, 16, 16]}],
           "outputs": [{"name": "logits", "shape": ["N", 10]}], "params": 2682,
           "trainable_params": 2682, "frozen_params": 0, "macs": 30208, "constraints": [],
           "dynamic_dims": [],
           "layers": [
               {"path": "conv", "op": "Conv2d", "output_shape": ["N", 4, 16, 16], "params": 112,
                "frozen_params": 0, "macs": 27648},
               {"path": "relu", "op": "ReLU", "output_shape": ["N", 4, 16, 16], "params": 0,
                "frozen_params": 0, "macs": 0},
               {"path": "max_pool2d", "op": "MaxPool2d", "output_shape": ["N", 4, 8, 8], "params": 0,
                "frozen_params": 0, "macs": 0},
               {"path": "flatten", "op": "Flatten", "output_shape": ["N", 256], "params": 0,
                "frozen_params": 0, "macs": 0},
               {"path": "fc", "op": "Linear", "output_shape": ["N", 10], "params": 2570,
                "frozen_params": 0, "macs": 2560}]}
    assert {k: s[k] for k in old if k != "layers"} == {k: v for k, v in old.items() if k != "layers"}
    assert [{k: x[k] for k in OLD_LAYER_KEYS} for x in s["layers"]] == old["layers"]
    assert set(s) - set(old) == {"modules", "input_bytes", "activation_bytes", "param_bytes",
                                 "buffer_bytes", "total_bytes"}
    assert set(s["layers"][0]) - OLD_LAYER_KEYS == {"depth", "trainable_params", "activation_bytes",
                                                    "receptive_field"}
    # symbolic: the expressions over N
    assert s["layers"][0]["activation_bytes"] == "4096 * N"
    assert s["layers"][0]["receptive_field"] == {"size": [3, 3], "jump": [1, 1]}
    assert s["layers"][2]["receptive_field"] == {"size": [4, 4], "jump": [2, 2]}
    assert s["modules"] == [] and s["param_bytes"] == 2682 * 4


def test_symbolic_sizes_show_as_question_marks_until_given():
    sym = netdsl.load(EX / "resnet.net", network="ResNet18")
    s = sym.summary()
    conv1 = s["layers"][0]
    assert isinstance(conv1["activation_bytes"], str) and "N" in conv1["activation_bytes"]
    assert isinstance(s["activation_bytes"], str) and isinstance(s["total_bytes"], str)
    text = sym.summary_text()
    row = next(line for line in text.splitlines() if line.startswith("  conv1 "))
    assert row.split()[-4:] == ["?", "?", "7", "(2)"]
    assert "forward activations depend on the input size: give it with --input image=?x3x?x?" in text
    assert "estimated total" not in text
    # the expression evaluates to what --input gives
    for n, h, w in ((1, 224, 224), (2, 97, 130)):
        conc = sym.summary(inputs=(n, 3, h, w))
        for key in ("activation_bytes", "input_bytes", "total_bytes"):
            assert eval(s[key], {"N": n, "H": h, "W": w}) == conc[key]
        for a, b in zip(s["layers"], conc["layers"]):
            assert eval(a["activation_bytes"], {"N": n, "H": h, "W": w}) == b["activation_bytes"]
            assert a["receptive_field"] == b["receptive_field"]


def test_a_short_symbolic_total_is_shown(tmp_path):
    text = netdsl.loads(SMALL).summary_text()
    assert "  forward activations: 10280 * N bytes, the outputs of all 5 layers, each kept" in text


def test_summary_needs_neither_torch_nor_rich(tmp_path):
    spec = tmp_path / "small.net"
    spec.write_text(SMALL)
    script = ("import sys\nfrom netdsl.cli import main\nrc = main(sys.argv[1:])\n"
              "assert 'torch' not in sys.modules and 'rich' not in sys.modules, 'imported'\n"
              "sys.exit(rc)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for extra in ((), ("--json",)):
        r = subprocess.run([sys.executable, "-c", script, "summary", str(spec), *extra],
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr


def test_format_text_of_an_old_summary_still_works():
    """A summary dict without the new keys (saved by an older netdsl) still formats."""
    s = netdsl.loads(SMALL).summary()
    old = {k: v for k, v in s.items() if k not in ("modules", "activation_bytes", "input_bytes",
                                                    "param_bytes", "buffer_bytes", "total_bytes")}
    old["layers"] = [{k: x[k] for k in OLD_LAYER_KEYS} for x in s["layers"]]
    text = format_text(old)
    assert "conv" in text and "parameters: 2,682" in text
