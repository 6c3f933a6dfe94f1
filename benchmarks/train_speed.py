"""Training speed of every registered model on this machine, printed as a table.

    python benchmarks/train_speed.py [--steps 5] [--models emonet,baseline,...]

Each model trains a few optimizer steps on synthetic 48x48 faces with the settings its recipe
uses (bf16 autocast and channels_last on the CPU, AMP on CUDA); images/s is the median over the
timed steps, and seconds per FER2013 epoch is 28,709 training faces at that rate.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F

from emotorch.training.config import PRESETS
from emotorch.training.models import count_parameters, create_model, list_models
from emotorch.training.train import _amp_context

FER_TRAIN = 28_709

# (label, model, batch, frozen backbone): the seed recipe is VGG19 at 48x48, Adam, batch 64.
ROWS = [
    ("default (emonet)", "emonet", PRESETS["default"]["batch_size"], False),
    ("seed recipe (vgg19, frozen)", "vgg19", PRESETS["seed"]["batch_size"], True),
    ("seed recipe (vgg19, full)", "vgg19", PRESETS["seed"]["batch_size"], False),
]


def measure(name: str, batch: int, frozen: bool, steps: int, device: torch.device) -> float:
    model = create_model(name).to(device).to(memory_format=torch.channels_last).train()
    if frozen:
        for p in model.backbone.parameters():
            p.requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-4)
    ctx, _ = _amp_context(device, True)
    x = torch.randn(batch, 1, 48, 48, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 7, (batch,), device=device)
    times = []
    for i in range(steps + 2):  # two warm-up steps
        t = time.perf_counter()
        with ctx:
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--models", help="comma-separated subset of the registry")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = list(ROWS)
    names = args.models.split(",") if args.models else [m.name for m in list_models()]
    rows += [(n, n, 64, False) for n in names if n != "emonet"]
    print(f"device: {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'model':<30}{'params':>12}{'batch':>7}{'img/s':>9}{'s/epoch':>10}{'x default':>11}")
    default_rate = None
    for label, name, batch, frozen in rows:
        rate = measure(name, batch, frozen, args.steps, device)
        default_rate = default_rate or rate
        params = count_parameters(create_model(name))
        print(
            f"{label:<30}{params:>12,}{batch:>7}{rate:>9.0f}{FER_TRAIN / rate:>10.0f}{default_rate / rate:>10.1f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
