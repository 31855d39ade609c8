"""Memory of the running process, for the benchmarks (models.py, group.py, inference.py)."""

from __future__ import annotations

import resource


def rss_mib(field: str = "VmHWM") -> float:
    """``field`` (VmHWM: peak, VmRSS: current) of this process in MiB; ru_maxrss if unreadable.

    ``VmHWM`` rather than ``ru_maxrss``: the latter survives fork + exec, so a spawned child
    would report its parent's peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
