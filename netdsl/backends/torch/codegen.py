"""IR graph -> standalone PyTorch source (imports only torch).

The module tree follows the spec's parameter paths, so the generated module's
state_dict keys are the spec's (``layer1.0.conv1.weight``). Containers are
``nn.ModuleDict``s, which accept numeric child names as torch's Sequential does.
"""
from __future__ import annotations

from ...errors import BackendError
from ...ir import dims as D
from ...ir.graph import Graph
from .emitters import EMITTERS, HELPERS
from .guards import size_guards
from . import detection_emitters as detection, pynames, training


def class_name(graph: Graph) -> str:
    return pynames.class_name(graph.name)


def _local_names(graph: Graph, cls: str) -> dict:
    """{value id: Python local name}: the values' IR names, unless taken (pynames)."""
    values = list(graph.inputs) + [v for n in graph.nodes for v in n.outputs]
    return {id(v): name for v, name in zip(values, pynames.local_names([v.name for v in values], cls))}


# ops whose backward needs neither their output nor (so) the value a following in-place op
# overwrites; an in-place ReLU after them is what torchvision's modules do
_OVERWRITABLE_AFTER = frozenset({"Conv1d", "Conv2d", "ConvTranspose2d", "BatchNorm1d", "BatchNorm2d",
                                 "Linear", "add"})


def _unique(values) -> list:
    seen, out = set(), []
    for v in values:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def _uses(graph: Graph):
    """{value id: index of the last node reading it} (not for graph outputs, which live on),
    and {value id: number of reads}."""
    last, count = {}, {}
    for i, n in enumerate(graph.nodes):
        for v in n.inputs:
            last[id(v)] = i
            count[id(v)] = count.get(id(v), 0) + 1
    for _, v in graph.outputs:
        last.pop(id(v), None)
    for v in graph.inputs:
        last.pop(id(v), None)
    return last, count


def _may_overwrite(n, uses, graph: Graph) -> bool:
    """Whether node n may compute in place on its (first) input: its single input, or the first
    operand of an `add` that has the output's shape (a residual's `out += identity`, as
    torchvision's blocks do; the other operand may be anything but the same tensor)."""
    if n.op == "add" and len(n.inputs) == 2:
        v = n.inputs[0]
        if v is n.inputs[1] or len(v.shape) != len(n.outputs[0].shape) or not all(
                D.same(p, q) is True for p, q in zip(v.shape, n.outputs[0].shape)):
            return False
    else:
        (v,) = n.inputs if len(n.inputs) == 1 else (None,)
    if v is None:
        return False
    outputs = [o for _, o in graph.outputs]
    while True:         # an Identity (a block's `post`) names the same tensor again
        if uses.get(id(v)) != 1 or any(v is o for o in outputs) or v.producer is None:
            return False
        if v.producer.op != "Identity":
            return v.producer.op in _OVERWRITABLE_AFTER
        v = v.producer.inputs[0]


def _forward_body(graph: Graph, local: dict, refs: dict) -> list:
    """The statements of forward().

    Values the spec named keep their names; the others share a few temporaries (h, h_1, ...)
    handed out again as soon as a value is dead, and dead values are deleted, so memory is
    released as in hand-written code (torchvision's `x = ...; x = ...`)."""
    last_use, uses = _uses(graph)
    taken = set(local.values())
    free: list = []
    fresh = (f"h_{k}" if k else "h" for k in __import__("itertools").count())
    name_of = {id(v): local[id(v)] for v in graph.inputs}
    temp: set = set()
    outputs = {id(v) for _, v in graph.outputs}
    body = []
    for i, n in enumerate(graph.nodes):
        ins = [name_of[id(v)] for v in n.inputs]
        em = EMITTERS[n.op]
        emit = em.inplace if em.inplace and _may_overwrite(n, uses, graph) else em.call
        expr = emit(n, ins, refs.get(id(n)))
        dying = [v for v in _unique(n.inputs) if last_use.get(id(v)) == i]
        free += sorted((name_of[id(v)] for v in dying if name_of[id(v)] in temp), key=_temp_order)
        new = []
        for v in n.outputs:
            if v.named or id(v) in outputs or id(v) not in last_use:
                name = local[id(v)]
            else:
                name = free.pop(0) if free else next(x for x in fresh if x not in taken)
                temp.add(name)
            name_of[id(v)] = name
            new.append(name)
        shapes = "; ".join(D.fmt_shape(v.shape) for v in n.outputs)
        body.append(f"{', '.join(new)} = {expr}  # {n.path}: {shapes}")
        dead = [name_of[id(v)] for v in dying if name_of[id(v)] not in new]
        free = [t for t in free if t not in new]
        if dead:
            body.append(f"del {', '.join(dead)}")
    return body


def _temp_order(name: str):
    return (0, 0) if name == "h" else (1, int(name[2:]))


def generate_source(graph: Graph) -> str:
    missing = sorted({n.op for n in graph.nodes if n.op not in EMITTERS})
    if missing:
        raise BackendError(f"the torch target does not support: {', '.join(missing)}")
    cls = class_name(graph)
    init: list[str] = []
    containers: set[str] = set()
    helpers: list[str] = []
    refs: dict[int, str] = {}
    for n in graph.nodes:
        em = EMITTERS[n.op]
        for h in em.helpers:
            if h not in helpers:
                helpers.append(h)
        if em.module is None:
            continue
        parts = n.path.split(".")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            if prefix not in containers:
                containers.add(prefix)
                init.append(f"{pynames.member_ref(prefix)} = nn.ModuleDict()")
        refs[id(n)] = pynames.member_ref(n.path, parameter=n.op == "parameter")
        init.append(f"{refs[id(n)]} = {em.module(n)}")
        extra, needs = training.init_lines(n, refs[id(n)])     # init = ..., frozen parameters
        init += extra
        helpers += [h for h in needs if h not in helpers]

    local = _local_names(graph, cls)
    args = ", ".join(local[id(v)] for v in graph.inputs)
    detector = detection.is_detector(graph)
    if detector:        # images may be a list of differently sized ones: the transform checks them
        args += ", targets=None"
        body = [f"{detection.CONTEXT} = DetContext(self.training, targets)"]
    else:
        body = size_guards(graph, [local[id(v)] for v in graph.inputs])  # input sizes the checker admits
        if detection.needs_context(graph):      # proposal / RoI ops without a transform: no targets
            body.append(f"{detection.CONTEXT} = DetContext(self.training, None)")
    body += _forward_body(graph, local, refs)
    outs = [local[id(v)] for _, v in graph.outputs]
    ret = outs[0] if len(outs) == 1 else "(" + ", ".join(outs) + ")"
    if detector:
        by_name = {name: local[id(v)] for name, v in graph.outputs}
        if sorted(by_name) == sorted(detection.DETECTION_OUTPUTS):
            ret = f"det_results({detection.CONTEXT}, " + ", ".join(by_name[k] for k in detection.DETECTION_OUTPUTS) + ")"
        else:
            body.append(f"if {detection.CONTEXT}.losses:")
            body.append(f"    return {detection.CONTEXT}.losses")

    doc = pynames.docstring_text((graph.doc or f"{graph.name}, generated by netdsl.").strip())
    lines = [
        f'"""{graph.name}: PyTorch module generated by netdsl. It needs only torch."""',
        "import torch",
        "from torch import nn",
        "import torch.nn.functional as F",
        "",
    ]
    for h in helpers:
        lines += [HELPERS[h].strip("\n"), "", ""]
    sig = ", ".join(f"{v.name}: {D.fmt_shape(v.shape)}" for v in graph.inputs)
    outs_doc = ", ".join(f"{n}: {D.fmt_shape(v.shape)}" for n, v in graph.outputs)
    lines += [
        f"class {cls}(nn.Module):",
        f'    """{doc}',
        "",
        f"    inputs: {sig}",
        f"    outputs: {outs_doc}",
        '    """',
        "",
        "    def __init__(self):",
        "        super().__init__()",
    ]
    lines += ["        " + s for s in init] or ["        pass"]
    lines += ["", f"    def forward(self, {args}):"]
    lines += ["        " + s for s in body]
    lines += [f"        return {ret}", ""]
    return "\n".join(lines)
