"""The expressive head's blend and offsets: what each setting reads on FER+ val, FER2013 val and `taiwan-posed`.

    python benchmarks/expressive_head.py [--model accurate fast] [--crowd-weight 0.1] [--blend 0.3 0.5 0.7 1.0]
                                         [--offsets 0 0.5 1]

For each model (its network as shipped, without its expressive head if it has one) a head is fitted as
`emotorch package --expressive-head` fits it (:func:`emotorch.training.packaging.fit_expressive_head`: a
linear layer on the frozen network's pooled features, FER2013 training labels, class-balanced, contempt from
FER+'s training faces weighted C times a balanced class, for each C of `--crowd-weight`), then read
with every blend weight W and offset scale L: the answer is the largest of log((1 - W) p_crowd + W p_head)
plus L times per-class offsets fitted on FER2013 val for mean recall. The network runs once per face set
(with its own TTA setting; the blend here is of view-averaged probabilities, the shipped graph averages
each view's blend). Printed per setting: FER+ val accuracy (majority of ten taggers) and contempt there
(right/answered), FER2013 val accuracy and mean recall, `taiwan-posed` accuracy on all photos and on the
clear ones through the pipeline (a missed face counts wrong) and each emotion's recall on the clear
photos. `taiwan-posed` selects; it fits nothing.
"""

from __future__ import annotations

import argparse

import numpy as np
from real_photos import add_data_options, contempt_found, evaluation_sets, recalls, seven_class_answers

from emotorch.choices import CLASSES
from emotorch.runtime.classifier import softmax
from emotorch.runtime.reading import fit_offsets, mean_recall
from emotorch.training.data import load_dataset
from emotorch.training.evaluate import scorable
from emotorch.training.loading import load_shipped, module_of, torch_classifier
from emotorch.training.packaging import fit_expressive_head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_options(parser)
    parser.add_argument("--model", nargs="+", default=["accurate", "fast"], help="shipped FER+ models")
    parser.add_argument("--crowd-weight", nargs="+", type=float, default=[0.1], help="contempt's weight")
    parser.add_argument("--blend", nargs="+", type=float, default=[0.3, 0.5, 0.7, 1.0])
    parser.add_argument("--offsets", nargs="+", type=float, default=[0.0, 0.5, 1.0])
    args = parser.parse_args()
    (crops, found, labels, clear), ferplus, fer2013 = evaluation_sets(args)
    crowd = load_dataset(args.ferplus, progress=False).split("train")
    print(
        f"{'model':<10}{'crowd':>6}{'blend':>6}{'offs':>6}{'FER+ val':>9}{'contempt':>9}{'F13 val':>8}{'F13 mR':>7}"
        f"{'all':>7}{'clear':>7}"
        f"{'mean R':>7}" + "".join(f"{c[:7]:>8}" for c in CLASSES)
    )
    for name in args.model:
        shipped = load_shipped(name)
        for crowd_weight in args.crowd_weight:  # a new head, on its own (blend 1): the shares blended below
            head, head_card = fit_expressive_head(
                module_of(shipped), shipped.card, args.fer2013, crowd=crowd, crowd_weight=crowd_weight, blend=1.0
            )
            model = torch_classifier(head, head_card, name)
            val, _ = scorable(ferplus, model.classes)
            neutral = model.classes.index("neutral")
            f13_labels = np.asarray([model.classes.index(c) for c in fer2013.classes])[fer2013.labels]
            outputs = {
                s: model.predict_outputs(f) for s, f in (("fp", val.images), ("13", fer2013.images), ("tw", crops))
            }
            for w in args.blend:
                scores = {
                    s: np.log((1 - w) * softmax(o["logits"]) + w * np.exp(o["expressive"]) + 1e-9)
                    for s, o in outputs.items()
                }
                fitted = fit_offsets(scores["13"], f13_labels, neutral)
                for scale in args.offsets:
                    picked = {s: (v + scale * fitted).argmax(1) for s, v in scores.items()}
                    preds = np.full(len(labels), -2)
                    preds[found] = seven_class_answers(model, picked["tw"])
                    per_class = recalls(labels[clear], preds[clear])
                    f13 = seven_class_answers(model, picked["13"])
                    print(
                        f"{name:<10}{crowd_weight:>6.2f}{w:>6.2f}{scale:>6.2f}"
                        f"{(picked['fp'] == val.labels).mean():>9.2%}"
                        f"{contempt_found(model.classes, picked['fp'], val.labels):>9}"
                        f"{(f13 == fer2013.labels).mean():>8.2%}{mean_recall(fer2013.labels, f13):>7.3f}"
                        f"{(preds == labels).mean():>7.1%}{(preds[clear] == labels[clear]).mean():>7.1%}"
                        f"{per_class.mean():>7.3f}" + "".join(f"{r:>8.2f}" for r in per_class),
                        flush=True,
                    )


if __name__ == "__main__":
    main()
