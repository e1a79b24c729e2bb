"""Compile speed: netdsl's ONNX compile against torch.onnx.export of the same networks.

Measured in one run, for VGG16 and U-Net:

  graph only    netdsl: parse + elaborate + shape-check + emit the ONNX graph, write it;
                torch:  torch.onnx.export(..., export_params=False) of netdsl's own torch module
  with weights  netdsl: the same plus deterministic random weights, streamed into the file;
                torch:  torch.onnx.export of the module (built beforehand, weights loaded)

torch is timed with the TorchScript exporter (dynamo=False) and, when onnxscript is
installed, with the default dynamo exporter. Then the whole `netdsl compile
examples/unet.net --target onnx` process is timed from outside. Every figure is the best
of --repeat runs; ratios compare figures of this same run.

    python benchmarks/compile_speed.py [--repeat 3] [--skip-dynamo]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # run from a checkout without installing
CASES = [("VGG16", ROOT / "examples" / "vgg.net", "VGG16", (1, 3, 224, 224)),
         ("U-Net", ROOT / "examples" / "unet.net", "UNet", (1, 1, 572, 572))]


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-dynamo", action="store_true", help="do not time the dynamo exporter")
    args = ap.parse_args()

    import torch

    import netdsl
    from netdsl.backends.onnx.export import build_graph_proto

    try:
        import onnxscript  # noqa: F401
        exporters = [("torchscript", False)] + ([] if args.skip_dynamo else [("dynamo", True)])
    except ImportError:
        exporters = [("torchscript", False)]
    tmp = Path(tempfile.mkdtemp(prefix="netdsl-bench-"))
    out = tmp / "model.onnx"
    print(f"torch {torch.__version__}, netdsl {netdsl.__version__}; best of {args.repeat} runs\n")
    header = f"{'network':8} {'mode':13} {'netdsl':>8}" + "".join(
        f" {name + ' export':>19} {'ratio':>6}" for name, _ in exporters)
    print(header)
    print("-" * len(header))

    for label, path, network, shape in CASES:
        def graph_only():
            model, _ = build_graph_proto(netdsl.load(path, network=network).graph, {})
            out.write_bytes(model.SerializeToString())

        def with_weights():
            netdsl.load(path, network=network).save_onnx(out)

        module = netdsl.load(path, network=network).to_torch().eval()
        x = torch.randn(*shape)

        def export(use_dynamo, params):
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, (x,), str(out), input_names=["x"], output_names=["y"],
                                  opset_version=17, dynamo=use_dynamo, export_params=params)

        for mode, ours, params in (("graph only", graph_only, False), ("with weights", with_weights, True)):
            t_ours = best(ours, args.repeat)
            row = f"{label:8} {mode:13} {t_ours:7.3f}s"
            for _, use_dynamo in exporters:
                t_torch = best(lambda: export(use_dynamo, params), args.repeat)
                row += f" {t_torch:18.3f}s {t_torch / t_ours:5.1f}x"
            print(row, flush=True)

    cmd = [sys.executable, "-m", "netdsl", "compile", str(ROOT / "examples" / "unet.net"),
           "--target", "onnx", "-o", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = lambda: subprocess.run(cmd, check=True, env=env, capture_output=True)  # noqa: E731
    run()       # warms the grammar cache and the page cache
    t_proc = best(run, args.repeat)
    print(f"\nwhole process `netdsl compile examples/unet.net --target onnx` (31M params, 124 MB): "
          f"{t_proc:.3f}s ({'under' if t_proc < 1 else 'OVER'} the 1 s target)")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
