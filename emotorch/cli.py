"""The ``emotorch`` command: a thin shell over the Python API. Results to stdout, logs to stderr."""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

# light imports only: `emotorch --help` must not wait for PyTorch; each command imports what it uses
from emotorch.choices import (
    BACKENDS,
    ENGINES,
    FEEDBACK_KINDS,
    FERPLUS_CLASSES,
    READINGS,
    STRATEGIES,
)
from emotorch.errors import (
    CatalogBusy,
    CatalogError,
    CheckpointError,
    DatabaseUnavailable,
    DataError,
    MissingExtra,
    installed,
    require_plots,
    require_torch,
)
from emotorch.runtime import threads
from emotorch.runtime.registry import PHOTO_MODEL, STREAM_MODEL
from emotorch.training.config import CHOICES as CONFIG_CHOICES
from emotorch.training.config import PRESETS
from emotorch.training.config import flags as config_flags

EXIT_FAILED = 1  # an input (photo, video, data set, checkpoint) could not be read or used
EXIT_USAGE = 2  # bad options or arguments, or an output that exists without --force


class _HelpFormatter(argparse.HelpFormatter):
    """Adds each option's default to its help, unless the help already says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """argparse that suggests the closest valid option for an unknown one (and takes no abbreviations)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        ns, extras = super().parse_known_args(args, namespace)
        for extra in extras:
            if extra.startswith("-"):
                options = [o for a in self._actions for o in a.option_strings]
                hint = difflib.get_close_matches(extra.split("=")[0], options, n=1)
                self.error(f"unknown option {extra}" + (f"; did you mean {hint[0]}?" if hint else ""))
        return ns, extras


@functools.cache
def _shipped_names() -> str:
    """The shipped models' names, from the manifest (read once however many options name them)."""
    from emotorch.runtime.registry import shipped

    return ", ".join(sorted(shipped()))


def _model_help(default: str | None = None) -> str:
    """Help for a --model option, naming the shipped models."""
    names = _shipped_names()
    return f"shipped model ({names}), checkpoint file or run directory" + (f" (default: {default})" if default else "")


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", metavar="FER2013NEW_CSV",
                   help="FER+ votes (fer2013new.csv) for a fer2013.csv given as the data; they pair row by row")
    p.add_argument("--skip-bad", action="store_true", help="skip and count bad rows or images instead of failing")
    p.add_argument("--skip-unknown", action="store_true", help="ignore class folders with unknown names")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="emotorch", description="Facial emotion recognition on FER2013-style data.")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or log lines")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    data = sub.add_parser("data", help="inspect data sets").add_subparsers(dest="data_command", required=True,
                                                                          parser_class=_Parser)  # fmt: skip
    stats = data.add_parser("stats", help="counts per split and class, image sizes, bad rows")
    stats.add_argument("path", help="fer2013.csv, a folder with train.csv/test.csv, or image folders")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    _add_data_flags(stats)

    models = sub.add_parser("models", help="list the registered models with parameter counts")
    models.add_argument("--json", action="store_true", help="print one JSON list instead of a table")

    tr = sub.add_parser("train", help="train a model into a run directory")
    tr.add_argument("--preset", default="default", choices=list(PRESETS),
                    help="a recipe: default (from scratch), seed (the hackathon's), accurate and fast (the shipped "
                         "FER+ models' recipes), fer2013-accurate and fer2013-fast (the FER2013-label ones'); "
                         "the flags below override it")  # fmt: skip
    for f, flag in config_flags():  # every TrainConfig field is a flag: declared once, in emotorch.training.config
        shipped_names = f"; shipped: {_shipped_names()}" if f.name in ("teacher", "init") else ""
        text = f"{f.metadata['help']}{shipped_names} (default: the preset's)"
        if f.type == "bool":
            tr.add_argument(flag, dest=f.name, action="store_const", const=not f.default, help=text)
        elif f.name == "model_options":
            tr.add_argument(flag, dest=f.name, action="append", metavar=f.metadata["metavar"], help=text)
        else:
            kind = {"int": int, "float": float}.get(f.type, str)
            tr.add_argument(flag, dest=f.name, type=kind, choices=CONFIG_CHOICES.get(f.name),
                            metavar=f.metadata.get("metavar"), help=text)  # fmt: skip
    tr.add_argument("--out", help="run directory (default: runs/train/<preset>-<model>[-N])")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    tr.add_argument("--force", action="store_true", help="overwrite an existing run directory")
    _add_data_flags(tr)

    ev = sub.add_parser("evaluate", help="metrics (or predictions) of a model on a data set")
    ev.add_argument("--model", required=True, help=_model_help())
    ev.add_argument("--data", required=True, help="data set to evaluate on (any supported format)")
    ev.add_argument("--split", help="split to evaluate (default: val, else test, else the only one)")
    ev.add_argument("--tta", action=argparse.BooleanOptionalAction,
                    help="horizontal flip and ten-crop test-time augmentation (default: the model's own setting)")
    ev.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    ev.add_argument("--out", help="also write confusion_matrix.png, predictions.png and curves.png here")
    ev.add_argument("--predictions", help="write per-face predictions to this CSV (for unlabeled data)")
    ev.add_argument("--force", action="store_true", help="overwrite an existing --predictions file")
    _add_data_flags(ev)

    pr = sub.add_parser("predict", help="emotions of every face in photos or folders of photos")
    pr.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="photos, or folders searched recursively")
    pr.add_argument("--model", default=PHOTO_MODEL, help=_model_help(PHOTO_MODEL))
    pr.add_argument("--json", action="store_true", help="print one JSON document: a list of {path, faces}")
    pr.add_argument("--out", help="write annotated images and summary.csv here")
    pr.add_argument("--force", action="store_true", help="overwrite files already in --out")
    pr.add_argument("--tta", action=argparse.BooleanOptionalAction,
                    help="average flipped and shifted views of each face: slower, slightly more accurate "
                         "(default: the model's own setting)")  # fmt: skip

    pk = sub.add_parser("package", help="ship a run's best checkpoint inside the package (maintainers)")
    pk.add_argument("run", nargs="+", help="run directory or checkpoint; several make an averaged ensemble")
    pk.add_argument("--name", required=True, help="name to ship it under, e.g. default")
    pk.add_argument("--data", required=True, help="data set whose val split fits the temperature")
    pk.add_argument("--recipe", required=True, help="the command that reproduces the run")
    pk.add_argument("--tta", action="store_true", help="the model's test-time setting uses TTA")
    pk.add_argument("--precise-bn", action=argparse.BooleanOptionalAction, default=True,
                    help="recompute batch-norm statistics on the clean training faces first (default: yes)")
    pk.add_argument("--int8", action="store_true", help="also ship an int8 ONNX file (calibrated on train faces), "
                                                        "which ONNX Runtime serves and the val metrics describe")

    ex = sub.add_parser("export", help="export a model (ONNX, with its metadata)")
    ex.add_argument("--model", required=True, help=_model_help())
    ex.add_argument("--format", choices=["onnx"], default="onnx", help="file format")
    ex.add_argument("--out", required=True, help="file to write, e.g. emonet.onnx")
    ex.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    ex.add_argument("--int8", action="store_true", help="quantise to int8 (about 3x faster on CPUs with VNNI)")
    ex.add_argument("--data", help="with --int8: data set whose training faces calibrate the quantisation")

    vid = sub.add_parser("video", help="emotions over time in a video: tracked faces, smoothed labels")
    vid.add_argument("input", help="video file")
    vid.add_argument("--model", default=STREAM_MODEL, help=_model_help(STREAM_MODEL))
    vid.add_argument("--out", help="annotated video to write (.mp4)")
    vid.add_argument("--csv", help="per-frame results: frame, time, track id, box, emotion, probabilities")
    vid.add_argument("--plot", help="emotion-over-time plot per tracked face (.png)")
    vid.add_argument("--force", action="store_true", help="overwrite existing output files")
    cam = sub.add_parser("webcam", help="live emotions from a camera: a window, or JSON lines with --headless")
    cam.add_argument("--camera", default="0", help="camera index, or a video file or stream URL (default: 0)")
    cam.add_argument("--model", default=STREAM_MODEL, help=_model_help(STREAM_MODEL))
    cam.add_argument("--headless", action="store_true", help="print one JSON line per frame instead of a window")
    cam.add_argument("--max-frames", type=int, help="stop after this many frames")
    for p, every in ((vid, 1), (cam, 2)):
        p.add_argument("--detect-every", type=int, default=every, metavar="N",
                       help=f"run the face detector every N frames, following faces by optical flow in between "
                            f"(default: {every})")  # fmt: skip
        p.add_argument("--detect-size", type=int, default=640, metavar="PX",
                       help="detect faces on a copy at most PX pixels on its long side, boxes mapped back "
                            "(default: 640; 320 detects about twice as fast but misses small faces)")  # fmt: skip
    for p, default in ((ev, None), (pr, None), (vid, "auto"), (cam, "auto")):
        p.add_argument("--backend", choices=BACKENDS, default=default,
                       help="inference engine; auto: ONNX Runtime where it works (default: "
                            + (f"{default})" if default else "the model's own: ONNX Runtime for shipped models and "
                               ".onnx files, PyTorch for checkpoints)"))  # fmt: skip

    an = sub.add_parser("analyse", help="emotions of every face in many photos and videos, resumable, in parallel")
    an.add_argument("inputs", nargs="+", metavar="INPUT",
                    help="photos, videos, folders (searched recursively), glob patterns or manifests (.txt: a path a "
                         "line; .csv: a 'path' column)")  # fmt: skip
    an.add_argument("--out", required=True, help="results folder: faces.jsonl, files.jsonl (and faces.parquet where "
                                                 "pyarrow is installed); a rerun skips the files it finished")
    an.add_argument("--model", default=STREAM_MODEL, help=_model_help(STREAM_MODEL))
    an.add_argument("--backend", choices=BACKENDS, default="auto", help="inference engine")
    an.add_argument("--workers", type=int, metavar="N",
                    help="local: processes that decode and detect (default: the cores available); "
                         "ray: classifier actors (default: a quarter of the cluster's CPUs)")
    an.add_argument("--every", type=float, default=1.0, metavar="SECONDS",
                    help="in videos, analyse one frame every SECONDS (0: every frame)")
    an.add_argument("--detect-size", type=int, default=640, metavar="PX",
                    help="detect faces on a copy at most PX pixels on its long side")
    an.add_argument("--batch-size", type=int, default=256, help="faces classified together, across files")
    an.add_argument("--engine", choices=ENGINES, default="local",
                    help='local processes, or a Ray cluster (pip install "emotorch[ray]"; RAY_ADDRESS picks it)')
    an.add_argument("--save-crops", action="store_true",
                    help="also write each aligned 48x48 face as a PNG under OUT/crops (off: no image is written)")
    rp = sub.add_parser("report", help="per-emotion shares, a summary table and plots over time of `analyse` results")
    rp.add_argument("results", help="the --out folder of `emotorch analyse`")
    rp.add_argument("--out", help="folder for summary.csv and the plots (default: RESULTS/report)")
    rp.add_argument("--json", action="store_true", help="print one JSON object")

    db_help = ("SQLAlchemy database URL, or a file path for SQLite (default: $EMOTORCH_DB or a SQLite file in "
               "the user data dir)")
    cat = sub.add_parser("catalog", help="the recommendation catalog").add_subparsers(
        dest="catalog_command", required=True, parser_class=_Parser)  # fmt: skip
    imp = cat.add_parser("import", help="validate and import a CSV or JSON catalog in one transaction")
    imp.add_argument("file", help="a .csv or .json catalog (see the README for the fields)")
    imp.add_argument("--replace", action="store_true", help="also remove items the file does not list")
    exp = cat.add_parser("export", help="write the catalog as CSV or JSON")
    exp.add_argument("--format", choices=["csv", "json"], default="csv", help="file format")
    exp.add_argument("--out", help="file to write (default: stdout)")
    exp.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    lst = cat.add_parser("list", help="list catalog items")
    lst.add_argument("--category", help="only this category (product, place, food, song or movie; plurals too)")
    lst.add_argument("--json", action="store_true", help="print one JSON list")
    for p in (imp, exp, lst):
        p.add_argument("--db", help=db_help)

    rec = sub.add_parser("recommend", help="recommendations for an emotion or a probability vector")
    mood_args = rec.add_mutually_exclusive_group(required=True)
    mood_args.add_argument("--emotion", type=str.lower, choices=list(FERPLUS_CLASSES), help="the mood, as one emotion")
    mood_args.add_argument("--probs", help='probabilities as JSON, e.g. \'{"sad": 0.7, "neutral": 0.3}\'')
    mood_args.add_argument("--image", help="a photo: the largest face's emotion probabilities drive the list")
    rec.add_argument("--model", default=PHOTO_MODEL, help="with --image: " + _model_help(PHOTO_MODEL))
    rec.add_argument("--category", action="append",
                     help="product, place, food, song or movie; plurals too (repeatable, or comma-separated)")
    rec.add_argument("-n", type=int, default=5, help="how many items")
    rec.add_argument("--strategy", choices=STRATEGIES, default="auto",
                     help="match the mood, lift it, or auto: the user's or learned choice per category")
    rec.add_argument("--json", action="store_true", help="print one JSON object with a list `items`")

    fb = sub.add_parser("feedback", help="record an impression, click or like")
    fb.add_argument("item", help="catalog item id")
    fb.add_argument("--kind", choices=FEEDBACK_KINDS, required=True, help="what the viewer did with the item")
    fb.add_argument("--json", action="store_true", help="print the recorded event as one JSON object")
    fb_mood = fb.add_mutually_exclusive_group()
    fb_mood.add_argument("--emotion", type=str.lower, choices=list(FERPLUS_CLASSES),
                         help="the viewer's mood at the time")
    fb_mood.add_argument("--probs", help="the viewer's mood as probabilities in JSON (as for recommend)")

    usr = sub.add_parser("user", help="a user's consent and per-category strategies")
    usr.add_argument("user_id", help="the user to show or change")
    consent = usr.add_mutually_exclusive_group()
    consent.add_argument("--opt-in", action="store_true", help="allow storing emotion context with feedback")
    consent.add_argument("--opt-out", action="store_true", help="withdraw that consent (stored context is kept "
                                                                 "until `forget`)")
    usr.add_argument("--prefer", action="append", default=[], metavar="CATEGORY=STRATEGY",
                     help="strategy (match or uplift) that `auto` uses for a category, e.g. songs=uplift")
    usr.add_argument("--json", action="store_true", help="print the user's stored settings as one JSON object")

    fg = sub.add_parser("forget", help="delete everything stored about a user")
    fg.add_argument("--user", required=True, help="the user whose events, preferences and taste are deleted")
    for p in (rec, fb):
        who = p.add_mutually_exclusive_group()
        who.add_argument("--user", help="user id (recent items are not repeated)")
        who.add_argument("--session", help="anonymous session id")
    srv = sub.add_parser("serve", help="the REST API and the camera page (FastAPI + uvicorn)")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    srv.add_argument("--port", type=int, default=8000, help="port to listen on")
    srv.add_argument("--workers", type=int, default=1, help="server processes, each with its own model")
    srv.add_argument("--model", default=STREAM_MODEL, help=_model_help(STREAM_MODEL))
    srv.add_argument("--backend", choices=BACKENDS, default="auto", help="inference engine")
    srv.add_argument("--max-upload-mb", type=float, default=10.0, help="bigger request bodies get 413")
    srv.add_argument("--rate-limit", type=float, default=0.0, metavar="PER_SECOND",
                     help="requests a second per client on /v1/ (0: no limit)")
    srv.add_argument("--rate-burst", type=float, help="requests a client may make at once (default: 2x the rate)")
    srv.add_argument("--read-timeout", type=float, default=15.0, metavar="SECONDS",
                     help="a request whose body stalls this long gets 408 and is closed; one whose headers "
                          "have not all arrived by then is closed")
    srv.add_argument("--trust-proxy", metavar="ADDRESSES",
                     help="comma-separated addresses of reverse proxies whose X-Forwarded-For names the client "
                          "(for rate limits and logs); by default no forwarded header is believed")
    srv.add_argument("--batch-window-ms", type=float, default=3.0,
                     help="how long a request waits for others to share its model call")
    for p in (rec, fb, usr, fg, srv):
        p.add_argument("--db", help=db_help)
    for p, default in ((pr, "crowd"), (srv, "expressive")):
        p.add_argument("--reading", choices=READINGS, default=default,
                       help="how probabilities become one emotion: crowd (the most likely of ten people's votes) "
                            "or expressive (a non-neutral emotion once its share passes the model's threshold, "
                            f"fitted on val; for faces in front of a camera) (default: {default})")  # fmt: skip
    for p in (ev, pr, vid, cam, srv, an, rec):
        p.add_argument("--threads", type=int, metavar="N",
                       help="threads for ONNX Runtime, OpenCV, OpenMP and PyTorch together (default: the cores "
                            "available to this process; serve: shared among its --workers)")  # fmt: skip
    return parser


def _json(obj: Any, **kwargs: Any) -> str:
    """JSON for stdout; NaN or infinity (not JSON) is an error rather than invalid output."""
    return json.dumps(obj, allow_nan=False, **kwargs)


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"--model-option {text!r} is not KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def cmd_data_stats(args: argparse.Namespace) -> None:
    from emotorch.training.data import format_stats, load_dataset, stats_report

    ds = load_dataset(args.path, labels=args.labels, skip_bad=True, skip_unknown=True, progress=not args.quiet)
    report = stats_report(ds)
    print(_json(report, indent=2) if args.json else format_stats(report))


def cmd_models(args: argparse.Namespace) -> None:
    from emotorch.runtime import registry

    def megabytes(entry: dict[str, Any]) -> float:  # from the files' sizes: listing them needs no hashing
        return round(sum((registry.WEIGHTS / f).stat().st_size for f in {entry["file"], entry["onnx"]}) / 1e6, 1)

    shipped = [{"name": name, "classes": len(entry["classes"]), "megabytes": megabytes(entry),
                "val_accuracy": entry["val_accuracy"], "tta": entry["tta"]}
               for name, entry in registry.shipped().items()]  # fmt: skip
    trainable = None
    if installed("torch"):  # the registry builds PyTorch models: the train extra
        from emotorch.training.models import count_parameters, create_model, list_models

        trainable = [{"name": m.name, "parameters": count_parameters(create_model(m.name)),
                      "description": m.description} for m in list_models()]  # fmt: skip
    if args.json:
        print(_json({"shipped": shipped, "trainable": trainable}, indent=2))
        return
    print(f"{'shipped model':<18}{'classes':>8}{'MB':>6}{'val accuracy':>14}")
    for m in shipped:
        print(f"{m['name']:<18}{m['classes']:>8}{m['megabytes']:>6.1f}{m['val_accuracy']:>14.2%}"
              + ("  (with TTA)" if m["tta"] else ""))
    if trainable is None:
        print('\ntrainable architectures: pip install "emotorch[train]" to list and train them')
        return
    print(f"\n{'trainable':<13}{'parameters':>12}  description")
    for m in trainable:
        print(f"{m['name']:<13}{m['parameters']:>12,}  {m['description']}")


def _default_run_dir(preset: str, model: str) -> Path:
    base = Path("runs/train") / f"{preset}-{model}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def cmd_train(args: argparse.Namespace) -> None:
    from emotorch.training import checkpoint
    from emotorch.training.config import TrainConfig, config_from_preset
    from emotorch.training.train import train

    if args.resume:
        if not args.out:
            raise ValueError("--resume needs --out RUN_DIR, the run to continue")
        saved = checkpoint.load(Path(args.out) / "last.pt")["meta"]["config"]  # the run's own config
        cfg = TrainConfig.from_dict(saved | ({"epochs": args.epochs} if args.epochs else {}))
        logging.getLogger("emotorch").info("resuming %s from its last checkpoint", args.out)
    else:
        if not args.data:
            raise ValueError("--data PATH is required (fer2013.csv, train.csv folder, image folders or FERPlus)")
        overrides = {f.name: getattr(args, f.name) for f, _ in config_flags()} | {
            "labels": args.labels, "skip_bad": args.skip_bad or None, "skip_unknown": args.skip_unknown or None,
        }  # fmt: skip
        if args.model_options:
            overrides["model_options"] = dict(_parse_option(o) for o in args.model_options)
        cfg = config_from_preset(args.preset, **{k: v for k, v in overrides.items() if v is not None})
    out = Path(args.out) if args.out else _default_run_dir(args.preset, cfg.model)
    result = train(cfg, out, resume=args.resume, force=args.force, progress=not args.quiet)
    if result:
        print(_json({k: result[k] for k in ("run_dir", "best_epoch", "accuracy", "macro_f1", "n")}))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from emotorch.runtime.registry import load_model
    from emotorch.training.evaluate import evaluate, load_split, write_predictions

    if args.out:
        require_plots("evaluate --out")  # before minutes of work, not after

    model = load_model(args.model, args.backend)
    tta = model.card.tta if args.tta is None else args.tta
    split, faces = load_split(args.data, args.split, labels=args.labels, skip_bad=args.skip_bad,
                              skip_unknown=args.skip_unknown)  # fmt: skip
    classes = model.classes
    if args.predictions:
        dest = Path(args.predictions)
        if dest.exists() and not args.force:
            raise FileExistsError(f"{dest} exists; pass --force to overwrite it")
        bar = None if args.quiet else "predicting"
        probs = model.predict_proba(faces.images, tta=tta, progress=bar)
        write_predictions(dest, faces, probs, classes)
        logging.getLogger("emotorch").info("wrote %d predictions to %s", len(faces), dest)
        if not faces.labeled:
            return
    metrics, probs, scored = evaluate(model, faces, tta=tta, progress=not args.quiet)
    metrics = {"model": model.source, "data": str(args.data), "split": split} | metrics
    if args.out:
        from emotorch.runtime import plots

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        plots.save(plots.confusion_matrix(metrics["confusion_matrix"], classes, f"{split} ({len(scored)} faces)"),
                   out / "confusion_matrix.png")  # fmt: skip
        plots.save(plots.prediction_grid(scored.images, probs, scored.labels, classes), out / "predictions.png")
        if model.history:
            plots.save(plots.training_curves(model.history), out / "curves.png")
    if args.json:
        print(_json(metrics))
        return
    truth = "the FER+ majority label" if faces.votes is not None else "their label"
    print(f"{model.source} on {args.data} [{split}], {metrics['n']} faces scored against {truth}"
          f"{' (TTA)' if tta else ''}")
    if metrics["left_out"]:
        why = {"no_majority": "no majority among the taggers"}
        print("left out: " + ", ".join(f"{n} ({why.get(k, f'{k}, a class the model does not tell')})"
                                       for k, n in metrics["left_out"].items()))  # fmt: skip
    print(f"accuracy {metrics['accuracy']:.4f}   macro-F1 {metrics['macro_f1']:.4f}   "
          f"ECE {metrics['ece']:.4f} (temperature {metrics['temperature']:.2f})"
          + (f"   KL to the votes {metrics['vote_kl']:.4f}" if "vote_kl" in metrics else ""))
    print(f"{'class':<10}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
    for c, m in metrics["per_class"].items():
        print(f"{c:<10}{m['precision']:>10.3f}{m['recall']:>10.3f}{m['f1']:>10.3f}{m['support']:>9}")


def _image_files(inputs: list[str]) -> list[Path]:
    from emotorch.runtime.images import IMAGE_EXTENSIONS

    files: list[Path] = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        else:
            files.append(path)  # a missing or non-image file is reported with the others
    return files


def _annotated_paths(files: list[Path], out: Path) -> list[Path]:
    """Where each photo's annotated copy goes: its path relative to the inputs' common folder, mirrored
    under ``out``, so ``a/x.jpg`` and ``b/x.jpg`` do not overwrite each other."""
    if not files:
        return []
    resolved = [f.resolve() for f in files]
    common = Path(os.path.commonpath([f.parent for f in resolved]))
    return [out / f.relative_to(common).with_name(f"{f.stem}.annotated.png") for f in resolved]


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from emotorch.runtime.annotate import annotate
    from emotorch.runtime.images import read_image
    from emotorch.runtime.pipeline import EmotionRecognizer, write_summary

    recognizer = EmotionRecognizer(args.model, tta=args.tta, backend=args.backend, reading=args.reading)
    files = _image_files(args.inputs)
    out = Path(args.out) if args.out else None
    annotated = _annotated_paths(files, out) if out is not None else []
    if out is not None:
        clash = [str(p) for p in dict.fromkeys([*annotated, out / "summary.csv"]) if p.exists()]
        if clash and not args.force:
            more = f" and {len(clash) - 3} more" if len(clash) > 3 else ""
            raise FileExistsError(f"{out} already holds {', '.join(clash[:3])}{more}; pass --force to overwrite")
    results, failed = [], 0
    for k, f in enumerate(tqdm(files, desc="photos", unit=" img",
                               disable=None if len(files) > 1 and not args.quiet else True)):  # fmt: skip
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
            summary = ", ".join(f"{face.emotion} {face.probabilities[face.emotion]:.0%}" for face in faces)
            print(f"{f}: {len(faces)} face(s){': ' + summary if faces else ''}")
    if out is not None and failed < len(files):  # nothing is written when no photo could be read
        write_summary(out / "summary.csv", results, recognizer.classes)
    if args.json:
        print(_json(results))
    if failed:
        print(f"emotorch: {failed} of {len(files)} input(s) failed", file=sys.stderr)
    return EXIT_FAILED if failed else 0


def cmd_webcam(args: argparse.Namespace) -> None:
    from emotorch.runtime.detect import YuNetDetector
    from emotorch.runtime.pipeline import EmotionRecognizer
    from emotorch.runtime.video import live, window

    source: str | int = int(args.camera) if args.camera.isdigit() else args.camera
    if not args.headless and sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        raise ValueError("no display to open a window on (DISPLAY is not set); use --headless for JSON lines")
    recognizer = EmotionRecognizer(args.model, YuNetDetector(max_side=args.detect_size), backend=args.backend)
    if args.headless:
        def emit(i, _rgb, faces, fps) -> None:
            doc = {"frame": i, "fps": round(fps, 1),
                   "faces": [{"id": t.id} | face.to_dict() for t, face in faces]}  # fmt: skip
            print(_json(doc), flush=True)

        live(recognizer, source, on_frame=emit, max_frames=args.max_frames, detect_every=args.detect_every)
        return
    window(recognizer, source, max_frames=args.max_frames, detect_every=args.detect_every)


def cmd_package(args: argparse.Namespace) -> None:
    from emotorch.training.packaging import package

    entry = package(args.run, args.name, data=args.data, recipe=args.recipe, tta=args.tta, int8=args.int8,
                    precise_bn=args.precise_bn)
    print(_json(entry, indent=2))


def cmd_export(args: argparse.Namespace) -> None:
    from emotorch.runtime.registry import load_model
    from emotorch.training.data import load_dataset
    from emotorch.training.export import calibration_sample, export_onnx, quantize_onnx
    from emotorch.training.loading import module_of

    if args.int8 and not args.data:
        raise ValueError("--int8 needs --data: training faces calibrate the int8 activation ranges")
    dest = Path(args.out)
    if dest.exists() and not args.force:
        raise FileExistsError(f"{dest} exists; pass --force to overwrite it")
    model = load_model(args.model, "torch")
    if args.int8:
        sample = calibration_sample(load_dataset(args.data).split("train"))
        print(quantize_onnx(module_of(model), model.card, dest, sample))
    else:
        print(export_onnx(module_of(model), model.card, dest))


def cmd_video(args: argparse.Namespace) -> None:
    import numpy as np

    from emotorch.runtime.detect import YuNetDetector
    from emotorch.runtime.pipeline import EmotionRecognizer
    from emotorch.runtime.video import process_video

    if args.plot:
        require_plots("video --plot")  # before the video is read, not after
    outputs = [Path(p) for p in (args.out, args.csv, args.plot) if p]
    existing = [str(p) for p in outputs if p.exists()]
    if existing and not args.force:
        raise FileExistsError(f"{', '.join(existing)} already exist(s); pass --force to overwrite")
    recognizer = EmotionRecognizer(args.model, YuNetDetector(max_side=args.detect_size), backend=args.backend)
    tracker = process_video(recognizer, args.input, out=Path(args.out) if args.out else None,
                            csv_path=Path(args.csv) if args.csv else None,
                            plot_path=Path(args.plot) if args.plot else None,
                            detect_every=args.detect_every)  # fmt: skip
    for track in tracker.all_tracks():
        frames_seen = [f for f, _ in track.history]
        mean = np.mean([p for _, p in track.history], 0)
        order = np.argsort(-mean)
        if mean[order[0]] >= 0.5:
            gist = f"mostly {tracker.classes[order[0]]} ({mean[order[0]]:.0%})"
        else:  # no emotion dominates: the leading shares, not a "mostly" that holds for a quarter of the clip
            gist = "mixed: " + ", ".join(f"{tracker.classes[k]} {mean[k]:.0%}" for k in order[:3])
        print(f"face #{track.id}: frames {frames_seen[0]}-{frames_seen[-1]}, {gist}")


def _mood(args: argparse.Namespace):
    from emotorch.recommend import mood

    if getattr(args, "image", None):
        from emotorch.runtime.pipeline import EmotionRecognizer

        faces = EmotionRecognizer(args.model).predict(args.image)  # the photo is read, never stored
        if not faces:
            raise DataError(f"{args.image}: no face found")
        largest = max(faces, key=lambda f: f.box[2] * f.box[3])
        return mood(probs=largest.probabilities)
    if args.emotion is None and args.probs is None:
        return None
    if args.probs is None:
        return mood(args.emotion)
    try:
        probs = json.loads(args.probs)
    except json.JSONDecodeError as e:
        raise ValueError(f"--probs is not valid JSON: {e.msg}") from None
    return mood(probs=probs)


def cmd_catalog(args: argparse.Namespace) -> None:
    from emotorch.recommend import export, import_file, list_items, open_database

    engine = open_database(args.db)
    if args.catalog_command == "import":
        print(f"{args.file}: {import_file(engine, args.file, replace=args.replace)}")
    elif args.catalog_command == "export":
        text = export(engine, args.format)
        if not args.out:
            sys.stdout.write(text)
            return
        dest = Path(args.out)
        if dest.exists() and not args.force:
            raise FileExistsError(f"{dest} exists; pass --force to overwrite it")
        dest.write_text(text, encoding="utf-8")
        print(f"wrote {len(list_items(engine))} items to {dest} ({args.format})")
    else:
        items = list_items(engine, args.category)
        if args.json:
            print(_json(items, ensure_ascii=False))
            return
        for it in items:
            print(f"{it['id']:<55} {it['valence']:+.2f} {it['arousal']:+.2f}  {', '.join(it['tags'])}")


def cmd_recommend(args: argparse.Namespace) -> None:
    from emotorch.recommend import Recommender

    current = _mood(args)
    categories = [c.strip() for arg in args.category for c in arg.split(",") if c.strip()] if args.category else None
    recs = Recommender(args.db).recommend(current, categories=categories, n=args.n, strategy=args.strategy,
                                          user_id=args.user, session_id=args.session,
                                          record=bool(args.user or args.session))  # fmt: skip
    if args.json:
        items = [{"id": r.id, "category": r.category, "title": r.title, "score": r.score, "reason": r.reason,
                  "strategy": r.strategy} for r in recs]  # fmt: skip
        print(_json({"emotion": current.emotion, "confidence": current.confidence, "items": items},
                         ensure_ascii=False))  # fmt: skip
        return
    for r in recs:
        print(f"{r.category:<8} {r.title:<50} {r.score:6.3f}  {r.reason}")


def cmd_feedback(args: argparse.Namespace) -> None:
    from emotorch.recommend import Recommender

    current = _mood(args)
    Recommender(args.db).feedback(args.item, args.kind, current, user_id=args.user, session_id=args.session)
    event = {"item": args.item, "kind": args.kind, "user": args.user, "session": args.session,
             "emotion": current.emotion if current else None}  # fmt: skip
    if args.json:
        print(_json(event))
        return
    who = f" by user {args.user}" if args.user else f" in session {args.session}" if args.session else ""
    print(f"recorded {args.kind} of {args.item}{who}" + (f" (mood: {current.emotion})" if current else ""))


def cmd_user(args: argparse.Namespace) -> None:
    from emotorch.recommend import Recommender
    from emotorch.recommend.db import canonical_category

    prefs = dict(p.split("=", 1) for p in args.prefer if "=" in p)
    if len(prefs) != len(args.prefer):
        raise ValueError("--prefer takes CATEGORY=STRATEGY, e.g. song=uplift")
    consent = True if args.opt_in else False if args.opt_out else None
    recommender = Recommender(args.db)
    if consent is not None or prefs:
        recommender.set_user(args.user_id, opted_in=consent, strategies=prefs)
    info = recommender.user(args.user_id)
    if args.json:
        print(_json(info or {"user_id": args.user_id, "known": False}))
        return
    if info is None:
        print(f"user {args.user_id}: nothing stored (give --opt-in, --opt-out or --prefer to create the user)")
        return
    if consent is not None or prefs:
        changed = ([f"consent {'given' if consent else 'withdrawn'}"] if consent is not None else []) + [
            f"{canonical_category(c)} -> {s}" for c, s in prefs.items()]  # fmt: skip
        print(f"user {args.user_id}: updated ({', '.join(changed)})")
    strategies = ", ".join(f"{c}={s}" for c, s in info["strategies"].items()) or "none (auto learns or defaults)"
    consent_text = "opted in (emotion context stored with feedback)" if info["opted_in"] else (
        "not opted in (no emotion context stored)")  # fmt: skip
    events = ", ".join(f"{n} {k}(s)" for k, n in info["events"].items())
    print(f"user {args.user_id}: {consent_text}\n  preferred strategies: {strategies}\n  stored events: {events}")


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from emotorch.recommend import open_database
    from emotorch.runtime.registry import load_model
    from emotorch.serve.app import ENV, Settings

    if args.workers < 1 or not 0 <= args.port <= 65535:
        raise ValueError("--workers must be at least 1 and --port within 0-65535")
    load_model(args.model)  # a missing or damaged model, or an unusable database: one line, before any worker
    open_database(args.db).dispose()
    try:  # a busy port: one line now, not uvicorn's six and exit 3
        with socket.create_server((args.host, args.port)):
            pass
    except OSError as e:
        why = os.strerror(e.errno) if e.errno else str(e)
        raise DataError(f"{args.host}:{args.port}: cannot listen there ({why})") from None
    settings = Settings(model=args.model, backend=args.backend, db=args.db, reading=args.reading,
                        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), rate_limit=args.rate_limit,
                        rate_burst=args.rate_burst, batch_window_ms=args.batch_window_ms,
                        read_timeout_s=args.read_timeout,
                        threads=threads.budget(args.threads, args.workers))  # fmt: skip
    os.environ[ENV] = settings.to_env()  # each worker process builds its app from these settings
    # a client is the address that connected, unless it is a proxy the operator named
    uvicorn.run("emotorch.serve:create_app", factory=True, host=args.host, port=args.port, workers=args.workers,
                log_level="warning" if args.quiet else "info", proxy_headers=bool(args.trust_proxy),
                forwarded_allow_ips=args.trust_proxy or None,
                http="emotorch.serve.protocol:HeaderDeadline")  # stalled headers time out too  # fmt: skip


def cmd_analyse(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from emotorch.runtime.analyse import analyse

    bar, started = None, time.perf_counter()

    def progress(done: int, faces: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="analysing", unit=" file", file=sys.stderr,
                       disable=True if args.quiet else None)  # fmt: skip
        bar.update(done - bar.n)
        bar.set_postfix_str(f"{faces} faces, {faces / max(time.perf_counter() - started, 1e-9):.1f} faces/s")

    try:
        summary = analyse(args.inputs, args.out, model=args.model, backend=args.backend, workers=args.workers,
                          every_s=args.every, detect_size=args.detect_size, batch_size=args.batch_size,
                          engine=args.engine, save_crops=args.save_crops, progress=progress)  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    for error in summary.errors:  # one line per failed input, as every command has
        print(f"emotorch: error: {error}", file=sys.stderr)
    done = summary.files - summary.skipped
    print(f"{args.out}: {summary.files} file(s): {done} analysed ({summary.failed} failed, see files.jsonl), "
          f"{summary.skipped} done before; {summary.faces} face(s) in {summary.seconds:g} s")
    return EXIT_FAILED if summary.failed else 0


def cmd_report(args: argparse.Namespace) -> None:
    from emotorch.runtime.report import report

    result = report(args.results, args.out)
    if args.json:
        print(_json(result))
        return
    print(f"{args.results}: {result['files']} file(s), {result['failed']} failed, {result['faces']} face(s)")
    print(f"{'emotion':<10}{'faces':>8}{'share':>8}{'mean p':>8}")
    for emotion, row in result["shares"].items():
        print(f"{emotion:<10}{row['faces']:>8}{row['share']:>8.1%}{row['mean_probability']:>8.3f}")
    print(f"wrote {result['summary']}" + (f" and {len(result['plots'])} plot(s) over time" if result["plots"] else ""))
    if result["plots_skipped"]:
        print(f"no plots over time for {result['plots_skipped']} video(s): they need matplotlib "
              '(pip install "emotorch[plots]")')


def cmd_forget(args: argparse.Namespace) -> None:
    from emotorch.recommend import Recommender

    removed = Recommender(args.db).forget(args.user)
    print(f"forgot user {args.user}: {removed} events deleted")


NEEDS_TORCH = {"train", "package", "export"}  # the `train` extra's commands
COMMANDS = {
    "models": cmd_models, "train": cmd_train, "evaluate": cmd_evaluate, "data": cmd_data_stats,
    "predict": cmd_predict, "video": cmd_video, "export": cmd_export, "webcam": cmd_webcam,
    "package": cmd_package,
    "catalog": cmd_catalog, "recommend": cmd_recommend, "feedback": cmd_feedback, "user": cmd_user,
    "forget": cmd_forget, "serve": cmd_serve, "analyse": cmd_analyse, "report": cmd_report,
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run one command; exit status 0 on success, 1 when an input failed, 2 for a usage error."""
    words = [w for w in (sys.argv[1:] if argv is None else argv) if not w.startswith("-")]
    if words and words[0] not in COMMANDS:  # argparse lists every command; a typo deserves its nearest one
        hint = difflib.get_close_matches(words[0], list(COMMANDS), n=1)
        print(f"emotorch: error: unknown command {words[0]!r}" + (f"; did you mean {hint[0]!r}?" if hint else
              f"; commands: {', '.join(COMMANDS)}"), file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    args = build_parser().parse_args(argv)
    # EmoTorch's own log lines go to stderr; other libraries keep their default (warnings only)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    ours = logging.getLogger("emotorch")
    ours.handlers[:] = [handler]
    ours.setLevel(logging.WARNING if args.quiet else logging.INFO)
    ours.propagate = False
    try:
        if args.command in NEEDS_TORCH:
            require_torch(f"emotorch {args.command}")
        if hasattr(args, "threads") and args.command != "serve":  # serve: each worker sets its own
            threads.configure(args.threads)
        return COMMANDS[args.command](args) or 0
    except (DataError, CheckpointError, CatalogError, FileNotFoundError, CatalogBusy, DatabaseUnavailable,
            MissingExtra) as e:  # fmt: skip
        print(f"emotorch: error: {e}", file=sys.stderr)  # an input, file or database could not be used
        return EXIT_FAILED
    except (ValueError, FileExistsError) as e:  # the command asked for something it cannot do
        print(f"emotorch: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("emotorch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `emotorch report --json | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return EXIT_FAILED
    except Exception as e:
        if type(e).__module__.split(".")[0] != "sqlalchemy":
            raise
        from emotorch.recommend.db import default_url, describe  # a database that opened, then failed

        print(f"emotorch: error: {describe(getattr(args, 'db', None) or default_url(), e)}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
