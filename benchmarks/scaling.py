"""How netdsl's costs grow: long chains, many inputs, start-up, and VGG16 against torch.

Every figure is a whole `netdsl` process (interpreter start, imports, work, exit), timed from
outside, the best of --repeat runs: wall-clock seconds, and in brackets the CPU seconds the
process used (user + system, all threads), which waiting for a busy machine's cores does not
inflate. Ratios compare figures of this one run.

  chains       `check` and `compile --target onnx|torch` of a spec whose body is N layer
               statements, Conv2d(4, 3, padding = 1) and ReLU alternating, on f32[1, 4, 8, 8]
               (and, with --symbolic, on f32[N, 4, H, W]). Target: check under 1 s at 10k layers.
  inputs       `check` of a network declaring N inputs (2.5k and 20k): linear growth is 8x.
  start-up     `netdsl check examples/resnet.net --network ResNet50` minus `python -c pass`.
               Target: under 0.15 s.
  VGG16        `netdsl compile examples/vgg.net --network VGG16 --target onnx` (138M random
               weights, 553 MB) against a Python process that builds torchvision's VGG16 with
               torchvision's initialisation and exports it with torch.onnx.export (TorchScript
               exporter). torchvision is not needed: the model is written out here, layer for
               layer and init for init as torchvision's vgg16(weights=None) builds it.
               Target: netdsl / torch <= 0.2.

The processes run as an installed package runs: with compiled bytecode (kept in a temporary
PYTHONPYCACHEPREFIX, warmed by a first run) and netdsl's parser-table cache warm.

    python benchmarks/scaling.py [--repeat 3] [--only chains,inputs,startup,vgg] [--symbolic]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHAIN_SIZES = (1000, 5000, 10000)
INPUT_SIZES = (2500, 20000)

TORCH_VGG16 = r'''
import sys, torch
from torch import nn

def vgg16():
    # torchvision.models.vgg16(weights=None): cfg "D", then its _initialize_weights
    layers, c_in = [], 3
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c_in, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            c_in = v
    model = nn.Sequential()
    model.features = nn.Sequential(*layers)
    model.avgpool = nn.AdaptiveAvgPool2d((7, 7))
    model.flatten = nn.Flatten(1)
    model.classifier = nn.Sequential(
        nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(0.5), nn.Linear(4096, 1000))
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.constant_(m.bias, 0)
    return model

model = vgg16().eval()
torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), sys.argv[1], input_names=["image"],
                  output_names=["logits"], opset_version=17, dynamo=False)
'''


def chain_spec(n: int, symbolic: bool) -> str:
    shape = "N, 4, H, W" if symbolic else "1, 4, 8, 8"
    body = ["    Conv2d(4, 3, padding = 1)" if i % 2 == 0 else "    ReLU" for i in range(n)]
    return "network Chain {\n    input x: f32[%s]\n%s\n    output y = x\n}\n" % (shape, "\n".join(body))


def inputs_spec(n: int) -> str:
    decls = [f"    input x{i}: f32[1, 4]" for i in range(n)]
    return "network Many {\n%s\n    output y = x0 -> ReLU\n}\n" % "\n".join(decls)


class Runner:
    def __init__(self, repeat: int, tmp: Path):
        self.repeat = repeat
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.env.update(PYTHONPYCACHEPREFIX=str(tmp / "pycache"), NETDSL_CACHE_DIR=str(tmp / "cache"),
                        PYTHONPATH=str(ROOT) + os.pathsep + self.env.get("PYTHONPATH", ""))

    def once(self, cmd: list) -> tuple:
        """(wall seconds, CPU seconds) of one run of cmd."""
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env,
                                cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
        return wall, usage.ru_utime + usage.ru_stime

    def best(self, args: list, warm: bool = True) -> "Time":
        cmd = [sys.executable] + args
        if warm:
            self.once(cmd)
        runs = [self.once(cmd) for _ in range(self.repeat)]
        return Time(min(w for w, _ in runs), min(c for _, c in runs))

    def netdsl(self, *args) -> "Time":
        return self.best(["-m", "netdsl", *map(str, args)])


class Time:
    """Best wall-clock and best CPU seconds of a command's runs."""

    def __init__(self, wall: float, cpu: float):
        self.wall, self.cpu = wall, cpu

    def __sub__(self, other: "Time") -> "Time":
        return Time(self.wall - other.wall, self.cpu - other.cpu)

    def __str__(self):
        return f"{self.wall:6.3f} ({self.cpu:5.3f})"


def chains(r: Runner, tmp: Path, symbolic: bool) -> None:
    print(f"\nchains of N layer statements ({'f32[N, 4, H, W]' if symbolic else 'f32[1, 4, 8, 8]'}); "
          "seconds, best of", r.repeat)
    print(f"{'layers':>7} {'check':>15} {'compile onnx':>15} {'compile torch':>15}")
    for n in CHAIN_SIZES:
        spec = tmp / f"chain{n}.net"
        spec.write_text(chain_spec(n, symbolic))
        t_check = r.netdsl("check", spec)
        t_onnx = r.netdsl("compile", spec, "--target", "onnx", "-o", tmp / "chain.onnx")
        t_torch = r.netdsl("compile", spec, "--target", "torch", "-o", tmp / "chain.py")
        print(f"{n:>7} {t_check!s:>15} {t_onnx!s:>15} {t_torch!s:>15}", flush=True)
    print(f"        target: check of 10k layers under 1 s (wall {'met' if t_check.wall < 1 else 'NOT met'}, "
          f"CPU {'met' if t_check.cpu < 1 else 'NOT met'} here)")


def inputs(r: Runner, tmp: Path) -> None:
    print(f"\nmany inputs: `check` seconds, best of {r.repeat}")
    times = []
    for n in INPUT_SIZES:
        spec = tmp / f"inputs{n}.net"
        spec.write_text(inputs_spec(n))
        times.append(r.netdsl("check", spec))
        print(f"{n:>7} inputs {times[-1]!s:>15}", flush=True)
    grow = INPUT_SIZES[1] / INPUT_SIZES[0]
    print(f"        {INPUT_SIZES[1]} / {INPUT_SIZES[0]}: {times[1].cpu / times[0].cpu:.1f}x the CPU time for "
          f"{grow:.0f}x the inputs (linear: {grow:.0f}x; start-up included)")


def startup(r: Runner) -> None:
    bare = r.best(["-c", "pass"])
    imp = r.best(["-c", "import netdsl.cli"])
    check = r.netdsl("check", ROOT / "examples" / "resnet.net", "--network", "ResNet50")
    over = check - bare
    print(f"\nstart-up, best of {r.repeat}: python -c pass {bare}; import netdsl.cli {imp}; "
          f"check ResNet-50 {check}")
    print(f"        check over bare python: {over} (target 0.15 s: wall {'met' if over.wall < 0.15 else 'NOT met'}, "
          f"CPU {'met' if over.cpu < 0.15 else 'NOT met'} here); of which importing netdsl {imp - bare}")


def vgg(r: Runner, tmp: Path) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        print("\nVGG16: skipped (torch is not installed)")
        return
    script = tmp / "torch_vgg16.py"
    script.write_text(TORCH_VGG16)
    out = tmp / "vgg16.onnx"
    t_ours = r.netdsl("compile", ROOT / "examples" / "vgg.net", "--network", "VGG16", "--target", "onnx",
                      "-o", out)
    size = out.stat().st_size
    t_torch = r.best([str(script), str(tmp / "vgg16-torch.onnx")])
    ratio = t_ours.wall / t_torch.wall
    print(f"\nVGG16 to ONNX with random weights ({size / 1e6:.0f} MB), whole process, best of {r.repeat}:")
    print(f"        netdsl compile {t_ours}; torch (build + init + torch.onnx.export) {t_torch}")
    print(f"        ratio netdsl / torch: wall {ratio:.2f}x (target <= 0.2x: {'met' if ratio <= 0.2 else 'NOT met'} "
          f"here), CPU {t_ours.cpu / t_torch.cpu:.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="chains,inputs,startup,vgg")
    ap.add_argument("--symbolic", action="store_true", help="also time chains over symbolic sizes")
    args = ap.parse_args()
    parts = set(args.only.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="netdsl-scaling-"))
    try:
        r = Runner(args.repeat, tmp)
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
              f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
        if "startup" in parts:
            startup(r)
        if "chains" in parts:
            chains(r, tmp, symbolic=False)
            if args.symbolic:
                chains(r, tmp, symbolic=True)
        if "inputs" in parts:
            inputs(r, tmp)
        if "vgg" in parts:
            vgg(r, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
