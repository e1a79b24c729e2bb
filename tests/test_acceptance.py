"""The main job as a user runs it: compile the U-Net example to ONNX with the CLI, run it on
onnxruntime at the paper's tile size, and read every level's shape in the summary."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
UNET = ROOT / "examples" / "unet.net"


def netdsl(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "netdsl", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)


def test_compile_unet_to_onnx_and_run_it_at_572(tmp_path):
    out = tmp_path / "unet.onnx"
    r = netdsl("compile", UNET, "--target", "onnx", "-o", out)
    assert r.returncode == 0, r.stderr
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 1, 572, 572)).astype(np.float32)
    (mask,) = sess.run(None, {"image": x})
    assert mask.shape == (1, 2, 388, 388)
    assert np.isfinite(mask).all() and mask.std() > 0


def test_summary_shows_every_level(tmp_path):
    r = netdsl("summary", UNET, "--input", "image=1x1x572x572", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    shapes = {layer["path"]: layer["output_shape"] for layer in s["layers"]}
    # the encoder's second conv at each depth, and the decoder's at each depth but the bottom
    for depth, (size, ch) in enumerate([(568, 64), (280, 128), (136, 256), (64, 512), (28, 1024)]):
        prefix = "body" + ".inner" * depth
        assert shapes[f"{prefix}.enc.conv2"] == [1, ch, size, size]
    for depth, (size, ch) in enumerate([(388, 64), (196, 128), (100, 256), (52, 512)]):
        prefix = "body" + ".inner" * depth
        assert shapes[f"{prefix}.dec.conv2"] == [1, ch, size, size]
    assert s["outputs"] == [{"name": "mask", "shape": [1, 2, 388, 388]}]
    assert s["params"] == 31_030_658
    text = netdsl("summary", UNET)
    assert text.returncode == 0 and "H ≡ 12 (mod 16), H ≥ 188" in text.stdout
