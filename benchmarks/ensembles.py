"""Val accuracy of every ensemble of the runs you name, to choose the members that `emotorch package` ships.

    python benchmarks/ensembles.py runs/default-emonet runs/emonet-w48-s1 runs/emonet-w48-s2 runs/fast-w40 \
        runs/emonet-w48-e200 --tta-pads 4 2

Each run's best checkpoint is prepared as `emotorch package` ships it (precise batch-norm statistics
on the clean training faces, filters rounded to int8 per channel, the rest to float16), then every
set of one or more runs is averaged in log-probability, as the ``ensemble`` model does, and scored
on val (FER2013 PublicTest) without and with flip + ten-crop TTA (``--tta-pads 4 2`` compares crops
shifted by 4 and 2 pixels).
Picking the best set on val flatters it: compare sets that differ by more than the spread between
them (one face in val is 0.028 points).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch

from emotorch.runtime.card import ModelCard
from emotorch.runtime.classifier import TTA_PAD
from emotorch.training import checkpoint
from emotorch.training.data import load_dataset
from emotorch.training.evaluate import compute_metrics
from emotorch.training.export import shipped_precision
from emotorch.training.loading import torch_classifier
from emotorch.training.train import precise_batchnorm

DEFAULT_DATA = Path(__file__).parents[1] / ".." / "shared" / "fer2013"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="runs or checkpoints (a run's best.pt)")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument(
        "--tta-pads",
        type=int,
        nargs="+",
        default=[TTA_PAD],
        metavar="PX",
        help=f"ten-crop shifts to score (default: {TTA_PAD}, what `--tta` uses)",
    )
    args = parser.parse_args()
    if min(args.tta_pads) < 1:
        parser.error("--tta-pads: shifts are whole pixels, 1 or more")
    faces = load_dataset(args.data, progress=False)
    train, val = faces.split("train"), faces.split("val")
    names = [str(run).rstrip("/") for run in args.runs]
    logprobs: dict[tuple[str, int], torch.Tensor] = {}  # (run, TTA pad; 0 for none) -> val log-probs
    for name, run in zip(names, args.runs, strict=True):
        ckpt = checkpoint.load(run)
        card = ModelCard.from_dict(ckpt["meta"], run)
        module = precise_batchnorm(checkpoint.build_model(ckpt), train.images, card.mean, card.std)
        module.load_state_dict(shipped_precision(module.state_dict()))  # what ships
        model = torch_classifier(module, card, name)
        for pad in (0, *args.tta_pads):
            logits = model.predict_logits(val.images, tta=pad > 0, tta_pad=pad)
            logprobs[name, pad] = torch.from_numpy(logits).log_softmax(-1)

    def score(members: tuple[str, ...], pad: int) -> dict:
        return compute_metrics(val.labels, torch.stack([logprobs[m, pad] for m in members]).mean(0).argmax(1).numpy())

    print(f"val: {len(val)} faces of {args.data}; members with precise BN, weights as shipped")
    width = max(len(" + ".join(names)), 7)
    print(f"{'members':<{width}}{'n':>3}{'acc':>8}{'F1':>7}" + "".join(f"{f'TTA {p}px':>9}" for p in args.tta_pads))
    for k in range(1, len(names) + 1):
        for members in itertools.combinations(names, k):
            plain = score(members, 0)
            print(
                f"{' + '.join(members):<{width}}{k:>3}{plain['accuracy']:>8.2%}{plain['macro_f1']:>7.3f}"
                + "".join(f"{score(members, p)['accuracy']:>9.2%}" for p in args.tta_pads)
            )


if __name__ == "__main__":
    main()
