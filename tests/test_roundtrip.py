"""Round trip: parse -> print -> parse gives the same tree, for every spec we ship."""
import re
from pathlib import Path

import pytest

from netdsl.frontend.parser import parse
from netdsl.frontend.printer import to_source

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted(ROOT.glob("examples/*.net")) + sorted((ROOT / "netdsl" / "std").glob("*.net"))

EXTRA = [
    'network T(k: float = 1.5e-3, s: str = "a\\"b", xs: list = [1, (2, 3), (4,)]) {'
    " input x: f32[N, 3, H, W]"
    " a, b = (y if not c else z)"
    " output o = concat(a, b, dim = -1) -> g{i + 1}_x{j}: [ for i in range(2) { Conv2d(2 ** -i, 3) } ]"
    " if a.shape[1] >= 3 and b or c { return a, b -> Q } elif d { ReLU } else { for v in [1] { n: X(q = v) } } }",
    "block B(c) (p, q) -> (r, s) { \"doc\" r = p + q * -q  s = q }\nnetwork A = N(1, k = 2)\nblock C = B(2, post = D(r = 1))",
    # a chain inside a larger expression keeps its brackets (printed bare, `+ x` joined the last stage)
    "network P { y = (x -> A) + x  z = (x -> A)[0].shape  v = -(x -> A)  u = ((x -> A) if c else (x -> B)) }",
    # issue 9: anonymous groups (a ';' before one that follows an assignment), sequential blocks,
    # splices, hyphenated labels
    "block S(c: int) [ \"doc\" Conv2d(c, 3)  [ BatchNorm2d  ReLU ] ]\n"
    "network G { y = x -> f: [ S(2)  for s in [1] { m = s[0]; [ ReLU ]  if m { [ ...S(1) ] } else { ...S(2) } }"
    "  b{1}-{j}x-2: ReLU  [ n = 1 ]  param p-{1}: f32[1] = constant(-0.5);  [ ReLU ] ] }",
]


def _specs():
    for f in FILES:
        yield pytest.param(f.read_text(), id=f.name)
    for i, text in enumerate(EXTRA):
        yield pytest.param(text, id=f"extra-{i}")
    doc = (ROOT / "docs" / "language.md").read_text()
    for i, m in enumerate(re.finditer(r"```net\n(.*?)```", doc, re.S)):
        yield pytest.param(m.group(1), id=f"docs-{i}")


@pytest.mark.parametrize("text", list(_specs()))
def test_parse_print_parse(text):
    tree = parse(text)
    printed = to_source(tree)
    assert parse(printed) == tree
    assert to_source(parse(printed)) == printed
