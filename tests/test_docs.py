"""The documentation's examples compile, and the layer reference lists every op."""
import re
from pathlib import Path

import pytest

import netdsl
from netdsl.ir.registry import all_ops

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "docs" / "language.md"]


def net_blocks():
    for doc in DOCS:
        for i, m in enumerate(re.finditer(r"```net\n(.*?)```", doc.read_text(), re.S)):
            yield pytest.param(doc, m.group(1), id=f"{doc.name}-{i}")


@pytest.mark.parametrize("doc,text", list(net_blocks()))
def test_documented_specs_compile(doc, text, tmp_path):
    spec = tmp_path / "doc.net"
    spec.write_text(text)
    program_nets = re.findall(r"^\s*network (\w+)", text, re.M)
    assert program_nets
    for name in program_nets:
        net = netdsl.load(spec, network=name)
        assert net.graph.outputs


def test_layer_reference_lists_every_op():
    text = (ROOT / "docs" / "language.md").read_text()
    table = text[text.index("## 11. Layers"):text.index("## 12.")]
    missing = [op for op in all_ops() if f"`{op}`" not in table and f"`{op}(" not in table]
    assert not missing, missing


def test_language_reference_lists_every_std_block():
    text = (ROOT / "docs" / "language.md").read_text()
    section = text[text.index("## 13. The standard library"):text.index("## 14.")]
    blocks = []
    for f in sorted((ROOT / "netdsl" / "std").glob("*.net")):
        assert f"`std/{f.name}`" in section
        blocks += re.findall(r"^block (\w+)", f.read_text(), re.M)
    assert blocks
    missing = [b for b in blocks if f"`{b}" not in section]
    assert not missing, missing
