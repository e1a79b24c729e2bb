"""Every built-in op: importing this package registers them all."""
from . import activation, conv, linear, norm, pool, tensor  # noqa: F401
