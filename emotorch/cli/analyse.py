"""``emotorch analyse`` and ``emotorch report``: whole archives of photos and videos, and what they show."""

from __future__ import annotations

import argparse
import sys
import time

from emotorch.choices import ENGINES
from emotorch.cli.options import EXIT_FAILED, add_backend, add_json, add_model, add_reading, add_threads, to_json
from emotorch.runtime.registry import STREAM_MODEL
from emotorch.runtime.report import report


def add(sub: argparse._SubParsersAction) -> None:
    an = sub.add_parser("analyse", help="emotions of every face in many photos and videos, resumable, in parallel")
    an.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="photos, videos, folders (searched recursively), glob patterns or manifests (.txt: a path a "
        "line; .csv: a 'path' column)",
    )
    an.add_argument(
        "--out",
        required=True,
        help="results folder: faces.jsonl, files.jsonl (and faces.parquet where "
        "pyarrow is installed); a rerun skips the files it finished",
    )
    add_model(an, STREAM_MODEL)
    add_backend(an)
    an.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="local: processes that decode and detect (default: the cores available); "
        "ray: classifier actors (default: a quarter of the cluster's CPUs)",
    )
    an.add_argument(
        "--every",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="in videos, analyse one frame every SECONDS (0: every frame)",
    )
    an.add_argument(
        "--detect-size",
        type=int,
        default=640,
        metavar="PX",
        help="detect faces on a copy at most PX pixels on its long side",
    )
    an.add_argument("--batch-size", type=int, default=256, help="faces classified together, across files")
    an.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help='local processes, or a Ray cluster (pip install "emotorch[ray]"; RAY_ADDRESS picks it)',
    )
    an.add_argument(
        "--save-crops",
        action="store_true",
        help="also write each aligned 48x48 face as a PNG under OUT/crops (off: no image is written)",
    )
    add_reading(an)
    add_threads(an)
    an.set_defaults(run=analyse_command)

    rp = sub.add_parser("report", help="per-emotion shares, a summary table and plots over time of `analyse` results")
    rp.add_argument("results", help="the --out folder of `emotorch analyse`")
    rp.add_argument("--out", help="folder for summary.csv and the plots (default: RESULTS/report)")
    add_json(rp)
    rp.set_defaults(run=report_command)


def analyse_command(args: argparse.Namespace) -> int:
    # the pipeline (OpenCV, ONNX Runtime) and the progress bar load when the command runs, not for --help
    from tqdm import tqdm

    from emotorch.runtime.analyse import analyse

    bar, started = None, time.perf_counter()

    def progress(done: int, faces: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            quiet = True if args.quiet else None  # None: a bar only on a terminal
            bar = tqdm(total=total, desc="analysing", unit=" file", file=sys.stderr, disable=quiet)
        bar.update(done - bar.n)
        bar.set_postfix_str(f"{faces} faces, {faces / max(time.perf_counter() - started, 1e-9):.1f} faces/s")

    try:
        summary = analyse(
            args.inputs,
            args.out,
            model=args.model,
            backend=args.backend,
            workers=args.workers,
            every_s=args.every,
            detect_size=args.detect_size,
            batch_size=args.batch_size,
            engine=args.engine,
            save_crops=args.save_crops,
            reading=args.reading,
            progress=progress,
        )
    finally:
        if bar is not None:
            bar.close()
    for error in summary.errors:  # one line per failed input, as every command has
        print(f"emotorch: error: {error}", file=sys.stderr)
    done = summary.files - summary.skipped
    print(
        f"{args.out}: {summary.files} file(s): {done} analysed ({summary.failed} failed, see files.jsonl), "
        f"{summary.skipped} done before; {summary.faces} face(s) in {summary.seconds:g} s"
    )
    return EXIT_FAILED if summary.failed else 0


def report_command(args: argparse.Namespace) -> None:
    result = report(args.results, args.out)
    if args.json:
        print(to_json(result))
        return
    print(f"{args.results}: {result['files']} file(s), {result['failed']} failed, {result['faces']} face(s)")
    print(f"{'emotion':<10}{'faces':>8}{'share':>8}{'mean p':>8}")
    for emotion, row in result["shares"].items():
        print(f"{emotion:<10}{row['faces']:>8}{row['share']:>8.1%}{row['mean_probability']:>8.3f}")
    print(f"wrote {result['summary']}" + (f" and {len(result['plots'])} plot(s) over time" if result["plots"] else ""))
    if result["plots_skipped"]:
        print(
            f"no plots over time for {result['plots_skipped']} video(s): they need matplotlib "
            '(pip install "emotorch[plots]")'
        )
