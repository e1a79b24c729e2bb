"""Compiling VGG16 with its weights from a .safetensors file: netdsl against torch, and against
the raw I/O the job needs.

A .safetensors file with VGG16's weights (138M parameters, 553 MB) is written first: from
torchvision's vgg16 state_dict through safetensors.torch when torchvision is installed, else by
netdsl's own writer (Network.save_safetensors). Then, best of --runs:

  netdsl     netdsl.load(examples/vgg.net, VGG16).save_onnx(out, weights=FILE): parse, elaborate,
             read the weights (memory-mapped, no torch), write the ONNX file atomically
  torch      safetensors.torch.load_file(FILE), load_state_dict into a VGG16 module built
             beforehand (torchvision's, or netdsl's generated module, which has its layout), then
             torch.onnx.export(..., dynamo=False, opset 17) to a file (at 1x3x224x224; netdsl's
             model keeps N, H and W symbolic)
  read       reading FILE's bytes into a buffer (the file was just written: mostly from the page
             cache, as the two above read it)
  copy       reading FILE and writing its bytes as netdsl writes an output (a temporary file,
             fsync'ed, renamed over the previous copy): the I/O that netdsl's compile cannot
             avoid (read the weights, write them into the model); netdsl / copy close to 1 means
             the compile is bound by I/O
  netdsl (random weights)  save_onnx without a weights file, for reference

    python benchmarks/safetensors_compile.py [--runs 3] [--keep DIR]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # run from a checkout without installing
SPEC = ROOT / "examples" / "vgg.net"


def best(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def read_all(path: Path) -> int:
    buf = bytearray(16 << 20)
    total = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                return total
            total += n


def copy_synced(src: Path, dst: Path) -> None:
    """Copy src over dst as netdsl writes an output: a temporary file beside it, fsync'ed and
    renamed over the previous one."""
    buf = bytearray(16 << 20)
    view = memoryview(buf)
    tmp = dst.with_name(dst.name + ".tmp")
    with open(src, "rb", buffering=0) as f, open(tmp, "wb", buffering=0) as g:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            g.write(view[:n])
        os.fsync(g.fileno())
    os.replace(tmp, dst)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="timed runs of each; the best is reported")
    ap.add_argument("--keep", metavar="DIR", help="write the files into DIR and keep them")
    args = ap.parse_args()

    import torch
    from safetensors.torch import load_file, save_file

    import netdsl

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="netdsl-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    weights = tmp / "vgg16.safetensors"
    out = tmp / "vgg16.onnx"
    net = netdsl.load(SPEC, network="VGG16")
    try:
        import torchvision
        module = torchvision.models.vgg16(weights=None).eval()
        save_file(module.state_dict(), str(weights))
        source = f"torchvision {torchvision.__version__} vgg16 state_dict, safetensors.torch.save_file"
    except ImportError:
        net.save_safetensors(weights, seed=0)
        module = net.to_torch(weights=weights).eval()     # torchvision's layout and keys
        source = "netdsl's Network.save_safetensors; torch side: netdsl's generated VGG16 module"
    size = weights.stat().st_size
    x = torch.randn(1, 3, 224, 224)
    print(f"torch {torch.__version__}, netdsl {netdsl.__version__}; best of {args.runs} runs")
    print(f"weights: {size / 1e6:.0f} MB ({source})\n")

    def ours():
        netdsl.load(SPEC, network="VGG16").save_onnx(out, weights=weights)

    def ours_random():
        netdsl.load(SPEC, network="VGG16").save_onnx(out)

    def theirs():
        module.load_state_dict(load_file(str(weights)), strict=True)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (x,), str(out), input_names=["x"], output_names=["y"],
                              opset_version=17, dynamo=False)     # at one input size

    read_all(weights)           # read once after writing: "cold-ish", as far as a page cache allows
    t_ours = best(ours, args.runs)
    t_torch = best(theirs, args.runs)
    t_read = best(lambda: read_all(weights), args.runs)
    t_copy = best(lambda: copy_synced(weights, tmp / "copy.bin"), args.runs)
    t_random = best(ours_random, args.runs)
    rows = [("netdsl: load .safetensors + compile to .onnx", t_ours),
            ("torch: load_file + load_state_dict + torch.onnx.export", t_torch),
            ("raw read of the .safetensors bytes", t_read),
            ("raw copy: read + write + fsync + rename", t_copy),
            ("netdsl: compile with random weights (no file read)", t_random)]
    width = max(len(r[0]) for r in rows)
    print(f"{'':{width}}  {'time':>8}  {'/ netdsl':>8}  {'MB/s':>6}")
    for label, t in rows:
        print(f"{label:{width}}  {t:7.3f}s  {t / t_ours:7.2f}x  {size / 1e6 / t:6.0f}")
    print(f"\ntorch / netdsl: {t_torch / t_ours:.1f}x; netdsl / raw copy: {t_ours / t_copy:.2f}x; "
          f"netdsl / raw read: {t_ours / t_read:.2f}x")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
