"""A grammar-aware generator of random, mostly valid netdsl specs for differential fuzzing.

It tracks every tensor's shape while it writes the spec, so that most specs pass the
checker: each dim is a (representative size, key) pair. The representative size is the
value the dim takes at the sizes the fuzzer runs first (`Spec.symbols`); the key is None
for a fixed dim, and otherwise a formula that two dims share only when they are equal for
every input size, so `+`, `concat` and `center_crop` join tensors that really match.
Specs come out one statement or chain stage per line, so that deleting lines (the
minimiser's move) keeps most of them parseable.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

# ---- names -----------------------------------------------------------------------------

# Names that have broken the generated Python: keywords, nn.Module attributes, dunders,
# the generated module's globals. Used at random in every naming position.
TRICKY = ["training", "forward", "cpu", "cuda", "keys", "_modules", "_parameters", "_buffers",
          "__dict__", "__class__", "__init__", "__call__", "_version", "_apply", "state_dict",
          "eval", "train", "to", "float", "half", "type", "parameters", "modules", "children",
          "register_buffer", "dump_patches", "call_super_init", "zero_grad", "apply",
          "class", "def", "lambda", "None", "True", "pass", "yield", "async", "await", "global",
          "self", "super", "torch", "nn", "F", "range", "x", "h", "y", "__w", "__w__", "_", "__",
          "weight", "bias", "layer", "conv", "relu"]
PLAIN = ["conv", "enc", "dec", "head", "body", "stem", "fc", "proj", "gate", "mix", "norm", "act",
         "down", "up", "skip", "branch", "attn", "pool", "cls", "tok"]
BLOCK_NAMES = ["Unit", "Res", "Tower", "Split", "Deep", "torch", "F", "nn", "range", "super",
               "Module", "Net", "Sequential", "forward", "self"]
DOCS = ['"A plain docstring."', '"tab\\tand newline\\n and quote \\" and backslash \\\\"',
        "'single \\'quoted\\''", '"""Multi-line\n    docstring with ""\n    indentation."""',
        '"braces {} and %s and \'\'\'"', '"\\x41\\x7f"', '"\\u00e9\\u2603"',
        '"\\U0001F600"', '""', '"trailing \\\\"', '"caf\u00e9 \u2603 unicode text"']
# escapes whose meaning is for the language to decide (accepted or a located error)
ODD_DOCS = ['"\\N{BULLET}"', '"\\ud800"', '"\\u12"', '"\\q unknown escape"', '"\\U0011FFFF"', '"\\x"']


TRICKY_P = 0.08     # chance that a name is drawn from TRICKY / BLOCK_NAMES


@dataclass
class Spec:
    text: str
    symbols: dict = field(default_factory=dict)     # symbol -> representative size
    features: tuple = ()                            # what the spec uses (for coverage stats)
    outputs: dict = field(default_factory=dict)     # output -> shape the generator tracked, at `symbols`


class _Fail(Exception):
    """An op did not fit the tensor it was offered; the caller picks another."""


class Gen:
    def __init__(self, rng: random.Random):
        self.r = rng
        self.lines: list[str] = []
        self.used: set[str] = set()          # labels/names used in the current scope
        self.tensors: dict[str, tuple] = {}  # name -> shape (tuple of (rep, key))
        self.symbols: dict[str, int] = {}
        self.features: set[str] = set()
        self.blocks: list[tuple] = []        # (kind, name)
        self.params: dict[str, int] = {}     # network int parameters -> value
        self.n_tmp = 0

    # ---- helpers
    def chance(self, p):
        return self.r.random() < p

    def label(self, force=False):
        """'' or 'name: ' with a fresh name, sometimes a tricky one."""
        if not force and self.chance(0.5):
            return ""
        for _ in range(20):
            name = self.r.choice(TRICKY) if self.chance(TRICKY_P) else self.r.choice(PLAIN) + str(self.r.randint(0, 9))
            if name not in self.used:
                self.used.add(name)
                if name in TRICKY:
                    self.features.add("tricky_name")
                return f"{name}: "
        return ""

    def fresh(self, stem="t"):
        self.n_tmp += 1
        return f"{stem}{self.n_tmp}"

    def doc(self):
        return self.r.choice(ODD_DOCS if self.chance(0.2) else DOCS)

    def param_name(self, default):
        """A fresh name for a `param`: a label that is not a tensor name already."""
        name = self.label(force=True)[:-2]
        return default + str(self.n_tmp) if not name or name in ("x", "y", "z", "h") else name

    def int_expr(self, v):
        """v written as a literal, or through a network parameter."""
        for p, pv in self.params.items():
            if pv == v and self.chance(0.4):
                return p
            if 2 * pv == v and self.chance(0.3):
                return f"2 * {p}"
        return str(v)

    # ---- single-input ops: return (stage text, new shape) or raise _Fail
    def op(self, s):
        r = len(s)
        choices = ["act", "act", "dropout", "softmax", "identity"]
        if r == 4:
            choices += ["conv2d"] * 5 + ["deconv", "maxpool", "maxpool", "avgpool", "adaptive", "global",
                                          "bn2d", "bn2d", "lrn", "resize", "resize", "flatten", "mean",
                                          "select", "transpose", "permute", "reshape", "layernorm", "linear",
                                          "stochastic", "spp", "lppool"]
        elif r == 3:
            choices += ["conv1d", "conv1d", "bn1d", "linear", "linear", "layernorm", "mha", "mha", "lrn",
                        "transpose", "flatten", "mean", "select", "permute"]
        elif r == 2:
            choices += ["linear", "linear", "bn1d", "layernorm"]
        else:
            choices += ["linear", "flatten"]
        if r >= 3:      # the modern conv nets' channel shuffle, stochastic depth, channels-first LayerNorm
            choices += ["shuffle", "depth"] + ["layernorm2d"] * (r == 4)
        if r == 4:      # Swin's windowed attention and patch merging, read as [N, H, W, C]
            choices += ["swin", "patch_merge"]
        for _ in range(8):
            kind = self.r.choice(choices)
            try:
                text, out = getattr(self, "op_" + kind)(s)
            except _Fail:
                continue
            self.features.add(kind)
            return text, out
        return "ReLU", s

    def op_act(self, s):
        if self.chance(0.3):        # the mobile networks' activations (and PReLU's learned slopes)
            acts = ["ReLU6", "Hardswish", "Hardsigmoid", "Mish", "PReLU", "PReLU(init = 0.1)"]
            if len(s) >= 2 and s[1][1] is None and s[1][0] > 1:
                acts.append(f"PReLU({s[1][0]})")
            return self.r.choice(acts), s
        return self.r.choice(["ReLU", "SiLU", "Sigmoid", "Tanh", "GELU", "GELU(approximate = 'tanh')",
                              "LeakyReLU", "LeakyReLU(0.2)", "ELU", "ELU(alpha = 0.5)"]), s

    def op_identity(self, s):
        return "Identity", s

    def op_dropout(self, s):
        return f"Dropout({self.r.choice(['0.0', '0.3', 'p = 0.5'])})", s

    def op_softmax(self, s):
        d = self.r.randint(-len(s), len(s) - 1)
        return f"{self.r.choice(['Softmax', 'LogSoftmax'])}({self.r.choice([str(d), f'dim = {d}'])})", s

    def _concrete(self, dim):
        if dim[1] is not None:
            raise _Fail
        return dim[0]

    def _sp(self, dim, rep, tag):
        """Output dim from input dim: same key kind, new representative."""
        if rep < 1:
            raise _Fail
        if dim[1] is None:
            return (rep, None)
        return (rep, f"{tag}({dim[1]})")

    def _pair(self, lo, hi):
        if self.chance(0.75):
            v = self.r.randint(lo, hi)
            return v, (v, v)
        a, b = self.r.randint(lo, hi), self.r.randint(lo, hi)
        return f"[{a}, {b}]", (a, b)

    def op_conv2d(self, s):
        n, c, h, w = s
        c = self._concrete(c)
        g = self.r.choice([d for d in range(1, c + 1) if c % d == 0]) if self.chance(0.25) else 1
        out = g * self.r.randint(1, max(1, 12 // g))
        ktxt, k = self._pair(1, 5)
        args = [self.int_expr(out), str(ktxt)]
        stride, dil, pad = (1, 1), (1, 1), (0, 0)
        if self.chance(0.4):
            stxt, stride = self._pair(1, 3)
            args.append(f"stride = {stxt}")
        if self.chance(0.2):
            dtxt, dil = self._pair(1, 3)
            args.append(f"dilation = {dtxt}")
        same = False
        if stride == (1, 1) and self.chance(0.25):
            args.append(f"padding = {self.r.choice(['same', 'valid'])!r}")
            same = args[-1].endswith("'same'")
        elif self.chance(0.5):
            ptxt, pad = self._pair(0, 2)
            args.append(f"padding = {ptxt}")
        if g > 1:
            args.append(f"groups = {g}")
        if self.chance(0.3):
            args.append("bias = false")
        args += self._training_args(not args[-1] == "bias = false")
        dims = []
        for d, kk, ss, pp, dd in zip((h, w), k, stride, pad, dil):
            if same:
                dims.append(d)
                continue
            rep = (d[0] + 2 * pp - dd * (kk - 1) - 1) // ss + 1
            ident = ss == 1 and 2 * pp == dd * (kk - 1)
            dims.append(d if ident else self._sp(d, rep, f"c{kk}{ss}{pp}{dd}"))
        return f"Conv2d({', '.join(args)})", (n, (out, None), *dims)

    def op_deconv(self, s):
        n, c, h, w = s
        c = self._concrete(c)
        out = self.r.randint(1, 8)
        ktxt, k = self._pair(1, 4)
        stxt, stride = self._pair(1, 3)
        dil = (1, 1) if self.chance(0.7) else (2, 2)
        pad = tuple(self.r.randint(0, (dd * (kk - 1)) // 2) for kk, dd in zip(k, dil))
        opad = tuple(self.r.randint(0, max(ss, dd) - 1) for ss, dd in zip(stride, dil))
        args = [str(out), str(ktxt), f"stride = {stxt}"]
        if dil != (1, 1):
            args.append("dilation = 2")
        if any(pad):
            args.append(f"padding = [{pad[0]}, {pad[1]}]")
        if any(opad):
            args.append(f"output_padding = [{opad[0]}, {opad[1]}]")
        if self.chance(0.15) and c <= 8:      # FCN's upsampling: as many channels out as in
            out = c
            args[0] = str(out)
            args.append("init = bilinear()")
            self.features.add("bilinear")
        else:
            args += self._training_args(True)
        dims = []
        for d, kk, ss, pp, oo, dd in zip((h, w), k, stride, pad, opad, dil):
            rep = (d[0] - 1) * ss - 2 * pp + dd * (kk - 1) + oo + 1
            dims.append(self._sp(d, rep, f"t{kk}{ss}{pp}{oo}{dd}"))
        return f"ConvTranspose2d({', '.join(args)})", (n, (out, None), *dims)

    def _pool(self, s, name):
        n, c, h, w = s
        ktxt, k = self._pair(1, 3)
        args = [str(ktxt)]
        stride = k
        if self.chance(0.6):
            stxt, stride = self._pair(1, 3)
            args.append(f"stride = {stxt}")
        pad = (0, 0)
        if self.chance(0.4):
            pad = (self.r.randint(0, k[0] // 2), self.r.randint(0, k[1] // 2))
            args.append(f"padding = [{pad[0]}, {pad[1]}]")
        dil = (1, 1)
        if name == "MaxPool2d" and self.chance(0.2):
            dil = (2, 2)
            args.append("dilation = 2")
        ceil = self.chance(0.3)
        if ceil:
            args.append("ceil_mode = true")
        if name == "AvgPool2d" and self.chance(0.3):
            args.append("count_include_pad = false")
        dims = []
        for d, kk, ss, pp, dd in zip((h, w), k, stride, pad, dil):
            span = d[0] + 2 * pp - dd * (kk - 1) - 1
            if span < 0:
                raise _Fail
            rep = (-(-span // ss) if ceil else span // ss) + 1
            if ceil and (rep - 1) * ss >= d[0] + pp:
                rep -= 1
            ident = ss == 1 and 2 * pp == dd * (kk - 1)
            dims.append(d if ident else self._sp(d, rep, f"p{kk}{ss}{pp}{dd}{int(ceil)}"))
        return f"{name}({', '.join(args)})", (n, c, *dims)

    def op_maxpool(self, s):
        return self._pool(s, "MaxPool2d")

    def op_avgpool(self, s):
        return self._pool(s, "AvgPool2d")

    def op_stochastic(self, s):
        """StochasticPool2d after a ReLU (its input must be non-negative): a nested group."""
        n, c, h, w = s
        ktxt, k = self._pair(1, 3)
        args, stride, pad = [str(ktxt)], k, (0, 0)
        if self.chance(0.5):
            stxt, stride = self._pair(1, 3)
            args.append(f"stride = {stxt}")
        if self.chance(0.4):
            pad = (self.r.randint(0, k[0] // 2), self.r.randint(0, k[1] // 2))
            args.append(f"padding = [{pad[0]}, {pad[1]}]")
        dims = []
        for d, kk, ss, pp in zip((h, w), k, stride, pad):
            span = d[0] + 2 * pp - kk
            if span < 0:
                raise _Fail
            ident = ss == 1 and 2 * pp == kk - 1
            dims.append(d if ident else self._sp(d, span // ss + 1, f"p{kk}{ss}{pp}10"))   # as MaxPool2d's
        return f"[ ReLU  StochasticPool2d({', '.join(args)}) ]", (n, c, *dims)

    def op_adaptive(self, s):
        txt, (a, b) = self._pair(1, 4)
        return (f"{self.r.choice(['AdaptiveAvgPool2d', 'AdaptiveMaxPool2d'])}({txt})",
                (s[0], s[1], (a, None), (b, None)))

    def op_global(self, s):
        return self.r.choice(["GlobalAvgPool2d", "GlobalMaxPool2d"]), (s[0], s[1], (1, None), (1, None))

    def op_spp(self, s):
        """Spatial pyramid pooling to [N, C * sum(n^2)]; the paper's bins only where they fit
        the sizes the spec runs at first (a mod n <= a // n), else adaptive bins."""
        n, c, h, w = s
        c = self._concrete(c)
        levels = sorted(self.r.sample([1, 2, 3, 4, 6], self.r.randint(1, 3)), reverse=self.chance(0.7))
        if any(d[0] < max(levels) for d in (h, w)):
            raise _Fail
        args = [str(levels) if self.chance(0.5) else f"levels = {levels}"]
        if self.chance(0.4):
            args.append("mode = 'avg'")
        if self.chance(0.5) and all((k + 1) * (d[0] // k) >= d[0] for k in levels for d in (h, w)):
            args.append("bins = 'paper'")
        return f"SpatialPyramidPool2d({', '.join(args)})", (n, (c * sum(k * k for k in levels), None))

    def op_lppool(self, s):
        n, c, h, w = s
        ktxt, k = self._pair(1, 3)
        args = [self.r.choice(["1", "2", "2.0", "4"]), str(ktxt)]
        stride = k
        if self.chance(0.6):
            stxt, stride = self._pair(1, 3)
            args.append(f"stride = {stxt}")
        ceil = self.chance(0.4)
        if ceil:
            args.append("ceil_mode = true")
        dims = []
        for d, kk, ss in zip((h, w), k, stride):
            if d[0] < kk and not ceil:
                raise _Fail
            rep = (-(-(d[0] - kk) // ss) if ceil else (d[0] - kk) // ss) + 1
            if ceil and (rep - 1) * ss >= d[0]:
                rep -= 1
            dims.append(d if kk == ss == 1 else self._sp(d, rep, f"lp{kk}{ss}{int(ceil)}"))
        return f"LPPool2d({', '.join(args)})", (n, c, *dims)

    def _training_args(self, bias: bool) -> list:
        """Occasional `init =`, `bias_init =` and `frozen = true` (values only; ops unchanged)."""
        out = []
        if self.chance(0.15):
            out.append("init = " + self.r.choice([
                "zeros()", "constant(0.05)", "normal(0.1)", "uniform(0.2)", "kaiming_normal()",
                'kaiming_normal(mode = "fan_out", nonlinearity = "relu")', "kaiming_uniform(a = 0.1)",
                "xavier_normal()", "xavier_uniform(gain = 0.5)"]))
        if bias and self.chance(0.1):
            out.append("bias_init = " + self.r.choice(["zeros()", "ones()", "constant(-0.1)", "normal(0.05)"]))
        if self.chance(0.1):
            out.append("frozen = true")
        self.features.update(a.split(" =")[0] for a in out)
        return out

    def op_bn2d(self, s):
        self._concrete(s[1])
        text = self.r.choice(["BatchNorm2d", "BatchNorm2d(eps = 0.001)", "BatchNorm2d(affine = false)",
                              "BatchNorm2d(momentum = 0.3)", "BatchNorm2d(frozen = true)", "FrozenBatchNorm2d",
                              "FrozenBatchNorm2d(eps = 0.001)"])
        if text.startswith("Frozen"):
            self.features.add("frozen_bn")
        return text, s

    def op_bn1d(self, s):
        self._concrete(s[1])
        return self.r.choice(["BatchNorm1d", "BatchNorm1d(affine = false)"]), s

    def op_lrn(self, s):
        return f"LocalResponseNorm({self.r.randint(1, 5)}, alpha = 0.5)", s

    def op_layernorm(self, s):
        self._concrete(s[-1])
        return self.r.choice(["LayerNorm", "LayerNorm(eps = 0.001)", "LayerNorm(elementwise_affine = false)"]), s

    def op_shuffle(self, s):
        c = self._concrete(s[1])
        groups = [g for g in range(2, c + 1) if c % g == 0] or [1]
        return f"ChannelShuffle({self.r.choice(groups)})", s

    def op_depth(self, s):
        p = self.r.choice(["0.0", "0.2", "p = 0.5", "1.0"])
        return self.r.choice([f"StochasticDepth({p})", f"StochasticDepth({p}, mode = 'batch')"]), s

    def op_swin(self, s):
        c = self._concrete(s[-1])
        if c > 64:
            raise _Fail
        heads = self.r.choice([h for h in range(1, c + 1) if c % h == 0 and h <= 4])
        win = self.r.choice([(2, 2), (3, 3), (2, 3), (4, 4)])
        shift = tuple(self.r.randint(0, w - 1) for w in win)
        args = [str(heads), f"window_size = {win[0] if win[0] == win[1] else list(win)}"]
        if any(shift):
            args.append(f"shift_size = {shift[0] if shift[0] == shift[1] else list(shift)}")
        args += self.r.sample(["version = 2", "qkv_bias = false", "proj_bias = false", "dropout = 0.1",
                               "attention_dropout = 0.2"], self.r.randint(0, 2))
        return f"ShiftedWindowAttention({', '.join(args)})", s

    def op_patch_merge(self, s):
        n, h, w, c = s
        c4 = (4 * c[0], None if c[1] is None else f"4*{c[1]}")
        return "patch_merge", (n, self._sp(h, -(-h[0] // 2), "pm"), self._sp(w, -(-w[0] // 2), "pm"), c4)

    def op_layernorm2d(self, s):
        self._concrete(s[1])
        return self.r.choice(["LayerNorm2d", "LayerNorm2d(eps = 1e-6)", "LayerNorm2d(elementwise_affine = false)"]), s

    def op_linear(self, s):
        f = self._concrete(s[-1])
        if f > 2048:
            raise _Fail
        out = self.r.randint(1, 16)
        bias = not self.chance(0.2)
        extra = ([] if bias else ["bias = false"]) + self._training_args(bias)
        return f"Linear({', '.join([self.int_expr(out)] + extra)})", (*s[:-1], (out, None))

    def op_conv1d(self, s):
        n, c, l = s
        self._concrete(c)
        out, k = self.r.randint(1, 10), self.r.randint(1, 4)
        if self.chance(0.3):
            return f"Conv1d({out}, {k}, padding = 'same')", (n, (out, None), l)
        stride = self.r.randint(1, 2)
        rep = (l[0] - k) // stride + 1
        out_l = l if (k == 1 and stride == 1) else self._sp(l, rep, f"c1{k}{stride}")
        return f"Conv1d({out}, {k}, stride = {stride})", (n, (out, None), out_l)

    def op_mha(self, s):
        e = self._concrete(s[2])
        heads = self.r.choice([h for h in range(1, e + 1) if e % h == 0 and h <= 4])
        extra = self.r.choice(["", ", bias = false", ", dropout = 0.1"])
        return f"MultiheadAttention({heads}{extra})", s

    def op_resize(self, s):
        n, c, h, w = s
        mode = self.r.choice(["", ", mode = 'bilinear'", ", mode = 'bilinear', align_corners = true"])
        if self.chance(0.3):
            a, b = self.r.randint(1, 24), self.r.randint(1, 24)
            self.features.add("resize_size")
            return f"resize(size = [{a}, {b}]{mode})", (n, c, (a, None), (b, None))
        scales = self.r.choice([(2, 2), (0.5, 0.5), (1.5, 1.5), (2, 3), (2.3, 2.3), (1, 2.3), (1.1, 1.1),
                                (0.7, 1.25), (3, 1), (0.6, 0.6)])
        if scales[0] != int(scales[0]) or scales[1] != int(scales[1]):
            self.features.add("resize_fractional")
        txt = str(scales[0]) if scales[0] == scales[1] else f"[{scales[0]}, {scales[1]}]"
        dims = []
        for d, sc in zip((h, w), scales):
            rep = int(d[0] * sc)          # floor(size * scale); the checker decides the rule
            dims.append(d if sc == 1 else self._sp(d, rep, f"r{sc}"))
        return f"resize(scale = {txt}{mode})", (n, c, *dims)

    def op_flatten(self, s):
        r = len(s)
        start = self.r.randint(1, r - 1) if r > 1 else 0
        end = self.r.randint(start, r - 1)
        merged = s[start:end + 1]
        rep = 1
        for d in merged:
            rep *= d[0]
        key = None if all(d[1] is None for d in merged) else "*".join(str(d[1] or d[0]) for d in merged)
        text = "Flatten" if (start, end) == (1, r - 1) else f"Flatten({start}, {end - r if self.chance(0.5) else end})"
        return text, (*s[:start], (rep, key), *s[end + 1:])

    def op_mean(self, s):
        r = len(s)
        dims = sorted(self.r.sample(range(1, r), self.r.randint(1, min(2, r - 1))))
        keep = self.chance(0.6)
        if not keep and r - len(dims) < 2:
            keep = True
        fn = self.r.choice(["mean", "amax"])
        out = tuple((1, None) if i in dims else d for i, d in enumerate(s)) if keep else \
            tuple(d for i, d in enumerate(s) if i not in dims)
        return f"{fn}(dims = {dims}{'' if keep else ', keepdim = false'})", out

    def op_select(self, s):
        if len(s) < 3:
            raise _Fail
        d = self.r.randint(1, len(s) - 1)
        index = self.r.choice([0, -1]) if s[d][1] is not None else self.r.randint(-s[d][0], s[d][0] - 1)
        return f"select(dim = {d}, index = {index})", tuple(x for i, x in enumerate(s) if i != d)

    def op_transpose(self, s):
        a, b = self.r.sample(range(len(s)), 2)
        if 0 in (a, b) and self.chance(0.8):
            raise _Fail
        out = list(s)
        out[a], out[b] = out[b], out[a]
        return f"transpose({a}, {b - len(s) if self.chance(0.3) else b})", tuple(out)

    def op_permute(self, s):
        rest = list(range(1, len(s)))
        self.r.shuffle(rest)
        dims = [0] + rest
        return f"permute(dims = {dims})", tuple(s[i] for i in dims)

    def op_reshape(self, s):
        # merge the trailing dims: [N, C, H, W] -> [N, C, H*W]
        n, c, h, w = s
        key = None if h[1] is None and w[1] is None else f"{h[1] or h[0]}*{w[1] or w[0]}"
        return "reshape(shape = [0, 0, -1])", (n, c, (h[0] * w[0], key))

    # ---- statements
    def emit(self, line, indent=1):
        self.lines.append("    " * indent + line)

    def chain(self, shape, n_ops):
        """n_ops random stages for a tensor of `shape`: (stage texts, output shape)."""
        stages = []
        for _ in range(n_ops):
            if len(shape) == 4 and self.chance(0.12) and self.blocks:
                got = self.block_stage(shape)
                if got:
                    stages.append(got[0])
                    shape = got[1]
                    continue
            if self.chance(0.08):
                got = self.group_stage(shape)
                stages.append(got[0])
                shape = got[1]
                continue
            for _ in range(4):
                text, out = self.op(shape)
                if all(d[0] >= 1 for d in out) and self._small(out):
                    break
            else:
                text, out = "ReLU", shape
            stages.append(self.label() + text)
            shape = out
        return stages, shape

    def _small(self, s):
        size = 1
        for d in s:
            size *= d[0]
        return size <= 200_000 and all(d[0] <= 4096 for d in s)

    def group_stage(self, shape):
        self.features.add("group")
        saved, self.used = self.used, set()
        items = []
        for _ in range(self.r.randint(1, 3)):
            text, shape = self.op(shape)
            items.append(self.label() + text)
        self.used = saved
        return self.label() + "[ " + "  ".join(items) + " ]", shape

    def block_stage(self, shape):
        kind, name = self.r.choice(self.blocks)
        c = shape[1]
        if c[1] is not None:
            return None
        lab = self.label(force=self.chance(0.5))
        if kind == "res":
            out = self.r.randint(1, 8)
            return f"{lab}{name}({self.int_expr(out)}{', k = 1' if self.chance(0.3) else ''})", \
                (shape[0], (out, None), shape[2], shape[3])
        if kind == "tower":
            unit = self.r.choice(["", ", LeakyReLU(0.1)", ", unit = Sigmoid", ", GELU"])
            return f"{lab}{name}({self.r.randint(0, 3)}{unit})", shape
        if kind == "deep":
            out = self.r.randint(1, 6)
            return f"{lab}{name}({self.r.randint(0, 2)}, {out})", (shape[0], (out, None), shape[2], shape[3])
        return None

    def define_blocks(self):
        for _ in range(self.r.choice([0, 0, 1, 1, 2, 3])):
            kind = self.r.choice(["res", "tower", "deep", "split"])
            name = self.r.choice(BLOCK_NAMES) if self.chance(TRICKY_P) else f"B{kind.capitalize()}{len(self.blocks)}"
            if any(n == name for _, n in self.blocks):
                continue
            self.features.add("block_" + kind)
            doc = (self.doc() + "\n    ") if self.chance(0.3) else ""
            a, b, c2 = (self.r.choice(TRICKY + PLAIN) for _ in range(3))
            if len({a, b, c2}) < 3:
                a, b, c2 = "conv", "bn", "proj"
            if kind == "res":
                text = (f"block {name}(c: int, k: int = 3) (x) -> y {{\n    {doc}"
                        f"body = x -> {a}: Conv2d(c, k, padding = k // 2) -> {b}: BatchNorm2d -> ReLU\n"
                        f"    short = x\n"
                        f"    if x.channels != c {{ short = x -> {c2}: Conv2d(c, 1) }}\n"
                        f"    y = (body + short) -> ReLU\n}}")
            elif kind == "tower":
                text = (f"block {name}(n: int, unit: block = ReLU) {{\n    {doc}"
                        f"for i in range(n) {{ {a}{{i}}: unit }}\n}}")
            elif kind == "deep":
                text = (f"block {name}(depth: int, c: int) {{\n    {doc}"
                        f"{a}: Conv2d(c, 3, padding = 1)\n"
                        f"    if depth > 0 {{ {b}: {name}(depth - 1, c) }}\n}}")
            else:
                text = (f"block {name}() (a) -> (p, q) {{\n    {doc}"
                        f"p = a -> {a}: ReLU\n    q = a -> {b}: Sigmoid\n}}")
            self.blocks.append((kind, name))
            self.lines.append(text)

    def pick(self, pred=lambda s: True):
        names = [n for n, s in self.tensors.items() if pred(s)]
        if not names:
            return None
        # prefer recent tensors
        names = names[-4:] if self.chance(0.7) else names
        return self.r.choice(names)

    def statement(self):
        """One network statement: a chain, a join of two tensors, a loop or a split block."""
        roll = self.r.random()
        if roll < 0.55:
            src = self.pick()
            stages, shape = self.chain(self.tensors[src], self.r.randint(1, 4))
            dst = self.fresh()
            self.emit(f"{dst} = {src}")
            for st in stages:
                self.emit("-> " + st, 2)
            self.tensors[dst] = shape
        elif roll < 0.8:
            self.join()
        elif roll < 0.88:
            self.loop()
        elif roll < 0.94:
            self.param_stmt()
        else:
            split = [n for k, n in self.blocks if k == "split"]
            src = self.pick()
            if split and src:
                p, q = self.fresh(), self.fresh()
                self.emit(f"{p}, {q} = {src} -> {self.label(force=True)}{split[0]}()")
                self.tensors[p] = self.tensors[q] = self.tensors[src]
                self.features.add("multi_output_block")
            else:
                self.join()

    def join(self):
        kind = self.r.choice(["add", "mul", "gate", "concat", "crop", "resize_like", "matmul", "cls", "qkv",
                              "topk", "take", "sub", "div", "scalar", "scalar", "chunk", "window"])
        if kind in ("topk", "take"):
            return self.select_stmt(kind)
        if kind == "chunk":
            return self.chunk_stmt()
        src = self.pick()
        if kind == "matmul":        # a fitting [N, L, E] tensor where there is one: matmul stays common
            src = self.pick(lambda t: len(t) == 3 and t[2][0] <= 64) or src
        s = self.tensors[src]
        dst = self.fresh()
        if kind == "div":
            # a denominator in (0.5, 1.5): sigmoid's, plus a number
            other = self.pick(lambda t: t == s and t is not None) or src
            self.emit(f"{dst} = {src} / (({other} -> Sigmoid) + 0.5)")
            self.tensors[dst] = s
        elif kind == "scalar":
            # tensor-and-number arithmetic (`x * 2`, `1 - x`, `x / 6`) and unary minus
            num = self.r.choice(["2", "3", "6", "0.5", "-1.5", "1e-3", "0"])
            op = self.r.choice("+-*/" if num != "0" else "+-*")
            form = self.r.choice(["{t} {op} {n}", "{n} {op} {t}", "-{t}", "-{t} {op} {n}"])
            if op == "/" and form.startswith("{n}"):        # a number over the tensor: keep it away from 0
                t = f"(({src} -> Sigmoid) + 0.5)"
            else:
                t = src
            self.emit(f"{dst} = " + form.format(t=t, op=op, n=num))
            self.tensors[dst] = s
        elif kind in ("add", "mul", "sub"):
            other = self.pick(lambda t: t == s and t is not None)
            if other is None:
                other = src
            op = {"add": "+", "mul": "*", "sub": "-"}[kind]
            if other == src and self.chance(0.5):
                # the residual pattern: x + (x -> shape-preserving layers)
                stages, out = self.chain(s, 1)
                if out != s:
                    stages, out = ["ReLU"], s
                self.emit(f"{dst} = {src} {op} ({src} -> {' -> '.join(stages)})")
            else:
                self.emit(f"{dst} = {src} {op} {other}")
            self.tensors[dst] = s
        elif kind == "window" and len(s) == 4 and s[1][1] is None:
            # MaxViT: p x p windows, attention within each (grid attention: the windows transposed),
            # and back. p divides H and W at every size: 2 or 3 only for fixed H and W.
            (h, hk), (w, wk), c = s[2], s[3], s[1][0]
            p = self.r.choice([q for q in (1, 2, 3) if q == 1 or (hk is None and wk is None
                                                                  and h % q == 0 and w % q == 0)])
            hd = self.r.choice([d for d in range(1, c + 1) if c % d == 0 and c // d <= 4])
            grid = hk is None and wk is None and h == w and h // p <= 8 and self.chance(0.5)
            swap = " -> transpose(1, 2)" if grid else ""
            inner = (f"window_partition({src}, {p}){swap} -> {self.label()}"
                     f"RelativePositionalMultiHeadAttention({hd}){swap}")
            if hk is None and wk is None and self.chance(0.3):       # the windows themselves
                self.emit(f"{dst} = {inner}")
                self.tensors[dst] = (s[0], ((h // p) * (w // p), None), (p * p, None), (c, None))
            else:
                self.emit(f"{dst} = window_departition({inner}, {p}, like = {src})")
                self.tensors[dst] = s
        elif kind == "gate" and len(s) == 4:
            self.emit(f"{dst} = {src} * ({src} -> GlobalAvgPool2d -> Sigmoid)")
            self.tensors[dst] = s
        elif kind == "concat" and len(s) >= 2:
            d = self.r.randint(1, len(s) - 1)
            rest = lambda t: len(t) == len(s) and all(a == b for i, (a, b) in enumerate(zip(t, s)) if i != d)
            others = [n for n, t in self.tensors.items() if rest(t)]
            parts = [src] + self.r.sample(others, min(len(others), self.r.randint(1, 2)))
            cat = sum(self.tensors[p][d][0] for p in parts)
            keys = [self.tensors[p][d][1] for p in parts]
            key = None if all(k is None for k in keys) else "+".join(str(k or self.tensors[p][d][0])
                                                                         for k, p in zip(keys, parts))
            dim = f", dim = {d}" if d != 1 or self.chance(0.3) else ""
            self.emit(f"{dst} = concat({', '.join(parts)}{dim})")
            self.tensors[dst] = (*s[:d], (cat, key), *s[d + 1:])
        elif kind == "crop" and len(s) >= 3:
            at_offset = self.chance(0.5)     # crop(..., offset =) against a smaller tensor, else center_crop

            def fits(t):
                if len(t) != len(s) or any(a[0] < b[0] for a, b in zip(s[2:], t[2:])):
                    return False
                if at_offset:
                    return any(a[0] > b[0] for a, b in zip(s[2:], t[2:]))
                return all((a[0] - b[0]) % 2 == 0 for a, b in zip(s[2:], t[2:]))
            like = self.pick(fits)
            if like is None:                 # crop against a valid conv of itself
                if len(s) != 4 or s[1][1] is not None:
                    return self.emit(f"{dst} = {src}")
                k = self.r.choice([3, 5] if at_offset else [1, 3, 5])
                like_expr = f"{src} -> Conv2d(2, {k})"
                try:
                    t = (s[0], (2, None), *(self._sp(d, d[0] - k + 1, f"c{k}") if k > 1 else d for d in s[2:]))
                except _Fail:                # a map too small for the kernel
                    return self.emit(f"{dst} = {src}")
                if any(d[0] < 1 for d in t):
                    return self.emit(f"{dst} = {src}")
            else:
                like_expr, t = like, self.tensors[like]
            if at_offset:                    # one offset for every dim, or one per dim
                room = [a[0] - b[0] for a, b in zip(s[2:], t[2:])]
                offs = [self.r.randint(0, r) for r in room]
                off = str(offs[0]) if len(set(offs)) == 1 and self.chance(0.5) else f"[{', '.join(map(str, offs))}]"
                self.emit(f"{dst} = crop({src}, like = {like_expr}" + (f", offset = {off})" if any(offs) else ")"))
                self.features.add("crop_offset")
            else:
                self.emit(f"{dst} = center_crop({src}, like = {like_expr})")
            self.tensors[dst] = (s[0], s[1], *t[2:])
        elif kind == "resize_like" and len(s) == 4:
            like = self.pick(lambda t: len(t) == 4)
            mode = self.r.choice(["", ", mode = 'bilinear'", ", mode = 'bilinear', align_corners = true"])
            self.emit(f"{dst} = resize({src}, like = {like}{mode})")
            self.tensors[dst] = (s[0], s[1], *self.tensors[like][2:])
        elif kind == "matmul" and len(s) == 3 and s[2][0] <= 64:
            self.emit(f"{dst} = matmul({src}, transpose({src}, 1, 2))")
            self.tensors[dst] = (s[0], s[1], s[1])
        elif kind == "matmul" and len(s) == 4 and s[1][0] <= 64:
            # the channels' Gram matrix (style transfer's): [N, C, H W] times [N, H W, C]
            flat = f"({src} -> Flatten(2))"
            self.emit(f"{dst} = matmul({flat}, transpose({flat}, 1, 2))")
            self.tensors[dst] = (s[0], s[1], s[1])
        elif kind == "qkv" and len(s) == 3 and s[2][1] is None:
            # cross-attention: queries from src, keys and values from a tensor with the same E
            kv = self.pick(lambda t: len(t) == 3 and t[2] == s[2])
            e = s[2][0]
            heads = self.r.choice([h for h in range(1, e + 1) if e % h == 0 and h <= 4])
            self.emit(f"{dst} = ({src}, {kv}, {kv}) -> {self.label()}MultiheadAttention({heads})")
            self.tensors[dst] = s
        elif kind == "cls" and len(s) == 3 and s[2][1] is None and s[2][0] <= 64:
            # a ViT-style class token: concat(expand(param, like = x), x, dim = 1)
            name = self.param_name("cls_token")
            self.emit(f"param {name}: f32[1, 1, {s[2][0]}] = normal(0.5)")
            self.emit(f"{dst} = concat(expand({name}, like = {src}, dims = [0]), {src}, dim = 1)")
            key = None if s[1][1] is None else f"1+{s[1][1]}"
            self.tensors[dst] = (s[0], (s[1][0] + 1, key), s[2])
            self.features.add("param")
        else:
            stages, shape = self.chain(s, 1)
            self.emit(f"{dst} = {src} -> {stages[0]}")
            self.tensors[dst] = shape
        self.features.add("join_" + kind)

    def select_stmt(self, kind):
        """topk or take on the input x: its values are random, so no two tie, and torch and
        onnxruntime pick the same indices. The count kept stays static: along a fixed dim, or
        k = 1 (a symbolic dim would make a data-dependent size, which the harness cannot
        evaluate)."""
        s, dst = self.tensors["x"], self.fresh()
        if kind == "topk":
            d = self.r.randrange(len(s))
            k = self.r.randint(1, s[d][0] + 2) if s[d][1] is None else 1
            largest = "" if self.chance(0.6) else ", largest = false"
            dim = f", dim = {d - len(s) if self.chance(0.3) else d}" if d != len(s) - 1 or self.chance(0.3) else ""
            self.emit(f"{dst}, {self.fresh('idx')} = topk(x, k = {k}{dim}{largest})")
            self.tensors[dst] = tuple((min(k, x[0]), None) if i == d else x for i, x in enumerate(s))
        else:
            k = self.r.randint(1, s[0][0] + 1) if s[0][1] is None else 1
            idx, top = self.fresh("idx"), self.fresh()
            score = f"amax(x, dims = {list(range(1, len(s)))}, keepdim = false)" if len(s) > 1 else "x"
            self.emit(f"{top}, {idx} = topk({score}, k = {k})")
            self.emit(f"{dst} = take(x, {idx})")
            self.tensors[dst] = ((min(k, s[0][0]), None),) + tuple(s[1:])
        self.features.add("select_" + kind)

    def chunk_stmt(self):
        """`p, q, ... = chunk(t, k, dim = d)` (or chained): the parts torch.chunk makes, k - 1 of
        ceil(size / k) and the rest (fewer than k where that leaves nothing); along a symbolic dim
        k parts, where the representative size makes k (the checker requires it)."""
        src = self.pick(lambda t: len(t) >= 2)
        s = self.tensors[src]
        d = self.r.randrange(1, len(s))
        rep, key = s[d]
        if key is None:
            k = self.r.randint(1, min(rep, 4) + 1)
            step = -(-rep // k)
            sizes = [(min(step, rep - i), None) for i in range(0, rep, step)]
        else:
            ks = [k for k in (2, 3) if rep - (k - 1) * -(-rep // k) >= 1]
            if not ks:
                return self.join()
            k = self.r.choice(ks)
            step = -(-rep // k)
            sizes = [(step, f"chunk{k}({key})")] * (k - 1) + [(rep - (k - 1) * step, f"chunk{k}last({key})")]
            self.features.add("chunk_sym")
        names = [self.fresh() for _ in sizes]
        dim = f", dim = {d - len(s) if self.chance(0.3) else d}" if d != 1 or self.chance(0.3) else ""
        call = f"chunk({src}, {k}{dim})" if self.chance(0.6) else f"{src} -> {self.label()}chunk({k}{dim})"
        if len(names) == 1:         # a tuple of one part
            call = f"({call})[0]" if "->" in call else f"{call}[0]"
        self.emit(f"{', '.join(names)} = {call}")
        for n, size in zip(names, sizes):
            self.tensors[n] = tuple(size if i == d else x for i, x in enumerate(s))
        self.features.add("chunk")

    def loop(self):
        src = self.pick(lambda t: len(t) == 4 and t[1][1] is None)
        if src is None:
            return self.join()
        c = self.tensors[src][1][0]
        n = self.r.randint(1, 3)
        self.n_tmp += 1
        lab = self.r.choice(["layer", "a", "b", "l", "u"]) + str(self.n_tmp) + \
            self.r.choice(["{i}", "_{i}", "{i}_x", "_{i + 1}", "{i}_{i}"])
        self.emit(f"for i in range({n}) {{")
        body = self.r.choice([f"Conv2d({c}, 3, padding = 1)", "BatchNorm2d", "ReLU",
                              f"[ Conv2d({c}, 1)  ReLU ]", f"Conv2d({c}, 3, padding = 'same')"])
        self.emit(f"{src} = {src} -> {lab}: {body} -> ReLU", 2)
        self.emit("}")
        self.features.add("loop")

    def param_stmt(self):
        src = self.pick(lambda t: len(t) == 4 and t[1][1] is None)
        if src is None:
            return self.join()
        c = self.tensors[src][1][0]
        name = self.param_name("scale")
        init = self.r.choice(["", " = normal(0.5)", " = uniform(2.0)", " = ones()", " = zeros()"])
        shape = self.r.choice([f"[1, {c}, 1, 1]", f"[{c}, 1, 1]"])
        self.emit(f"param {name}: f32{shape}{init}")
        dst = self.fresh()
        self.emit(f"{dst} = {src} {self.r.choice(['+', '*'])} {name}")
        self.tensors[dst] = self.tensors[src]
        self.features.add("param")

    # ---- detection specs (issue 8)
    # A random two-stage detector (detection_transform, 1-3 feature levels, an RPN, proposals,
    # RoI pooling, a small box head, post-processing) and/or standalone box ops. Tracked dims
    # are (rep, key) as elsewhere; a data-dependent dim (known at run time only) is (None, "dyn").
    # Ties in scores make NMS order ambiguous, so every score comes from continuous random data:
    # the transform's zero padding is narrower than the first conv's reach (no window of pure
    # padding, whose outputs would all equal the bias), and NMS only sees boxes decoded from
    # anchors (valid: x2 >= x1), never clipped (possibly empty) ones.
    DYN = (None, "dyn")

    def _det_conv(self, d, k, s, p):
        if d[0] is None:
            return self.DYN
        rep = (d[0] + 2 * p - k) // s + 1
        return d if (s == 1 and 2 * p == k - 1) else self._sp(d, rep, f"c{k}{s}{p}1")

    def _det_anchor_args(self, scale=1):
        sizes = sorted(self.r.sample([4, 6, 8, 12, 16, 24], self.r.randint(1, 2)))
        ratios = self.r.sample([0.5, 1.0, 2.0, 0.25, 1.5], self.r.randint(1, 3))
        return [s * scale for s in sizes], ratios

    def _det_anchors(self, name, feature, image, sizes, ratios):
        args = f"sizes = {sizes}" + (f", aspect_ratios = {ratios}" if ratios != [0.5, 1.0, 2.0] or self.chance(0.5) else "")
        self.emit(f"{name} = anchors({feature}, {image}, {args})")

    def _det_mean_std(self, c):
        if c == 3 and self.chance(0.6):
            return []
        mean = [round(self.r.uniform(-0.5, 0.5), 3) for _ in range(c)]
        std = [round(self.r.uniform(0.3, 2.0), 3) for _ in range(c)]
        return [f"mean = {mean}", f"std = {std}"]

    def _det_threshold(self):
        return self.r.choice([0.3, 0.5, 0.7, round(self.r.uniform(0.1, 0.9), 2)])

    def det_transform(self, x, c, reach):
        """xt, sizes = detection_transform(x, ...); `reach`: the widest zero band the first conv
        tolerates (size_divisible <= reach)."""
        r = self.r
        sd = r.randint(1, reach)
        min_size = 0 if self.chance(0.25) else r.randint(8, 40)
        max_size = r.randint(max(min_size, 8), max(min_size, 8) + 32)
        args = [f"min_size = {min_size}", f"max_size = {max_size}", f"size_divisible = {sd}"] + self._det_mean_std(c)
        self.emit(f"xt, sizes = detection_transform(x, {', '.join(args)})")
        n, _, h, w = x
        if min_size == 0:
            self.features.add("det_transform_no_resize")
            hw = tuple(d if sd == 1 else ((-(-d[0] // sd)) * sd, None if d[1] is None else f"pad{sd}({d[1]})")
                       for d in (h, w))
        elif h[1] is None and w[1] is None:          # static: the checker resizes as torchvision
            scale = min(min_size / min(h[0], w[0]), max_size / max(h[0], w[0]))
            hw = tuple(((-(-int(math.floor(d[0] * scale)) // sd)) * sd, None) for d in (h, w))
        else:
            hw = (self.DYN, self.DYN)
        self.tensors["xt"] = (n, x[1], *hw)
        self.tensors["sizes"] = (n, (4, None))
        self.features.add("det_transform")

    def det_pipeline(self, x, c):
        """A detector on the transformed batch: levels, RPN, proposals, RoIs, head, detections."""
        r = self.r
        L = r.choice([1, 1, 2, 2, 3])
        C = r.choice([8, 12, 16])
        k = r.choice([3, 3, 5, 7])
        p, s = k // 2, r.choice([1, 2, 2, 4])
        self.det_transform(x, c, k - p)
        levels, strides, prev, shape = [], [], "xt", self.tensors["xt"]
        for l in range(L):
            kk, ss, pp = (k, s, p) if l == 0 else (3, 2, 1)
            act = " -> ReLU" if self.chance(0.6) else (" -> SiLU" if self.chance(0.3) else "")
            name = f"f{l + 1}"
            self.emit(f"{name} = {prev} -> Conv2d({C}, {kk}, stride = {ss}, padding = {pp}){act}")
            shape = (shape[0], (C, None), self._det_conv(shape[2], kk, ss, pp), self._det_conv(shape[3], kk, ss, pp))
            self.tensors[name] = shape
            levels.append(name)
            strides.append(s * 2 ** l)
            prev = name
        self.features.add(f"det_levels_{L}")
        # the RPN: RPNHead (one A for every level) or plain conv heads (A per level, maybe softmax2)
        rpnhead = self.chance(0.5)
        softmax2 = not rpnhead and self.chance(0.4)
        per = 2 if softmax2 else 1
        objs, deltas, anchors = [f"o{l + 1}" for l in range(L)], [f"d{l + 1}" for l in range(L)], []
        if rpnhead:
            sizes, ratios = self._det_anchor_args()
            A = len(sizes) * len(ratios)
            depth = ", conv_depth = 2" if self.chance(0.3) else ""
            outs = ", ".join(objs + deltas)
            if self.chance(0.5):
                src = levels[0] if L == 1 else f"({', '.join(levels)})"
                self.emit(f"{outs} = {src} -> rpn: RPNHead({A}{depth})")
            else:
                self.emit(f"{outs} = RPNHead({', '.join(levels)}, num_anchors = {A}{depth})")
            for l in range(L):
                anchors.append(f"a{l + 1}")
                self._det_anchors(anchors[-1], levels[l], "xt", [z * 2 ** l for z in sizes], ratios)
                sh = self.tensors[levels[l]]
                self.tensors[objs[l]] = (sh[0], (A, None), sh[2], sh[3])
            self.features.add("det_rpnhead")
        else:
            for l in range(L):
                sizes, ratios = self._det_anchor_args(2 ** l)
                A = len(sizes) * len(ratios)
                self.emit(f"{objs[l]} = {levels[l]} -> Conv2d({per * A}, 3, padding = 1)")
                self.emit(f"{deltas[l]} = {levels[l]} -> Conv2d({4 * A}, 3, padding = 1)")
                anchors.append(f"a{l + 1}")
                self._det_anchors(anchors[-1], levels[l], "xt", sizes, ratios)
                sh = self.tensors[levels[l]]
                self.tensors[objs[l]] = (sh[0], (per * A, None), sh[2], sh[3])
            self.features.add("det_conv_heads" + ("_softmax2" if softmax2 else ""))
        args = [f"pre_nms_top_n = [{r.randint(5, 200)}, {r.randint(4, 80)}]",
                f"post_nms_top_n = [{r.randint(5, 100)}, {r.randint(3, 40)}]"]
        if self.chance(0.7):
            args.append(f"nms_thresh = {self._det_threshold()}")
        if self.chance(0.3):
            args.append(f"score_thresh = {r.choice([0.1, 0.3, 0.5])}")
        if self.chance(0.3):
            args.append(f"min_size = {r.choice([0.5, 1.0, 3.0])}")
        if self.chance(0.2):          # training-only attributes: parsed and checked, unused in eval
            args += ["fg_iou_thresh = 0.6", "bg_iou_thresh = 0.2", "batch_size_per_image = 64",
                     "positive_fraction = 0.4"]
        if softmax2:
            args.append("objectness = 'softmax2'")
        elif self.chance(0.2):
            args.append("objectness = 'sigmoid'")
        self.emit(f"props, pidx = rpn_proposals({', '.join(objs + deltas + anchors)}, sizes, {', '.join(args)})")
        self.tensors["props"], self.tensors["pidx"] = (self.DYN, (4, None)), (self.DYN,)
        rois, ridx = "props", "pidx"
        if self.chance(0.85):
            extra = "" if self.chance(0.6) else \
                ", fg_iou_thresh = 0.4, bg_iou_thresh = 0.3, batch_size_per_image = 32, positive_fraction = 0.5"
            self.emit(f"rois, ridx = sample_rois(props, pidx{extra})")
            rois, ridx = "rois", "ridx"
            self.tensors[rois], self.tensors[ridx] = self.tensors["props"], self.tensors["pidx"]
        # RoI pooling, from one level or the level mapper
        kind = r.choice(["roi_align", "roi_pool", "multiscale"])
        txt, osz = self._pair(1, 4)
        l = r.randrange(L)
        scale = 1 / strides[l]
        if kind == "roi_align":
            extra = f", sampling_ratio = {r.choice([-1, 0, 1, 2])}" if self.chance(0.7) else ""
            extra += ", aligned = true" if self.chance(0.4) else ""
            self.emit(f"pooled = roi_align({levels[l]}, {rois}, {ridx}, output_size = {txt}, spatial_scale = {scale}{extra})")
        elif kind == "roi_pool":
            self.emit(f"pooled = roi_pool({levels[l]}, {rois}, {ridx}, output_size = {txt}, spatial_scale = {scale})")
        else:
            extra = f", sampling_ratio = {r.choice([1, 2, -1])}" if self.chance(0.5) else ""
            extra += f", canonical_scale = {r.choice([8, 16, 32, 224])}, canonical_level = {r.choice([2, 3, 4])}" \
                if self.chance(0.7) else ""
            self.emit(f"pooled = multiscale_roi_align({', '.join(levels)}, {rois}, {ridx}, sizes, "
                      f"output_size = {txt}{extra})")
        self.features.add("det_" + kind)
        self.tensors["pooled"] = (self.DYN, (C, None), (osz[0], None), (osz[1], None))
        K, hid = r.randint(2, 5), r.choice([16, 32])
        self.emit(f"hh = pooled -> Flatten -> fc: Linear({hid}) -> ReLU")
        self.emit(f"cls = hh -> cls_score: Linear({K})")
        self.emit(f"reg = hh -> bbox_pred: Linear({4 * K})")
        self.tensors["cls"] = (self.DYN, (K, None))
        args = []
        if self.chance(0.6):
            args.append(f"score_thresh = {r.choice([0.0, 0.05, 0.1, 0.2])}")
        if self.chance(0.6):
            args.append(f"nms_thresh = {self._det_threshold()}")
        if self.chance(0.8):
            args.append(f"detections_per_img = {r.randint(1, 30)}")
        if self.chance(0.3):
            args.append(f"weights = {r.choice(['[1.0, 1.0, 1.0, 1.0]', '[10.0, 10.0, 5.0, 5.0]', '[2.0, 3.0, 1.5, 0.5]'])}")
        if self.chance(0.2):
            args.append(f"min_size = {r.choice([0.0, 0.5, 2.0])}")
        self.emit(f"db, ds, dl, di = detect_postprocess(cls, reg, {rois}, {ridx}, sizes"
                  + "".join(", " + a for a in args) + ")")
        self.tensors["db"] = (self.DYN, (4, None))
        for t in ("ds", "dl", "di"):
            self.tensors[t] = (self.DYN,)
        outs = ["db", "ds", "dl", "di"]
        if self.chance(0.8):
            self.emit("dbo = rescale_boxes(db, di, sizes)")
            self.tensors["dbo"] = self.tensors["db"]
            outs[0] = "dbo"
        if self.chance(0.3):
            outs.append(self.r.choice(["props", "pidx", "sizes", "xt", "o1", f"{rois}"]))
        return outs

    def det_box_ops(self, x, c):
        """Standalone box ops on boxes decoded from anchors by conv outputs of x (random normal:
        continuous scores, so NMS order is unambiguous), as tests/test_ops_parity.py's DET_CASES."""
        r = self.r
        k, s = r.choice([1, 3, 5]), r.choice([1, 2, 3])
        sizes, ratios = self._det_anchor_args()
        A = len(sizes) * len(ratios)
        n, _, h, w = x
        while True:     # at most ~300 boxes: among thousands of random scores two lie within rounding
            hf, wf = (self._det_conv(d, k, s, k // 2) for d in (h, w))
            if hf[0] * wf[0] * A <= 300 or s >= 8:
                break
            s += 1
        conv = f"{k}, stride = {s}, padding = {k // 2}"
        rows = (hf[0] * wf[0] * A, None if hf[1] is None and wf[1] is None else "rows")
        self.emit(f"fb = x -> Conv2d({4 * A}, {conv})")
        self._det_anchors("ab", "fb", "x", sizes, ratios)
        self.emit("db0 = select(fb, 0, 0) -> permute(dims = [1, 2, 0]) -> reshape(shape = [-1, 4])")
        args = []
        if self.chance(0.4):
            args.append(f"weights = {r.choice(['[10.0, 10.0, 5.0, 5.0]', '[2.0, 3.0, 1.5, 0.5]'])}")
        if self.chance(0.3):
            args.append(f"clamp = {r.choice([1.0, 2.5])}")
        self.emit("bx = box_decode(db0, ab" + "".join(", " + a for a in args) + ")")
        self.emit(f"sc = x -> Conv2d({A}, {conv}) -> select(0, 0) -> permute(dims = [1, 2, 0]) -> Flatten(0, 2)")
        self.tensors["bx"], self.tensors["sc"] = (rows, (4, None)), (rows,)
        outs = []
        if self.chance(0.2):
            outs.append("bx")
        if self.chance(0.5):
            t = f", iou_threshold = {self._det_threshold()}" if self.chance(0.7) else ""
            self.emit(f"kn = nms(bx, sc{t})")
            self.tensors["kn"] = (self.DYN,)
            outs.append(self.r.choice(["kn", "kn_boxes", "kn_scores"]))
            self.features.add("det_nms")
        if self.chance(0.5):
            g = r.randint(2, 4)
            self.emit(f"gg = x -> Conv2d({A * g}, {conv}) -> select(0, 0) -> permute(dims = [1, 2, 0]) "
                      f"-> reshape(shape = [-1, {g}])")
            self.emit("_, gq = topk(gg, k = 1, dim = 1)")
            self.emit("grp = select(gq, 1, 0)")
            t = f", iou_threshold = {self._det_threshold()}" if self.chance(0.7) else ""
            self.emit(f"kg = batched_nms(bx, sc, grp{t})")
            self.tensors["kg"] = (self.DYN,)
            outs.append(self.r.choice(["kg", "kg_boxes"]))
            self.features.add("det_batched_nms")
        if self.chance(0.4):
            self.emit(f"ks = remove_small_boxes(bx, min_size = {r.choice([0.001, 1.0, 4.0, 10.0])})")
            self.tensors["ks"] = (self.DYN,)
            outs.append("ks")
            self.features.add("det_remove_small_boxes")
        if self.chance(0.4):
            w = f", weights = {r.choice(['[10.0, 10.0, 5.0, 5.0]', '[0.5, 2.0, 1.0, 3.0]'])}" if self.chance(0.5) else ""
            self.emit(f"en = box_encode(bx, ab{w})")
            self.tensors["en"] = (rows, (4, None))
            outs.append("en")
            self.features.add("det_box_encode")
        need_index = self.chance(0.7)
        if need_index:
            self.emit(f"nb = x -> Conv2d({A}, {conv}) -> permute(dims = [2, 3, 1, 0]) -> Flatten(0, 2)")
            self.emit("_, bq = topk(nb, k = 1, dim = 1)")
            self.emit("bib = select(bq, 1, 0)")
            if "sizes" not in self.tensors:
                self.emit(f"_, sizes = detection_transform(x, min_size = {r.randint(8, 32)}, max_size = 48"
                          + "".join(", " + a for a in self._det_mean_std(c)) + ")")
                self.tensors["sizes"] = (n, (4, None))
            clipped = self.chance(0.6)
            if clipped:
                self.emit("cl = clip_boxes(bx, bib, sizes)")
                self.tensors["cl"] = self.tensors["bx"]
                outs.append("cl")
                self.features.add("det_clip_boxes")
            if self.chance(0.4):
                self.emit("rs = rescale_boxes(bx, bib, sizes)")
                self.tensors["rs"] = self.tensors["bx"]
                outs.append("rs")
                self.features.add("det_rescale_boxes")
            if self.chance(0.5):
                # huge unclipped boxes with an adaptive sampling ratio would take minutes
                src = r.choice(["x", "fb"])
                scale = 1.0 if src == "x" else r.choice([0.5, 1 / s])
                txt, osz = self._pair(1, 3)
                if self.chance(0.5):
                    sr = r.choice([-1, 0, 2]) if clipped else r.choice([1, 2])
                    al = ", aligned = true" if self.chance(0.4) else ""
                    self.emit(f"rb = roi_align({src}, {'cl' if clipped else 'bx'}, bib, output_size = {txt}, "
                              f"spatial_scale = {scale}, sampling_ratio = {sr}{al})")
                    self.features.add("det_box_roi_align")
                else:
                    self.emit(f"rb = roi_pool({src}, {'cl' if clipped else 'bx'}, bib, output_size = {txt}, "
                              f"spatial_scale = {scale})")
                    self.features.add("det_box_roi_pool")
                ch = c if src == "x" else 4 * A
                self.tensors["rb"] = (rows, (ch, None), (osz[0], None), (osz[1], None))
                outs.append("rb")
        for o in outs:                  # kept indices used: the kept boxes or scores
            if o.endswith(("_boxes", "_scores")):
                keep, what = o.split("_")
                self.emit(f"{o} = take({'bx' if what == 'boxes' else 'sc'}, {keep})")
                self.tensors[o] = (self.DYN,) + self.tensors["bx" if what == "boxes" else "sc"][1:]
        return outs or ["bx"]

    def det_spec(self) -> Spec:
        r = self.r
        self.emit("network Det {", 0)
        c = r.choice([3, 3, 3, 1, 2])
        sym = self.chance(0.75)
        h, w = r.randint(12, 40), r.randint(12, 40)
        if sym:
            self.symbols.update(H=h, W=w)
            hd, wd = ("H", (h, "H")), ("W", (w, "W"))
        else:
            hd, wd = (str(h), (h, None)), (str(w), (w, None))
        n = ("N", (2, "N")) if self.chance(0.8) else ("2", (2, None))
        if n[0] == "N":
            self.symbols["N"] = 2
        self.emit(f"input x: f32[{n[0]}, {c}, {hd[0]}, {wd[0]}]")
        x = self.tensors["x"] = (n[1], (c, None), hd[1], wd[1])
        self.features.update(["det", "input_det_" + ("sym" if sym else "fixed")])
        outs = []
        pipeline = self.chance(0.7)
        if pipeline:
            self.features.add("det_pipeline")
            outs += self.det_pipeline(x, c)
        if not pipeline or self.chance(0.4):
            self.features.add("det_box_ops")
            outs += self.det_box_ops(x, c)
        shapes = {}
        for i, src in enumerate(dict.fromkeys(outs)):
            name = "y" if i == 0 else f"out{i}"
            shapes[name] = tuple(rep for rep, _ in self.tensors[src])
            self.emit(f"output {name} = {src}")
        self.emit("}", 0)
        return Spec("\n".join(self.lines) + "\n", dict(self.symbols), tuple(sorted(self.features)), shapes)

    # ---- a whole spec
    def inputs(self):
        kind = self.r.choice(["img", "img", "img", "img", "seq", "tokens", "vec"])
        sym = self.chance(0.75)
        n = ("N", (2, "N")) if self.chance(0.8) else ("2", (2, None))
        decls = []
        if kind == "img":
            c = self.r.randint(1, 6)
            h, w = self.r.randint(6, 28), self.r.randint(6, 28)
            if sym:
                self.symbols.update(H=h, W=w)
                hd, wd = ("H", (h, "H")), ("W", (w, "W"))
            else:
                hd, wd = (str(h), (h, None)), (str(w), (w, None))
            decls.append(("x", f"[{n[0]}, {self.int_expr(c)}, {hd[0]}, {wd[0]}]", (n[1], (c, None), hd[1], wd[1])))
            if self.chance(0.25):
                c2 = self.r.randint(1, 4)
                decls.append(("z", f"[{n[0]}, {c2}, {hd[0]}, {wd[0]}]", (n[1], (c2, None), hd[1], wd[1])))
        elif kind in ("seq", "tokens"):
            c, l = self.r.randint(2, 8), self.r.randint(3, 20)
            if sym:
                self.symbols["L"] = l
            ld = ("L", (l, "L")) if sym else (str(l), (l, None))
            if kind == "seq":
                decls.append(("x", f"[{n[0]}, {c}, {ld[0]}]", (n[1], (c, None), ld[1])))
            else:
                decls.append(("x", f"[{n[0]}, {ld[0]}, {c}]", (n[1], ld[1], (c, None))))
        else:
            f = self.r.randint(2, 12)
            decls.append(("x", f"[{n[0]}, {f}]", (n[1], (f, None))))
        if n[0] == "N":
            self.symbols["N"] = 2
        for name, decl, shape in decls:
            self.emit(f"input {name}: f32{decl}")
            self.tensors[name] = shape
            self.features.add("input_" + kind + ("_sym" if sym else "_fixed"))

    def spec(self) -> Spec:
        self.define_blocks()
        if self.chance(0.5):
            self.params = {"c": self.r.choice([2, 4, 8])}
        head = "network " + self.r.choice(["Net", "Fuzz", "torch", "F", "nn", "super", "range", "Module"]
                                          if self.chance(TRICKY_P / 2) else ["Net"])
        if self.params:
            head += "(" + ", ".join(f"{k}: int = {v}" for k, v in self.params.items()) + ")"
        self.emit(head + " {", 0)
        if self.chance(0.3):
            self.emit(self.doc())
            self.features.add("docstring")
        self.used = set()
        self.inputs()
        for _ in range(self.r.randint(1, 6)):
            self.statement()
        outs = list(self.tensors)[-1:]
        extra = [n for n in self.tensors if n not in outs]
        if extra and self.chance(0.3):
            outs += self.r.sample(extra, min(len(extra), self.r.randint(1, 2)))
            self.features.add("multi_output")
        taken, shapes = set(), {}
        for i, src in enumerate(outs):
            name = "y" if i == 0 else f"out{i}"
            if self.chance(0.1) and src not in ("x", "z"):
                name = self.r.choice(["training", "forward", "keys", "out_" + src])
            if name in taken:
                name = f"out{i}"
            taken.add(name)
            shapes[name] = tuple(rep for rep, _ in self.tensors[src])
            self.emit(f"output {name} = {src}")
        self.emit("}", 0)
        return Spec("\n".join(self.lines) + "\n", dict(self.symbols), tuple(sorted(self.features)), shapes)


DET_P = 0.12       # share of seeds that write a detector (drawn apart, so the others' specs stay as they were)


def generate(seed: int) -> Spec:
    """The spec for one seed (deterministic)."""
    if random.Random(f"det-{seed}").random() < DET_P:
        return Gen(random.Random(seed)).det_spec()
    return Gen(random.Random(seed)).spec()


if __name__ == "__main__":        # print a few specs: python tests/fuzz/spec_gen.py [count] [seed]
    import sys
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    start = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    for i in range(start, start + count):
        print(f"# ---- seed {i}")
        print(generate(i).text)
