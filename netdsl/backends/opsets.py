"""The ONNX opsets the ONNX target can emit (light: the CLI checks --opset without importing onnx)."""
MIN_OPSET, MAX_OPSET = 13, 21
DEFAULT_OPSET = 17
