"""One thread budget per process, shared by ONNX Runtime, OpenCV, OpenMP (the YuNet detector) and PyTorch.

Each library alone starts a thread per core; together in one process, or in several server
workers, they fight over the same cores. :func:`configure` sets them all to one budget: the cores
this process may use, divided among ``workers`` processes, or ``--threads N``. OpenMP threads
wait passively (``OMP_WAIT_POLICY=PASSIVE``): on these 2 cores, with another process keeping a
core busy, YuNet took 34.7 ms a frame with 2 busy-waiting threads, 29.3 ms with 1 thread and
27.5 ms with 2 passive ones (``python benchmarks/threads.py``, medians).
"""

from __future__ import annotations

import os
import sys

_budget: int | None = None


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), not all the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def budget(threads: int | None = None, workers: int = 1) -> int:
    """``threads`` when given, else the available cores shared among ``workers`` processes (at least 1)."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be at least 1, not {threads}")
        return threads
    return max(1, available_cores() // max(1, workers))


def configure(threads: int | None = None, workers: int = 1) -> int:
    """Give this process (and the processes it starts) one thread budget; returns it.

    Call it before the heavy libraries start their thread pools: OpenMP reads its environment
    when it starts. A ``threads`` given here overrides ``OMP_NUM_THREADS`` set by the user; by
    default the user's setting is kept.
    """
    global _budget
    n = budget(threads, workers)
    if threads is not None or "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import cv2  # after the environment is set: OpenCV's OpenMP reads it when it starts

    cv2.setNumThreads(n)
    if "torch" in sys.modules:  # already imported: its pool has read the environment, so set it directly
        sys.modules["torch"].set_num_threads(n)
    _budget = n
    return n


def current() -> int | None:
    """The budget :func:`configure` set in this process (None: not configured, libraries' defaults)."""
    return _budget
