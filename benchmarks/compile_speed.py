"""Compile speed: netdsl's ONNX compile against torch.onnx.export of the same networks.

For each network, in one run:
  netdsl   parse + elaborate + shape-check + random weights + write the .onnx file
  torch    torch.onnx.export of netdsl's own torch module (already built, weights loaded),
           with the TorchScript exporter (dynamo=False) and, when onnxscript is installed,
           the default dynamo exporter
and the whole `netdsl compile examples/unet.net --target onnx` process, timed from outside.
Times are the best of --repeat runs; ratios compare times measured in this same run.

    python benchmarks/compile_speed.py [--repeat 3] [--skip-dynamo]
"""
from __future__ import annotations

import argparse
import os
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

    try:
        import onnxscript  # noqa: F401
        dynamo = not args.skip_dynamo
    except ImportError:
        dynamo = False
    tmp = Path(tempfile.mkdtemp(prefix="netdsl-bench-"))
    out = tmp / "model.onnx"
    print(f"torch {torch.__version__}, netdsl {netdsl.__version__}, best of {args.repeat}\n")
    header = f"{'network':8} {'netdsl':>9} {'torchscript export':>19} {'ratio':>7}"
    if dynamo:
        header += f" {'dynamo export':>14} {'ratio':>7}"
    print(header)
    for label, path, network, shape in CASES:
        def compile_netdsl():
            netdsl.load(path, network=network).save_onnx(out)

        t_netdsl = best(compile_netdsl, args.repeat)
        module = netdsl.load(path, network=network).to_torch().eval()
        x = torch.randn(*shape)

        def export(use_dynamo):
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                kwargs = dict(input_names=["x"], output_names=["y"], opset_version=17, dynamo=use_dynamo)
                if use_dynamo:
                    kwargs["verbose"] = False
                torch.onnx.export(module, (x,), str(out), **kwargs)

        t_ts = best(lambda: export(False), args.repeat)
        row = f"{label:8} {t_netdsl:8.3f}s {t_ts:18.3f}s {t_ts / t_netdsl:6.1f}x"
        if dynamo:
            import contextlib
            import io
            with contextlib.redirect_stdout(io.StringIO()):
                t_dy = best(lambda: export(True), max(1, args.repeat - 1))
            row += f" {t_dy:13.3f}s {t_dy / t_netdsl:6.1f}x"
        print(row)

    cmd = [sys.executable, "-m", "netdsl", "compile", str(ROOT / "examples" / "unet.net"),
           "--target", "onnx", "-o", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd, check=True, env=env)       # warm the grammar cache and the page cache

    def whole():
        subprocess.run(cmd, check=True, env=env)
    t_proc = best(whole, args.repeat)
    print(f"\nwhole process `netdsl compile examples/unet.net --target onnx`: {t_proc:.3f}s "
          f"({'under' if t_proc < 1 else 'OVER'} the 1 s target)")
    out.unlink(missing_ok=True)
    tmp.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
