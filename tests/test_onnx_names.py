"""ONNX node names are the spec's paths, and the model says where it came from.

Every ONNX node made for the IR node `layer1.0.conv1` is named `layer1.0.conv1` (when it makes
one node) or `layer1.0.conv1/<OpType>[_k]` (when it makes several; nodes of If branches
included); an Identity that gives a graph output its name is `output:<name>`. Names are unique
across the model. Its metadata holds `netdsl.source`, `netdsl.network` and `netdsl.version`, and
the graph's doc_string is the network's docstring."""
from __future__ import annotations

import collections
import re

import numpy as np
import onnx
import pytest

import netdsl
from netdsl.backends.onnx.export import build_graph_proto

from test_ops_parity import CASES, build  # tests/ is on sys.path (no package)

EXAMPLES = [
    ("examples/resnet.net", "ResNet18"),
    ("examples/googlenet.net", None),
    ("examples/unet.net", None),
    ("examples/attention.net", "ViT_B_16"),
    ("examples/maxvit.net", "MaxViT_T"),
    ("examples/swin.net", "Swin_V2_T"),
    ("examples/faster_rcnn.net", "FasterRCNN_ResNet50_FPN"),
]

_SUFFIX = re.compile(r"/(?P<op>[A-Za-z][A-Za-z0-9]*)(?:_(?P<k>[1-9][0-9]*))?\Z")


def _all_nodes(graph: onnx.GraphProto):
    """Every node of the graph and of its subgraphs (If branches), depth first."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)


def _checkable(model: onnx.ModelProto, used: dict) -> onnx.ModelProto:
    """The weightless model with its weights declared as graph inputs, for onnx.checker."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for name, spec in used.items():
        elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(spec.dtype))
        m.graph.input.append(onnx.helper.make_tensor_value_info(name, elem, list(spec.shape)))
    return m


def check_names(net: netdsl.Network, model: onnx.ModelProto) -> dict:
    """Assert the naming rules on `model` (made from `net`); returns {IR path: [ONNX nodes]}."""
    graph = net.graph
    paths = {n.path for n in graph.nodes}
    assert len(paths) == len(graph.nodes), "IR paths are unique: the test relies on it"
    nodes = list(_all_nodes(model.graph))
    assert nodes, "no nodes: nothing was checked"
    names = [n.name for n in nodes]
    dup = [k for k, c in collections.Counter(names).items() if c > 1]
    assert not dup, f"node names used twice: {dup[:5]}"
    by_path = collections.defaultdict(list)
    outputs = {name for name, _ in graph.outputs}
    for node in nodes:
        assert node.name, f"an unnamed {node.op_type} node"
        if node.name.startswith("output:"):
            assert node.op_type == "Identity" and node.name[len("output:"):] in outputs, node.name
            continue
        if node.name in paths:
            by_path[node.name].append(node)
            continue
        m = _SUFFIX.search(node.name)
        assert m, f"node {node.name!r} ({node.op_type}) is neither a spec path nor path/OpType"
        path = node.name[:m.start()]
        assert path in paths, f"node {node.name!r}: {path!r} is no IR node's path"
        assert m.group("op") == node.op_type, f"node {node.name!r} is a {node.op_type}"
        by_path[path].append(node)
    for path, made in by_path.items():
        if len(made) == 1:
            assert made[0].name == path, f"the one node of {path} is named {made[0].name!r}"
        else:
            assert all(n.name != path for n in made), f"{path} made {len(made)} nodes, one named bare"
            # per op type: path/Op, path/Op_1, path/Op_2, ... in the order made
            per_op = collections.defaultdict(list)
            for n in made:
                per_op[n.op_type].append(n.name)
            for op, got in per_op.items():
                want = [f"{path}/{op}"] + [f"{path}/{op}_{k}" for k in range(1, len(got))]
                assert got == want, (path, op, got[:4])
    # every IR node's output that some ONNX node computes is computed by a node of that IR node
    # (so every IR node with an ONNX emission appears under its own path)
    producer = {out: node.name for node in model.graph.node for out in node.output}
    for n in graph.nodes:
        for v in n.outputs:
            name = producer.get(v.name)
            if name is not None and not name.startswith("output:"):
                assert name == n.path or name.startswith(n.path + "/"), \
                    f"{v.name}, an output of {n.path} ({n.op}), is made by node {name!r}"
    return by_path


def check_metadata(model: onnx.ModelProto, net: netdsl.Network, source: str):
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["netdsl.network"] == net.name
    assert meta["netdsl.source"] == source
    assert meta["netdsl.version"] == netdsl.__version__
    assert "netdsl.constraints" in meta           # kept beside the new keys
    assert model.graph.doc_string == (net.graph.doc or "")


@pytest.mark.parametrize("path,network", EXAMPLES, ids=[n or p.split("/")[1][:-4] for p, n in EXAMPLES])
def test_example_names_and_metadata(path, network):
    net = netdsl.load(path, network)
    model, used = build_graph_proto(net.graph, {}, 17)
    onnx.checker.check_model(_checkable(model, used))
    by_path = check_names(net, model)
    # most layers have an ONNX emission of their own: the check above saw them
    assert len(by_path) >= len(net.graph.nodes) // 2, (len(by_path), len(net.graph.nodes))
    check_metadata(model, net, path)


def test_resnet_names_are_the_spec_paths():
    net = netdsl.load("examples/resnet.net", "ResNet18")
    model, _ = build_graph_proto(net.graph, {}, 17)
    names = [n.name for n in model.graph.node]
    assert names[:4] == ["conv1", "bn1", "relu", "maxpool"]
    assert {"layer1.0.conv1", "layer2.0.downsample.0", "layer4.1.add", "fc"} <= set(names)
    assert net.graph.doc and model.graph.doc_string == net.graph.doc


def test_complete_model_passes_the_checker_with_weights(tmp_path):
    """The written file (weights inline) keeps names and metadata through save_onnx."""
    net = netdsl.load("examples/resnet.net", "ResNet18")
    path = tmp_path / "r.onnx"
    net.save_onnx(path)
    model = onnx.load(path)
    onnx.checker.check_model(model)
    check_names(net, model)
    check_metadata(model, net, "examples/resnet.net")


def test_several_nodes_get_op_suffixes():
    """An IR node that makes several ONNX nodes: path/OpType, path/OpType_1, ..."""
    net = netdsl.loads("network Two {\n  input x: f32[N, 8, H, W]\n"
                       "  y = x -> LayerNorm2d(8) -> Conv2d(8, 3, padding = 1)\n  output y\n}\n",
                       name="two.net")
    model, _ = build_graph_proto(net.graph, {}, 17)
    by_path = check_names(net, model)
    ln = [p for p in by_path if len(by_path[p]) > 1]
    assert ln, [(p, [n.name for n in v]) for p, v in by_path.items()]
    made = by_path[ln[0]]
    assert all(n.name.startswith(ln[0] + "/") for n in made)
    check_metadata(model, net, "two.net")


def test_output_identity_is_named_after_the_output():
    net = netdsl.loads("network Out {\n  input x: f32[1, 3, 4, 4]\n  y = x -> ReLU()\n"
                       "  output a = y\n  output b = y\n}\n")
    model, _ = build_graph_proto(net.graph, {}, 17)
    check_names(net, model)
    names = {n.name for n in model.graph.node}
    assert {"output:a", "output:b"} & names, names


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_every_op_names_its_nodes(case):
    """Every parity case (every registered op, If branches of batched_nms included)."""
    net = build(case)
    for opset in (13, 17):
        try:
            model, used = build_graph_proto(net.graph, {}, opset)
        except netdsl.errors.NetDSLError:        # an op that needs a newer opset
            continue
        check_names(net, model)
        onnx.checker.check_model(_checkable(model, used))


def test_if_branches_are_named_too():
    case = next(c for c in CASES if c.id == "det-nms")
    net = build(case)
    model, _ = build_graph_proto(net.graph, {}, 17)
    top = {n.name for n in model.graph.node}
    inner = [n.name for n in _all_nodes(model.graph) if n.name not in top]
    assert inner, "no If branch: the case no longer exercises subgraphs"
    check_names(net, model)
