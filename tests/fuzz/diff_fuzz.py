"""Long-running differential fuzzing: random specs through the checker, the torch target and
the ONNX target, for N minutes.

    python tests/fuzz/diff_fuzz.py --minutes 30 --seed 1 [--out DIR] [--jobs N]

Each spec (tests/fuzz/spec_gen.py) is classified as
  rejected  the checker raised a NetDSLError (fine: a located error);
  skipped   accepted, but too big to run quickly (params / MACs / activations over the caps),
            or no input size satisfying its constraints was found among those tried;
  agreed    accepted, and every check below passed;
  failed    anything else, with a category (e.g. `values`, `torch-run:RuntimeError`, `timeout`).
Checks on an accepted spec: the torch source compiles, imports standalone and loads the live
module's state_dict strictly; state_dict keys equal `state_layout()`; the ONNX model passes
`onnx.checker` (full_check) and loads in onnxruntime; at one or two input sizes the checker
accepts, torch and onnxruntime give the shapes shape inference predicts (symbolic and
concrete) and outputs within 1e-4 of max(1, |output|) (forgiven: ill-conditioned networks, see
`_close_or_float_noise`, and rows ranked by scores that tie within rounding, see `_tied_reorder`).
A NetDSLError raised after the checker accepted the spec counts as a failure
(`late-error:<stage>`): check must catch it.
For a sample of specs the CLI runs in-process too (`check`, `compile` to both targets, `run`):
its exit status must be 0 for accepted specs, 1 for rejected ones, never 3. Every spec also goes
through the editor tools (`_check_tools`): the language server's analysis agrees with the
checker, `netdsl fmt` is idempotent and keeps the meaning, and the graph view holds every layer.

Specs run in worker processes with a per-spec timeout (a hang is a `timeout` failure). Failing
specs are minimised afterwards (delta debugging over lines while the same category reproduces)
and written to --out with the first failures of each category; a table of counts ends the run.
Not collected by pytest (the file name does not match test_*.py); tests/test_diff_fuzz_smoke.py
runs a few specs in the default suite.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import spec_gen  # noqa: E402

TOL = 1e-4
MAX_PARAMS = 2_000_000
MAX_MACS = 50_000_000           # per sample, at the run size
MAX_ACTIVATIONS = 4_000_000     # elements of the largest layer output, whole batch


# ==== one spec, in a worker ================================================================

class Failure(Exception):
    def __init__(self, category: str, detail: str):
        super().__init__(f"{category}: {detail}")
        self.category, self.detail = category, detail


class Skip(Exception):
    pass


def signature(detail: str) -> str:
    """A failure's message with names and numbers blanked, to group failures by cause."""
    import re
    lines = [l for l in detail.strip().splitlines() if l.strip()]
    last = lines[0] if lines else ""          # a rendered NetDSLError or a one-line message
    if "Traceback" in detail:                 # the exception line, however long its message
        last = next((l for l in reversed(lines) if re.match(r"[A-Za-z_][\w.]*: ", l)), lines[-1])
    last = re.sub(r"(?<!\w)'[^']*'(?!\w)|\"[^\"]*\"", "'?'", last)
    last = re.sub(r"[0-9]+", "0", last)
    return last[:80]


def _short_tb(limit=4000) -> str:
    return traceback.format_exc()[-limit:]


def _stage(category, fn, *args, **kw):
    """Run one step; a NetDSLError after acceptance is `late-error`, anything else a failure."""
    from netdsl.errors import NetDSLError
    try:
        return fn(*args, **kw)
    except (Failure, Skip):
        raise
    except NetDSLError as e:
        raise Failure(f"late-error:{category}", e.render()[:2000]) from None
    except Exception as e:  # noqa: BLE001 - the point of the exercise
        raise Failure(f"{category}:{type(e).__name__}", _short_tb()) from None


def check_spec(text: str, symbols: dict, seed: int, cli: bool = False, guards: bool = True) -> dict:
    """Classify one spec. Returns {"status", "category", "detail", "sizes"}."""
    import netdsl
    from netdsl.errors import NetDSLError
    out = {"status": "agreed", "category": "", "detail": "", "sizes": []}
    try:
        try:
            net = netdsl.loads(text, name="fuzz.net")
            net.graph
            summary = net.summary()
            net.summary_text()
        except NetDSLError as e:
            e.render()
            out["status"] = "rejected"
            out["detail"] = e.message[:300]
        except Exception as e:  # noqa: BLE001
            raise Failure(f"frontend:{type(e).__name__}", _short_tb()) from None
        else:
            _check_accepted(net, summary, symbols, seed, out, guards)
        if cli:
            _check_cli(text, out)
        _check_tools(text, out, None if out["status"] == "rejected" else net)
    except Failure as f:
        out.update(status="failed", category=f.category, detail=f.detail)
    except Skip as s:
        out.update(status="skipped", detail=str(s))
    return out


def _sizes(net, symbols: dict, seed: int) -> list:
    """Up to two sets of input shapes that the checker accepts: the generator's own sizes
    first, then a perturbation. Each is (shapes by input, concrete summary)."""
    from netdsl.errors import NetDSLError
    from netdsl.ir import dims as D
    rng = random.Random(seed)
    names = {D.fmt(d) for v in net.graph.inputs for d in v.shape if not D.is_static(d)}

    def shapes_for(env):
        return {v.name: tuple(int(d) if D.is_static(d) else env[D.fmt(d)] for d in v.shape)
                for v in net.graph.inputs}

    def candidate(i):
        env = {}
        for n in sorted(names):
            base = symbols.get(n, 2 if n == "N" else 8)
            if i == 0:
                env[n] = base
            elif n == "N":
                env[n] = rng.choice([1, 3])
            else:
                env[n] = max(1, base + rng.choice([1, 2, 3, 4, 5, 8, -1, -2, 16]))
        return env

    found, seen = [], set()
    for i in range(12 if names else 1):
        env = candidate(i)
        key = tuple(sorted(env.items()))
        if key in seen:
            continue
        seen.add(key)
        shapes = shapes_for(env)
        try:
            concrete = net.summary(inputs=shapes)
        except NetDSLError:
            continue
        found.append((env, shapes, concrete))
        if len(found) == 2 or (found and i > 0 and len(found) == 1 and len(seen) > 8):
            break
    return found


def _rejected_size(net, symbols: dict, seed: int):
    """(shapes, message) for input sizes that the checker rejects, if a few tries find one."""
    from netdsl.errors import NetDSLError
    from netdsl.ir import dims as D
    rng = random.Random(seed + 7)
    names = sorted({D.fmt(d) for v in net.graph.inputs for d in v.shape if not D.is_static(d)} - {"N"})
    if not names:
        return None
    for _ in range(8):
        env = {"N": 2}
        for n in names:
            base = symbols.get(n, 8)
            env[n] = max(1, rng.choice([1, 2, 3, 5, base - 1, base + 1, base + 2, base - 3]))
        shapes = {v.name: tuple(int(d) if D.is_static(d) else env[D.fmt(d)] for d in v.shape)
                  for v in net.graph.inputs}
        try:
            net.summary(inputs=shapes)
        except NetDSLError as e:
            return shapes, e.message
    return None


def _check_guards(net, model, symbols, seed):
    """The torch module refuses, with a ValueError, input sizes that the checker rejects."""
    import numpy as np
    import torch
    found = _stage("sizes", _rejected_size, net, symbols, seed)
    if found is None:
        return
    shapes, message = found
    xs = [torch.from_numpy(np.zeros(shapes[v.name], dtype=np.float32)) for v in net.graph.inputs]
    try:
        with torch.no_grad():
            model(*xs)
    except ValueError:
        return
    except Exception as e:  # noqa: BLE001
        raise Failure(f"guard:torch-raises-{type(e).__name__}",
                      f"at {shapes}, which the checker rejects ({message}), torch raised "
                      f"{type(e).__name__} rather than ValueError: {str(e)[:500]}") from None
    raise Failure("guard:torch-runs-rejected-size",
                  f"the torch module runs at {shapes}, which the checker rejects: {message}")


def _randomised_weights(net, seed: int) -> dict:
    """init_weights, with every constant tensor (norm scales, biases set to zero, BatchNorm
    statistics, zeros()/ones() params) replaced by U(0.5, 1.5), so that they test something."""
    import numpy as np
    w = net.init_weights(seed)
    rng = np.random.default_rng(seed + 1)
    for k, v in w.items():
        if v.dtype.kind == "f" and v.size and float(v.min()) == float(v.max()):
            w[k] = rng.uniform(0.5, 1.5, v.shape).astype(v.dtype)
    for node in net.graph.nodes:
        if node.op == "RPNHead":    # torchvision's N(0, 0.01) weights: objectness so nearly constant
            for name in node.params:    # that scores tie within rounding, and NMS order is moot;
                if name.endswith("weight"):     # N(0, 1 / fan_in) keeps every layer's scale, so the
                    v = w[f"{node.path}.{name}"]    # logits neither tie nor saturate the sigmoid
                    w[f"{node.path}.{name}"] = v * np.float32(100 / np.sqrt(np.prod(v.shape[1:])))
    return w


def _standalone(source: str, live):
    """Import the generated source as its own module, build its class, load the live weights."""
    import importlib.util
    import torch
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "generated_net.py"
        path.write_text(source, encoding="utf-8")
        spec = importlib.util.spec_from_file_location("generated_net", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    classes = [v for v in vars(mod).values() if isinstance(v, type) and issubclass(v, torch.nn.Module)
               and v.__module__ == "generated_net"]
    cls = next((c for c in classes if c.__name__ == type(live).__name__), classes[-1] if classes else None)
    if cls is None:
        raise RuntimeError("no nn.Module class in the generated source")
    model = cls()
    model.load_state_dict(live.state_dict(), strict=True)
    return model.eval()


def _close_or_float_noise(model, xs, k, ref, got, what, out=None):
    """`_close`, except that a difference is forgiven when torch's own float32 result is as far
    from float64 as onnxruntime's: an ill-conditioned network (a LayerNorm of nearly constant
    rows, say) amplifies rounding, and that is no disagreement between the backends."""
    import copy
    import numpy as np
    import torch
    try:
        _close(ref, got, what)
    except Failure as f:
        if f.category != "values":
            raise
        exact64 = copy.deepcopy(model).double()
        degenerate = _degenerate_norms(exact64)
        try:
            with torch.no_grad():
                outs = exact64(*[torch.from_numpy(x).double() for x in xs])
        except Exception:  # noqa: BLE001 - a module that runs in float32 only: no verdict
            raise f from None
        exact = (outs if isinstance(outs, tuple) else (outs,))[k].numpy()
        if exact.shape != ref.shape:            # float64 changed a data-dependent size: no verdict
            raise f from None
        fin = np.isfinite(exact) & np.isfinite(ref) & np.isfinite(got)
        noise = float(np.abs(ref - exact)[fin].max()) if fin.any() else 0.0
        err = float(np.abs(got - exact)[fin].max()) if fin.any() else 0.0
        scale = max(1.0, float(np.abs(exact[fin]).max())) if fin.any() else 1.0
        if err > max(TOL * scale, 10 * noise):
            if degenerate:
                # a norm whose input rows are constant normalises rounding noise (its variance is
                # below eps): float32 results then depend on summation order, not on correctness
                if out is not None:
                    out["detail"] = f"forgiven (ill-conditioned: {degenerate[0]}): {f.detail}"
                return
            raise Failure("values", f"{f.detail}; against float64 torch: onnxruntime {err:.3g}, "
                                    f"float32 torch {noise:.3g}") from None


def _degenerate_norms(model) -> list:
    """Hooks on `model`'s normalisation layers; after a forward pass the list names those whose
    input had a normalised group with variance under the layer's eps (in float64)."""
    import torch
    found = []
    kinds = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.modules.batchnorm._NormBase)

    def hook(name):
        def check(mod, args):
            x = args[0].detach()
            if isinstance(mod, torch.nn.LayerNorm):
                dims = tuple(range(x.dim() - len(mod.normalized_shape), x.dim()))
            elif isinstance(mod, torch.nn.GroupNorm):
                x = x.reshape(x.shape[0], mod.num_groups, -1)
                dims = (2,)
            else:
                dims = tuple(d for d in range(x.dim()) if d != 1) if mod.training or \
                    getattr(mod, "running_var", None) is None else ()
            if dims and x.numel() and float(x.var(dim=dims, unbiased=False).min()) < mod.eps:
                found.append(f"{type(mod).__name__} {name} normalises constant rows")
        return check

    for name, mod in model.named_modules():
        if isinstance(mod, kinds):
            mod.register_forward_pre_hook(hook(name))
    return found


# ops whose output rows come by decreasing score: where the score is (an input or an output)
RANKED = {"nms": ("input", 1), "batched_nms": ("input", 1), "detect_postprocess": ("output", 1)}


def _ranking_node(graph, v):
    """The op that ranks `v`'s rows by score (an NMS's kept boxes, the detections): the one whose
    first output is sized by the data-dependent dim that sizes `v`'s rows, or None."""
    from netdsl.ir import dims as D
    if not v.shape or not D.is_dynamic(v.shape[0]):
        return None
    for n in graph.nodes:
        if n.op in RANKED and D.fmt(n.outputs[0].shape[0]) == D.fmt(v.shape[0]):
            return n
    return None


def _ranked_scores(net, node, weights, proto, xs):
    """(torch's, onnxruntime's) scores of `node`'s output rows, in each backend's own order, and
    how far the backends' scores are apart (per candidate box where the op takes the scores in,
    else per rank). Reruns both backends with the scores (and an NMS's kept indices) as outputs."""
    import copy
    import dataclasses
    import numpy as np
    import onnxruntime as ort
    import torch
    g = net.graph
    where, i = RANKED[node.op]
    extra = [node.outputs[0], node.inputs[i]] if where == "input" else [node.outputs[i]]
    taken = {name for name, _ in g.outputs} | {v.name for v in g.inputs} | {
        v.name for n in g.nodes for v in n.outputs}
    names = []
    for j in range(len(extra)):
        name = f"fuzz_rank_{j}"
        while name in taken:
            name += "_"
        names.append(name)
    variant = copy.copy(net)
    variant._graph = dataclasses.replace(g, outputs=list(g.outputs) + list(zip(names, extra)))
    model = variant.to_torch(weights).eval()
    with torch.no_grad():
        t = [r.numpy() for r in model(*[torch.from_numpy(x) for x in xs])][len(g.outputs):]
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    sess = ort.InferenceSession(variant.to_onnx(weights, opset=opset).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    o = sess.run(None, dict(zip([v.name for v in g.inputs], xs)))[len(g.outputs):]
    if where == "output":
        st, so = t[0], o[0]
        noise = float(np.abs(st - so).max()) if st.shape == so.shape and st.size else 0.0
    else:
        (kt, s_t), (ko, s_o) = t, o
        st, so = s_t[kt], s_o[ko]
        noise = float(np.abs(s_t - s_o).max()) if s_t.size else 0.0
        if st.shape == so.shape and st.size:
            noise = max(noise, float(np.abs(st - so).max()))
    return st, so, noise


def _tied_reorder(net, weights, proto, xs, k, ref, got):
    """Why output `k`'s torch (`ref`) and onnxruntime (`got`) values differ only in the order of
    rows that an op ranks by scores tied within the backends' rounding, or None. Each backend
    sorts by its own float32 scores (torch's sort is unstable besides), so two boxes whose
    scores are that close may come in either order (docs/language.md, "Object detection"):
    rows differ only inside runs of ranks whose scores, in both backends, lie within twice the
    backends' largest score difference, and each such run holds the same rows in both."""
    import numpy as np
    name, v = net.graph.outputs[k]
    node = _ranking_node(net.graph, v)
    if node is None or ref.shape != got.shape or not ref.size:
        return None
    st, so, noise = _ranked_scores(net, node, weights, proto, xs)
    if st.shape != so.shape or st.shape != ref.shape[:1]:
        return None
    if not noise <= TOL * max(1.0, float(np.abs(st).max())):     # the scores themselves differ
        return None
    eps = 2 * noise
    r, g = ref.reshape(len(ref), -1), got.reshape(len(got), -1)
    if ref.dtype.kind in "iub":
        def same(a, b):
            return bool((a == b).all())
    else:
        tol = TOL * max(1.0, float(np.abs(ref).max()))

        def same(a, b):
            return bool((np.abs(a - b) <= tol).all())
    bad = [p for p in range(len(r)) if not same(r[p], g[p])]
    runs, p = [], 0
    while p < len(st):                      # runs of ranks whose scores tie, in both backends
        q = p + 1
        while q < len(st) and np.ptp(st[p:q + 1]) <= eps and np.ptp(so[p:q + 1]) <= eps:
            q += 1
        runs.append((p, q))
        p = q
    shown = []
    for p, q in runs:
        if not any(p <= b < q for b in bad):
            continue
        if q - p < 2:
            return None
        left = list(range(p, q))
        for a in range(p, q):               # the run's rows are the same rows, reordered
            match = next((b for b in left if same(r[a], g[b])), None)
            if match is None:
                return None
            left.remove(match)
        shown.append(f"ranks {p}..{q - 1}: torch scores {st[p:q].tolist()}, onnxruntime {so[p:q].tolist()}")
    if not shown:
        return None
    return f"{node.op} {node.path} orders scores tied within rounding ({noise:.3g}) differently: " + \
        "; ".join(shown[:3])


def _close(ref, got, what):
    import numpy as np
    if ref.shape != got.shape:
        raise Failure("shape:torch-vs-onnx", f"{what}: torch {ref.shape}, onnxruntime {got.shape}")
    fin = np.isfinite(ref)
    if not ((np.isfinite(got) == fin).all() and (ref[~fin] == got[~fin]).all()):
        if not (np.isnan(ref) & np.isnan(got) | (ref == got)).all():
            raise Failure("values:nonfinite", f"{what}: infinities/NaNs differ")
    ref, got = ref[fin], got[fin]
    if not ref.size:
        return
    err = float(np.abs(ref - got).max())
    scale = max(1.0, float(np.abs(ref).max()))
    if not err <= TOL * scale:
        raise Failure("values", f"{what}: max |torch - onnxruntime| {err:.3g}, output scale {scale:.3g}")


def _dynamic_sizes(outs, refs, gots, env, shapes) -> dict:
    """The values the data-dependent dims (`Dyn`, e.g. the boxes NMS keeps) take in this run, from
    the outputs whose dim is one alone: torch and onnxruntime must agree on each, one Dyn has one
    value in every output, within its bound where it has one."""
    from netdsl.ir import dims as D
    dyn = {}
    for (name, v), ref, got in zip(outs, refs, gots):
        what = f"output {name} at {shapes}"
        if ref.ndim != len(v.shape) or got.ndim != len(v.shape):
            raise Failure("shape:rank", f"{what}: torch rank {ref.ndim}, onnxruntime {got.ndim}, inferred "
                                        f"{len(v.shape)}")
        for i, d in enumerate(v.shape):
            if not D.is_dynamic(d):
                continue
            if ref.shape[i] != got.shape[i]:
                raise Failure("shape:torch-vs-onnx", f"{what}: data-dependent dim {i} ({D.fmt(d)}): torch "
                                                     f"{tuple(ref.shape)}, onnxruntime {tuple(got.shape)}")
            atoms = D.dyn_atoms(d)
            if len(atoms) != 1 or D.fmt(d) != atoms[0].name:      # not the size alone: 32 * Hb, (Hb + 1) // 2
                continue
            atom = atoms[0]
            n = int(ref.shape[i])
            if dyn.setdefault(atom.name, n) != n:
                raise Failure("shape:dynamic-inconsistent", f"{what}: {atom.name} is {n} here, "
                                                            f"{dyn[atom.name]} in another output")
    for (name, v) in outs:
        for d in v.shape:
            for atom in D.dyn_atoms(d):
                if atom.name in dyn and atom.bound is not None:
                    try:
                        bound = int(D.evaluate(atom.bound, {**env, **dyn}))
                    except KeyError:            # a bound over another data-dependent size not seen
                        continue
                    if not 0 <= dyn[atom.name] <= bound:
                        raise Failure("shape:dynamic-bound", f"output {name} at {shapes}: {atom.name} = "
                                                             f"{dyn[atom.name]}, its bound {D.fmt(atom.bound)} "
                                                             f"is {bound}")
    return dyn


def _check_shape(v, env, concrete, ref, got, what):
    """Torch's and onnxruntime's shapes against shape inference at these sizes (`env`: the input
    symbols and the data-dependent sizes seen). A data-dependent dim that the sizes seen do not
    determine is checked only against the other backend (in `_dynamic_sizes`) and against the
    concrete check where that knows it (a top-k over a dim that these sizes make static)."""
    from netdsl.ir import dims as D
    concrete = tuple(concrete) if concrete is not None else None
    sym = []
    for i, d in enumerate(v.shape):
        if D.is_dynamic(d):
            try:
                value = int(D.evaluate(d, env))
            except KeyError:
                value = None
            c = concrete[i] if concrete is not None and len(concrete) == len(v.shape) else None
            if isinstance(c, int) and c != ref.shape[i]:
                raise Failure("shape:torch-vs-concrete", f"{what}: data-dependent dim {i} ({D.fmt(d)}) is "
                                                         f"{ref.shape[i]}, the concrete check says {c}")
            sym.append(c if isinstance(c, int) and value is None else value)
            if concrete is not None and len(concrete) == len(v.shape) and not isinstance(c, int):
                concrete = concrete[:i] + (value,) + concrete[i + 1:]
            continue
        sym.append(int(D.evaluate(d, env)))
    sym = tuple(sym)
    if sym != concrete:
        raise Failure("shape:symbolic-vs-concrete", f"{what}: symbolic shape gives {sym}, concrete check {concrete}")
    if any(s is not None and s != r for s, r in zip(sym, ref.shape)):
        raise Failure("shape:torch-vs-ir", f"{what}: torch {tuple(ref.shape)}, inferred {sym}")
    if any(s is not None and s != g for s, g in zip(sym, got.shape)):
        raise Failure("shape:onnx-vs-ir", f"{what}: onnxruntime {tuple(got.shape)}, inferred {sym}")


def _to_onnx(net, weights, opset, seed):
    """The ONNX model at `opset`; where an op needs a later opset (the detection ops need 16: a
    located error naming the op, which `check` cannot know of), at a later one."""
    from netdsl.errors import NetDSLError
    try:
        return net.to_onnx(weights, opset=opset)
    except NetDSLError as e:
        if "needs ONNX opset" not in e.message:
            raise
        e.render()
        return net.to_onnx(weights, opset=random.Random(seed).choice([16, 17, 18, 21]))


def _check_accepted(net, summary, symbols, seed, out, guards=True):
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from netdsl.ir import dims as D

    if isinstance(summary["params"], int) and summary["params"] > MAX_PARAMS:
        raise Skip(f"{summary['params']} params")
    runs = _stage("sizes", _sizes, net, symbols, seed)
    if not runs:
        raise Skip("no input size found that the checker accepts")
    for _, shapes, concrete in runs:
        macs = concrete["macs"]
        biggest = max((int(np.prod(l["output_shape"])) for l in concrete["layers"]
                       if all(isinstance(d, int) for d in l["output_shape"])), default=0)
        if (isinstance(macs, int) and macs > MAX_MACS) or biggest > MAX_ACTIVATIONS:
            raise Skip(f"too big at {shapes}: {macs} MACs, {biggest} elements")

    weights = _stage("weights", _randomised_weights, net, seed)
    source = _stage("torch-source", net.torch_source)
    _stage("torch-source-compile", compile, source, "generated.py", "exec")
    model = _stage("torch-build", net.to_torch, weights)
    model.eval()
    keys, layout = list(model.state_dict()), net.state_layout()
    if sorted(keys) != sorted(layout):
        raise Failure("state-keys", f"state_dict {sorted(set(keys) ^ set(layout))[:8]} differ from state_layout")
    for k, v in model.state_dict().items():
        if tuple(v.shape) != tuple(layout[k]):
            raise Failure("state-keys", f"{k}: state_dict shape {tuple(v.shape)}, layout {tuple(layout[k])}")
    standalone = _stage("torch-standalone", _standalone, source, model)

    opset = random.Random(seed).choice([13, 17, 17, 17, 18, 21])
    proto = _stage("onnx-build", _to_onnx, net, weights, opset, seed)
    _stage("onnx-checker", onnx.checker.check_model, proto, full_check=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 4
    sess = _stage("ort-load", ort.InferenceSession, proto.SerializeToString(), opts,
                  providers=["CPUExecutionProvider"])
    ort_names = [i.name for i in sess.get_inputs()]
    in_names = [v.name for v in net.graph.inputs]
    if sorted(ort_names) != sorted(in_names):
        raise Failure("onnx-inputs", f"ONNX inputs {ort_names}, spec inputs {in_names}")

    rng = np.random.default_rng(seed)
    for env, shapes, concrete in runs:
        out["sizes"].append({k: list(v) for k, v in shapes.items()})
        xs = [rng.standard_normal(shapes[n]).astype(np.float32) for n in in_names]
        with torch.no_grad():
            refs = _stage("torch-run", model, *[torch.from_numpy(x) for x in xs])
            again = _stage("torch-standalone-run", standalone, *[torch.from_numpy(x) for x in xs])
        refs = [r.numpy() for r in (refs if isinstance(refs, tuple) else (refs,))]
        again = [r.numpy() for r in (again if isinstance(again, tuple) else (again,))]
        gots = _stage("ort-run", sess.run, None, dict(zip(in_names, xs)))
        outs = net.graph.outputs
        if not len(refs) == len(gots) == len(again) == len(outs):
            raise Failure("output-count", f"torch {len(refs)}, onnx {len(gots)}, spec {len(outs)}")
        want_concrete = {o["name"]: tuple(o["shape"]) for o in concrete["outputs"]}
        dyn = _dynamic_sizes(outs, refs, gots, env, shapes)
        for k, ((name, v), ref, got, ref2) in enumerate(zip(outs, refs, gots, again)):
            what = f"output {name} at {shapes}"
            _check_shape(v, {**env, **dyn}, want_concrete.get(name), ref, got, what)
            if not ref.dtype == got.dtype == np.dtype(v.dtype):
                raise Failure("dtype", f"{what}: torch {ref.dtype}, onnxruntime {got.dtype}, inferred {v.dtype}")
            if not (np.array_equal(ref, ref2, equal_nan=True)):
                raise Failure("torch-standalone-differs", f"{what}: standalone module differs from live")
            try:
                if ref.dtype.kind in "iub":         # indices, labels, image sizes: exactly
                    if not np.array_equal(ref, got):
                        bad = np.flatnonzero(ref.reshape(-1) != got.reshape(-1))
                        raise Failure("values:int", f"{what}: {bad.size} of {ref.size} differ, first at flat "
                                                    f"index {bad[0]}: torch {ref.reshape(-1)[bad[0]]}, "
                                                    f"onnxruntime {got.reshape(-1)[bad[0]]}")
                else:
                    _close_or_float_noise(model, xs, k, ref, got, what, out)
            except Failure as f:
                if f.category not in ("values", "values:int"):
                    raise
                why = _stage("tie-check", _tied_reorder, net, weights, proto, xs, k, ref, got)
                if why is None:
                    raise
                out["detail"] = f"forgiven (tied scores: {why}): {f.detail}"
    if guards:
        _check_guards(net, model, symbols, seed)


def _check_cli(text, out):
    import contextlib
    import io
    from netdsl.cli import main
    accepted = out["status"] not in ("rejected",)
    with tempfile.TemporaryDirectory() as d:
        spec = Path(d) / "fuzz.net"
        spec.write_text(text, encoding="utf-8")
        cmds = [["check", str(spec)], ["summary", str(spec), "--json"]]
        if out["status"] == "agreed":
            cmds += [["compile", str(spec), "--target", "onnx", "-o", str(Path(d) / "m.onnx")],
                     ["compile", str(spec), "--target", "torch", "-o", str(Path(d) / "m.py")]]
            if out["sizes"]:
                cmds.append(["run", str(spec)] + [a for k, v in out["sizes"][0].items()
                                                  for a in ("--input", f"{k}={'x'.join(map(str, v))}")])
        for cmd in cmds:
            buf = io.StringIO()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(buf):
                try:
                    rc = main(cmd)
                except SystemExit as e:
                    rc = e.code
            if rc == 3 or rc not in (0, 1, 2):
                raise Failure(f"cli-exit-{rc}:{cmd[0]}", buf.getvalue()[-3000:])
            if rc != (0 if accepted else 1):
                raise Failure(f"cli-disagrees:{cmd[0]}",
                              f"exit {rc}, API {'accepted' if accepted else 'rejected'}: {buf.getvalue()[-2000:]}")
        if out["status"] == "agreed":
            _stage("cli-torch-file", compile, (Path(d) / "m.py").read_text(encoding="utf-8"), "m.py", "exec")


def _check_tools(text, out, net):
    """The editor tools agree with the compiler: `analyse` (the language server's view) finds
    no error in an accepted spec and at least one in a rejected one; `netdsl fmt`'s layout of
    the spec is a fixed point that elaborates to the same network; the graph view of an
    accepted spec holds every IR node."""
    import netdsl
    from netdsl.analysis import analyse
    from netdsl.errors import NetDSLError, ParseError
    from netdsl.frontend.formatter import format_text
    found = _stage("analyse", analyse, text, "fuzz.net").diagnostics
    if (net is None) != bool(found):
        raise Failure("analyse-disagrees", f"{'rejected' if net is None else 'accepted'} spec, "
                      f"analyse found {[d.message for d in found][:3]}")
    try:
        formatted = format_text(text, "fuzz.net")
    except ParseError:
        if net is not None:
            raise Failure("fmt-rejects-accepted", _short_tb()) from None
        return
    except Exception as e:  # noqa: BLE001 - FormatterError and any crash
        raise Failure(f"fmt:{type(e).__name__}", _short_tb()) from None
    if _stage("fmt-idempotent", format_text, formatted, "fuzz.net") != formatted:
        raise Failure("fmt-not-idempotent", formatted[-2000:])
    if net is None:
        return
    try:
        again = netdsl.loads(formatted, name="fuzz.net")
        same = (again.state_layout() == net.state_layout()
                and [str(v.shape) for _, v in again.graph.outputs] == [str(v.shape) for _, v in net.graph.outputs])
    except NetDSLError as e:
        raise Failure("fmt-changes-meaning", e.render()[-2000:]) from None
    if not same:
        raise Failure("fmt-changes-meaning", formatted[-2000:])
    from netdsl.graphview.model import build_view
    view = _stage("graph-view", lambda: build_view(net).to_json())
    ids = {n["id"] for n in view["nodes"]}
    missing = [n.path for n in net.graph.nodes if n.path not in ids]
    if missing:
        raise Failure("graph-view-misses-nodes", ", ".join(missing[:5]))


def _worker(conn):
    import warnings
    warnings.simplefilter("ignore")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import onnxruntime
    import torch
    torch.set_num_threads(1)
    onnxruntime.set_default_logger_severity(4)   # failures are reported, not logged
    while True:
        task = conn.recv()
        if task is None:
            return
        try:
            res = check_spec(*task)
        except BaseException:  # noqa: BLE001 - report, never die silently
            res = {"status": "failed", "category": "harness", "detail": _short_tb(), "sizes": []}
        conn.send(res)


# ==== worker pool with per-spec timeouts ==================================================

class Pool:
    def __init__(self, jobs: int, timeout: float):
        self.ctx = mp.get_context("spawn")
        self.timeout = timeout
        self.workers = [self._start() for _ in range(max(1, jobs))]

    def _start(self):
        parent, child = self.ctx.Pipe()
        p = self.ctx.Process(target=_worker, args=(child,), daemon=True)
        p.start()
        child.close()
        return {"proc": p, "conn": parent, "task": None, "since": 0.0}

    def _restart(self, w):
        try:
            w["proc"].kill()
            w["proc"].join(5)
        except Exception:  # noqa: BLE001
            pass
        w.update(self._start())

    def idle(self):
        return [w for w in self.workers if w["task"] is None]

    def submit(self, w, key, task):
        w["conn"].send(task)
        w.update(task=(key, task), since=time.monotonic())

    def collect(self, wait: float):
        """Finished (key, task, result) triples; hung or dead workers give a failure."""
        from multiprocessing.connection import wait as mp_wait
        busy = [w for w in self.workers if w["task"] is not None]
        if not busy:
            return []
        ready = mp_wait([w["conn"] for w in busy], timeout=wait)
        done = []
        for w in busy:
            key, task = w["task"]
            if w["conn"] in ready:
                try:
                    res = w["conn"].recv()
                except (EOFError, OSError):
                    res = {"status": "failed", "category": "worker-crash",
                           "detail": f"worker exited with {w['proc'].exitcode}", "sizes": []}
                    self._restart(w)
            elif time.monotonic() - w["since"] > self.timeout:
                res = {"status": "failed", "category": "timeout",
                       "detail": f"no answer in {self.timeout:.0f} s", "sizes": []}
                self._restart(w)
            else:
                continue
            w["task"] = None
            done.append((key, task, res))
        return done

    def run_one(self, task):
        """Synchronously, on the first worker (used by the minimiser)."""
        w = self.workers[0]
        self.submit(w, "min", task)
        while True:
            for _, _, res in self.collect(1.0):
                return res

    def close(self):
        for w in self.workers:
            try:
                w["conn"].send(None)
            except Exception:  # noqa: BLE001
                pass
        for w in self.workers:
            w["proc"].join(5)
            if w["proc"].is_alive():
                w["proc"].kill()


# ==== minimisation =======================================================================

def _braced_spans(lines: list) -> list:
    """(start, end) of every line that opens a brace, with the line that closes it."""
    spans = []
    for i, l in enumerate(lines):
        if l.rstrip().endswith("{"):
            depth = 0
            for j in range(i, len(lines)):
                depth += lines[j].count("{") - lines[j].count("}")
                if depth <= 0:
                    spans.append((i, j))
                    break
    return spans


def minimise(lines: list, reproduces, budget_s: float) -> list:
    """Delta debugging over lines: the smallest subsequence for which `reproduces` holds.

    First whole braced constructs (a block definition, a loop), then ddmin over lines, then
    each remaining line alone."""
    deadline = time.monotonic() + budget_s
    for i, j in sorted(_braced_spans(lines), key=lambda ij: ij[0] - ij[1]):
        if time.monotonic() > deadline:
            return lines
        if j < len(lines):
            rest = lines[:i] + lines[j + 1:]
            if rest and reproduces(rest):
                return minimise(rest, reproduces, deadline - time.monotonic())
    n = 2
    while len(lines) >= 2 and time.monotonic() < deadline:
        chunk = max(1, len(lines) // n)
        parts = [lines[i:i + chunk] for i in range(0, len(lines), chunk)]
        reduced = False
        for i in range(len(parts)):
            if time.monotonic() > deadline:
                break
            rest = [l for j, p in enumerate(parts) if j != i for l in p]
            if rest and reproduces(rest):
                lines, n, reduced = rest, max(n - 1, 2), True
                break
        if not reduced:
            if n >= len(lines):
                break
            n = min(len(lines), 2 * n)
    i = 0
    while i < len(lines) and time.monotonic() < deadline:
        rest = lines[:i] + lines[i + 1:]
        if rest and reproduces(rest):
            lines = rest
        else:
            i += 1
    for i, j in sorted(_braced_spans(lines), key=lambda ij: ij[0] - ij[1]):   # e.g. emptied blocks
        if time.monotonic() > deadline:
            break
        rest = lines[:i] + lines[j + 1:]
        if rest and reproduces(rest):
            return minimise(rest, reproduces, deadline - time.monotonic())
    return lines


def _minimise_failure(pool, fail, seed, budget_s):
    text, symbols = fail["text"], fail["symbols"]
    tries = [0]

    def reproduces(lines):
        tries[0] += 1
        res = pool.run_one(("\n".join(lines) + "\n", symbols, seed, fail["cli"], fail["guards"]))
        return (res["status"] == "failed" and res["category"] == fail["category"]
                and signature(res["detail"]) == fail["signature"])

    lines = [l for l in text.split("\n") if l.strip()]
    small = minimise(lines, reproduces, budget_s)
    final = pool.run_one(("\n".join(small) + "\n", symbols, seed, fail["cli"], fail["guards"]))
    return "\n".join(small) + "\n", final, tries[0]


# ==== driver =============================================================================

def run(minutes: float, seed: int, out: Path, jobs: int = 1, count: int | None = None,
        timeout: float = 60.0, cli_every: int = 4, minimise_s: float = 60.0, max_minimised: int = 20,
        quiet: bool = False, guards: bool = True, tricky: float | None = None) -> dict:
    if tricky is not None:
        spec_gen.TRICKY_P = tricky
    out.mkdir(parents=True, exist_ok=True)
    pool = Pool(jobs, timeout)
    stats, cats, features, reasons = Counter(), Counter(), Counter(), Counter()
    failures: list[dict] = []
    started = time.monotonic()
    deadline = started + minutes * 60
    i = 0
    log = (out / "failures.jsonl").open("w", encoding="utf-8")
    try:
        while True:
            more = (count is None or i < count) and time.monotonic() < deadline
            for w in pool.idle():
                if not more:
                    break
                sp = spec_gen.generate(seed * 10_000_000 + i)
                cli = cli_every > 0 and i % cli_every == 0
                pool.submit(w, i, (sp.text, sp.symbols, seed * 1000 + i, cli, guards))
                features.update(sp.features)
                i += 1
                more = (count is None or i < count) and time.monotonic() < deadline
            done = pool.collect(0.5)
            for key, task, res in done:
                stats[res["status"]] += 1
                if res["status"] == "agreed" and res["detail"].startswith("forgiven"):
                    stats["forgiven"] += 1
                    reasons[f"agreed, {signature(res['detail'])}"] += 1
                if res["status"] in ("rejected", "skipped"):
                    reasons[f"{res['status']}: {signature(res['detail'])}"] += 1
                if res["status"] == "failed":
                    cats[res["category"]] += 1
                    fail = {"index": key, "text": task[0], "symbols": task[1], "seed": task[2],
                            "cli": task[3], "guards": task[4], "signature": signature(res["detail"]), **res}
                    failures.append(fail)
                    log.write(json.dumps(fail) + "\n")
                    log.flush()
                    if not quiet:
                        print(f"[{time.monotonic() - started:6.0f}s] spec {key}: FAILED {res['category']}",
                              flush=True)
            if not more and len(pool.idle()) == len(pool.workers):
                break
        elapsed = time.monotonic() - started
        # minimise the smallest failure of each (category, signature), most frequent first
        minimised = []
        groups: dict[tuple, list] = {}
        for f in sorted(failures, key=lambda f: len(f["text"])):
            groups.setdefault((f["category"], f["signature"]), []).append(f)
        order = sorted(groups.items(), key=lambda kv: -len(kv[1]))
        for n, ((cat, sig), fs) in enumerate(order[:max_minimised]):
            f = fs[0]
            if cat in ("timeout", "worker-crash"):
                small, final, tries = f["text"], f, 0      # minimising hangs costs too much
            else:
                small, final, tries = _minimise_failure(pool, f, f["seed"], minimise_s)
            safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in cat)
            path = out / f"min_{n:02d}_{safe}.net"
            header = (f"# category: {cat} ({len(fs)} specs)\n# signature: {sig}\n"
                      f"# spec index {f['index']}, seed {f['seed']}, symbols {f['symbols']}, "
                      f"cli {f['cli']}, minimised in {tries} runs\n"
                      + "".join(f"# {l}\n" for l in (final.get("detail") or "").strip().splitlines()[-12:]))
            path.write_text(header + small, encoding="utf-8")
            minimised.append({"category": cat, "signature": sig, "count": len(fs), "path": str(path),
                              "spec": small, "detail": final.get("detail", ""),
                              "reproduced": final.get("category") == cat})
    finally:
        log.close()
        pool.close()
    specs = sum(n for k, n in stats.items() if k != "forgiven")
    result = {"specs": specs, "rejected": stats["rejected"], "skipped": stats["skipped"],
              "agreed": stats["agreed"], "forgiven": stats["forgiven"], "failed": stats["failed"],
              "categories": dict(cats),
              "seconds": round(elapsed, 1), "specs_per_s": round(specs / max(elapsed, 1e-9), 2),
              "features": dict(features), "reasons": dict(reasons.most_common(30)),
              "minimised": minimised, "out": str(out)}
    (out / "summary.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    return result


def report(r: dict) -> str:
    rows = [("specs", r["specs"]), ("rejected", r["rejected"]), ("skipped", r["skipped"]),
            ("agreed", r["agreed"]),
            ("  of which forgiven (ill-conditioned, tied scores)", r.get("forgiven", 0)),
            ("failed", r["failed"])]
    rows += [(f"  {c}", n) for c, n in sorted(r["categories"].items(), key=lambda kv: -kv[1])]
    rows += [("seconds", r["seconds"]), ("specs/second", r["specs_per_s"])]
    rows += [("most frequent rejections", "")] + [(f"  {n:5d}", k) for k, n in list(r["reasons"].items())[:5]]
    width = max(len(k) for k, _ in rows)
    text = "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
    if r["minimised"]:
        text += f"\n\nminimised failures in {r['out']}:\n" + "\n".join(
            f"  {m['count']:5d} x {m['category']}: {m['signature']}\n          {m['path']}"
            for m in r["minimised"])
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=1.0, help="how long to generate specs (default 1)")
    ap.add_argument("--count", type=int, default=None, help="stop after this many specs")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="where failures go (default: a new temp dir)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per spec before it is a hang")
    ap.add_argument("--cli-every", type=int, default=4, help="run the CLI on every Nth spec (0: never)")
    ap.add_argument("--minimise-seconds", type=float, default=60.0, help="budget per minimised failure")
    ap.add_argument("--no-guards", action="store_true",
                    help="do not check that the torch module refuses sizes the checker rejects")
    ap.add_argument("--tricky", type=float, default=None,
                    help=f"chance that a name is a hard one for Python (default {spec_gen.TRICKY_P})")
    ap.add_argument("--max-minimised", type=int, default=20,
                    help="distinct failures (category and message) to minimise (default 20)")
    args = ap.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="netdsl-fuzz-"))
    r = run(args.minutes, args.seed, out, jobs=args.jobs, count=args.count, timeout=args.timeout,
            cli_every=args.cli_every, minimise_s=args.minimise_seconds, max_minimised=args.max_minimised,
            guards=not args.no_guards, tricky=args.tricky)
    print(report(r))
    return 0 if r["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
