"""``emotorch evaluate``: a model's metrics (and per-face predictions) on a labelled data set."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from emotorch.cli.options import (
    add_backend,
    add_data_flags,
    add_force,
    add_json,
    add_model,
    add_threads,
    refuse_overwrite,
    to_json,
)
from emotorch.errors import require_plots


def add(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("evaluate", help="metrics (or predictions) of a model on a data set")
    add_model(ev)
    ev.add_argument("--data", required=True, help="data set to evaluate on (any supported format)")
    ev.add_argument("--split", help="split to evaluate (default: val, else test, else the only one)")
    ev.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        help="horizontal flip and ten-crop test-time augmentation (default: the model's own setting)",
    )
    add_json(ev, "print exactly one JSON object on stdout")
    ev.add_argument("--out", help="also write confusion_matrix.png, predictions.png and curves.png here")
    ev.add_argument("--predictions", help="write per-face predictions to this CSV (for unlabeled data)")
    add_force(ev, "an existing --predictions file")
    add_data_flags(ev)
    add_backend(ev, None)
    add_threads(ev)
    ev.set_defaults(run=evaluate_command)


def evaluate_command(args: argparse.Namespace) -> None:
    # the model and the data set: ONNX Runtime and the decoders load only when a command needs them
    from emotorch.runtime.registry import load_model
    from emotorch.training.evaluate import evaluate, load_split, write_predictions

    if args.out:
        require_plots("evaluate --out")  # before minutes of work, not after
    model = load_model(args.model, args.backend)
    tta = model.card.tta if args.tta is None else args.tta
    split, faces = load_split(
        args.data, args.split, labels=args.labels, skip_bad=args.skip_bad, skip_unknown=args.skip_unknown
    )
    classes = model.classes
    probs = None
    if args.predictions:
        dest = Path(args.predictions)
        refuse_overwrite([dest], args.force)
        probs = model.predict_proba(faces.images, tta=tta, progress=None if args.quiet else "predicting")
        write_predictions(dest, faces, probs, classes)
        logging.getLogger("emotorch").info("wrote %d predictions to %s", len(faces), dest)
        if not faces.labeled:
            return
    metrics, probs, scored = evaluate(model, faces, tta=tta, progress=not args.quiet, probs=probs)
    metrics = {"model": model.source, "data": str(args.data), "split": split} | metrics
    if args.out:
        from emotorch.runtime import plots  # matplotlib: the plots extra, checked above

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        plots.save(
            plots.confusion_matrix(metrics["confusion_matrix"], classes, f"{split} ({len(scored)} faces)"),
            out / "confusion_matrix.png",
        )
        plots.save(plots.prediction_grid(scored.images, probs, scored.labels, classes), out / "predictions.png")
        if model.history:
            plots.save(plots.training_curves(model.history), out / "curves.png")
    if args.json:
        print(to_json(metrics))
        return
    truth = "the FER+ majority label" if faces.votes is not None else "their label"
    print(
        f"{model.source} on {args.data} [{split}], {metrics['n']} faces scored against {truth}{' (TTA)' if tta else ''}"
    )
    if metrics["left_out"]:
        why = {"no_majority": "no majority among the taggers"}
        print(
            "left out: "
            + ", ".join(
                f"{n} ({why.get(k, f'{k}, a class the model does not tell')})" for k, n in metrics["left_out"].items()
            )
        )
    print(
        f"accuracy {metrics['accuracy']:.4f}   macro-F1 {metrics['macro_f1']:.4f}   "
        f"ECE {metrics['ece']:.4f} (temperature {metrics['temperature']:.2f})"
        + (f"   KL to the votes {metrics['vote_kl']:.4f}" if "vote_kl" in metrics else "")
    )
    print(f"{'class':<10}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
    for c, m in metrics["per_class"].items():
        print(f"{c:<10}{m['precision']:>10.3f}{m['recall']:>10.3f}{m['f1']:>10.3f}{m['support']:>9}")
