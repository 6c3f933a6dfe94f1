"""``emotorch predict``: the emotions of every face in photos or folders of photos."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from emotorch.cli.options import (
    EXIT_FAILED,
    add_backend,
    add_force,
    add_json,
    add_model,
    add_reading,
    add_threads,
    add_tta,
    refuse_overwrite,
    to_json,
)
from emotorch.errors import DataError
from emotorch.runtime.images import IMAGE_EXTENSIONS
from emotorch.runtime.registry import PHOTO_MODEL


def add(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser("predict", help="emotions of every face in photos or folders of photos")
    pr.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="photos, or folders searched recursively")
    add_model(pr, PHOTO_MODEL)
    add_json(pr, "print one JSON document: a list of {path, faces}")
    pr.add_argument("--out", help="write annotated images and summary.csv here")
    add_force(pr, "files already in --out")
    add_tta(pr)
    add_backend(pr, None)
    add_reading(pr)
    add_threads(pr)
    pr.set_defaults(run=predict_command)


def image_files(inputs: list[str]) -> list[Path]:
    """The photos the inputs name: files as given (a missing one is reported with the others), folders searched."""
    files: list[Path] = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        else:
            files.append(path)
    return files


def annotated_paths(files: list[Path], out: Path) -> list[Path]:
    """Where each photo's annotated copy goes: its path relative to the inputs' common folder, mirrored
    under ``out``, so ``a/x.jpg`` and ``b/x.jpg`` do not overwrite each other."""
    if not files:
        return []
    resolved = [f.resolve() for f in files]
    common = Path(os.path.commonpath([f.parent for f in resolved]))
    return [out / f.relative_to(common).with_name(f"{f.stem}.annotated.png") for f in resolved]


def predict_command(args: argparse.Namespace) -> int:
    # the pipeline (OpenCV, ONNX Runtime) and the progress bar load when the command runs, not for --help
    from tqdm import tqdm

    from emotorch.runtime.annotate import annotate
    from emotorch.runtime.images import read_image
    from emotorch.runtime.pipeline import EmotionRecognizer, write_summary

    recognizer = EmotionRecognizer(args.model, tta=args.tta, backend=args.backend, reading=args.reading)
    files = image_files(args.inputs)
    out = Path(args.out) if args.out else None
    annotated = annotated_paths(files, out) if out is not None else []
    if out is not None:
        refuse_overwrite([*annotated, out / "summary.csv"], args.force, where=str(out))
    results, failed = [], 0
    bar = tqdm(files, desc="photos", unit=" img", disable=None if len(files) > 1 and not args.quiet else True)
    for k, f in enumerate(bar):
        try:
            rgb = read_image(f)
            faces = recognizer.predict(rgb)
        except DataError as e:
            print(f"emotorch: error: {e}", file=sys.stderr)
            results.append({"path": str(f), "error": str(e), "faces": []})
            failed += 1
            continue
        results.append({"path": str(f), "faces": [face.to_dict() for face in faces]})
        if out is not None:
            annotated[k].parent.mkdir(parents=True, exist_ok=True)
            annotate(rgb, faces).save(annotated[k])
        if not args.json:
            summary = ", ".join(f"{face.emotion} {face.share:.0%}" for face in faces)
            print(f"{f}: {len(faces)} face(s){': ' + summary if faces else ''}")
    if out is not None and failed < len(files):  # nothing is written when no photo could be read
        write_summary(out / "summary.csv", results, recognizer.classes)
    if args.json:
        print(to_json(results))
    if failed:
        print(f"emotorch: {failed} of {len(files)} input(s) failed", file=sys.stderr)
    return EXIT_FAILED if failed else 0
