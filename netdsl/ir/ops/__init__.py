"""Every built-in op: importing this package registers them all."""
from . import activation, conv, linear, norm, parameter, pool, tensor  # noqa: F401
from . import attention, shape_ops  # noqa: F401
from . import stochastic  # noqa: F401
from . import select_ops  # noqa: F401
from . import detection  # noqa: F401
from . import channels  # noqa: F401
from . import maxvit  # noqa: F401
from . import swin  # noqa: F401
