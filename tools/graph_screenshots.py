#!/usr/bin/env python
"""Screenshots of the HTML graph view for the README: U-Net and ResNet-50.

    python tools/graph_screenshots.py [--out docs/images]

Writes each page with `netdsl graph SPEC -o PAGE.html`, opens it in a headless Chromium
(selenium with Debian's chromium and chromedriver, as tests/test_graph_browser.py), expands what
the picture should show, sizes the window to the laid-out graph and saves a PNG:

- docs/images/unet-graph.png: U-Net at depth 2 with two more levels of its recursive Level block
  opened (the skip connections around each level);
- docs/images/resnet50-graph.png: ResNet-50 at depth 1 with layer1 and its first Bottleneck
  expanded, and the tooltip of one of its convolutions showing.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SHOTS = [
    # (png name, spec, network, depth, composites to expand, node to hover, width, max height)
    ("unet-graph.png", "examples/unet.net", None, 2, ["body.inner", "body.inner.inner"], None,
     1200, 2000),
    ("resnet50-graph.png", "examples/resnet.net", "ResNet50", 1, ["layer1", "layer1.0"],
     "fc", 1200, 2000),
]

WAIT = ("return document.body.dataset.ready === '1' && "
        "+(document.body.dataset.layouts || 0) > arguments[0]")


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--hide-scrollbars", "--force-device-scale-factor=1", "--window-size=1300,1000"):
        options.add_argument(arg)
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(service=service, options=options)


def wait_layout(drv, after: int) -> int:
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(drv, 60).until(lambda d: d.execute_script(WAIT, after))
    return int(drv.execute_script("return +document.body.dataset.layouts"))


def shoot(drv, html: Path, png: Path, expand, hover, width: int, max_height: int) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    drv.set_window_size(width, 1000)
    drv.get(html.as_uri())
    n = wait_layout(drv, 0)
    if expand:
        drv.execute_script("arguments[0].forEach(id => netdslGraph.expanded.add(id));"
                           "netdslGraph.relayout(null);", expand)
        n = wait_layout(drv, n)
    # a window as tall as the graph at 1:1 (within max_height), then fit it
    gh, header = drv.execute_script(
        "return [+document.getElementById('canvas').dataset.height,"
        " document.querySelector('header').getBoundingClientRect().height]")
    inner = drv.execute_script("return [window.outerHeight - window.innerHeight]")[0]
    drv.set_window_size(width, int(min(max_height, gh + header + inner + 8)))
    drv.execute_script("netdslGraph.fit()")
    if hover:
        target = drv.find_element("css selector", f'#viewport .node[data-id="{hover}"]')
        ActionChains(drv).move_to_element(target).perform()
        assert drv.find_element("id", "tooltip").is_displayed()
    png.parent.mkdir(parents=True, exist_ok=True)
    drv.save_screenshot(str(png))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images",
                    help="folder for the PNGs (default: docs/images)")
    args = ap.parse_args(argv)
    args.out = args.out.resolve()
    os.chdir(ROOT)                     # relative spec paths: the pages show examples/...
    from netdsl.cli import main as netdsl_main
    drv = browser()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, spec, network, depth, expand, hover, width, max_height in SHOTS:
                html = Path(tmp) / (Path(name).stem + ".html")
                cmd = ["graph", spec, "--depth", str(depth), "-o", str(html)]
                if network:
                    cmd[2:2] = ["--network", network]
                if netdsl_main(cmd) != 0:
                    return 1
                shoot(drv, html, args.out / name, expand, hover, width, max_height)
                print(f"wrote {args.out / name}", file=sys.stderr)
    finally:
        drv.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
