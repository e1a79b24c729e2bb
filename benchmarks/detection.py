"""netdsl's Faster R-CNN against torchvision's: onnxruntime latency, eager latency, compile time.

FasterRCNN_ResNet50_FPN (examples/faster_rcnn.net) against torchvision's
fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None), random BatchNorm statistics, eval
mode, with torchvision's state_dict given to netdsl so that both compute the same function.
Random weights detect nothing; they are adjusted as the tests do (parity_util.make_detector_detect)
so that each image, bright rectangles on noise, gets dozens of detections, as trained weights
would: post-processing then does real work. In one run:

  onnxruntime   CPUExecutionProvider, ORT_ENABLE_ALL, --threads intra-op threads, one image at
                each --sizes (default 512x512 and 800x800; both models resize the short side to
                800 inside): netdsl's one file (N, H, W symbolic, as `netdsl compile` writes it)
                against the file torch.onnx.export writes for torchvision's model (TorchScript
                exporter, dynamo=False, opset 17, exported at that size, as torchvision's docs
                export detection models). Median of --runs after --warmup, interleaved.
  eager         netdsl's generated torch module against torchvision's model, torch.no_grad(),
                the same image. netdsl's module uses torchvision.ops' NMS / RoIAlign kernels
                when torchvision imports, as here.
  compile       netdsl: load + elaborate + emit + write the ONNX file with the weights;
                torch: torch.onnx.export of torchvision's model (TorchScript exporter). Best of
                --repeat.

Detections are compared before timing (counts per image, max box and score differences).
Ratios are netdsl / torchvision (targets: onnxruntime <= 0.8, eager <= 1.05).

    python benchmarks/detection.py [--sizes 512 512 800 800] [--runs 5]
        [--warmup 1] [--repeat 1] [--threads 0]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # run from a checkout without installing
sys.path.insert(0, str(ROOT / "tests"))
from compile_speed import best  # noqa: E402  (this script's directory is on sys.path)
from parity_util import make_detector_detect, rectangle_images  # noqa: E402
from segmentation import import_reference_stack, interleaved_medians  # noqa: E402
from torchvision_compare import fixed_size_options  # noqa: E402
from torchvision_compare import onnx_op_counts, print_op_count_differences  # noqa: E402

SPEC = ROOT / "examples" / "faster_rcnn.net"
NETWORK = "FasterRCNN_ResNet50_FPN"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 512, 800, 800], metavar="H W",
                    help="image sizes, as pairs")
    ap.add_argument("--runs", type=int, default=5, help="latency: median of this many runs")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1, help="compile: best of this many runs")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: library default)")
    args = ap.parse_args()
    if len(args.sizes) % 2:
        ap.error("--sizes takes pairs H W")
    sizes = list(zip(args.sizes[::2], args.sizes[1::2]))

    stack = import_reference_stack("detection.py")
    if stack is None:
        return 2
    ort, torch, torchvision = stack
    import numpy as np

    import netdsl

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="netdsl-detbench-"))
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, onnxruntime "
          f"{ort.__version__}, netdsl {netdsl.__version__}; threads {args.threads or 'default'}; "
          f"latency median of {args.runs} after {args.warmup} warm-up\n", flush=True)
    torch.manual_seed(0)
    tv = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    images = {(h, w): rectangle_images(1, h, w, seed=h * 7 + w) for h, w in sizes}
    make_detector_detect(tv, [x[0] for x in images.values()], torch.Generator().manual_seed(1))
    sd = tv.state_dict()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if args.threads:
        so.intra_op_num_threads = args.threads

    ours_path = tmp / "netdsl.onnx"
    net = netdsl.load(SPEC, network=NETWORK)
    t_ours = best(lambda: netdsl.load(SPEC, network=NETWORK).save_onnx(ours_path, weights=sd), args.repeat)
    ours_torch = net.to_torch(weights={k: v.numpy() for k, v in sd.items()}).eval()
    ours_sess = ort.InferenceSession(str(ours_path), so, providers=["CPUExecutionProvider"])

    rows = []
    for h, w in sizes:
        x = images[h, w]
        tv_path = tmp / f"tv-{h}x{w}.onnx"

        def export():
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                torch.onnx.export(tv, ([x[0]],), str(tv_path), opset_version=17, dynamo=False,
                                  input_names=["image"], output_names=["boxes", "labels", "scores"])

        t_exp = best(export, args.repeat)
        tv_sess = ort.InferenceSession(str(tv_path), so, providers=["CPUExecutionProvider"])

        # ---- agreement
        with torch.no_grad():
            ref = tv([x[0]])[0]
            eager = ours_torch([x[0]])[0]
        got = dict(zip(["boxes", "scores", "labels", "batch_index"],
                       ours_sess.run(None, {"images": x.numpy()})))
        tv_onnx = dict(zip(["boxes", "labels", "scores"], tv_sess.run(None, {"image": x[0].numpy()})))
        n = len(ref["boxes"])
        counts = (n, len(eager["boxes"]), len(got["boxes"]), len(tv_onnx["boxes"]))
        print(f"[{h}x{w}] detections: torchvision {counts[0]}, netdsl eager {counts[1]}, netdsl ONNX "
              f"{counts[2]}, torchvision's ONNX {counts[3]}", flush=True)
        if counts[0] == counts[1] == counts[2] and n:
            db = max(float((eager["boxes"] - ref["boxes"]).abs().max()),
                     float(np.abs(got["boxes"] - ref["boxes"].numpy()).max()))
            ds = max(float((eager["scores"] - ref["scores"]).abs().max()),
                     float(np.abs(got["scores"] - ref["scores"].numpy()).max()))
            print(f"[{h}x{w}] max |box diff| {db:.1e} px, max |score diff| {ds:.1e}", flush=True)

        # ---- onnxruntime, then eager
        # the same file with N, H, W fixed when the session starts, as `netdsl run` does it
        so_run = fixed_size_options(ort, ours_path, [("images", tuple(x.shape))], so)
        fixed_sess = ort.InferenceSession(str(ours_path), so_run, providers=["CPUExecutionProvider"])
        feeds_ours, feeds_tv = {"images": x.numpy()}, {"image": x[0].numpy()}
        fixed = dict(zip(["boxes", "scores", "labels", "batch_index"], fixed_sess.run(None, feeds_ours)))
        assert len(fixed["boxes"]) == counts[2] and np.abs(fixed["boxes"] - got["boxes"]).max(initial=0) < 1e-3
        ort_wall, _, ort_min = interleaved_medians(
            [lambda: ours_sess.run(None, feeds_ours), lambda: tv_sess.run(None, feeds_tv),
             lambda: fixed_sess.run(None, feeds_ours)], args.runs, args.warmup)

        def eager_ours():
            with torch.no_grad():
                ours_torch([x[0]])

        def eager_tv():
            with torch.no_grad():
                tv([x[0]])

        eager_wall, _, eager_min = interleaved_medians([eager_ours, eager_tv], args.runs, args.warmup)
        print(f"[{h}x{w}] onnxruntime: netdsl {ort_wall[0] * 1e3:.0f} ms, torchvision {ort_wall[1] * 1e3:.0f} ms, "
              f"ratio {ort_wall[0] / ort_wall[1]:.3f} (min CPU {ort_min[0] / ort_min[1]:.3f}); netdsl with sizes "
              f"fixed at session start {ort_wall[2] * 1e3:.0f} ms, ratio {ort_wall[2] / ort_wall[1]:.3f} (min CPU "
              f"{ort_min[2] / ort_min[1]:.3f}); eager: netdsl "
              f"{eager_wall[0] * 1e3:.0f} ms, torchvision {eager_wall[1] * 1e3:.0f} ms, ratio "
              f"{eager_wall[0] / eager_wall[1]:.3f} (min CPU {eager_min[0] / eager_min[1]:.3f}); compile: "
              f"netdsl {t_ours:.2f} s, torch.onnx.export {t_exp:.2f} s", flush=True)
        rows.append(dict(size=f"{h}x{w}", counts=counts, ort=ort_wall, ort_min=ort_min, eager=eager_wall,
                         eager_min=eager_min, compile=(t_ours, t_exp),
                         ops=(onnx_op_counts(ours_path), onnx_op_counts(tv_path))))
        del tv_sess, fixed_sess

    print("\nFaster R-CNN ResNet-50 FPN, one image; ratio = netdsl / torchvision (median wall; min CPU); "
          "fixed: netdsl's file with N, H, W fixed at session start (`netdsl run`)")
    print(f"{'size':10} {'ORT netdsl':>11} {'ORT tv':>9} {'ratio':>6} {'minCPU':>7} {'<=0.8':>6} {'fixed':>6}   "
          f"{'eager netdsl':>13} {'eager tv':>9} {'ratio':>6} {'minCPU':>7} {'<=1.05':>7}   "
          f"{'compile':>8} {'export':>8} {'ratio':>6}")
    for r in rows:
        o, om, e, em, (c1, c2) = r["ort"], r["ort_min"], r["eager"], r["eager_min"], r["compile"]
        print(f"{r['size']:10} {o[0] * 1e3:11.0f} {o[1] * 1e3:9.0f} {o[0] / o[1]:6.3f} {om[0] / om[1]:7.3f} "
              f"{'met' if o[0] / o[1] <= 0.8 else 'NOT':>6} {o[2] / o[1]:6.3f}   {e[0] * 1e3:13.0f} {e[1] * 1e3:9.0f} "
              f"{e[0] / e[1]:6.3f} {em[0] / em[1]:7.3f} {'met' if e[0] / e[1] <= 1.05 else 'NOT':>7}   "
              f"{c1:8.2f} {c2:8.2f} {c1 / c2:6.3f}")
    print_op_count_differences([(f"Faster R-CNN {r['size']}", *r["ops"]) for r in rows])
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
