"""Property tests: whatever text the compiler is given, it either builds a graph or raises a
located `netdsl.NetDSLError` -- never another exception, and never hangs.

Deterministic (derandomize=True) and sized to run in well under a minute together.
"""
from __future__ import annotations

import re
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netdsl
from netdsl.errors import NetDSLError
from test_cli import UNET as CLI_UNET   # tests/ is on sys.path under pytest

SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])

# ---- seeds: valid specs that between them use every construct of the language ----------------

# the CLI tests' U-Net, made small: fuzzing elaborates it thousands of times
UNET = CLI_UNET.replace("base: int = 64, depth: int = 4", "base: int = 8, depth: int = 2")
assert UNET != CLI_UNET

RESNET = """\
block Basic(c: int, stride: int = 1) (x) -> y {
    "A residual unit."
    body = x -> conv1: Conv2d(c, 3, stride = stride, padding = 1, bias = false)
             -> bn1: BatchNorm2d -> ReLU
             -> conv2: Conv2d(c, 3, padding = 1, bias = false) -> bn2: BatchNorm2d
    short = x
    if stride != 1 or x.channels != c {
        short = x -> downsample: [ Conv2d(c, 1, stride = stride, bias = false)  BatchNorm2d ]
    }
    y = (body + short) -> ReLU
}

network ResNet(block = Basic, layers: list = [1, 1], num_classes: int = 10, width: int = 8) {
    input x: f32[N, 3, 32, 32]
    x = x -> conv1: Conv2d(width, 7, stride = 2, padding = 3, bias = false)
          -> bn1: BatchNorm2d -> ReLU -> MaxPool2d(3, stride = 2, padding = 1)
    for i in range(len(layers)) {
        x = x -> layer{i + 1}: [ for j in range(layers[i]) {
                     block(width * 2 ** i, stride = (2 if (i > 0 and j == 0) else 1)) } ]
    }
    output logits = x -> AdaptiveAvgPool2d(1) -> Flatten -> fc: Linear(num_classes)
}
network Small = ResNet(Basic, [1, 1, 1])
"""

MISC = """\
block Pair(k: int) (a, b) -> (s, p) {
    s = a + b
    p = concat(a, b, dim = 1) -> fuse: Conv2d(a.channels, 1)
}

block Tower(n: int, unit: block = ReLU) {
    for i in range(n) { u{i}_x: unit }
}

network Misc(scale: float = 2.0, mode: str = "nearest", sizes: list = [4, 6], on: bool = true) {
    "Exercises the expression language."
    input x: f32[1, 4, 8, 8]
    input z: f32[1, 4, 8, 8]
    k = (3 if on else 1)
    n = len(sizes) + max(sizes) // 2 - min(1, 2) + int(1.5) + abs(-1) + sum([1, 2]) % 3
    t = x -> Conv2d(4, k, padding = k // 2) -> t1: Tower(2, LeakyReLU(0.1))
    s, p = (t, z) -> pair: Pair(1)
    y = resize(p, scale = scale, mode = mode) -> AvgPool2d(2) -> [ GELU  Dropout(0.25) ]
    w = s * y -> Sigmoid
    if not on and n > 3 { w = w -> Tanh } elif x.rank == 4 { w = w -> SiLU } else { w = w }
    output out = w -> Flatten -> Linear(sizes[0] * n) -> Softmax(dim = -1)
    output shape_check = t -> GlobalAvgPool2d -> Flatten(1, -1) -> Linear(str(n) == "x" and 1 or 3)
}
"""

SEQ = """\
network Seq(c: int = 6) {
    input x: f32[N, 3, 16]
    output y = x -> Conv1d(c, 3, padding = "same") -> ReLU -> Conv1d(c * 2, 3, stride = 2)
             -> BatchNorm1d -> ELU(alpha = 0.5) -> Flatten -> Linear(4) -> LogSoftmax
}
"""

# issue 9: sequential blocks, anonymous groups, splices, hyphenated names, math built-ins
GROUPS = """\
block CNA(out: int, stride: int = 1, act: block = ReLU) [
    "conv, norm, act"
    Conv2d(out, 3, stride = stride, padding = 1, bias = false)
    BatchNorm2d
    act
]

network Groups(width: float = 0.5, stages: list = [[1, 8], [2, 16]]) {
    input x: f32[N, 3, 16, 16]
    output y = x -> features: [
        CNA(make_divisible(16 * width, 4), stride = 2)
        for s in stages {
            c = round(s[1] * width) + ceil(log(s[0] + 1, 2)) - floor(sqrt(4));
            [ ...CNA(c)  Conv2d(c, 1) ]
            for j in range(s[0]) { block{s[0]}-{j}: ReLU }
        }
    ] -> AdaptiveAvgPool2d(1) -> Flatten -> fc: Linear(3)
}
"""

SEEDS = [UNET, RESNET, MISC, SEQ, GROUPS]



def compile_or_error(text: str, network: str | None = None):
    """Compile `text`; only NetDSLError may escape, and it must render."""
    try:
        net = netdsl.loads(text, network=network, name="fuzz.net")
        net.graph
        net.summary()
        net.summary_text()
    except NetDSLError as err:
        out = err.render()
        assert out.startswith(f"{err.span.location()}: error: " if err.span else "netdsl: error: ")
        if err.span is not None and err.span.source.name == "fuzz.net":
            assert 1 <= err.span.line <= text.count("\n") + 1, out
            assert err.span.col >= 1, out


def test_seeds_are_valid():
    for text in SEEDS:
        names = re.findall(r"^network (\w+)", text, re.M)
        for name in names:
            net = netdsl.loads(text, network=name, name="seed.net")
            assert net.graph.nodes and net.summary()["layers"]


# ---- (a) random text --------------------------------------------------------------------------

@settings(max_examples=300, **SETTINGS)
@given(st.text(alphabet=string.printable, max_size=200))
def test_random_printable_text(text):
    compile_or_error(text)


@settings(max_examples=100, **SETTINGS)
@given(st.text(max_size=100))
def test_random_unicode_text(text):
    compile_or_error(text)


VOCAB = (
    "network block import input output return if elif else for in and or not true false "
    "x y N H W c f32 f64 Conv2d ReLU Linear MaxPool2d concat center_crop resize Tower Pair Basic "
    "range len min max str int round ceil floor sqrt log make_divisible constant ... ; "
    "0 1 2 -1 3.5 1e9 \"s\" 'std/blocks.net' "
    "( ) [ ] { } , : = -> + - * / // % ** == != < <= > >= . \n # \"\"\""
).split(" ")


@settings(max_examples=300, **SETTINGS)
@given(st.lists(st.sampled_from(VOCAB), max_size=60))
def test_random_token_soup(tokens):
    compile_or_error(" ".join(tokens))


@settings(max_examples=200, **SETTINGS)
@given(st.lists(st.sampled_from(VOCAB), max_size=40))
def test_token_soup_inside_a_network(tokens):
    body = " ".join(tokens)
    compile_or_error("block Tower(n: int) { ReLU }\n"
                     f"network T(c: int = 2) {{ input x: f32[N, 3, H, W]\n{body}\noutput y = x }}")


# ---- (b) mutations of valid specs -----------------------------------------------------------

TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|[A-Za-z_][A-Za-z0-9_]*|[0-9]+(?:\.[0-9]*)?(?:e-?[0-9]+)?'
                   r'|->|\*\*|//|==|!=|<=|>=|\s+|.', re.S)
NUMBER = re.compile(r"[0-9]")
NAME = re.compile(r"[A-Za-z_]")

NUMBER_REPLACEMENTS = ["0", "-1", "1", "2", "99999999999", "9223372036854775808", "1e308", "2.5",
                       "0.0", '"7"', "true", "[]", "[1, 2, 3]", "(1, 2)", "x", "N", "-(0)",
                       "2 ** 63", "10 ** 18", "x.shape[2]", "ReLU"]
NAME_REPLACEMENTS = ["x", "y", "N", "H", "c", "ReLU", "Conv2d", "Conv2D", "conv1", "Basic", "Level",
                     "DoubleConv", "range", "len", "true", "input", "output", "return", "block",
                     "network", "if", "for", "skip", "up", "inner", "_", "ä"]


def tokenize(text: str) -> list:
    return TOKEN.findall(text)


@st.composite
def mutated(draw):
    text = draw(st.sampled_from(SEEDS))
    toks = tokenize(text)
    assert "".join(toks) == text
    significant = [i for i, t in enumerate(toks) if not t.isspace()]
    for _ in range(draw(st.integers(1, 3))):
        if not significant:
            break
        i = draw(st.sampled_from(significant))
        kind = draw(st.sampled_from(["delete", "duplicate", "swap", "number", "rename", "char_delete",
                                     "char_insert", "insert_token"]))
        t = toks[i]
        if kind == "delete":
            toks[i] = ""
        elif kind == "duplicate":
            toks[i] = t + " " + t
        elif kind == "swap":
            j = draw(st.sampled_from(significant))
            toks[i], toks[j] = toks[j], toks[i]
        elif kind == "number":
            nums = [k for k in significant if NUMBER.match(toks[k])]
            if nums:
                k = draw(st.sampled_from(nums))
                toks[k] = draw(st.sampled_from(NUMBER_REPLACEMENTS))
        elif kind == "rename":
            names = [k for k in significant if NAME.match(toks[k])]
            if names:
                k = draw(st.sampled_from(names))
                pool = sorted({toks[m] for m in names}) + NAME_REPLACEMENTS
                toks[k] = draw(st.sampled_from(pool))
        elif kind == "char_delete" and t:
            p = draw(st.integers(0, len(t) - 1))
            toks[i] = t[:p] + t[p + 1:]
        elif kind == "char_insert":
            p = draw(st.integers(0, len(t)))
            toks[i] = t[:p] + draw(st.sampled_from(list("()[]{},:=-+*/<>.\"'#\\\n 0a_"))) + t[p:]
        else:
            toks[i] = draw(st.sampled_from(VOCAB)) + " " + t
    return "".join(toks)


@settings(max_examples=1500, **SETTINGS)
@given(mutated())
def test_mutated_specs(text):
    names = re.findall(r"network\s+(\w+)", text)
    compile_or_error(text, network=names[0] if len(names) > 1 else None)


@settings(max_examples=150, **SETTINGS)
@given(st.sampled_from(["depth", "base", "pad", "classes", "in_ch", "nope"]),
       st.sampled_from(["0", "-1", "1", "3", "2.5", "true", '"s"', "[1]", "x", "(", "1 +", "DoubleConv",
                        "ReLU", "range(3)", "10 ** 18", "9223372036854775807", "depth", "len([1, 2])",
                        "\"\\N\"", "1 if true else 2", "-> ReLU", "[" * 300]))
def test_random_overrides(key, value):
    from netdsl.ir.elaborate import parse_override
    try:
        net = netdsl.loads(UNET, name="unet.net", **{key: parse_override(value, key)})
        net.graph
        net.summary()
    except NetDSLError as err:
        err.render()


# ---- pathological inputs: deep nesting, long loops, huge numbers ----------------------------

NET = "network T {{ input x: f32[1, 3, 8, 8]\n{}\n}}"

PATHOLOGICAL = {
    "unary minus": NET.format("output y = x -> Linear(" + "-" * 5000 + "1)"),
    "not": NET.format("output y = x -> Linear(" + "not " * 5000 + "1)"),
    "nested lists": NET.format("output y = x -> Linear(" + "[" * 5000 + "1" + "]" * 5000 + ")"),
    "long sum": NET.format("output y = x -> Linear(1" + " + 1" * 20000 + ")"),
    "power tower": NET.format("output y = x -> Linear(2" + " ** 1" * 5000 + ")"),
    "attribute chain": NET.format("output y = x" + ".shape" * 5000),
    "index chain": NET.format("output y = x -> Linear(1" + "[0]" * 5000 + ")"),
    "nested ifs": NET.format("if true { " * 3000 + "output y = x" + " }" * 3000),
    "nested groups": NET.format("output y = x -> " + "g: [ " * 3000 + "ReLU" + " ]" * 3000),
    "nested loops": NET.format("for i in range(100000) { for j in range(100000) { x = x } } output y = x"),
    "exponential recursion": "block B(n: int) { if n > 0 { B(n - 1) B(n - 1) } }\n"
                             + NET.format("output y = x -> B(40)"),
    "int growth": NET.format("v = 3 for i in range(100) { v = v * v } output y = x -> Linear(v)"),
    "symbolic growth": "network T { input x: f32[1, 3, H, 8]\n s = x.shape[2]\n"
                       " for i in range(100) { s = s * s + 1 } output y = x -> Linear(s) }",
    "list doubling": NET.format("v = [1] for i in range(100) { v = v + v } output y = x -> Linear(len(v))"),
    "string doubling": NET.format("v = 'ab' for i in range(100) { v = v + v } output y = x"),
    "huge literal": NET.format("output y = x -> Linear(" + "9" * 5000 + ")"),
    "huge range": NET.format("for i in range(-9223372036854775807, 9223372036854775807) { } output y = x"),
    "huge dims": "network T { input x: f32[2147483647, 2147483647, 2147483647] output y = x -> Flatten(0) }",
    "many dims": "network T { input x: f32[" + ", ".join(["2"] * 1000) + "] output y = x -> Flatten }",
    "huge padding": NET.format("output y = x -> Conv2d(3, 3, padding = 2 ** 40)"),
    "deep recursion and nesting": "block L(n: int) { " + "if true { " * 150 + "if n > 0 { L(n - 1) } ReLU"
                                  + " }" * 150 + " }\n" + NET.format("output y = x -> L(63)"),
    "nul": NET.format('output y = x -> Linear(len("a\0b"))'),
    "bad escape": NET.format('output y = x -> Linear(len("\\N"))'),
}


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_input(name):
    import time
    t0 = time.perf_counter()
    text = PATHOLOGICAL[name]
    with pytest.raises(NetDSLError) as info:
        net = netdsl.loads(text, name="t.net")
        net.graph
        net.summary()
    assert info.value.span is not None, info.value.render()
    info.value.render()
    assert time.perf_counter() - t0 < 20, name


@pytest.mark.parametrize("text", [
    NET.format("output y = x" + " -> ReLU" * 5000),
    NET.format("for i in range(20000) { x = x -> ReLU } output y = x"),
    NET.format("output y = x -> Linear(" + "(" * 5000 + "1" + ")" * 5000 + ")"),
    "block L(n: int) { if n > 0 { L(n - 1) } ReLU }\n" + NET.format("output y = x -> L(63)"),
], ids=["long pipeline", "long loop", "5000 parentheses", "recursion 64 deep"])
def test_large_but_valid(text):
    import time
    t0 = time.perf_counter()
    net = netdsl.loads(text, name="t.net")
    assert net.graph.nodes
    net.summary()
    assert time.perf_counter() - t0 < 20
