"""Which class-imbalance handling helps macro-F1 on val: none, weighted sampling or weighted loss.

    python benchmarks/imbalance.py [--data ../shared/fer2013] [--epochs 10] [--width 16]

Trains the default recipe three times, changing only ``balance``, into a temporary folder, and
prints val accuracy, macro-F1 and the recall of the rarest class (disgust) for each.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from emotorch.training.config import config_from_preset
from emotorch.training.train import train

DEFAULT_DATA = Path(__file__).parents[1] / ".." / "shared" / "fer2013"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--width", type=int, default=16)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="emotorch-imbalance-") as tmp:
        for balance in ("none", "sampler", "loss"):
            cfg = config_from_preset(
                "default", data=args.data, epochs=args.epochs, balance=balance, model_options={"width": args.width}
            )
            m = train(cfg, Path(tmp) / balance, progress=False)
            rows.append((balance, m["accuracy"], m["macro_f1"], m["per_class"]["disgust"]["recall"], m["best_epoch"]))
            print(f"done: {balance}", flush=True)
    print(f"emonet width {args.width}, {args.epochs} epochs, best epoch by val accuracy")
    print(f"{'balance':<10}{'val acc':>9}{'macro-F1':>10}{'disgust recall':>16}{'best epoch':>12}")
    for balance, acc, f1, rec, ep in rows:
        print(f"{balance:<10}{acc:>9.4f}{f1:>10.4f}{rec:>16.3f}{ep:>12}")


if __name__ == "__main__":
    main()
