"""``emotorch train``, ``package`` and ``export``: the training side's commands (the ``train`` extra)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from emotorch.cli.options import add_data_flags, add_force, add_model, refuse_overwrite, shipped_names, to_json
from emotorch.training.config import CHOICES, PRESETS, flags


def add(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser("train", help="train a model into a run directory")
    tr.add_argument(
        "--preset",
        default="default",
        choices=list(PRESETS),
        help="a recipe: default (from scratch), seed (the hackathon's), accurate and fast (the shipped "
        "FER+ models' recipes), fer2013-accurate and fer2013-fast (the FER2013-label ones'); "
        "the flags below override it",
    )
    for f, flag in flags():  # every TrainConfig field is a flag: declared once, in emotorch.training.config
        names = f"; shipped: {shipped_names()}" if f.name in ("teacher", "init") else ""
        text = f"{f.metadata['help']}{names} (default: the preset's)"
        if f.type == "bool":
            tr.add_argument(flag, dest=f.name, action="store_const", const=not f.default, help=text)
        elif f.name == "model_options":
            tr.add_argument(flag, dest=f.name, action="append", metavar=f.metadata["metavar"], help=text)
        else:
            kind = {"int": int, "float": float}.get(f.type, str)
            tr.add_argument(
                flag, dest=f.name, type=kind, choices=CHOICES.get(f.name), metavar=f.metadata.get("metavar"), help=text
            )
    tr.add_argument("--out", help="run directory (default: runs/train/<preset>-<model>[-N])")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    add_force(tr, "an existing run directory")
    add_data_flags(tr)
    tr.set_defaults(run=train_command, needs_torch=True)

    pk = sub.add_parser("package", help="ship a run's best checkpoint inside the package (maintainers)")
    pk.add_argument(
        "run_dirs",
        nargs="+",
        metavar="run",
        help="run directory, checkpoint or shipped model's name; several make an averaged ensemble",
    )
    pk.add_argument("--name", required=True, help="name to ship it under, e.g. default")
    pk.add_argument("--data", required=True, help="data set whose val split fits the temperature")
    pk.add_argument("--recipe", required=True, help="the command that reproduces the run")
    pk.add_argument("--tta", action="store_true", help="the model's test-time setting uses TTA")
    pk.add_argument(
        "--precise-bn",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="recompute batch-norm statistics on the clean training faces first (default: yes)",
    )
    pk.add_argument(
        "--expressive-head",
        metavar="FER2013_DATA",
        help="give the model an expressive head: a linear layer on its features fitted to these FER2013 labels "
        "(train split; offsets on val), which the expressive reading reads",
    )
    pk.add_argument(
        "--expressive-blend", type=float, default=0.7, help="the head's weight against the model's own (default: 0.7)"
    )
    pk.add_argument(
        "--expressive-crowd-weight",
        type=float,
        default=0.1,
        help="weight, against a balanced class, of the classes FER2013 lacks (contempt), which the head learns "
        "from --data's training faces whose crowd majority names them (default: 0.1)",
    )
    pk.add_argument(
        "--expressive-offsets",
        type=float,
        default=0.0,
        help="scale of per-class offsets fitted on val for mean recall (default: 0, none)",
    )
    pk.add_argument(
        "--int8",
        action="store_true",
        help="also ship an int8 ONNX file (calibrated on train faces), "
        "which ONNX Runtime serves and the val metrics describe",
    )
    pk.set_defaults(run=package_command, needs_torch=True)

    ex = sub.add_parser("export", help="export a model (ONNX, with its metadata)")
    add_model(ex)
    ex.add_argument("--format", choices=["onnx"], default="onnx", help="file format")
    ex.add_argument("--out", required=True, help="file to write, e.g. emonet.onnx")
    add_force(ex)
    ex.add_argument("--int8", action="store_true", help="quantise to int8 (about 3x faster on CPUs with VNNI)")
    ex.add_argument("--data", help="with --int8: data set whose training faces calibrate the quantisation")
    ex.set_defaults(run=export_command, needs_torch=True)


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"--model-option {text!r} is not KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _default_run_dir(preset: str, model: str) -> Path:
    base = Path("runs/train") / f"{preset}-{model}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def train_command(args: argparse.Namespace) -> None:
    # PyTorch (a second to import) when the command runs: not for --help, nor a lean install's refusal
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
        overrides = {f.name: getattr(args, f.name) for f, _ in flags()} | {
            "labels": args.labels,
            "skip_bad": args.skip_bad or None,
            "skip_unknown": args.skip_unknown or None,
        }
        if args.model_options:
            overrides["model_options"] = dict(_parse_option(o) for o in args.model_options)
        cfg = config_from_preset(args.preset, **{k: v for k, v in overrides.items() if v is not None})
    out = Path(args.out) if args.out else _default_run_dir(args.preset, cfg.model)
    result = train(cfg, out, resume=args.resume, force=args.force, progress=not args.quiet)
    if result:
        print(to_json({k: result[k] for k in ("run_dir", "best_epoch", "accuracy", "macro_f1", "n")}))


def package_command(args: argparse.Namespace) -> None:
    from emotorch.training.packaging import package  # PyTorch, when the command runs

    entry = package(
        args.run_dirs,
        args.name,
        data=args.data,
        recipe=args.recipe,
        tta=args.tta,
        int8=args.int8,
        precise_bn=args.precise_bn,
        expressive=args.expressive_head,
        blend=args.expressive_blend,
        offset_scale=args.expressive_offsets,
        crowd_weight=args.expressive_crowd_weight,
    )
    print(to_json(entry, indent=2))


def export_command(args: argparse.Namespace) -> None:
    # PyTorch, when the command runs
    from emotorch.runtime.registry import load_model
    from emotorch.training.data import load_dataset
    from emotorch.training.export import calibration_sample, export_onnx, quantize_onnx
    from emotorch.training.loading import module_of

    if args.int8 and not args.data:
        raise ValueError("--int8 needs --data: training faces calibrate the int8 activation ranges")
    dest = Path(args.out)
    refuse_overwrite([dest], args.force)
    model = load_model(args.model, "torch")
    if args.int8:
        sample = calibration_sample(load_dataset(args.data).split("train"))
        print(quantize_onnx(module_of(model), model.card, dest, sample))
    else:
        print(export_onnx(module_of(model), model.card, dest))
