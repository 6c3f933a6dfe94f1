"""Accuracy and speed of every shipped model (and any run you name), printed as a table.

    python benchmarks/accuracy.py [--ferplus ../shared/ferplus] [--fer2013 ../shared/fer2013]
                                  [--model fast ...] [--run NAME=RUN ...]
    python benchmarks/accuracy.py --widths 12 16 24 32 48   # speed only, of untrained EmoNets

Every model is scored on the same faces (val: FER2013 PublicTest) against two truths, with its
shipped test-time setting (its int8 ONNX file for a model that ships one): FER+ (the majority
of ten taggers, over FER+'s eight classes; faces without a majority, and for a 7-class model
contempt faces, left out), with flip + ten-crop TTA too, macro-F1, the mean KL divergence of
the predicted probabilities from the taggers' votes and ECE; and FER2013's own single labels
(an 8-class model's contempt is never its answer there). Speed is classification alone on 48x48 faces, on this machine's
cores: the median milliseconds per face at batch 1 and faces per second at batch 64, with
PyTorch (float32) and with ONNX Runtime (the shipped int8 file, else a float32 export).
The seed recipe's row comes from its run (``emotorch train --data ../shared/fer2013 --preset seed
--out runs/seed-vgg19``; ``--seed-run`` names another). ``--widths`` times untrained EmoNets of
those widths instead (speed does not depend on the weights; int8 calibrated on random faces), to
size a fast model.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from emotorch.runtime import registry
from emotorch.runtime.classifier import Classifier
from emotorch.runtime.registry import load_model
from emotorch.runtime.session import OnnxModel
from emotorch.training.data import load_dataset
from emotorch.training.evaluate import evaluate
from emotorch.training.export import quantize_onnx
from emotorch.training.loading import onnx_backend, torch_classifier
from emotorch.training.models import count_parameters, create_model


def speed(model: Classifier) -> tuple[float, float]:
    """(median ms per face at batch 1, faces per second at batch 64)."""
    rng = np.random.default_rng(0)
    one, batch = rng.integers(0, 256, (1, 48, 48), np.uint8), rng.integers(0, 256, (64, 48, 48), np.uint8)
    singles, batches = [], []
    for _ in range(60):
        t0 = time.perf_counter()
        model.predict_proba(one)
        singles.append(time.perf_counter() - t0)
    for _ in range(42):
        t0 = time.perf_counter()
        model.predict_proba(batch)
        batches.append(time.perf_counter() - t0)
    return statistics.median(singles[10:]) * 1000, 64 / statistics.median(batches[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ferplus", default="../shared/ferplus", help="FER+ data (its val split is scored)")
    parser.add_argument("--fer2013", default="../shared/fer2013", help="FER2013 data with its own labels")
    parser.add_argument("--model", nargs="+", help="only these shipped models (default: all)")
    parser.add_argument("--run", action="append", default=[], metavar="NAME=PATH", help="a run or checkpoint to add")
    parser.add_argument("--seed-run", default="runs/seed-vgg19", help="the seed recipe's run, for its row")
    parser.add_argument("--widths", type=int, nargs="+", help="only time untrained EmoNets of these widths")
    args = parser.parse_args()
    if args.widths:
        card = load_model(registry.STREAM_MODEL).card
        print(f"untrained EmoNets, {torch.get_num_threads()} threads")
        print(
            f"{'width':>5}{'params':>11}{'torch ms':>10}{'torch f/s':>11}{'onnx ms':>9}{'onnx f/s':>10}"
            f"{'int8 ms':>9}{'int8 f/s':>10}"
        )
        faces = np.random.default_rng(0).integers(0, 256, (256, 48, 48), np.uint8)
        with tempfile.TemporaryDirectory() as tmp:
            for width in args.widths:
                net = create_model("emonet", len(card.classes), width=width).eval()
                model = torch_classifier(net, card.replace(options={"width": width}), f"emonet-w{width}")
                int8 = Classifier(
                    OnnxModel(quantize_onnx(net, model.card, Path(tmp) / f"w{width}.onnx", faces)),
                    model.card,
                    f"emonet-w{width} int8",
                )
                t_ms, t_fps = speed(model)
                o_ms, o_fps = speed(onnx_backend(model))
                q_ms, q_fps = speed(int8)
                print(
                    f"{width:>5}{count_parameters(net):>11,}{t_ms:>10.2f}{t_fps:>11,.0f}{o_ms:>9.2f}{o_fps:>10,.0f}"
                    f"{q_ms:>9.2f}{q_fps:>10,.0f}"
                )
        return
    ferplus = load_dataset(args.ferplus, progress=False).split("val")
    fer2013 = load_dataset(args.fer2013, progress=False).split("val")
    models = {
        name: (name, registry.WEIGHTS / entry["file"])
        for name, entry in registry.shipped().items()
        if not args.model or name in args.model
    }
    runs = list(args.run)
    if not args.model:  # the whole table: every shipped model, then the seed recipe
        seed_best = Path(args.seed_run) / "best.pt"
        if seed_best.is_file():
            runs.insert(0, f"seed={args.seed_run}")
        else:
            print(f"no seed recipe row: no {seed_best} (emotorch train --preset seed --out {args.seed_run})")
    for item in runs:
        name, _, path = item.partition("=")
        models[name] = (path, Path(path) / "best.pt" if Path(path).is_dir() else Path(path))
    print(
        f"val: {len(ferplus)} faces of {args.ferplus} (FER+ votes), {len(fer2013)} of {args.fer2013} (FER2013 "
        f"labels); speed on {torch.get_num_threads()} threads"
    )
    print(
        f"{'':<18}{'':>3}{'':>11}{'':>6}{'':>7}{'--------------- FER+ majority ---------------':>47}"
        f"{'-- FER2013 --':>15}"
    )
    print(
        f"{'model':<18}{'cls':>3}{'params':>11}{'MB':>6}{'serves':>7}{'n':>6}{'acc':>8}{'+TTA':>8}{'F1':>7}"
        f"{'KL':>7}{'ECE':>7}{'acc':>9}{'F1':>7}{'torch ms':>10}{'onnx ms':>9}{'onnx f/s':>10}"
    )
    for name, (source, file) in models.items():
        model = load_model(source, "torch")
        served = onnx_backend(model)  # the shipped ONNX file (int8 for `fast`), or a float32 export
        shipped = load_model(source)  # what the model's own setting runs
        size = (model.onnx or file).stat().st_size / 1e6
        tta = model.card.tta
        serves = "int8" if registry.shipped().get(name, {}).get("onnx_int8") else "fp32"
        plus, _, _ = evaluate(shipped, ferplus, tta=tta)
        plus_tta, _, _ = evaluate(shipped, ferplus, tta=True)
        own, _, _ = evaluate(shipped, fer2013, tta=tta)
        t_ms, _ = speed(model)
        o_ms, o_fps = speed(served)
        print(
            f"{name:<18}{len(model.classes):>3}{model.card.parameters or 0:>11,}{size:>6.1f}"
            f"{serves:>7}{plus['n']:>6}{plus['accuracy']:>8.2%}{plus_tta['accuracy']:>8.2%}"
            f"{plus['macro_f1']:>7.3f}{plus['vote_kl']:>7.3f}{plus['ece']:>7.3f}{own['accuracy']:>9.2%}"
            f"{own['macro_f1']:>7.3f}{t_ms:>10.2f}{o_ms:>9.2f}{o_fps:>10,.0f}"
        )


if __name__ == "__main__":
    main()
