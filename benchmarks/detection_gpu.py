"""Faster R-CNN on a GPU: netdsl's torch module (pure-torch NMS / RoIAlign, and with torchvision's
kernels) and its ONNX file on onnxruntime's CUDA provider, against torchvision on the same GPU.

FasterRCNN_ResNet50_FPN (examples/faster_rcnn.net) with torchvision's weights (random, adjusted
as the tests do so that each image gets dozens of detections), eval, images of --sizes (bright
rectangles on noise). Prints, per size: detections of every path and their largest differences
from torchvision on the GPU, and the median latency of --runs after --warmup (CUDA synchronised).
The ONNX rows need onnxruntime with the CUDAExecutionProvider; without it they are left out.

    python benchmarks/detection_gpu.py [--sizes 480 640 800 800] [--runs 10] [--warmup 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from parity_util import make_detector_detect, rectangle_images  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[480, 640, 800, 800])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    import numpy as np
    import torch
    import torchvision

    import netdsl
    try:
        import onnxruntime as ort
        cuda_ep = "CUDAExecutionProvider" in ort.get_available_providers()
        print(f"onnxruntime {ort.__version__}: providers {ort.get_available_providers()}")
    except ImportError:
        ort, cuda_ep = None, False
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check", file=sys.stderr)
        return 2
    dev = torch.device("cuda")
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}, torchvision {torchvision.__version__}")
    sizes = list(zip(args.sizes[::2], args.sizes[1::2]))
    torch.manual_seed(0)
    tv = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    images = {s: rectangle_images(1, *s, seed=s[0] * 7 + s[1]) for s in sizes}
    make_detector_detect(tv, [x[0] for x in images.values()], torch.Generator().manual_seed(1))
    sd = {k: v.numpy() for k, v in tv.state_dict().items()}
    net = netdsl.load(ROOT / "examples" / "faster_rcnn.net", network="FasterRCNN_ResNet50_FPN")
    tv = tv.to(dev).eval()
    ours = net.to_torch(weights=sd).to(dev).eval()
    glb = type(ours).forward.__globals__            # the generated module's namespace
    sess = None
    if cuda_ep:
        path = Path(tempfile.mkdtemp()) / "frcnn.onnx"
        net.save_onnx(path, weights=sd)
        sess = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])

    def timed(fn):
        for _ in range(args.warmup):
            fn()
        torch.cuda.synchronize()
        out = []
        for _ in range(args.runs):
            t = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            out.append(time.perf_counter() - t)
        return statistics.median(out)

    failures = 0
    for h, w in sizes:
        x = images[h, w][0].to(dev)
        with torch.no_grad():
            ref = tv([x])[0]
            paths = {}
            for use_tv in (False, True):
                glb["DET_USE_TORCHVISION"] = use_tv
                paths["netdsl torch, " + ("torchvision ops" if use_tv else "pure torch")] = \
                    {k: v.cpu() for k, v in ours([x])[0].items()}
        if sess is not None:
            b, s, lab, _ = sess.run(None, {"images": x[None].cpu().numpy()})
            paths["netdsl ONNX, CUDA EP"] = {"boxes": torch.from_numpy(b), "scores": torch.from_numpy(s),
                                             "labels": torch.from_numpy(lab)}
        ref = {k: v.cpu() for k, v in ref.items()}
        print(f"\n[{h}x{w}] torchvision: {len(ref['boxes'])} detections")
        for name, got in paths.items():
            same = len(got["boxes"]) == len(ref["boxes"]) and bool((got["labels"] == ref["labels"]).all())
            db = float((got["boxes"] - ref["boxes"]).abs().max()) if same and len(ref["boxes"]) else float("nan")
            ds = float((got["scores"] - ref["scores"]).abs().max()) if same and len(ref["boxes"]) else float("nan")
            ok = same and db <= 1e-2 and ds <= 1e-4
            failures += not ok
            print(f"  {name:34} {len(got['boxes']):4d} detections, labels {'equal' if same else 'DIFFER'}, "
                  f"max |box diff| {db:.1e} px, max |score diff| {ds:.1e}  {'ok' if ok else 'MISMATCH'}")
        with torch.no_grad():
            t_tv = timed(lambda: tv([x]))
            lat = {}
            for use_tv in (False, True):
                glb["DET_USE_TORCHVISION"] = use_tv
                lat[use_tv] = timed(lambda: ours([x]))
        line = (f"  latency: torchvision {t_tv * 1e3:.1f} ms; netdsl torch pure {lat[False] * 1e3:.1f} ms "
                f"({lat[False] / t_tv:.2f}x), with torchvision ops {lat[True] * 1e3:.1f} ms ({lat[True] / t_tv:.2f}x)")
        if sess is not None:
            feed = {"images": x[None].cpu().numpy()}
            t_ort = timed(lambda: sess.run(None, feed))
            line += f"; ONNX on CUDA EP {t_ort * 1e3:.1f} ms ({t_ort / t_tv:.2f}x)"
        print(line)
    print(f"\n{'all paths agree' if not failures else f'{failures} MISMATCHES'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
