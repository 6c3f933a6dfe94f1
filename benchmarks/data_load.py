"""Load time of a data set: the first (decoding) load and the cached loads after it.

python benchmarks/data_load.py [PATH]   (default ../shared/fer2013)
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from emotorch.training.data import load_dataset


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parents[1] / ".." / "shared" / "fer2013")
    os.environ["EMOTORCH_CACHE"] = tempfile.mkdtemp(prefix="emotorch-bench-")  # a cold cache
    t = time.perf_counter()
    ds = load_dataset(path, progress=False)
    first = time.perf_counter() - t
    cached = []
    for _ in range(5):
        t = time.perf_counter()
        load_dataset(path, progress=False)
        cached.append(time.perf_counter() - t)
    faces = sum(len(s) for s in ds.splits.values())
    print(f"{'data set':<40}{'faces':>8}{'first load s':>14}{'cached load s (median of 5)':>30}")
    print(f"{path!s:<40}{faces:>8}{first:>14.2f}{statistics.median(cached):>30.3f}")


if __name__ == "__main__":
    main()
