"""Does the face pipeline frame faces like FER2013? Accuracy on re-detected FER faces.

    python benchmarks/align_framing.py --model RUN_OR_CHECKPOINT [--data ../shared/fer2013] [--every 1]

Each val face is upscaled 4x and padded (edge pixels repeated) into a 288x288 "photo", detected
with YuNet, and cut out again three ways: the original 48x48 crop, the detector's box made square
and resized (what many packages do), and :func:`emotorch.runtime.detect.align` (landmarks fitted to the
FER template). The model's accuracy on each shows whether the crop framing matches training.
Also prints the median landmark positions found, i.e. a fresh measurement of the template.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from emotorch.runtime.detect import FER_TEMPLATE, YuNetDetector, align
from emotorch.runtime.registry import load_model
from emotorch.training.data import load_dataset
from emotorch.training.evaluate import compute_metrics

SCALE, PAD = 4, 48


def box_crop(gray: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    x, y, w, h = box
    side = max(w, h)
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    padded = cv2.copyMakeBorder(gray, 200, 200, 200, 200, cv2.BORDER_REPLICATE)
    crop = padded[y0 + 200 : y0 + 200 + int(side), x0 + 200 : x0 + 200 + int(side)]
    return cv2.resize(crop, (48, 48), interpolation=cv2.INTER_AREA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default=str(Path(__file__).parents[1] / ".." / "shared" / "fer2013"))
    parser.add_argument("--every", type=int, default=1, help="use every k-th val face")
    args = parser.parse_args()
    model = load_model(args.model)
    val = load_dataset(args.data, progress=False).split("val")
    detector = YuNetDetector(score_threshold=0.5)
    keep, aligned, boxed, landmarks = [], [], [], []
    for i in range(0, len(val), args.every):
        photo = cv2.resize(val.images[i], (48 * SCALE, 48 * SCALE), interpolation=cv2.INTER_LINEAR)
        photo = cv2.copyMakeBorder(photo, PAD, PAD, PAD, PAD, cv2.BORDER_REPLICATE)
        faces = detector(cv2.cvtColor(photo, cv2.COLOR_GRAY2RGB))
        if not faces:
            continue
        face = max(faces, key=lambda f: f.score)
        keep.append(i)
        aligned.append(align(photo, face))
        boxed.append(box_crop(photo, face.box))
        landmarks.append((face.landmarks - PAD) / SCALE)
    keep = np.asarray(keep)
    labels = val.labels[keep]
    print(f"model {args.model}; {len(keep)} of {len(range(0, len(val), args.every))} val faces re-detected")
    print(f"{'framing':<34}{'faces':>7}{'accuracy':>10}{'macro-F1':>10}")
    for name, images in (
        ("original FER crop", val.images[keep]),
        ("detector box, square, resized", np.stack(boxed)),
        ("emotorch.runtime.detect.align (template)", np.stack(aligned)),
    ):
        m = compute_metrics(labels, model.predict_proba(images).argmax(1))
        print(f"{name:<34}{len(images):>7}{m['accuracy']:>10.4f}{m['macro_f1']:>10.4f}")
    median = np.median(np.stack(landmarks), 0)
    print("median landmarks found (x, y):", np.round(median, 2).tolist())
    print("FER_TEMPLATE in use:           ", FER_TEMPLATE.tolist())


if __name__ == "__main__":
    main()
