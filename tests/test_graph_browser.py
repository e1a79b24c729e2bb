"""The HTML graph view in a real headless Chromium (selenium with Debian's chromium and
chromedriver): the page lays out, a click expands a block and a second one collapses it, hovering
shows the tooltip with the source line, and big networks render fast and legibly.

Skipped when selenium, chromium or chromedriver is missing, unless NETDSL_REQUIRE_BROWSER=1
(CI sets it; .ci/run installs Debian's chromium and chromium-driver)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import netdsl
from netdsl.graphview.model import build_view, visible

ROOT = Path(__file__).resolve().parent.parent
REQUIRE = os.environ.get("NETDSL_REQUIRE_BROWSER") == "1"


def _unavailable(why: str):
    if REQUIRE:
        pytest.fail(f"NETDSL_REQUIRE_BROWSER=1 but {why}")
    pytest.skip(why)


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    return found or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)


@pytest.fixture(scope="module")
def driver():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[test]')")
    chromium, chromedriver = _binary("chromium"), _binary("chromedriver")
    if chromium is None or chromedriver is None:
        _unavailable("chromium or chromedriver is missing (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        drv = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    except Exception as e:  # noqa: BLE001 - any start-up failure means "no browser here"
        _unavailable(f"chromium did not start: {e}")
    try:
        yield drv
    finally:
        drv.quit()


def write_html(tmp: Path, spec: str, network: str | None, depth: int) -> tuple[Path, dict]:
    """`netdsl graph SPEC -o x.html` (or, while that command is not there, its two calls)."""
    net = netdsl.load(ROOT / spec, network=network)
    view = build_view(net).to_json()
    out = tmp / f"{view['network']}-{depth}.html"
    from netdsl.commands import graph as command
    if "being written" not in (command.__doc__ or ""):
        from netdsl.cli import main
        argv = ["graph", str(ROOT / spec), "--depth", str(depth), "-o", str(out)]
        if network:
            argv[2:2] = ["--network", network]
        assert main(argv) == 0
    else:
        from netdsl.graphview.html import render_html
        out.write_text(render_html(view, depth), encoding="utf-8")
    return out, view


def open_page(drv, path: Path) -> None:
    drv.get(path.as_uri())
    wait_layout(drv, 0)
    errors = [e for e in drv.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, errors


def layouts(drv) -> int:
    return int(drv.execute_script("return +(document.body.dataset.layouts || 0)"))


def wait_layout(drv, after: int) -> None:
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(drv, 30).until(lambda d: d.execute_script(
        "return document.body.dataset.ready === '1' && +(document.body.dataset.layouts || 0) > arguments[0]",
        after))


def dom_graph(drv):
    """(box ids, cluster ids, edges) drawn on the page now."""
    boxes, clusters, edges = drv.execute_script("""
        const q = s => Array.from(document.querySelectorAll(s));
        return [q('#viewport .node').map(e => e.dataset.id),
                q('#viewport .cluster').map(e => e.dataset.id),
                q('#viewport .edge').map(e => [e.dataset.from, e.dataset.to])];""")
    return set(boxes), set(clusters), {tuple(e) for e in edges}


def expected(view: dict, open_ids: set):
    """(boxes, clusters, edges) when exactly the composites in open_ids are expanded."""
    by_id = {n["id"]: n for n in view["nodes"]}

    def box_of(nid):
        chain, n = [], by_id[nid]
        while n["parent"] is not None:
            n = by_id[n["parent"]]
            chain.append(n["id"])
        for a in reversed(chain):
            if a not in open_ids:
                return a
        return nid

    shown = {n["id"] for n in view["nodes"] if box_of(n["id"]) == n["id"]}
    clusters = {i for i in shown if by_id[i]["children"] and i in open_ids}
    edges = {(box_of(e["from"]), box_of(e["to"])) for e in view["edges"]}
    return shown - clusters, clusters, {(a, b) for a, b in edges if a != b}


def click(drv, css: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    before = layouts(drv)
    element = drv.find_element("css selector", css)
    ActionChains(drv).move_to_element(element).click().perform()
    wait_layout(drv, before)


@pytest.fixture(scope="module")
def resnet(driver, tmp_path_factory):
    path, view = write_html(tmp_path_factory.mktemp("graph"), "examples/resnet.net", "ResNet18", 1)
    open_page(driver, path)
    return view


def test_depth_one_shows_the_top_level(driver, resnet):
    boxes, clusters, edges = dom_graph(driver)
    nodes, vis_edges = visible(resnet, 1)
    assert boxes == {n["id"] for n in nodes}
    assert {"layer1", "layer4", "conv1", "fc", "input:image"} <= boxes
    assert clusters == set()
    assert edges == {(e["from"], e["to"]) for e in vis_edges}
    assert ("maxpool", "layer1") in edges and ("layer1", "layer2") in edges
    label = driver.execute_script(
        "return document.querySelector('#viewport .node[data-id=\"layer1\"]').textContent")
    assert "layer1" in label and "params" in label
    # edges are labelled with the shape they carry (and say more on hover)
    shape, title = driver.execute_script(
        "const e = document.querySelector('#viewport .edge[data-from=\"maxpool\"][data-to=\"layer1\"]');"
        "return [e.querySelector('text.shape').textContent, e.querySelector('title').textContent];")
    edge = next(e for e in vis_edges if (e["from"], e["to"]) == ("maxpool", "layer1"))
    assert shape == edge["shape"] and shape.startswith("[N, 64,") and edge["value"] in title
    print(f"\nResNet18 depth 1 in Chromium: {driver.execute_script('return document.body.dataset.renderMs')} ms")


def test_click_expands_and_collapses_a_block(driver, resnet):
    children = next(n for n in resnet["nodes"] if n["id"] == "layer1")["children"]
    assert children == ["layer1.0", "layer1.1"]
    click(driver, '#viewport .node[data-id="layer1"]')
    boxes, clusters, edges = dom_graph(driver)
    want = expected(resnet, {"layer1"})
    assert (boxes, clusters, edges) == want
    assert clusters == {"layer1"} and set(children) <= boxes and "layer1" not in boxes
    assert ("maxpool", "layer1.0") in edges and ("layer1.0", "layer1.1") in edges
    assert ("layer1.1", "layer2") in edges
    # a block inside: its layers appear, wired to their neighbours
    click(driver, '#viewport .node[data-id="layer1.0"]')
    boxes, clusters, edges = dom_graph(driver)
    assert (boxes, clusters, edges) == expected(resnet, {"layer1", "layer1.0"})
    assert {"layer1.0.conv1", "layer1.0.bn2"} <= boxes
    assert ("maxpool", "layer1.0.conv1") in edges          # into the block's first layer
    assert any(a.startswith("layer1.0.") and b == "layer1.1" for a, b in edges)
    # boxes sit inside their cluster on screen
    inside = driver.execute_script("""
        const r = s => document.querySelector(s).getBoundingClientRect();
        const c = r('#viewport .cluster[data-id="layer1.0"] > rect'), b = r('#viewport .node[data-id="layer1.0.conv1"] > rect.box');
        return b.left >= c.left && b.right <= c.right && b.top >= c.top && b.bottom <= c.bottom;""")
    assert inside
    # clicking the cluster's header collapses it again (and forgets what was open inside)
    click(driver, '#viewport .cluster-head[data-id="layer1"]')
    assert dom_graph(driver) == expected(resnet, set())


def test_hover_shows_attributes_and_source_line(driver, resnet):
    from selenium.webdriver.common.action_chains import ActionChains
    conv1 = next(n for n in resnet["nodes"] if n["id"] == "conv1")
    tip = driver.find_element("id", "tooltip")
    ActionChains(driver).move_to_element(
        driver.find_element("css selector", '#viewport .node[data-id="conv1"]')).perform()
    assert tip.is_displayed()
    text = tip.text
    src = conv1["source"]
    assert f"{src['file']}:{src['line']}:{src['col']}" in text
    assert src["text"] in text
    assert "Conv2d" in text and conv1["shape"] in text and "9,408" in text   # 64*3*7*7
    assert "trainable 9,408" in text and "MACs" in text and "kernel_size" in text
    ActionChains(driver).move_to_element(
        driver.find_element("css selector", '#viewport .node[data-id="layer2"]')).perform()
    assert "click to expand" in tip.text and "BasicBlock" not in tip.text.split("\n")[0]
    ActionChains(driver).move_to_element(driver.find_element("id", "net-name")).perform()
    assert not tip.is_displayed()


def test_expand_all_and_collapse_all(driver, resnet):
    click(driver, "#expand-all")
    boxes, clusters, edges = dom_graph(driver)
    layers = {n["id"] for n in resnet["nodes"] if not n["children"]}
    assert boxes == layers and len(edges) == len({(e["from"], e["to"]) for e in resnet["edges"]})
    assert {"layer1", "layer1.0", "layer4.1"} <= clusters
    click(driver, "#collapse-all")
    assert dom_graph(driver) == expected(resnet, set())


def test_wheel_zooms_and_drag_pans(driver, resnet):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

    def box(node_id):
        return driver.execute_script(
            "const r = document.querySelector(`#viewport .node[data-id=\"${arguments[0]}\"] > rect.box`)"
            ".getBoundingClientRect(); return [r.left, r.top, r.width, r.height];", node_id)

    canvas = driver.find_element("id", "canvas")
    before, n = box("layer2"), layouts(driver)
    ActionChains(driver).scroll_from_origin(ScrollOrigin.from_element(canvas), 0, -300).perform()
    zoomed = box("layer2")
    assert zoomed[2] > before[2] * 1.2                       # wheel up: bigger
    # dragging the background (or a box) pans, and does not toggle anything
    ActionChains(driver).move_to_element_with_offset(canvas, -600, 0).click_and_hold() \
        .move_by_offset(40, 25).move_by_offset(40, 25).release().perform()
    panned = box("layer2")
    assert abs(panned[0] - zoomed[0] - 80) < 2 and abs(panned[1] - zoomed[1] - 50) < 2
    ActionChains(driver).move_to_element(
        driver.find_element("css selector", '#viewport .node[data-id="layer2"]')).click_and_hold() \
        .move_by_offset(30, 0).move_by_offset(30, 0).release().perform()
    assert abs(box("layer2")[0] - panned[0] - 60) < 2
    assert layouts(driver) == n and dom_graph(driver) == expected(resnet, set())
    driver.find_element("id", "fit").click()
    assert abs(box("layer2")[2] - before[2]) < 1             # Fit: back to the first view


def test_header_shows_the_network_and_totals(driver, resnet):
    header = driver.find_element("css selector", "header").text
    total = sum(n["params"] for n in resnet["nodes"] if n["parent"] is None)
    assert total == 11_689_512                               # torchvision's resnet18
    assert "ResNet18" in header and f"{total:,} params" in header


@pytest.mark.parametrize("spec,network", [("examples/densenet.net", "DenseNet201"),
                                          ("examples/attention.net", "ViT_L_16")])
def test_big_networks_render_fast_and_legibly(driver, tmp_path_factory, spec, network):
    path, view = write_html(tmp_path_factory.mktemp("big"), spec, network, 1)
    open_page(driver, path)
    ms = float(driver.execute_script("return document.body.dataset.renderMs"))
    print(f"\n{network} depth 1 in Chromium: layout + draw {ms:.0f} ms, "
          f"{path.stat().st_size / 1024:.0f} KiB HTML")
    assert ms < 5000
    nodes, _ = visible(view, 1)
    boxes, clusters, _ = dom_graph(driver)
    assert boxes == {n["id"] for n in nodes} and not clusters
    # legible: every title at least 9 px tall on screen, and no two boxes overlap
    rects = driver.execute_script("""
        return Array.from(document.querySelectorAll('#viewport .node')).map(g => {
            const b = g.querySelector('rect.box').getBoundingClientRect();
            const t = g.querySelector('text.title').getBoundingClientRect();
            return [b.left, b.top, b.right, b.bottom, t.height];});""")
    assert min(r[4] for r in rects) >= 9
    for i, a in enumerate(rects):
        for b in rects[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
