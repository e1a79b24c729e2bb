"""Review of issue 10 (graph view, summary, safetensors, ONNX names and metadata): regression
tests for the bugs the review found."""
from __future__ import annotations

import io
import json

import onnx
import pytest

import netdsl
from test_graph_browser import driver  # noqa: F401 - the headless Chromium fixture
from netdsl.cli import main

LIB = """\
network Base(width: int = 4) {
    "A network defined in an imported file."
    input x: f32[N, 3, H, W]
    output y = x -> conv: Conv2d(width, 3)
}
"""

MAIN = """\
import "lib.net"

network Alias = Base(width = 2)
"""


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("imported")
    (d / "lib.net").write_text(LIB)
    (d / "main.net").write_text(MAIN)
    return d


def _onnx_meta(model) -> dict:
    return {p.key: p.value for p in model.metadata_props}


def _safetensors_meta(data: bytes) -> dict:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n])["__metadata__"]


@pytest.mark.parametrize("network", ["Alias", "Base"])
def test_metadata_source_is_the_file_given_for_imported_networks(spec_dir, network, monkeypatch,
                                                                 tmp_path):
    # `netdsl compile main.net --network Alias|Base`: the model says it came from main.net, as
    # given (not from the imported lib.net, by its absolute path), so that `netdsl.source` and
    # `netdsl.network` name a spec that rebuilds it
    monkeypatch.chdir(spec_dir)
    net = netdsl.load("main.net", network)
    meta = _onnx_meta(net.to_onnx())
    assert meta["netdsl.network"] == network
    assert meta["netdsl.source"] == "main.net"
    buf = io.BytesIO()
    net.save_safetensors(buf)
    st = _safetensors_meta(buf.getvalue())
    assert st == {"netdsl.network": network, "netdsl.source": "main.net"}
    # the command line, too (ONNX with external data: the metadata is in the .onnx file)
    out = tmp_path / "m.onnx"
    assert main(["compile", "main.net", "--network", network, "-t", "onnx", "--external-data",
                 "-o", str(out)]) == 0
    meta = _onnx_meta(onnx.load(str(out), load_external_data=False))
    assert meta["netdsl.source"] == "main.net" and meta["netdsl.network"] == network
    # a network of the file itself keeps its file, as given
    own = netdsl.load("lib.net")
    assert _onnx_meta(own.to_onnx())["netdsl.source"] == "lib.net"


def test_graph_view_names_the_file_given(spec_dir, monkeypatch):
    from netdsl.graphview.model import build_view
    monkeypatch.chdir(spec_dir)
    view = build_view(netdsl.load("main.net", "Alias")).to_json()
    assert view["source"] == "main.net"
    conv = next(n for n in view["nodes"] if n["id"] == "conv")
    assert conv["source"]["file"].endswith("lib.net")     # each layer keeps its own line


# ---- the HTML view with names that JavaScript objects hold specially ----------------------------

PROTO = """\
block constructor(c: int) {
    toString: Conv2d(c, 3, padding = 1)
    hasOwnProperty: ReLU
}

network Proto {
    input __proto__: f32[N, 3, H, W]
    a = __proto__ -> __proto__: constructor(4) -> constructor: constructor(4)
    output valueOf = a -> prototype: Conv2d(2, 1)
}
"""


def test_html_view_lays_out_names_like_proto(driver, tmp_path):
    # `__proto__` is a legal netdsl name; dagre keeps nodes in plain objects, where it reached
    # the prototype: the page stayed blank with a TypeError
    from netdsl.graphview.html import render_html
    from netdsl.graphview.model import build_view
    from test_graph_browser import click, dom_graph, expected, open_page
    spec = tmp_path / "proto.net"
    spec.write_text(PROTO)
    view = build_view(netdsl.load(spec)).to_json()
    assert {"__proto__", "constructor", "input:__proto__"} <= {n["id"] for n in view["nodes"]}
    page = tmp_path / "proto.html"
    page.write_text(render_html(view, 1), encoding="utf-8")
    open_page(driver, page)            # no error in the console, and the layout finished
    assert dom_graph(driver) == expected(view, set())
    click(driver, '#viewport .node[data-id="__proto__"]')
    boxes, clusters, edges = dom_graph(driver)
    assert (boxes, clusters, edges) == expected(view, {"__proto__"})
    assert "__proto__.toString" in boxes and ("input:__proto__", "__proto__.toString") in edges


# ---- safetensors before 0.6 (pyproject allows >= 0.4): no offset_keys() ------------------------

class _OldSafeOpen:
    """safetensors < 0.6's safe_open: keys() in name order, no offset_keys()."""

    def __init__(self, real):
        self._real = real

    def __enter__(self):
        self._f = self._real.__enter__()
        return self

    def __exit__(self, *exc):
        return self._real.__exit__(*exc)

    def keys(self):
        return sorted(self._f.keys())

    def get_slice(self, key):
        return self._f.get_slice(key)


def test_safetensors_read_without_offset_keys(tmp_path, monkeypatch):
    # every .safetensors file was refused as "not a valid safetensors file (AttributeError:
    # ... no attribute 'offset_keys')" with safetensors 0.4 and 0.5
    import numpy as np
    import safetensors
    from safetensors.numpy import save_file

    from netdsl.weights import load_safetensors
    path = tmp_path / "w.safetensors"
    # names whose alphabetical order is not their order in the file (which save_file sorts by
    # dtype size, then name), with a zero-size tensor among them
    tensors = {"b.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
               "a.count": np.array(7, dtype=np.int64), "c.empty": np.zeros((0, 3), np.float32),
               "a.bias": np.array([1.5, -2.0], dtype=np.float32)}
    save_file(tensors, str(path))
    want = load_safetensors(path)
    real = safetensors.safe_open
    monkeypatch.setattr(safetensors, "safe_open", lambda *a, **k: _OldSafeOpen(real(*a, **k)))
    got = load_safetensors(path)
    assert set(got) == set(tensors)
    for k, v in tensors.items():
        assert got[k].dtype == v.dtype and np.array_equal(got[k], v), k
        assert np.array_equal(want[k], v), k


def test_an_output_path_ending_in_a_slash_is_refused(tmp_path, capsys):
    """realpath() drops a trailing '/', so `-o newdir/` wrote a file named 'newdir'."""
    spec = tmp_path / "tiny.net"
    spec.write_text("network T { input x: f32[N, 3]\n output y = x -> Linear(2) }\n")
    target = tmp_path / "newdir"
    for argv in (["graph", str(spec), "-f", "svg", "-o", f"{target}/"],
                 ["compile", str(spec), "--target", "onnx", "-o", f"{target}/"]):
        assert main(argv) == 1
        assert "ending in '/' names a directory" in capsys.readouterr().err
        assert not target.exists()


def test_summary_footer_counts_one_layer_in_the_singular():
    summary = netdsl.loads("network T { input x: f32[2, 3]\n output y = x -> Linear(2) }\n").summary_text()
    assert "the output of its 1 layer," in summary
    assert "all 1 layers" not in summary
