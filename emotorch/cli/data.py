"""``emotorch data stats`` and ``emotorch models``: what a data set holds and which models there are."""

from __future__ import annotations

import argparse
from typing import Any

from emotorch.cli.options import Parser, add_data_flags, add_json, to_json
from emotorch.errors import installed
from emotorch.runtime import registry


def add(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="inspect data sets")
    stats = data.add_subparsers(dest="data_command", required=True, parser_class=Parser).add_parser(
        "stats", help="counts per split and class, image sizes, bad rows"
    )
    stats.add_argument("path", help="fer2013.csv, a folder with train.csv/test.csv, or image folders")
    add_json(stats)
    add_data_flags(stats)
    stats.set_defaults(run=stats_command)

    models = sub.add_parser("models", help="list the registered models with parameter counts")
    add_json(models, "print one JSON list instead of a table")
    models.set_defaults(run=models_command)


def stats_command(args: argparse.Namespace) -> None:
    from emotorch.training.data import format_stats, load_dataset, stats_report  # decoding needs Pillow and numpy

    ds = load_dataset(args.path, labels=args.labels, skip_bad=True, skip_unknown=True, progress=not args.quiet)
    report = stats_report(ds)
    print(to_json(report, indent=2) if args.json else format_stats(report))


def models_command(args: argparse.Namespace) -> None:
    def megabytes(entry: dict[str, Any]) -> float:  # from the files' sizes: listing them needs no hashing
        return round(sum((registry.WEIGHTS / f).stat().st_size for f in {entry["file"], entry["onnx"]}) / 1e6, 1)

    shipped = [
        {
            "name": name,
            "classes": len(entry["classes"]),
            "megabytes": megabytes(entry),
            "val_accuracy": entry["val_accuracy"],
            "tta": entry["tta"],
        }
        for name, entry in registry.shipped().items()
    ]
    trainable = None
    if installed("torch"):
        from emotorch.training.models import count_parameters, create_model, list_models  # PyTorch: the train extra

        trainable = [
            {"name": m.name, "parameters": count_parameters(create_model(m.name)), "description": m.description}
            for m in list_models()
        ]
    if args.json:
        print(to_json({"shipped": shipped, "trainable": trainable}, indent=2))
        return
    print(f"{'shipped model':<18}{'classes':>8}{'MB':>6}{'val accuracy':>14}")
    for m in shipped:
        print(
            f"{m['name']:<18}{m['classes']:>8}{m['megabytes']:>6.1f}{m['val_accuracy']:>14.2%}"
            + ("  (with TTA)" if m["tta"] else "")
        )
    if trainable is None:
        print('\ntrainable architectures: pip install "emotorch[train]" to list and train them')
        return
    print(f"\n{'trainable':<13}{'parameters':>12}  description")
    for m in trainable:
        print(f"{m['name']:<13}{m['parameters']:>12,}  {m['description']}")
