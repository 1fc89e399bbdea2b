"""[Side By Side] How many checks this process runs at once, and the memory it may count on.

Its own module: how many checks fit here is a question about the machine (its cores, its
memory, pytest-xdist's workers), asked by the scheduler and by the size budget, and
answered the same whether the checks then run in forked children or inline.
"""

from __future__ import annotations

import os

from ..options import environment


def parallel_checks() -> int:
    """[Side By Side] How many checks this process runs at once: its share of the cores.

    A child runs one intra-op thread (``runner.py``'s docstring), so a check uses one core;
    several checks of one test (its backends) in children side by side use the cores the
    process is given. ``TORCHEXPORT_JOBS`` sets it; else the cores this process may use,
    divided among pytest-xdist's workers (so workers x checks <= cores), and at most one
    check per 2 GiB of available memory."""
    given = environment("TORCHEXPORT_JOBS").strip()
    if given:
        try:
            return max(1, int(given))
        except ValueError:
            pass
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1))
    jobs = max(1, cores // workers)
    available = available_memory()
    if available is not None:
        jobs = min(jobs, max(1, int(available // (2 * 2**30))))
    return jobs


def available_memory() -> int | None:
    """MemAvailable (Linux), in bytes; None where it cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


__all__ = ["available_memory", "parallel_checks"]
