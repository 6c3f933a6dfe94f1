"""Accuracy and speed of every shipped model (and any run you name), printed as a table.

    python benchmarks/accuracy.py [--data ../shared/fer2013] [--model fast ...] [--run NAME=RUN ...]
    python benchmarks/accuracy.py --widths 12 16 24 32 48   # speed only, of untrained EmoNets

Accuracy and macro-F1 are on val (FER2013 PublicTest) with each model's shipped test-time
setting (its int8 ONNX file for a model that ships one, ``fast``), then with flip + ten-crop TTA;
ECE after its temperature. Speed is classification alone on 48x48 faces, on this machine's
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

from emotorch import zoo
from emotorch.data import load_dataset
from emotorch.evaluate import LoadedModel, calibration, compute_metrics, load_model, predict_proba
from emotorch.export import OnnxModel, onnx_backend, quantize_onnx, serve_with
from emotorch.models import count_parameters, create_model


def speed(model: LoadedModel) -> tuple[float, float]:
    """(median ms per face at batch 1, faces per second at batch 64)."""
    rng = np.random.default_rng(0)
    one, batch = rng.integers(0, 256, (1, 48, 48), np.uint8), rng.integers(0, 256, (64, 48, 48), np.uint8)
    singles, batches = [], []
    for _ in range(60):
        t0 = time.perf_counter()
        predict_proba(model.model, one, model.meta)
        singles.append(time.perf_counter() - t0)
    for _ in range(42):
        t0 = time.perf_counter()
        predict_proba(model.model, batch, model.meta)
        batches.append(time.perf_counter() - t0)
    return statistics.median(singles[10:]) * 1000, 64 / statistics.median(batches[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/fer2013")
    parser.add_argument("--model", nargs="+", help="only these shipped models (default: all)")
    parser.add_argument("--run", action="append", default=[], metavar="NAME=PATH", help="a run or checkpoint to add")
    parser.add_argument("--seed-run", default="runs/seed-vgg19", help="the seed recipe's run, for its row")
    parser.add_argument("--widths", type=int, nargs="+", help="only time untrained EmoNets of these widths")
    args = parser.parse_args()
    if args.widths:
        meta = zoo.load_shipped("default").meta
        print(f"untrained EmoNets, {torch.get_num_threads()} threads")
        print(f"{'width':>5}{'params':>11}{'torch ms':>10}{'torch f/s':>11}{'onnx ms':>9}{'onnx f/s':>10}"
              f"{'int8 ms':>9}{'int8 f/s':>10}")  # fmt: skip
        faces = np.random.default_rng(0).integers(0, 256, (256, 48, 48), np.uint8)
        with tempfile.TemporaryDirectory() as tmp:
            for width in args.widths:
                net = create_model("emonet", len(meta["classes"]), width=width).eval()
                model = LoadedModel(net, meta | {"model_options": {"width": width}}, [], f"emonet-w{width}")
                int8 = LoadedModel(OnnxModel(quantize_onnx(model, Path(tmp) / f"w{width}.onnx", faces)), meta, [], "")
                t_ms, t_fps = speed(model)
                o_ms, o_fps = speed(onnx_backend(model))
                q_ms, q_fps = speed(int8)
                print(f"{width:>5}{count_parameters(net):>11,}{t_ms:>10.2f}{t_fps:>11,.0f}{o_ms:>9.2f}{o_fps:>10,.0f}"
                      f"{q_ms:>9.2f}{q_fps:>10,.0f}")  # fmt: skip
        return
    val = load_dataset(args.data, progress=False).split("val")
    models = {name: (name, zoo.WEIGHTS / entry["file"]) for name, entry in zoo.shipped().items()
              if not args.model or name in args.model}  # fmt: skip
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
    print(f"val: {len(val)} faces of {args.data}; speed on {torch.get_num_threads()} threads")
    print(f"{'model':<12}{'arch':<10}{'params':>11}{'MB':>6}{'serves':>8}{'tta':>5}{'acc':>8}{'F1':>7}{'ECE':>7}"
          f"{'acc+TTA':>9}{'torch ms':>10}{'torch f/s':>11}{'onnx ms':>9}{'onnx f/s':>10}")  # fmt: skip
    for name, (source, file) in models.items():
        model = load_model(source)
        served = onnx_backend(model)  # the shipped int8 file, or a float32 export
        shipped = serve_with(model)  # what the model's test-time setting runs
        size = (model.onnx or file).stat().st_size / 1e6
        tta = bool(model.meta.get("tta", False))
        probs = predict_proba(shipped.model, val.images, model.meta, tta=tta)
        m = compute_metrics(val.labels, probs.argmax(1)) | calibration(probs, val.labels)
        tta_acc = compute_metrics(val.labels, predict_proba(shipped.model, val.images, model.meta, tta=True).argmax(1))
        t_ms, t_fps = speed(model)
        o_ms, o_fps = speed(served)
        print(f"{name:<12}{model.meta['model']:<10}{model.meta['parameters']:>11,}{size:>6.1f}"
              f"{'int8' if model.onnx else 'fp32':>8}{'yes' if tta else 'no':>5}{m['accuracy']:>8.2%}"
              f"{m['macro_f1']:>7.3f}{m['ece']:>7.3f}{tta_acc['accuracy']:>9.2%}{t_ms:>10.2f}{t_fps:>11,.0f}"
              f"{o_ms:>9.2f}{o_fps:>10,.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
