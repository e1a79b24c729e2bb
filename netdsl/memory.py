"""How much memory this process can still get: to refuse, with a clear error, work that would
not fit (a 25 GiB Linear, a 10**18-element input) before allocating any of it.

The machine's MemAvailable is not enough in a container: a cgroup limit of a few GiB on a big
host is what the kernel enforces (with the OOM killer), so the cgroup's headroom counts too."""
from __future__ import annotations

import os

CGROUP_ROOT = "/sys/fs/cgroup"     # a constant so that tests can point it at a fake tree
_UNLIMITED = 1 << 60               # cgroup v1 writes "no limit" as a huge number near 2**63


def available_bytes() -> int | None:
    """Memory available to a new allocation: the least of the machine's (Linux MemAvailable,
    else physical memory) and the cgroup's headroom (v2 or v1); None when nothing is known.
    A source that cannot be read or parsed is ignored."""
    found = [n for n in (_machine_available(), _cgroup_v2_headroom(), _cgroup_v1_headroom())
             if n is not None]
    return min(found) if found else None


def _machine_available() -> int | None:
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


def _cgroup_v2_headroom() -> int | None:
    return _headroom(os.path.join(CGROUP_ROOT, "memory.max"),
                     os.path.join(CGROUP_ROOT, "memory.current"),
                     os.path.join(CGROUP_ROOT, "memory.stat"), b"inactive_file")


def _cgroup_v1_headroom() -> int | None:
    base = os.path.join(CGROUP_ROOT, "memory")
    return _headroom(os.path.join(base, "memory.limit_in_bytes"),
                     os.path.join(base, "memory.usage_in_bytes"),
                     os.path.join(base, "memory.stat"), b"total_inactive_file")


def _headroom(limit_file: str, usage_file: str, stat_file: str, reclaimable: bytes) -> int | None:
    """limit - usage, where usage leaves out inactive page cache (which the kernel reclaims
    before it kills anything); None without a limit ('max', or v1's huge number) or readable files."""
    limit = _read_int(limit_file)
    if limit is None or limit >= _UNLIMITED:
        return None
    usage = _read_int(usage_file)
    if usage is None:
        return None
    cache = 0
    try:
        with open(stat_file, "rb") as f:
            for line in f:
                key, _, value = line.partition(b" ")
                if key == reclaimable:
                    cache = min(max(int(value), 0), usage)
                    break
    except (OSError, ValueError):
        cache = 0
    return max(limit - (usage - cache), 0)


def _read_int(path: str) -> int | None:
    """The integer in a one-line cgroup file; None for 'max', a missing file or anything else."""
    try:
        with open(path, "rb") as f:
            text = f.read(64).strip()
        return int(text) if text.isdigit() else None
    except (OSError, ValueError):
        return None


def human_bytes(n: int) -> str:
    """A size for messages: GiB from 1 GiB up, MiB below."""
    return f"{n / 2 ** 30:,.1f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:,.1f} MiB"


def fits(nbytes: int) -> bool:
    """Whether `nbytes` more can be allocated (unknown availability: assume it can)."""
    avail = available_bytes()
    return avail is None or nbytes <= avail
