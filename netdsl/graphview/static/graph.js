/* netdsl graph view: draws the view JSON embedded in this page (netdsl/graphview/model.py's
 * schema) as an SVG, laid out by dagre (inlined before this script). Composites (block
 * instances, groups) collapse into one box or expand into a cluster around their children; the
 * layout re-runs on every change. All spec text goes into the DOM as text (textContent or SVG
 * text nodes), never as markup. No network access. */
(function () {
  "use strict";

  var VIEW = JSON.parse(document.getElementById("netdsl-view").textContent);
  var CONFIG = JSON.parse(document.getElementById("netdsl-config").textContent);
  var SVGNS = "http://www.w3.org/2000/svg";   // a namespace name, not fetched
  var FONT = "12px system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif";
  var FONT_BOLD = "bold " + FONT;
  var FONT_SMALL = "10px ui-monospace, 'SFMono-Regular', Menlo, Consolas, 'DejaVu Sans Mono', monospace";
  var LINE = 15, PAD_X = 10, PAD_Y = 6, MARK = 16;

  var byId = new Map();
  VIEW.nodes.forEach(function (n) { byId.set(n.id, n); });
  var expanded = new Set();
  var layouts = 0;

  function isComposite(n) {
    return (n.kind === "block" || n.kind === "group") && n.children && n.children.length > 0;
  }

  // ---- numbers
  function fmtInt(v) { return Number(v).toLocaleString("en-US"); }
  function plural(k, word) { return fmtInt(k) + " " + word + (k === 1 ? "" : "s"); }
  function fmtShort(v) {
    var a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(1) + "G";
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e3) return (v / 1e3).toFixed(1) + "K";
    return String(v);
  }
  var SUFFIX = { "": 1, K: 1e3, M: 1e6, G: 1e9, T: 1e12 };
  function parseMacs(text) {   // "118.0M" -> 118e6; null when symbolic or unknown
    var m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)\s*$/.exec(String(text));
    return m ? parseFloat(m[1]) * SUFFIX[m[2]] : null;
  }

  // ---- text measurement (canvas; no DOM layout needed)
  var ctx2d = document.createElement("canvas").getContext("2d");
  var widthCache = new Map();
  function textWidth(text, font) {
    var key = font + "\u0000" + text, w = widthCache.get(key);
    if (w === undefined) { ctx2d.font = font; w = ctx2d.measureText(text).width; widthCache.set(key, w); }
    return w;
  }

  // ---- what is visible
  function ancestors(n) {   // outermost first
    var out = [];
    while (n.parent !== null && n.parent !== undefined) { n = byId.get(n.parent); if (!n) break; out.unshift(n); }
    return out;
  }
  function representative(id) {   // the visible node standing for `id`: its outermost collapsed ancestor
    var n = byId.get(id), chain = ancestors(n);
    for (var i = 0; i < chain.length; i++) if (isComposite(chain[i]) && !expanded.has(chain[i].id)) return chain[i].id;
    return id;
  }
  function isVisible(n) {
    return ancestors(n).every(function (a) { return expanded.has(a.id); });
  }

  // ---- labels
  function boxLines(n) {
    var title, sub;
    if (n.kind === "input" || n.kind === "output") {
      title = n.label; sub = n.kind + (n.shape ? "  " + n.shape : "");
    } else {
      title = n.path; sub = n.op;
      if (n.kind === "group") sub = "group";
      if (isComposite(n)) sub += " \u00b7 " + plural(countLeaves(n), "layer");
      if (n.params > 0) sub += " \u00b7 " + fmtShort(n.params) + " params";
    }
    return { title: title, sub: sub };
  }
  var leafCount = new Map();
  function countLeaves(n) {
    if (leafCount.has(n.id)) return leafCount.get(n.id);
    var c = 0;
    if (!n.children || n.children.length === 0) c = 1;
    else n.children.forEach(function (k) { var m = byId.get(k); if (m) c += countLeaves(m); });
    leafCount.set(n.id, c);
    return c;
  }

  // ---- layout with dagre
  // dagre (graphlib) keeps nodes in plain objects: an id such as "__proto__" (a legal netdsl
  // name) would reach the prototype. Every id goes to dagre behind this prefix.
  function dkey(id) { return "n:" + id; }
  function unkey(k) { return k.slice(2); }
  function buildGraph() {
    var g = new dagre.graphlib.Graph({ compound: true, multigraph: false });
    g.setGraph({ rankdir: "TB", nodesep: 24, ranksep: 34, edgesep: 12, marginx: 24, marginy: 24 });
    g.setDefaultEdgeLabel(function () { return {}; });
    var visible = VIEW.nodes.filter(isVisible);
    visible.forEach(function (n) {
      if (isComposite(n) && expanded.has(n.id)) {
        g.setNode(dkey(n.id), { cluster: true });
      } else {
        var L = boxLines(n);
        var w = Math.max(textWidth(L.title, FONT_BOLD), textWidth(L.sub, FONT)) + 2 * PAD_X;
        if (isComposite(n)) w += MARK + 6;
        g.setNode(dkey(n.id), { width: Math.ceil(w), height: 2 * LINE + 2 * PAD_Y });
      }
    });
    visible.forEach(function (n) {
      if (n.parent !== null && n.parent !== undefined && g.hasNode(dkey(n.parent))) g.setParent(dkey(n.id), dkey(n.parent));
    });
    var seen = new Map();
    VIEW.edges.forEach(function (e) {
      var a = representative(e.from), b = representative(e.to);
      if (a === b) return;
      var key = a + "\u0000" + b, known = seen.get(key);
      if (known) { known.count += 1; return; }   // parallel edges: one drawn, the first label kept
      var label = e.shape || "";
      var d = { label: label, width: label ? Math.ceil(textWidth(label, FONT_SMALL)) + 8 : 0,
                height: label ? 14 : 0, labelpos: "c", value: e.value, count: 1 };
      seen.set(key, d);
      g.setEdge(dkey(a), dkey(b), d);
    });
    return g;
  }

  // ---- drawing
  var svg = document.getElementById("canvas");
  var viewport = document.getElementById("viewport");
  function el(name, attrs, parent) {
    var e = document.createElementNS(SVGNS, name);
    if (attrs) for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function text(parent, x, y, str, cls) {
    var t = el("text", { x: x, y: y, "class": cls || "" }, parent);
    t.textContent = str;
    return t;
  }
  function basis(points) {   // B-spline through dagre's control points, as cubic Beziers (d3.curveBasis)
    var p = points;
    if (p.length < 3) return "M" + p.map(function (q) { return q.x + "," + q.y; }).join("L");
    var d = "M" + p[0].x + "," + p[0].y;
    d += "L" + (5 * p[0].x + p[1].x) / 6 + "," + (5 * p[0].y + p[1].y) / 6;
    for (var i = 1; i < p.length - 1; i++) {
      var a = p[i - 1], b = p[i], c = p[i + 1];
      d += "C" + (2 * a.x + b.x) / 3 + "," + (2 * a.y + b.y) / 3 + " " +
           (a.x + 2 * b.x) / 3 + "," + (a.y + 2 * b.y) / 3 + " " +
           (a.x + 4 * b.x + c.x) / 6 + "," + (a.y + 4 * b.y + c.y) / 6;
    }
    var y = p[p.length - 2], z = p[p.length - 1];
    d += "C" + (2 * y.x + z.x) / 3 + "," + (2 * y.y + z.y) / 3 + " " +
         (y.x + 5 * z.x) / 6 + "," + (y.y + 5 * z.y) / 6 + " " + z.x + "," + z.y;
    return d;
  }

  function clusterHead(n, room) {   // the longest header that fits the cluster's width
    var op = n.kind === "group" ? "group" : n.op, mark = textWidth("\u2212 ", FONT_BOLD);
    var tries = [[n.path, op], [n.path, ""], [n.label, op], [n.label, ""]];
    for (var i = 0; i < tries.length; i++) {
      var w = mark + textWidth(tries[i][0], FONT_BOLD) + (tries[i][1] ? textWidth("  " + tries[i][1], FONT) : 0);
      if (w <= room) return { name: tries[i][0], op: tries[i][1] };
    }
    var name = n.label;
    while (name.length > 1 && mark + textWidth(name + "\u2026", FONT_BOLD) > room) name = name.slice(0, -1);
    return { name: name + "\u2026", op: "" };
  }

  function draw(g) {
    while (viewport.firstChild) viewport.removeChild(viewport.firstChild);
    var clusters = el("g", { "class": "clusters" }, viewport);
    var edges = el("g", { "class": "edges" }, viewport);
    var nodes = el("g", { "class": "nodes" }, viewport);
    var ids = g.nodes().map(unkey);
    // clusters, outermost first so inner ones paint on top
    ids.filter(function (id) { return g.node(dkey(id)).cluster; })
       .sort(function (a, b) { return byId.get(a).depth - byId.get(b).depth; })
       .forEach(function (id) {
         var n = byId.get(id), d = g.node(dkey(id)), x = d.x - d.width / 2, y = d.y - d.height / 2;
         var grp = el("g", { "class": "cluster " + n.kind, "data-id": id, "data-expanded": "1" }, clusters);
         el("rect", { x: x, y: y, width: d.width, height: d.height, rx: 8, "class": "box" }, grp);
         var head = el("g", { "class": "cluster-head toggle", "data-id": id }, grp);
         el("rect", { x: x, y: y, width: d.width, height: 18, rx: 6, "class": "head-bg" }, head);
         var h = clusterHead(n, d.width - 16);
         var t = el("text", { x: x + 8, y: y + 13, "class": "head" }, head);
         var m = el("tspan", { "class": "mark" }, t); m.textContent = "\u2212 ";
         var p = el("tspan", {}, t); p.textContent = h.name;
         if (h.op) { var o = el("tspan", { "class": "op" }, t); o.textContent = "  " + h.op; }
       });
    g.edges().forEach(function (ed) {
      var d = g.edge(ed), from = unkey(ed.v), to = unkey(ed.w);
      var grp = el("g", { "class": "edge", "data-from": from, "data-to": to }, edges);
      el("title", null, grp).textContent = from + " \u2192 " + to + ": " + d.value + " " + d.label +
        (d.count > 1 ? " (and " + (d.count - 1) + " more)" : "");
      var curve = basis(d.points);
      el("path", { d: curve, "class": "hit" }, grp);   // a wider, invisible target for the pointer
      el("path", { d: curve, "class": "line", "marker-end": "url(#arrow)" }, grp);
      if (d.label) {
        el("rect", { x: d.x - d.width / 2, y: d.y - 7, width: d.width, height: 14, rx: 3, "class": "label-bg" }, grp);
        text(grp, d.x, d.y + 3.5, d.label, "shape");
      }
    });
    ids.filter(function (id) { return !g.node(dkey(id)).cluster; }).forEach(function (id) {
      var n = byId.get(id), d = g.node(dkey(id)), x = d.x - d.width / 2, y = d.y - d.height / 2;
      var comp = isComposite(n);
      var grp = el("g", { "class": "node " + n.kind + (comp ? " collapsed toggle" : ""), "data-id": id }, nodes);
      if (comp) el("rect", { x: x + 4, y: y + 4, width: d.width, height: d.height, rx: 6, "class": "stack" }, grp);
      el("rect", { x: x, y: y, width: d.width, height: d.height, rx: n.kind === "input" || n.kind === "output" ? 14 : 6,
                   "class": "box" }, grp);
      var tx = x + PAD_X;
      if (comp) {
        el("rect", { x: tx, y: d.y - MARK / 2, width: MARK, height: MARK, rx: 3, "class": "mark-bg" }, grp);
        text(grp, tx + MARK / 2, d.y + 4.5, "+", "mark");
        tx += MARK + 6;
      }
      var L = boxLines(n);
      var t1 = el("text", { x: tx, y: y + PAD_Y + 11.5, "class": "title" }, grp);
      var parentPath = n.parent !== null && n.parent !== undefined && n.path.indexOf(".") >= 0 &&
                       L.title === n.path ? n.path.slice(0, n.path.lastIndexOf(".") + 1) : "";
      if (parentPath) { var s0 = el("tspan", { "class": "prefix" }, t1); s0.textContent = parentPath; }
      var s1 = el("tspan", {}, t1); s1.textContent = L.title.slice(parentPath.length);
      text(grp, tx, y + PAD_Y + LINE + 11.5, L.sub, "sub");
    });
  }

  // ---- pan and zoom
  var T = { k: 1, x: 0, y: 0 }, graphBox = { width: 0, height: 0 };
  function applyTransform() {
    viewport.setAttribute("transform", "translate(" + T.x + "," + T.y + ") scale(" + T.k + ")");
  }
  function fit() {
    var r = svg.getBoundingClientRect(), vw = r.width, vh = r.height;
    var gw = Math.max(graphBox.width, 1), gh = Math.max(graphBox.height, 1);
    var k = Math.min(vw / gw, vh / gh, 1.25);
    if (k >= 0.55) {
      T.k = k; T.x = (vw - gw * k) / 2; T.y = (vh - gh * k) / 2;
    } else {   // too tall to read whole: fit the width (at most 1:1), start at the top
      T.k = Math.max(Math.min(vw / gw, 1), 0.55); T.x = Math.max((vw - gw * T.k) / 2, 0); T.y = 0;
    }
    applyTransform();
  }
  svg.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    var r = svg.getBoundingClientRect(), px = ev.clientX - r.left, py = ev.clientY - r.top;
    var f = Math.exp(-ev.deltaY * (ev.deltaMode === 1 ? 0.05 : 0.0015));
    var k = Math.min(Math.max(T.k * f, 0.02), 8);
    T.x = px - (px - T.x) * (k / T.k); T.y = py - (py - T.y) * (k / T.k); T.k = k;
    applyTransform();
  }, { passive: false });
  var drag = null, dragged = false;
  svg.addEventListener("pointerdown", function (ev) {
    if (ev.button !== 0) return;
    drag = { x: ev.clientX, y: ev.clientY, tx: T.x, ty: T.y }; dragged = false;
  });
  window.addEventListener("pointermove", function (ev) {
    if (!drag) return;
    var dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (!dragged && Math.abs(dx) + Math.abs(dy) > 4) { dragged = true; svg.classList.add("dragging"); }
    if (dragged) { T.x = drag.tx + dx; T.y = drag.ty + dy; applyTransform(); }
  });
  window.addEventListener("pointerup", function () { drag = null; svg.classList.remove("dragging"); });

  // ---- tooltip
  var tip = document.getElementById("tooltip");
  function row(table, key, value, cls) {
    var tr = document.createElement("tr"), th = document.createElement("th"), td = document.createElement("td");
    th.textContent = key; td.textContent = value; if (cls) td.className = cls;
    tr.appendChild(th); tr.appendChild(td); table.appendChild(tr);
  }
  function fillTip(n) {
    while (tip.firstChild) tip.removeChild(tip.firstChild);
    var h = document.createElement("div"); h.className = "tip-title"; h.textContent = n.path || n.label; tip.appendChild(h);
    var k = document.createElement("div"); k.className = "tip-kind";
    k.textContent = (n.kind === "group" ? "group" : n.op) + (n.kind === "block" ? " (block)" : "") +
      (isComposite(n) ? " \u00b7 " + plural(countLeaves(n), "layer") + " \u00b7 click to " + (expanded.has(n.id) ? "collapse" : "expand") : "");
    tip.appendChild(k);
    var t = document.createElement("table");
    row(t, "output", n.shape || "");
    if (n.kind !== "input" && n.kind !== "output") {
      var frozen = n.params - n.trainable;
      row(t, "params", fmtInt(n.params) + (n.params ? " (trainable " + fmtInt(n.trainable) + ", frozen " + fmtInt(frozen) + ")" : ""));
      row(t, "MACs", n.macs);
    }
    var attrs = n.attrs || {};
    Object.keys(attrs).forEach(function (a) { row(t, a, attrs[a], "attr"); });
    tip.appendChild(t);
    if (n.source) {
      var s = document.createElement("div"); s.className = "tip-source";
      s.textContent = n.source.file + ":" + n.source.line + ":" + n.source.col; tip.appendChild(s);
      var pre = document.createElement("pre"); pre.className = "tip-code"; pre.textContent = n.source.text; tip.appendChild(pre);
    }
    tip.dataset.id = n.id;
  }
  function placeTip(ev) {
    var w = tip.offsetWidth, h = tip.offsetHeight, x = ev.clientX + 16, y = ev.clientY + 16;
    if (x + w > window.innerWidth - 8) x = Math.max(8, ev.clientX - w - 16);
    if (y + h > window.innerHeight - 8) y = Math.max(8, window.innerHeight - h - 8);
    tip.style.left = x + "px"; tip.style.top = y + "px";
  }
  function targetNode(ev) {
    var e = ev.target && ev.target.closest ? ev.target.closest("[data-id]") : null;
    return e ? byId.get(e.getAttribute("data-id")) : null;
  }
  var hovered = null;
  svg.addEventListener("mouseover", function (ev) {
    var n = targetNode(ev);
    if (!n) { tip.hidden = true; hovered = null; return; }
    if (n !== hovered) { fillTip(n); hovered = n; }
    tip.hidden = false; placeTip(ev);
  });
  svg.addEventListener("mousemove", function (ev) { if (!tip.hidden) placeTip(ev); });
  svg.addEventListener("mouseleave", function () { tip.hidden = true; hovered = null; });

  // ---- expand / collapse
  function screenAnchor(id) {   // screen position of a visible node's top-left corner
    var e = viewport.querySelector('[data-id="' + CSS.escape(id) + '"] > rect.box');
    if (!e) return null;
    var r = e.getBoundingClientRect();
    return { x: r.left, y: r.top };
  }
  function toggle(id) {
    var anchor = screenAnchor(id);
    if (expanded.has(id)) {
      expanded.delete(id);
      byId.get(id).children.forEach(function collapse(c) {   // collapsing forgets the inside
        var m = byId.get(c); if (m && expanded.has(c)) { expanded.delete(c); m.children.forEach(collapse); }
      });
    } else expanded.add(id);
    relayout(anchor ? { id: id, x: anchor.x, y: anchor.y } : null);
  }
  svg.addEventListener("click", function (ev) {
    if (dragged) { dragged = false; return; }
    var e = ev.target && ev.target.closest ? ev.target.closest(".toggle") : null;
    if (!e) return;
    var n = byId.get(e.getAttribute("data-id"));
    if (n && isComposite(n)) { tip.hidden = true; hovered = null; toggle(n.id); }
  });
  function setDepth(depth) {   // composites shallower than depth - 1 expanded (depth 1: top level only)
    expanded.clear();
    VIEW.nodes.forEach(function (n) {
      if (isComposite(n) && (depth === null || n.depth + 1 < depth)) expanded.add(n.id);
    });
  }
  document.getElementById("expand-all").addEventListener("click", function () { setDepth(null); relayout(null); });
  document.getElementById("collapse-all").addEventListener("click", function () { setDepth(1); relayout(null); });
  document.getElementById("fit").addEventListener("click", fit);

  // ---- the layout pass
  var status = document.getElementById("status");
  function relayout(anchor) {
    document.body.dataset.ready = "0";
    status.textContent = "laying out\u2026";
    requestAnimationFrame(function () { setTimeout(run, 0); });   // paint the status first
    function run() {
      var t0 = performance.now();
      var g = buildGraph();
      dagre.layout(g);
      var t1 = performance.now();
      var gg = g.graph();
      graphBox = { width: gg.width || 0, height: gg.height || 0 };
      svg.setAttribute("data-width", graphBox.width); svg.setAttribute("data-height", graphBox.height);
      draw(g);
      if (anchor && g.hasNode(dkey(anchor.id))) {
        var now = screenAnchor(anchor.id);
        if (now) { T.x += anchor.x - now.x; T.y += anchor.y - now.y; applyTransform(); }
      } else fit();
      var t2 = performance.now();
      layouts += 1;
      var nv = g.nodes().length, ne = g.edges().length;
      status.textContent = nv + " boxes, " + ne + " edges \u00b7 laid out in " + Math.round(t2 - t0) + " ms";
      document.body.dataset.layoutMs = (t1 - t0).toFixed(1);
      document.body.dataset.renderMs = (t2 - t0).toFixed(1);
      document.body.dataset.layouts = String(layouts);
      document.body.dataset.ready = "1";
    }
  }

  // ---- header
  function header() {
    document.getElementById("net-name").textContent = VIEW.network;
    var doc = document.getElementById("net-doc");
    if (VIEW.doc) { doc.textContent = VIEW.doc; doc.title = VIEW.doc; } else doc.hidden = true;
    var top = VIEW.nodes.filter(function (n) { return n.parent === null || n.parent === undefined; });
    var params = 0, trainable = 0, macs = 0, macsKnown = true, leaves = 0;
    top.forEach(function (n) {
      params += n.params || 0; trainable += n.trainable || 0;
      if (n.kind !== "input" && n.kind !== "output") {
        leaves += countLeaves(n);
        var m = parseMacs(n.macs); if (m === null) macsKnown = false; else macs += m;
      }
    });
    var parts = [plural(leaves, "layer"), fmtInt(params) + " params"];
    if (params !== trainable) parts.push(fmtInt(trainable) + " trainable, " + fmtInt(params - trainable) + " frozen");
    parts.push(macsKnown ? "\u2248" + fmtShort(macs) + " MACs" : "MACs depend on the input size");
    var io = VIEW.nodes.filter(function (n) { return n.kind === "input" || n.kind === "output"; })
      .map(function (n) { return (n.kind === "input" ? "in " : "out ") + n.label + " " + n.shape; });
    document.getElementById("net-totals").textContent = parts.join(" \u00b7 ");
    document.getElementById("net-io").textContent = io.join("   ");
    document.getElementById("net-io").title = io.join("\n");
    var src = document.getElementById("net-source");
    src.textContent = VIEW.source || "";
  }

  header();
  setDepth(CONFIG.depth === undefined ? null : CONFIG.depth);
  window.addEventListener("resize", function () { if (document.body.dataset.ready === "1") fit(); });
  window.netdslGraph = { view: VIEW, expanded: expanded, relayout: relayout, setDepth: setDepth, fit: fit };
  relayout(null);
})();
