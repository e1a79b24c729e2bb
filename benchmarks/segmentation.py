"""netdsl's segmentation nets against torchvision's: onnxruntime latency and ONNX compile time.

For FCN_ResNet50 and DeepLabV3_ResNet50 (examples/fcn.net; torchvision's fcn_resnet50 and
deeplabv3_resnet50, weights=None, weights_backbone=None, aux_loss=False, random BatchNorm
statistics, eval mode), with torchvision's state_dict given to netdsl so that both sides
compute the same function with the same weights, in one run:

  onnxruntime   CPUExecutionProvider, 1x3xHxW (--size, default 256x320), the same
                SessionOptions for every file (ORT_ENABLE_ALL, --threads intra-op threads):
                netdsl's file (symbolic N, H, W, as `netdsl compile` writes it); the same
                file with N, H, W fixed when the session starts, as `netdsl run` creates its
                session (SessionOptions.add_free_dimension_override_by_name, the values
                taken from the input shapes by netdsl's own code); and, as a diagnostic,
                netdsl's file compiled for the fixed input size; against the file
                torch.onnx.export wrote for the torchvision model (TorchScript exporter,
                dynamo=False, opset 17, fixed input size, as exported by default). Median of
                --runs runs after --warmup, the sessions' runs interleaved; wall-clock and
                CPU time (with --threads 1 the CPU time leaves out waiting for a core on a
                shared machine).
  compile       netdsl: load + elaborate + emit + write the ONNX file with torchvision's
                weights; torch: torch.onnx.export of the torchvision model to a file,
                TorchScript exporter and (when onnxscript is installed) the dynamo exporter.
                Best of --repeat.

Ratios: netdsl / torchvision for latency (target <= 1.00) and for compile time. Outputs are
compared before timing (max abs diff).

    python benchmarks/segmentation.py [--size 256 320] [--runs 15]
        [--warmup 3] [--repeat 2] [--threads 1] [--skip-dynamo] [--only fcn_resnet50]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # run from a checkout without installing
sys.path.insert(0, str(ROOT / "tests"))
from compile_speed import best  # noqa: E402  (this script's directory is on sys.path)
from parity_util import randomise_batchnorm  # noqa: E402
from torchvision_compare import fixed_size_options, onnx_op_counts, print_op_count_differences  # noqa: E402
FCN_FILE = ROOT / "examples" / "fcn.net"
CASES = [("fcn_resnet50", "FCN_ResNet50"), ("deeplabv3_resnet50", "DeepLabV3_ResNet50")]


def interleaved_medians(fns, runs: int, warmup: int):
    """Median wall-clock and CPU seconds of each function, and its minimum CPU seconds, run in
    turn (the order rotates every round). CPU time is the process's (all threads): with one
    intra-op thread onnxruntime runs the graph on the calling thread, and the CPU time then
    leaves out the time the process waits for a core that other jobs hold (not the slowdown
    that they cause through shared caches and memory; the minimum is the least disturbed run)."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    wall, cpu = [[] for _ in fns], [[] for _ in fns]
    for i in range(runs):
        order = list(range(len(fns)))
        order = order[i % len(fns):] + order[:i % len(fns)]
        for k in order:
            t, c = time.perf_counter(), time.process_time()
            fns[k]()
            wall[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
    return ([statistics.median(t) for t in wall], [statistics.median(t) for t in cpu],
            [min(t) for t in cpu])


def import_reference_stack(script: str):
    """(onnxruntime, torch, torchvision), or None after telling the user which Python to use."""
    try:
        import onnxruntime as ort
        import torch
        import torchvision
    except ImportError as e:
        print(f"benchmarks/{script} needs torch, torchvision and onnxruntime: {e}. "
              "Run it with a Python that has them, such as a virtualenv with torchvision (see the README).", file=sys.stderr)
        return None
    return ort, torch, torchvision


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, nargs=2, default=[256, 320], metavar=("H", "W"))
    ap.add_argument("--runs", type=int, default=15, help="latency: median of this many runs")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=2, help="compile: best of this many runs")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch and onnxruntime intra-op threads (0: library default)")
    ap.add_argument("--skip-dynamo", action="store_true", help="do not time the dynamo exporter")
    ap.add_argument("--only", choices=[c[0] for c in CASES], action="append")
    args = ap.parse_args()

    stack = import_reference_stack("segmentation.py")
    if stack is None:
        return 2
    ort, torch, torchvision = stack
    import numpy as np

    import netdsl

    if args.threads:
        torch.set_num_threads(args.threads)
    exporters = [("TorchScript", False)]
    if not args.skip_dynamo:
        try:
            import onnxscript  # noqa: F401
            exporters.append(("dynamo", True))
        except ImportError:
            print("(onnxscript not installed: the dynamo exporter is left out)")
    h, w = args.size
    tmp = Path(tempfile.mkdtemp(prefix="netdsl-segbench-"))
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"onnxruntime {ort.__version__}, netdsl {netdsl.__version__}; input 1x3x{h}x{w}; "
          f"threads {args.threads or 'default'}; latency median of {args.runs} after "
          f"{args.warmup} warm-up; compile best of {args.repeat}\n", flush=True)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if args.threads:
        so.intra_op_num_threads = args.threads

    results = []
    for key, network in CASES:
        if args.only and key not in args.only:
            continue
        torch.manual_seed(0)
        tv = getattr(torchvision.models.segmentation, key)(
            weights=None, weights_backbone=None, aux_loss=False)
        randomise_batchnorm(tv, torch.Generator().manual_seed(1))   # eval-mode BN that is not the identity
        sd = tv.state_dict()
        x = torch.randn(1, 3, h, w)
        ours_path, static_path = tmp / f"{key}-netdsl.onnx", tmp / f"{key}-netdsl-static.onnx"
        tv_path, scratch = tmp / f"{key}-tv.onnx", tmp / f"{key}-scratch.onnx"

        # ---- compile time
        def ours():
            netdsl.load(FCN_FILE, network=network).save_onnx(ours_path, weights=sd)

        def export(use_dynamo, dest):
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                torch.onnx.export(tv, (x,), str(dest), input_names=["image"], output_names=["out"],
                                  opset_version=17, dynamo=use_dynamo)

        t_ours = best(ours, args.repeat)
        t_exp = [best(lambda: export(dyn, tv_path if not dyn else scratch), args.repeat)
                 for _, dyn in exporters]
        print(f"[{network}] compile: netdsl {t_ours:.3f} s, " + ", ".join(
            f"{n} export {t:.3f} s (ratio {t_ours / t:.3f})" for (n, _), t in zip(exporters, t_exp)),
            flush=True)
        netdsl.load(FCN_FILE, network=network, inputs={"image": (1, 3, h, w)}).save_onnx(
            static_path, weights=sd)

        # ---- agreement
        # `netdsl run`'s session: the one symbolic file, its N, H, W fixed from the input shape
        # by the code `netdsl run` uses, with this benchmark's threads
        so_run = fixed_size_options(ort, ours_path, [("image", (1, 3, h, w))], so)
        sessions = [ort.InferenceSession(str(p), o, providers=["CPUExecutionProvider"])
                    for p, o in ((ours_path, so), (ours_path, so_run), (static_path, so),
                                 (tv_path, so))]
        assert sessions[1].get_inputs()[0].shape == [1, 3, h, w], sessions[1].get_inputs()[0].shape
        feeds = [{s.get_inputs()[0].name: x.numpy()} for s in sessions]
        with torch.no_grad():
            ref = tv(x)["out"].numpy()
        outs = [s.run(None, f)[0] for s, f in zip(sessions, feeds)]
        diffs = [float(np.abs(o - ref).max()) for o in outs]
        print(f"[{network}] max abs diff from eager torchvision (|out| up to "
              f"{float(np.abs(ref).max()):.2f}): netdsl {diffs[0]:.1e}, netdsl sizes fixed at "
              f"session start {diffs[1]:.1e}, netdsl static {diffs[2]:.1e}, torchvision's export "
              f"{diffs[3]:.1e}", flush=True)

        # ---- onnxruntime latency
        t_run, t_cpu, t_min = interleaved_medians(
            [lambda s=s, f=f: s.run(None, f) for s, f in zip(sessions, feeds)], args.runs, args.warmup)
        for what, t in (("wall", t_run), ("CPU", t_cpu), ("min CPU", t_min)):
            print(f"[{network}] onnxruntime {what}: netdsl {t[0] * 1e3:.1f} ms, netdsl sizes fixed "
                  f"at session start {t[1] * 1e3:.1f} ms, netdsl static {t[2] * 1e3:.1f} ms, "
                  f"torchvision {t[3] * 1e3:.1f} ms, ratio {t[0] / t[3]:.3f} (sizes fixed at "
                  f"session start {t[1] / t[3]:.3f}, static {t[2] / t[3]:.3f})", flush=True)
        del sessions
        results.append(dict(network=network, compile=(t_ours, t_exp), run=t_run, cpu=t_cpu, min=t_min,
                            ops=(onnx_op_counts(ours_path), onnx_op_counts(tv_path))))

    print(f"\nonnxruntime latency, 1x3x{h}x{w} (ms, median, and minimum CPU time); ratio = netdsl / "
          "torchvision (target <= 1.00)\n  netdsl: the symbolic file; run: the same file, sizes fixed at "
          "session start (what `netdsl run` does); static: the file compiled for the size")
    print(f"{'network':20} {'time':8} {'netdsl':>9} {'run':>9} {'static':>9} {'torchvision':>12} "
          f"{'ratio':>6} {'run':>6} {'static':>6}  target <= 1.00 (netdsl, run, static)")
    for r in results:
        for what, label in (("run", "wall"), ("cpu", "CPU"), ("min", "min CPU")):
            a, f, s, b = r[what]
            print(f"{r['network']:20} {label:8} {a * 1e3:9.1f} {f * 1e3:9.1f} "
                  f"{s * 1e3:9.1f} {b * 1e3:12.1f} {a / b:6.3f} {f / b:6.3f} {s / b:6.3f}  "
                  + ", ".join('met' if t / b <= 1.0 else 'NOT met' for t in (a, f, s)))
    print("\nCompile to an ONNX file with weights (s, best of %d); ratio = netdsl / torch" % args.repeat)
    print(f"{'network':20} {'netdsl':>8}" + "".join(f" {n + ' export':>19} {'ratio':>6}"
                                                   for n, _ in exporters))
    for r in results:
        t_ours, t_exp = r["compile"]
        print(f"{r['network']:20} {t_ours:8.3f}" + "".join(f" {t:19.3f} {t_ours / t:6.3f}" for t in t_exp))
    print_op_count_differences([(r["network"], *r["ops"]) for r in results])
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
