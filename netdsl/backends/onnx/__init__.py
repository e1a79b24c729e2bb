"""ONNX target: a ModelProto emitted directly from the IR. Nothing here imports torch."""
from .export import to_model

__all__ = ["to_model"]
