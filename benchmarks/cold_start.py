"""Cold start: whole-process wall time and peak memory of one prediction, lean install vs full install.

    python benchmarks/cold_start.py [--lean .venv-lean] [--full .venv] [--runs 5]

For each virtualenv (lean: ``pip install .``; full: ``pip install ".[train,test,ray]"``) it runs
``emotorch predict PHOTO`` and ``python -c "from emotorch import EmotionRecognizer; ..."`` on the
bundled sample photo as fresh processes and prints the median wall time and the median peak
resident memory (the child's own ru_maxrss), plus the size of the environment on disk. Make
the lean one with ``python3 -m venv .venv-lean && .venv-lean/bin/pip install .`` (``.ci/run``
does). Targets on 2 cores: lean predict <= 1.0 s and <= 200 MiB; lean environment <= 450 MB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "emotorch" / "samples" / "astronaut.jpg"
SCRIPT = f"from emotorch import EmotionRecognizer; print(EmotionRecognizer().predict({str(SAMPLE)!r})[0].emotion)"


def run(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, peak resident MiB) of one process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.read().decode()[-500:]}")
    return wall, usage.ru_maxrss / 1024


def size_mb(root: Path) -> float:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lean", default=".venv-lean", help="virtualenv with `pip install .` only")
    parser.add_argument("--full", default=".venv", help="virtualenv with the train extra")
    parser.add_argument("--runs", type=int, default=5, help="processes per row (the median is shown)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; median of {args.runs} fresh processes on {SAMPLE.name}")
    print(f"{'install':<8}{'command':<34}{'wall s':>8}{'peak MiB':>10}{'env MB':>8}")
    for label, venv in (("lean", Path(args.lean)), ("full", Path(args.full))):
        if not (venv / "bin" / "python").is_file():
            print(f"{label:<8}(no virtualenv at {venv})")
            continue
        env_mb = size_mb(venv)
        commands = {
            "emotorch predict PHOTO": [str(venv / "bin" / "emotorch"), "-q", "predict", str(SAMPLE)],
            "python -c EmotionRecognizer()": [str(venv / "bin" / "python"), "-c", SCRIPT],
        }
        for name, argv in commands.items():
            run(argv)  # warm the page cache: a cold disk is another benchmark
            samples = [run(argv) for _ in range(args.runs)]
            wall = statistics.median(s[0] for s in samples)
            peak = statistics.median(s[1] for s in samples)
            print(f"{label:<8}{name:<34}{wall:>8.2f}{peak:>10.0f}{env_mb:>8.0f}")


if __name__ == "__main__":
    main()
