"""Decision rules over the shipped models' probabilities, on FER+ val, FER2013 val and `taiwan-posed`.

    python benchmarks/decision_rules.py [--model accurate fast] [--blend fer2013-accurate]

No model changes here: only how an answer is read from the same probabilities. Printed per rule:
FER+ val accuracy (majority of ten taggers), mean recall over FER2013 val's labels (the expression
a face was meant to show), `taiwan-posed` accuracy on all photos and on the clear ones through the
pipeline (a missed face counts wrong) and each emotion's recall on the clear photos.

- ``crowd`` and ``expressive``: the shipped readings (:mod:`emotorch.runtime.reading`).
- ``offsets xL``: the answer is the largest log-probability plus a per-class offset; the offsets are
  fitted on FER2013 val for mean recall (coordinate ascent, neutral fixed at 0) and scaled by L
  (the dev set only picks L; it fits nothing).
- ``blend wW``: the ``--blend`` model's probabilities weigh W against the model's (contempt from the
  model alone), then the offsets fitted on that blend.
- ``contempt +C``: the crowd reading with C added to contempt's log-probability only; precision
  and recall of contempt on FER+ val (13 faces: the offset is fitted and measured on the same val).
"""

from __future__ import annotations

import argparse

import numpy as np
from real_photos import add_data_options, evaluation_sets, recalls

from emotorch.choices import CLASSES
from emotorch.runtime.reading import answer, fit_offsets, mean_recall
from emotorch.runtime.registry import load_model
from emotorch.training.evaluate import scorable


def print_row(
    name: str,
    rule: str,
    answers: dict[str, np.ndarray],
    ferplus_labels: np.ndarray,
    fer2013_labels: np.ndarray,
    found: np.ndarray,
    labels: np.ndarray,
    clear: np.ndarray,
) -> None:
    """One rule's line: ``answers`` (indices into CLASSES, -1 for contempt) on FER+ val, FER2013 val and the
    photos where a face was found."""
    preds = np.full(len(labels), -2)
    preds[found] = answers["tw"]
    per_class = recalls(labels[clear], preds[clear])
    print(
        f"{name:<10}{rule:<18}{(answers['fp'] == ferplus_labels).mean():>9.2%}"
        f"{mean_recall(fer2013_labels, answers['13']):>8.3f}{(preds == labels).mean():>7.1%}"
        f"{(preds[clear] == labels[clear]).mean():>7.1%}{per_class.mean():>7.3f}"
        + "".join(f"{r:>8.2f}" for r in per_class)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_options(parser)
    parser.add_argument("--model", nargs="+", default=["accurate", "fast"], help="FER+ models (eight classes)")
    parser.add_argument("--blend", default="fer2013-accurate", help="a FER2013 model to blend in")
    args = parser.parse_args()
    (crops, found, labels, clear), ferplus, fer2013 = evaluation_sets(args)
    other = load_model(args.blend)
    print(
        f"{'model':<10}{'rule':<18}{'FER+ val':>9}{'F13 mR':>8}{'all':>7}{'clear':>7}{'mean R':>7}"
        + "".join(f"{c[:7]:>8}" for c in CLASSES)
    )
    for name in args.model:
        model = load_model(name)
        val, _ = scorable(ferplus, model.classes)
        probs = {
            "fp": model.predict_proba(val.images),
            "13": model.predict_proba(fer2013.images),
            "tw": model.predict_proba(crops),
        }
        extra = {
            "fp": other.predict_proba(val.images),
            "13": other.predict_proba(fer2013.images),
            "tw": other.predict_proba(crops),
        }
        neutral, contempt = model.classes.index("neutral"), model.classes.index("contempt")
        seven = np.asarray([CLASSES.index(c) if c in CLASSES else -1 for c in model.classes])

        threshold = model.card.expressive_threshold
        rules = [("crowd", {s: p.argmax(1) for s, p in probs.items()})]
        rules.append(
            (
                f"expressive {threshold}",
                {s: answer(p, model.classes, "expressive", threshold) for s, p in probs.items()},
            )
        )
        for w in (0.0, 0.2, 0.3):
            mixed = {s: (1 - w) * probs[s] + w * np.c_[extra[s], np.zeros(len(extra[s]))] for s in probs}
            logs = {s: np.log(mixed[s] + 1e-9) for s in mixed}
            offsets = np.r_[fit_offsets(logs["13"][:, :contempt], fer2013.labels, neutral), 0.0]
            for scale in (0.5, 0.75, 1.0) if w == 0 else (0.0, 0.75):
                rule = f"offsets x{scale}" if w == 0 else f"blend w{w} x{scale}"
                rules.append((rule, {s: (lg + scale * offsets).argmax(1) for s, lg in logs.items()}))
        for rule, answers in rules:
            seven_answers = {s: seven[a] for s, a in answers.items()}
            print_row(name, rule, seven_answers, val.labels, fer2013.labels, found, labels, clear)
        for c in (1.0, 1.25, 1.5, 1.75, 2.0):
            shift = np.zeros(len(model.classes))
            shift[contempt] = c
            picked = (np.log(probs["fp"] + 1e-9) + shift).argmax(1)
            said, right = (picked == contempt).sum(), ((picked == contempt) & (val.labels == contempt)).sum()
            print(
                f"{name:<10}{f'contempt +{c}':<18}{(picked == val.labels).mean():>9.2%}   contempt on FER+ val: "
                f"answered {said}, right {right} of {(val.labels == contempt).sum()} "
                f"(precision {right / max(said, 1):.2f})"
            )


if __name__ == "__main__":
    main()
