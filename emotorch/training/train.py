"""Training: batch augmentation, vote targets and one readable loop (the config: :mod:`emotorch.training.config`).

The same loop runs on one CPU, one GPU or under ``torchrun`` with DistributedDataParallel:
each rank takes its slice of the same seeded global batch, and rank 0 alone evaluates, logs
and checkpoints. Each epoch's data order, augmentation and dropout come from seeds derived
from (seed, epoch), so a resumed run continues exactly as the uninterrupted one would have.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn import functional as F
from torch.optim.swa_utils import update_bn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from emotorch.errors import DataError
from emotorch.runtime import plots, registry
from emotorch.runtime.card import ModelCard
from emotorch.runtime.images import FER_MEAN, FER_STD, IMAGE_SIZE, normalize
from emotorch.training import checkpoint, loading
from emotorch.training.config import TrainConfig
from emotorch.training.data import FaceSet, load_dataset, paired_labels
from emotorch.training.evaluate import compute_metrics
from emotorch.training.models import count_parameters, create_model
from emotorch.training.targets import epoch_targets, resolve, training_targets

log = logging.getLogger("emotorch.training.train")


# --- augmentation -----------------------------------------------------------------------------


def augment_batch(x: Tensor, mode: str, gen: torch.Generator) -> Tensor:
    """Randomly flip, rotate (±15°), scale (±15%), shift (±10%), relight and erase a batch; ``photo``
    first changes gamma and, for half the faces, blurs or takes away resolution (:func:`_photo_shift`).

    ``x`` is normalised (N, 1, H, W); random numbers come from ``gen`` on the CPU so that a
    seeded run augments identically on any device.
    """
    if mode == "none":
        return x
    n = x.shape[0]

    def uniform(lo: float, hi: float) -> Tensor:
        return (torch.rand(n, generator=gen) * (hi - lo) + lo).to(x.device)

    if mode == "photo":
        x = _photo_shift(x, uniform, gen)

    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).to(x.device)
    if mode == "flip":
        return torch.where(flip.view(-1, 1, 1, 1) < 0, x.flip(-1), x)
    angle = uniform(-15, 15) * math.pi / 180
    scale = uniform(0.85, 1.15)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, uniform(-0.1, 0.1)], 1),
            torch.stack([sin * flip, cos, uniform(-0.1, 0.1)], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    x = x * uniform(0.75, 1.25).view(-1, 1, 1, 1) + uniform(-0.3, 0.3).view(-1, 1, 1, 1)
    # Random erasing (p=0.5): a rectangle of 2-20% of the face set to the mean (0 after normalising).
    h, w = x.shape[-2:]
    area = uniform(0.02, 0.2) * h * w
    aspect = torch.exp(uniform(math.log(0.3), math.log(3.3)))
    eh = (area * aspect).sqrt().clamp(max=h)
    ew = (area / aspect).sqrt().clamp(max=w)
    y0 = uniform(0, 1) * (h - eh)
    x0 = uniform(0, 1) * (w - ew)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    in_rows = (rows >= y0.view(-1, 1, 1)) & (rows < (y0 + eh).view(-1, 1, 1))
    in_cols = (cols >= x0.view(-1, 1, 1)) & (cols < (x0 + ew).view(-1, 1, 1))
    box = in_rows & in_cols & (uniform(0, 1) < 0.5).view(-1, 1, 1)
    return x.masked_fill(box.unsqueeze(1), 0.0)


def _photo_shift(x: Tensor, uniform, gen: torch.Generator) -> Tensor:
    """What separates a camera photo from a FER2013 web crop: another gamma (0.67-1.5), and for half
    the faces a 3x3 Gaussian blur or a trip down to 20-40 pixels and back (faces met small in
    a frame, or sharp ones the training crops never were)."""
    u = (x * FER_STD + FER_MEAN).clamp(1e-4, 1) ** torch.exp(uniform(-0.4, 0.4)).view(-1, 1, 1, 1)
    side = int(torch.randint(20, 41, (1,), generator=gen))
    size = u.shape[-2:]
    small = F.interpolate(
        F.interpolate(u, size=(side, side), mode="area"), size=size, mode="bilinear", align_corners=False
    )
    kernel = torch.tensor([1.0, 2.0, 1.0], device=x.device)
    kernel = (kernel[:, None] * kernel[None, :] / 16).view(1, 1, 3, 3)
    blurred = F.conv2d(F.pad(u, (1, 1, 1, 1), mode="replicate"), kernel)
    which = uniform(0, 1).view(-1, 1, 1, 1)
    u = torch.where(which < 0.25, small, torch.where(which < 0.5, blurred, u))
    return (u - FER_MEAN) / FER_STD


# --- data -------------------------------------------------------------------------------------


def split_train_val(cfg: TrainConfig) -> tuple[FaceSet, FaceSet, dict]:
    """The training and validation faces, and the data summary recorded in checkpoints."""
    ds = load_dataset(cfg.data, labels=cfg.labels, skip_bad=cfg.skip_bad, skip_unknown=cfg.skip_unknown)
    train = ds.split(cfg.train_split)
    if not train.labeled:
        raise DataError(f"{cfg.data}: split {cfg.train_split!r} has no labels to train on")
    if cfg.val_split in ds.splits and cfg.val_split != cfg.train_split:
        val = ds.split(cfg.val_split)
    else:  # a stratified hold-out, fixed by the seed
        rng = np.random.default_rng(cfg.seed)
        per_class = [np.flatnonzero(train.labels == c) for c in range(-1, len(train.classes))]
        held = np.concatenate([rng.permutation(ix)[: math.ceil(cfg.val_fraction * len(ix))] for ix in per_class])
        keep = np.setdiff1d(np.arange(len(train)), held)
        train, val = train.subset(keep), train.subset(np.sort(held))
        log.info("no %r split: holding out %d of %r for validation", cfg.val_split, len(val), cfg.train_split)
    if not val.labeled or len(val) == 0:
        raise DataError(f"{cfg.data}: the validation faces carry no labels")
    summary = ds.summary()
    summary["train"] = {"n": len(train), **train.class_counts()}
    summary["val"] = {"n": len(val), **val.class_counts()}
    return train, val, summary


def epoch_indices(labels: Tensor, balance: str, gen: torch.Generator) -> Tensor:
    """The epoch's sample order: a permutation, or class-balanced draws with replacement."""
    if balance == "sampler":
        counts = torch.bincount(labels).clamp(min=1).float()
        return torch.multinomial(1.0 / counts[labels], len(labels), replacement=True, generator=gen)
    return torch.randperm(len(labels), generator=gen)


# --- the loop ---------------------------------------------------------------------------------


def _lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def _amp_context(device: torch.device, enabled: bool):
    if not enabled:
        return nullcontext(), False
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype), dtype == torch.float16
    return torch.autocast("cpu", dtype=torch.bfloat16), False


@torch.no_grad()
def _validate(
    model: nn.Module, images: Tensor, labels: Tensor, ctx, channels_last: bool, batch: int = 512
) -> tuple[float, np.ndarray]:
    model.eval()
    losses, probs = [], []
    for i in range(0, len(images), batch):
        x = normalize(images[i : i + batch])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with ctx:
            logits = model(x).float()
        losses.append(F.cross_entropy(logits, labels[i : i + batch], reduction="sum").item())
        probs.append(F.softmax(logits, 1).cpu())
    model.train()
    return sum(losses) / len(images), torch.cat(probs).numpy()


def precise_batchnorm(
    model: nn.Module, faces: np.ndarray, mean: float = FER_MEAN, std: float = FER_STD, batch_size: int = 256
) -> nn.Module:
    """Recompute every batch-norm layer's statistics as averages over clean faces (uint8 (N, 48, 48)).

    Training leaves running averages of augmented batches (erased, relit, warped), which differ from
    the clean faces met at test time; statistics recomputed on the clean training faces ("precise
    BN", Wu & Johnson 2021) raise val accuracy by about a point (docs/MODEL_CARD.md).
    """
    faces = torch.from_numpy(faces)
    update_bn((normalize(faces[i : i + batch_size], mean, std) for i in range(0, len(faces), batch_size)), model)
    return model.eval()


def _load_init(model: nn.Module, cfg: TrainConfig, classes: tuple[str, ...]) -> None:
    """Start from the weights of an earlier run or shipped model of the same architecture (``cfg.init``;
    ``NAME#i`` takes member i of an ensemble).

    Where the classes differ (a FER2013 model starting a FER+ one), the classifier's rows of the
    classes both share are copied by name and the others keep their fresh initialisation.
    """
    source, _, member = cfg.init.rpartition("#") if "#" in cfg.init else (cfg.init, "", "")
    if source in registry.shipped():
        shipped = loading.load_shipped(source)
        weights, card = loading.module_of(shipped).state_dict(), shipped.card
    else:
        ckpt = checkpoint.load(source)
        weights, card = ckpt["model"], ModelCard.from_dict(ckpt["meta"], source)
    if card.expressive_head:  # the network under the head: a head is fitted after training, not trained
        weights, card = {k.removeprefix("base."): v for k, v in weights.items() if k.startswith("base.")}, card.base
    if member:
        members = card.options.get("members", [])
        if not member.isdigit() or int(member) >= len(members):
            raise ValueError(f"init {cfg.init}: {source} has {len(members)} ensemble member(s), no member {member}")
        prefix = f"members.{member}."
        weights = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        card = card.replace(architecture=members[int(member)]["model"], options=members[int(member)]["model_options"])
    arch, want = (card.architecture, dict(card.options)), (cfg.model, cfg.model_options)
    if arch != want:
        raise ValueError(f"init {cfg.init} holds {arch[0]} {arch[1]}, not the {want[0]} {want[1]} this run trains")
    old = list(card.classes)
    state = {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}
    if old != list(classes):
        own = model.state_dict()
        shared = [(classes.index(c), old.index(c)) for c in classes if c in old]
        for key, value in state.items():
            if value.shape[:1] == (len(old),) and own[key].shape[:1] == (len(classes),):  # the classifier
                rows = own[key].clone()
                for new_row, old_row in shared:
                    rows[new_row] = value[old_row]
                state[key] = rows
    model.load_state_dict(state)


def prepare_run_dir(out: Path, *, resume: bool, force: bool) -> None:
    """Refuse to overwrite a run unless asked; with ``force``, remove only a run's own files."""
    if resume:
        if not (out / "last.pt").is_file():
            raise FileNotFoundError(f"{out}: no last.pt to resume from")
        return
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(
                f"{out} already exists and is not empty; pass --resume to continue it or --force to overwrite it"
            )
        for f in out.iterdir():
            if f.is_file() and (
                f.suffix in (".pt", ".png", ".jsonl")
                or f.name == "config.json"
                or f.name.startswith("events.out.tfevents")
            ):
                f.unlink()
    out.mkdir(parents=True, exist_ok=True)


@dataclass
class Run:
    """Everything the loop reads, made by :func:`setup`: where it runs, its data, its model and optimiser,
    and where a resumed run left off."""

    cfg: TrainConfig
    out: Path
    rank: int
    world: int
    device: torch.device
    train_x: Tensor  # uint8 faces (N, 1, 48, 48) on the device
    targets: Tensor  # (N, classes) on the CPU, where the sampling generator is
    target_mode: str  # --targets as resolved for this data (emotorch.training.targets)
    val_x: Tensor
    val_y: Tensor
    val_set: FaceSet
    model: nn.Module
    net: nn.Module  # the model, or its DistributedDataParallel wrapper
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    autocast: Any
    steps_per_epoch: int
    card: ModelCard
    class_weights: Tensor | None = None
    teacher: nn.Module | None = None
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=lambda: {"metric": -1.0, "epoch": -1})

    @property
    def master(self) -> bool:
        return self.rank == 0


def train(
    cfg: TrainConfig, out: str | os.PathLike, *, resume: bool = False, force: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train ``cfg`` into run directory ``out``; return the best checkpoint's val metrics."""
    run = setup(cfg, Path(out), resume=resume, force=force)
    writer = None
    if run.master:
        (run.out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
        writer = SummaryWriter(str(run.out), purge_step=run.start_epoch * run.steps_per_epoch if resume else None)
        log.info(
            "training %s (%s parameters) on %d faces, validating on %d; %d steps/epoch on %s x%d",
            cfg.model,
            f"{run.card.parameters:,}",
            len(run.targets),
            len(run.val_set),
            run.steps_per_epoch,
            run.device,
            run.world,
        )
    train_seconds = run.history[-1]["train_seconds"] if run.history else 0.0
    for epoch in range(run.start_epoch, cfg.epochs):
        t0 = time.time()
        loss_sum, correct = train_epoch(run, epoch, progress)
        train_seconds += time.time() - t0
        if run.world > 1:  # average the epoch's train statistics over ranks
            dist.all_reduce(loss_sum)
            dist.all_reduce(correct)
        if run.master:
            val_loss, val_probs = _validate(run.model, run.val_x, run.val_y, run.autocast, cfg.channels_last)
            metrics = compute_metrics(run.val_set.labels, val_probs.argmax(1), run.card.classes)
            run.history.append(
                {
                    "epoch": epoch + 1,
                    "step": (epoch + 1) * run.steps_per_epoch,
                    "lr": run.sched.get_last_lr()[0],
                    "train_loss": loss_sum.item() / (run.steps_per_epoch * run.world),
                    "train_accuracy": correct.item() / (run.steps_per_epoch * cfg.batch_size),
                    "val_loss": val_loss,
                    "val_accuracy": metrics["accuracy"],
                    "val_macro_f1": metrics["macro_f1"],
                    "epoch_seconds": time.time() - t0,
                    "train_seconds": train_seconds,
                }
            )
            improved = save_checkpoints(run, epoch, metrics, train_seconds)
            _log_epoch(writer, run.out, run.history, metrics, run.val_set, val_probs, improved)
            log.info(
                "epoch %d/%d  train loss %.3f acc %.3f | val loss %.3f acc %.4f macro-F1 %.4f%s  (%.0fs)",
                epoch + 1,
                cfg.epochs,
                run.history[-1]["train_loss"],
                run.history[-1]["train_accuracy"],
                val_loss,
                metrics["accuracy"],
                metrics["macro_f1"],
                "  *best*" if improved else "",
                run.history[-1]["epoch_seconds"],
            )
        if run.world > 1:
            dist.barrier()
    result: dict[str, Any] = {}
    if run.master:
        writer.close()
        best = ModelCard.from_dict(checkpoint.load(run.out / "best.pt")["meta"], run.out / "best.pt")
        result = dict(best.val_metrics or {}) | {"best_epoch": run.best["epoch"], "run_dir": str(run.out)}
    if run.world > 1:
        dist.destroy_process_group()
    return result


def train_epoch(run: Run, epoch: int, progress: bool) -> tuple[Tensor, Tensor]:
    """One pass over the training faces: this rank's slice of every seeded global batch. Returns the
    summed loss and the count of faces whose top answer matched their target's."""
    cfg = run.cfg
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)  # same on every rank
    torch.manual_seed(cfg.seed * 100_003 + epoch * 7919 + run.rank)  # dropout
    order = epoch_indices(run.targets.argmax(1), cfg.balance, gen)
    targets = epoch_targets(run.targets, run.target_mode, gen).to(run.device)
    run.net.train()
    if cfg.freeze_backbone and cfg.pretrained is not None:
        run.model.backbone.eval()  # frozen: keep its batch-norm statistics too
    loss_sum = torch.zeros((), device=run.device)
    correct = torch.zeros((), device=run.device)
    local = cfg.batch_size // run.world
    bar = tqdm(
        range(run.steps_per_epoch),
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        unit="step",
        disable=None if run.master and progress else True,
        leave=False,
    )
    for step in bar:
        start = step * cfg.batch_size + run.rank * local
        idx = order[start : start + local].to(run.device)
        x = augment_batch(normalize(run.train_x[idx]), cfg.augment, gen)
        y = targets[idx]
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with run.autocast:
            logits = run.net(x)
            loss = F.cross_entropy(logits.float(), y, weight=run.class_weights, label_smoothing=cfg.label_smoothing)
            if run.teacher is not None:
                loss = (1 - cfg.distill_alpha) * loss + cfg.distill_alpha * _distillation(run, x, logits)
        run.opt.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.opt)
        run.scaler.update()
        run.sched.step()
        loss_sum += loss.detach()
        correct += (logits.argmax(1) == y.argmax(1)).sum()
        if run.master and step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{run.sched.get_last_lr()[0]:.2g}")
    return loss_sum, correct


def _distillation(run: Run, x: Tensor, logits: Tensor) -> Tensor:
    """The KL divergence from the teacher's softened answers (Hinton et al. 2015), scaled by T²."""
    t = run.cfg.distill_temperature
    with torch.no_grad():
        soft = F.softmax(run.teacher(x).float() / t, 1)
    return F.kl_div(F.log_softmax(logits.float() / t, 1), soft, reduction="batchmean") * t**2


def save_checkpoints(run: Run, epoch: int, metrics: dict[str, Any], train_seconds: float) -> bool:
    """``last.pt`` every epoch (all a resumed run needs) and ``best.pt`` when the selected val metric
    improved; returns whether it did."""
    improved = metrics[run.cfg.select] > run.best["metric"]
    if improved:
        run.best = {"metric": metrics[run.cfg.select], "epoch": epoch + 1}
    card = run.card.replace(val_metrics=metrics, epoch=epoch + 1, train_seconds=train_seconds)
    state = {
        "format": checkpoint.FORMAT,
        "model": run.model.state_dict(),
        "meta": card.to_dict(),
        "history": run.history,
    }
    if improved:
        checkpoint.save(state, run.out / "best.pt")
    checkpoint.save(
        state
        | {
            "optimizer": run.opt.state_dict(),
            "scheduler": run.sched.state_dict(),
            "scaler": run.scaler.state_dict(),
            "epoch": epoch,
            "best": run.best,
        },
        run.out / "last.pt",
    )
    return improved


# --- set-up -----------------------------------------------------------------------------------


def setup(cfg: TrainConfig, out: Path, *, resume: bool, force: bool) -> Run:
    """The run's processes, data, model, optimiser and card; on ``resume``, the state ``last.pt`` saved."""
    ddp = "RANK" in os.environ  # launched by torchrun; rank 0 is the master that logs and saves
    rank, world = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])) if ddp else (0, 1)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if ddp:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if cfg.batch_size % world:
        raise ValueError(f"batch size {cfg.batch_size} does not split evenly over {world} processes")
    if rank == 0:
        prepare_run_dir(out, resume=resume, force=force)
    ckpt = checkpoint.load(out / "last.pt") if resume else None
    if ddp:
        dist.barrier()

    train_set, val_set, summary, targets = training_data(cfg)
    classes = train_set.classes
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, len(classes), cfg.pretrained, **cfg.model_options)
    if cfg.freeze_backbone:
        if cfg.pretrained is None:
            log.warning("freeze_backbone needs pretrained weights; none given, so the whole network trains")
        else:
            for p in model.backbone.parameters():
                p.requires_grad_(False)
    if cfg.init is not None and ckpt is None:
        _load_init(model, cfg, classes)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    steps_per_epoch = len(train_set) // cfg.batch_size
    if steps_per_epoch == 0:
        raise DataError(f"{cfg.data}: {len(train_set)} training faces are fewer than one batch of {cfg.batch_size}")
    opt, sched = _optimizer(cfg, model, steps_per_epoch)
    autocast, use_scaler = _amp_context(device, cfg.amp)
    card = ModelCard(
        cfg.model,
        dict(cfg.model_options),
        tuple(classes),
        (1, IMAGE_SIZE, IMAGE_SIZE),
        FER_MEAN,
        FER_STD,
        parameters=count_parameters(model),
        provenance={
            "config": dataclasses.asdict(cfg),
            "data": summary,
            "versions": checkpoint.versions(),
            "hardware": checkpoint.hardware(),
            "world_size": world,
        },
    )
    run = Run(
        cfg,
        out,
        rank,
        world,
        device,
        train_x=torch.from_numpy(train_set.images).unsqueeze(1).to(device),
        targets=torch.from_numpy(targets),
        target_mode=summary["train"]["targets"]["mode"],
        val_x=torch.from_numpy(val_set.images).unsqueeze(1).to(device),
        val_y=torch.from_numpy(val_set.labels).to(device),
        val_set=val_set,
        model=model,
        net=model,
        opt=opt,
        sched=sched,
        scaler=torch.amp.GradScaler(device.type, enabled=use_scaler),
        autocast=autocast,
        steps_per_epoch=steps_per_epoch,
        card=card,
    )
    if cfg.balance == "loss":
        counts = torch.bincount(run.targets.argmax(1), minlength=len(classes)).clamp(min=1).float()
        run.class_weights = (counts.sum() / (len(classes) * counts)).to(device)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        run.scaler.load_state_dict(ckpt["scaler"])
        run.start_epoch, run.history, run.best = ckpt["epoch"] + 1, ckpt["history"], ckpt["best"]
    if cfg.teacher is not None:
        run.teacher = _teacher(cfg, classes, device)
    if ddp:
        run.net = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
    return run


def training_data(cfg: TrainConfig) -> tuple[FaceSet, FaceSet, dict, np.ndarray]:
    """The faces to train on (those with a target), the val faces with a label, the data summary and the
    training targets (:mod:`emotorch.training.targets`)."""
    train_set, val_set, summary = split_train_val(cfg)
    single = None
    if cfg.single_labels is not None:
        single = paired_labels(train_set, load_dataset(cfg.single_labels).split(cfg.train_split))
    mode = resolve(cfg.targets, train_set)
    targets, keep = training_targets(train_set, mode, single, cfg.label_mix)
    if not keep.all():
        log.info(
            "training on %d of %d faces: %d have no %s target (unknown or not a face)",
            keep.sum(),
            len(keep),
            (~keep).sum(),
            mode,
        )
        train_set, targets = train_set.subset(np.flatnonzero(keep)), targets[keep]
    summary["train"]["targets"] = {"mode": mode, "faces": len(train_set)}
    val_set = val_set.subset(np.flatnonzero(val_set.labels >= 0))  # FER+: faces with a majority label
    return train_set, val_set, summary, targets


def _optimizer(cfg: TrainConfig, model: nn.Module, steps_per_epoch: int):
    """The optimiser over the trainable weights, and the warm-up then cosine (or constant) schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay)
    else:
        opt_cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        opt = opt_cls(params, cfg.lr, weight_decay=cfg.weight_decay)
    total, warmup = steps_per_epoch * cfg.epochs, int(cfg.warmup_epochs * steps_per_epoch)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, total, warmup, cfg.schedule))


def _teacher(cfg: TrainConfig, classes: tuple[str, ...], device: torch.device) -> nn.Module:
    """The model to distil from: a shipped model's name, a checkpoint or a run directory, on PyTorch."""
    loaded = registry.load_model(cfg.teacher, "torch")
    if (loaded.card.mean, loaded.card.std) != (FER_MEAN, FER_STD):
        raise ValueError(f"teacher {cfg.teacher} expects other input normalisation than this model")
    if loaded.classes != list(classes):
        raise ValueError(
            f"teacher {cfg.teacher} tells {', '.join(loaded.classes)}, not the {', '.join(classes)} this model learns"
        )
    teacher = loading.module_of(loaded).to(device).eval()
    return teacher.to(memory_format=torch.channels_last) if cfg.channels_last else teacher


def _log_epoch(
    writer, out: Path, history: list[dict], metrics: dict, val_set: FaceSet, val_probs: np.ndarray, improved: bool
) -> None:
    """TensorBoard scalars and figures, the JSON-lines log, and the run's plots."""
    row = history[-1]
    step = row["step"]
    for key in ("train_loss", "val_loss"):
        writer.add_scalar(f"loss/{key.split('_')[0]}", row[key], step)
    for key in ("train_accuracy", "val_accuracy"):
        writer.add_scalar(f"accuracy/{key.split('_')[0]}", row[key], step)
    writer.add_scalar("macro_f1/val", row["val_macro_f1"], step)
    writer.add_scalar("lr", row["lr"], step)
    classes = metrics["classes"]
    cm_fig = plots.confusion_matrix(metrics["confusion_matrix"], classes, f"val, epoch {row['epoch']}")
    grid_fig = plots.prediction_grid(val_set.images, val_probs, val_set.labels, classes)
    writer.add_figure("val/confusion_matrix", cm_fig, step, close=False)
    writer.add_figure("val/predictions", grid_fig, step, close=False)
    writer.flush()
    with open(out / "log.jsonl", "w") as fh:  # rewritten whole: a resumed run drops no line, repeats none
        fh.writelines(json.dumps(h) + "\n" for h in history)
    if improved:
        plots.save(cm_fig, out / "confusion_matrix.png")
        plots.save(grid_fig, out / "predictions.png")
    else:
        for fig in (cm_fig, grid_fig):
            plots.plt.close(fig)
    plots.save(plots.training_curves(history), out / "curves.png")
