"""Real photos through the whole pipeline: every shipped model (and any run you name) on `taiwan-posed`.

    python benchmarks/real_photos.py [--data ../shared/taiwan-posed] [--ferplus ../shared/ferplus]
                                     [--fer2013 ../shared/fer2013] [--model [accurate ...]]
                                     [--run NAME=RUN ...] [--reading crowd expressive]

`../shared/taiwan-posed` holds 1,223 colour photos of deliberate expressions by 29 performers (its
README): a development set to evaluate and select on, never to train on. Each photo goes through
what `emotorch predict` does (YuNet, alignment to the FER template, the model with its own TTA
setting); the largest face found is the answer, and a photo with no face found counts wrong. A
7-class truth: an answer of contempt is wrong. Printed per model and reading mode: accuracy on all
photos and on the 965 `clear` ones (raters' top choice is the performed expression, or neutral),
mean recall and each emotion's recall on the clear photos, faces missed, and under the same reading
FER+ val accuracy (majority of ten taggers), how often it answers contempt there and how often
rightly (`contempt`: right/answered, of its 13 contempt faces), and FER2013 val accuracy and mean recall (its
single labels, which name the expression a face was meant to show), so they can be weighed side by side.
`raters` is the mean share of the photos' raters who named the performed emotion, on the clear emotional
photos the model reads right / misses: how plain the expressions it misses are.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from emotorch.choices import CLASSES
from emotorch.runtime import registry
from emotorch.runtime.classifier import Classifier
from emotorch.runtime.detect import YuNetDetector, align
from emotorch.runtime.images import read_image
from emotorch.runtime.reading import READINGS, mean_recall
from emotorch.runtime.registry import load_model
from emotorch.training.data import FaceSet, load_dataset
from emotorch.training.evaluate import scorable

ROOT = Path(__file__).parents[1]


def photo_crops(data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(aligned crops of the faces found, their photo indices, labels (7 classes) and clear flags of every photo)."""
    with open(data / "ratings.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    detector = YuNetDetector()
    crops, found = [], []
    for i, row in enumerate(rows):
        rgb = read_image(data / row["path"])
        faces = detector(rgb)
        if faces:
            face = max(faces, key=lambda f: f.box[2] * f.box[3])
            crops.append(align(rgb, face))
            found.append(i)
    labels = np.asarray([CLASSES.index(row["performed"]) for row in rows])
    clear = np.asarray([row["clear"] == "1" for row in rows])
    return np.stack(crops), np.asarray(found), labels, clear


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """``--data`` (taiwan-posed), ``--ferplus`` and ``--fer2013``, each by default in ``../shared``."""
    for option, folder in (("--data", "taiwan-posed"), ("--ferplus", "ferplus"), ("--fer2013", "fer2013")):
        parser.add_argument(option, type=Path, default=ROOT / ".." / "shared" / folder)


def evaluation_sets(
    args: argparse.Namespace,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], FaceSet, FaceSet]:
    """The real photos through the pipeline (:func:`photo_crops`), FER+ val and FER2013 val, as the options say."""
    ferplus = load_dataset(args.ferplus, progress=False).split("val")
    return photo_crops(args.data), ferplus, load_dataset(args.fer2013, progress=False).split("val")


def rater_agreement(data: Path) -> np.ndarray:
    """Each photo's share of raters who named the performed emotion (NaN for neutral, which was not rated)."""
    with open(data / "ratings.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return np.asarray([float(r[f"share_{r['performed']}"]) if r["performed"] != "neutral" else np.nan for r in rows])


def recalls(labels: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """Each of the seven classes' recall (a missed face, -1, counts as wrong)."""
    return np.asarray([(preds[labels == k] == k).mean() for k in range(len(CLASSES))])


def seven_class_answers(model: Classifier, answers: np.ndarray) -> np.ndarray:
    """The model's answers as indices into CLASSES (-1 for contempt, which no photo here shows)."""
    return np.asarray([CLASSES.index(c) if c in CLASSES else -1 for c in model.classes])[answers]


def contempt_found(classes: tuple[str, ...] | list[str], picked: np.ndarray, labels: np.ndarray) -> str:
    """``right/answered``: how often answers ``picked`` (over ``classes``) name contempt rightly, and at all."""
    if "contempt" not in classes:
        return "-"
    said = picked == list(classes).index("contempt")
    return f"{(said & (labels == list(classes).index('contempt'))).sum()}/{said.sum()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_options(parser)
    parser.add_argument("--model", nargs="*", help="only these shipped models (default: all; none: only --run)")
    parser.add_argument("--run", action="append", default=[], metavar="NAME=PATH", help="a run or checkpoint to add")
    parser.add_argument("--reading", nargs="+", choices=READINGS, default=list(READINGS))
    args = parser.parse_args()
    (crops, found, labels, clear), ferplus, fer2013 = evaluation_sets(args)
    sources = {name: name for name in registry.shipped() if args.model is None or name in args.model}
    sources |= dict(item.partition("=")[::2] for item in args.run)
    print(
        f"{args.data}: {len(labels)} photos ({clear.sum()} clear), a face found in {len(found)}; "
        f"recall on the clear photos"
    )
    print(
        f"{'model':<18}{'reading':<11}{'FER+ val':>9}{'contempt':>9}{'F13 val':>8}{'F13 mR':>7}"
        + f"{'all':>7}{'clear':>7}{'mean R':>7}"
        + "".join(f"{c[:7]:>8}" for c in CLASSES)
        + f"{'missed':>7}{'raters':>11}"
    )
    agreement = rater_agreement(args.data)
    emotional = clear & ~np.isnan(agreement)
    for name, source in sources.items():
        model = load_model(source)
        val, _ = scorable(ferplus, model.classes)
        photo_outputs, val_outputs = model.predict_outputs(crops), model.predict_outputs(val.images)
        fer2013_outputs = model.predict_outputs(fer2013.images)
        for reading in args.reading:
            if reading == "expressive" and not model.card.reads_expressive:
                print(f"{name:<18}{reading:<11}  (a run: `emotorch package` fits its threshold or head)")
                continue
            preds = np.full(len(labels), -2)
            preds[found] = seven_class_answers(model, model.read(photo_outputs, reading)[1])
            per_class = recalls(labels[clear], preds[clear])
            hit = preds == labels
            picked = model.read(val_outputs, reading)[1]  # val is relabelled in the model's class order
            f13 = seven_class_answers(model, model.read(fer2013_outputs, reading)[1])
            print(
                f"{name:<18}{reading:<11}{(picked == val.labels).mean():>9.2%}"
                f"{contempt_found(model.classes, picked, val.labels):>9}"
                f"{(f13 == fer2013.labels).mean():>8.2%}{mean_recall(fer2013.labels, f13):>7.3f}"
                f"{hit.mean():>7.1%}{hit[clear].mean():>7.1%}"
                f"{per_class.mean():>7.3f}"
                + "".join(f"{r:>8.2f}" for r in per_class)
                + f"{len(labels) - len(found):>7}"
                + f"{agreement[emotional & hit].mean():>6.2f}/{agreement[emotional & ~hit].mean():.2f}"
            )


if __name__ == "__main__":
    main()
