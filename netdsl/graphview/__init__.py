"""`netdsl graph`: the network drawn as a layered DAG (SVG, Graphviz DOT, Mermaid, HTML).

model.py builds the view (a tree of layers, block instances and groups over the IR's edges);
layout.py places the visible boxes; svg.py, dot.py, mmd.py and html.py render them."""
