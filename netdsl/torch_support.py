"""Importing torch only where a torch feature is used, with a helpful error if absent."""
from __future__ import annotations

from .errors import BackendError


def require_torch(feature: str):
    try:
        import torch
    except ImportError:
        raise BackendError(f"{feature} needs PyTorch, which is not installed; install it with "
                           "`pip install 'netdsl[torch]'` (or `pip install torch`)") from None
    return torch
