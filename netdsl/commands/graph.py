"""`netdsl graph`: draw a network as a layered DAG (HTML, SVG, Graphviz DOT or Mermaid)."""
from __future__ import annotations

import argparse

NAME = "graph"
FORMATS = ("html", "svg", "dot", "mmd")
SUFFIXES = {".html": "html", ".htm": "html", ".svg": "svg", ".dot": "dot", ".gv": "dot",
            ".mmd": "mmd", ".mermaid": "mmd"}
DEFAULT_BOXES = 60      # the default --depth shows at most this many boxes (when it can)


def _depth(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return v


def add_parser(sub, common) -> None:
    p = sub.add_parser(
        NAME, help="draw the network as a graph (HTML, SVG, DOT, Mermaid)",
        description="Draw the network as a layered graph: a box per layer or block instance "
                    "(spec path, op, parameters), edges labelled with tensor shapes (symbolic dims "
                    "by name). The format follows OUT's suffix (.html, .svg, .dot, .mmd) or "
                    "--format. HTML is one self-contained interactive file: blocks expand and "
                    "collapse on click, hovering a box shows its attributes, shape, params, MACs "
                    "and source line. Needs no Graphviz and does not import torch.",
        epilog="examples:\n"
               "  netdsl graph examples/resnet.net --network ResNet50 -o resnet50.html\n"
               "  netdsl graph examples/unet.net --depth 2 -o unet.svg\n"
               "  netdsl graph examples/densenet.net --network DenseNet201 --format mmd -o -",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    common(p)
    p.add_argument("-o", "--output", metavar="OUT", required=True,
                   help="output file (.html, .svg, .dot or .mmd; '-' for standard output, with "
                        "--format); a regular file is replaced atomically")
    p.add_argument("--format", "-f", choices=FORMATS, default=None,
                   help="output format (default: from OUT's suffix)")
    p.add_argument("--depth", "-d", type=_depth, default=None, metavar="K",
                   help="levels of boxes to show: 1 shows the top level only, with every block "
                        "and group collapsed into one box; each level more opens the composites "
                        "one level deeper (0 is the same as 1). Default: the deepest level that "
                        f"shows at most {DEFAULT_BOXES} boxes, so a small network is drawn "
                        "fully expanded. In HTML, the initial expansion")


def output_format(args) -> str:
    """The format to write: --format, or OUT's suffix; a usage error when neither says."""
    from pathlib import Path

    from ..errors import CommandLineError
    if args.format:
        return args.format
    if args.output == "-":
        raise CommandLineError(f"-o - writes to standard output: give --format "
                               f"({', '.join(FORMATS)})")
    suffix = Path(args.output).suffix.lower()
    if suffix not in SUFFIXES:
        got = f"'{suffix}'" if suffix else "no suffix"
        raise CommandLineError(f"cannot tell the format of '{args.output}' ({got}): name it "
                               f"OUT.html, OUT.svg, OUT.dot or OUT.mmd, or give --format "
                               f"({', '.join(FORMATS)})")
    return SUFFIXES[suffix]


def default_depth(view_json: dict, limit: int = DEFAULT_BOXES) -> int | None:
    """The deepest --depth that shows at most `limit` boxes (None: all of it fits); at least 1."""
    from ..graphview.model import expanded
    deepest = max((n["depth"] for n in view_json["nodes"]), default=0) + 1
    best = 1
    for k in range(1, deepest + 1):
        boxes = sum(1 for n in view_json["nodes"] if _shown(n, k, view_json) and not expanded(n, k))
        if boxes > limit:
            break
        best = k
    return None if best >= deepest else best


def _shown(node: dict, depth: int, view_json: dict) -> bool:
    # every ancestor open: an ancestor at depth d is open iff d + 1 < depth, so a node shows iff
    # all depths above it are below depth - 1, i.e. its own depth is below `depth`
    return node["depth"] < max(depth, 1)


def render(view_json: dict, fmt: str, depth: int | None) -> str:
    if fmt == "svg":
        from ..graphview.svg import render_svg
        return render_svg(view_json, depth)
    if fmt == "dot":
        from ..graphview.dot import render_dot
        return render_dot(view_json, depth)
    if fmt == "mmd":
        from ..graphview.mmd import render_mmd
        return render_mmd(view_json, depth)
    from ..graphview.html import render_html
    return render_html(view_json, depth)


def run(args) -> int:
    import sys

    from ..cli import EXIT_OK, _load, _terminal_safe
    from ..graphview.model import build_view
    from ..output import write_outputs

    fmt = output_format(args)           # a usage error before any file is read
    net = _load(args)
    view = build_view(net).to_json()
    depth = args.depth if args.depth is not None else default_depth(view)
    data = render(view, fmt, depth).encode("utf-8")
    write_outputs([(args.output, lambda f: f.write(data))])
    if args.output != "-":
        shown = "fully expanded" if depth is None else f"depth {depth}"
        print(_terminal_safe(f"wrote {args.output} ({fmt}, network {net.name}, {shown}, "
                             f"{len(net.graph.nodes)} layers)"), file=sys.stderr)
    return EXIT_OK
