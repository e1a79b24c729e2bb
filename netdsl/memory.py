"""How much memory this machine can still give: to refuse, with a clear error, work that would
not fit (a 25 GiB Linear, a 10**18-element input) before allocating any of it."""
from __future__ import annotations

import os


def available_bytes() -> int | None:
    """Memory available to a new allocation (Linux MemAvailable, else physical memory), or None."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def gib(n: int) -> str:
    return f"{n / 2 ** 30:,.1f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:,.1f} MiB"


def fits(nbytes: int) -> bool:
    """Whether `nbytes` more can be allocated (unknown availability: assume it can)."""
    avail = available_bytes()
    return avail is None or nbytes <= avail
