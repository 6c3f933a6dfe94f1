"""Threads under load: YuNet detection with 1 or all OpenMP threads, busy or passive waiting, idle or busy machine.

    python benchmarks/threads.py [--frames 60]

Each row runs in a fresh process (OpenMP reads its environment when it starts) and times
YuNet on a 640x480 frame with one face, the median of ``--frames`` calls. "busy" rows run the
same while one other process keeps a core busy, as a second program (or server worker) would.
EmoTorch's default (`emotorch.runtime.threads.configure`) is all available threads with passive waiting.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from contextlib import contextmanager

from emotorch.runtime.threads import available_cores

CHILD = """
import statistics, sys, time
import cv2, numpy as np, yuface
from skimage.data import astronaut
frame = np.full((480, 640, 3), 110, np.uint8)
frame[60:420, 170:470] = cv2.resize(astronaut()[20:320, 110:360], (300, 360))
bgr = np.ascontiguousarray(frame[..., ::-1])
for _ in range(5):
    yuface.detect(bgr, conf=60)
times = []
for _ in range(int(sys.argv[1])):
    t = time.perf_counter(); yuface.detect(bgr, conf=60); times.append(time.perf_counter() - t)
print(f"{statistics.median(times) * 1000:.1f}")
"""


@contextmanager
def busy_core():
    """Another process spinning on one core while the block runs."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        burner.kill()
        burner.wait()


def detect_ms(threads: int, policy: str, frames: int) -> float:
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": policy}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(frames)], env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    args = parser.parse_args()
    cores = available_cores()
    configs = [(1, "PASSIVE"), (cores, "ACTIVE"), (cores, "PASSIVE")]
    idle = {c: detect_ms(*c, args.frames) for c in configs}
    with busy_core():
        busy = {c: detect_ms(*c, args.frames) for c in configs}
    print(f"YuNet, 640x480 frame, median of {args.frames} calls, {cores} cores available")
    print(f"{'threads':>8}  {'waiting':<8}{'idle ms':>9}{'busy ms':>9}{'busy/idle':>10}")
    for threads, policy in configs:
        i, b = idle[(threads, policy)], busy[(threads, policy)]
        mark = "  <- default" if (threads, policy) == (cores, "PASSIVE") else ""
        print(f"{threads:>8}  {policy.lower():<8}{i:>9.1f}{b:>9.1f}{b / i:>9.2f}x{mark}")


if __name__ == "__main__":
    main()
