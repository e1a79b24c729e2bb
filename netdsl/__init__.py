"""netdsl: a declarative architecture compiler for deep learning.

    net = netdsl.load("examples/unet.net", depth=3)
    print(net.summary_text())
    model = net.to_torch()          # torch.nn.Module
    proto = net.to_onnx()           # onnx.ModelProto, built without torch
"""
__version__ = "0.1.0"

from .api import Network, load, loads  # noqa: E402
from .errors import NetDSLError  # noqa: E402

__all__ = ["Network", "NetDSLError", "load", "loads", "__version__"]
