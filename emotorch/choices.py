"""Every choice list, defined once: the CLI's choices, the API's schemas and the code that acts on
them all read these (a light module: nothing heavy is imported to build ``emotorch --help``)."""

from __future__ import annotations

BACKENDS = ("torch", "onnx", "auto")  # inference engines
READINGS = ("crowd", "expressive")  # how probabilities become one emotion (emotorch.runtime.reading)
CATEGORIES = ("product", "place", "food", "song", "movie")  # recommendation categories
CATEGORY_NAMES = CATEGORIES + tuple(f"{c}s" for c in CATEGORIES)  # what users may write: singular or plural
STRATEGIES = ("auto", "match", "uplift")
LEARNED_STRATEGIES = ("match", "uplift")  # what ``auto`` chooses between, per category
FEEDBACK_KINDS = ("impression", "click", "like")
ENGINES = ("local", "ray")  # where ``emotorch analyse`` runs
# training (TrainConfig checks them; `emotorch train` offers them)
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "constant")
BALANCES = ("none", "sampler", "loss")  # class imbalance: nothing, class-balanced sampling, weighted loss
AUGMENTS = ("none", "flip", "standard", "photo")
SELECTS = ("accuracy", "macro_f1")  # the val metric that picks best.pt
TARGETS = ("majority", "probability", "crossentropy", "soft")  # what FER+ votes become (emotorch.training.data)

# Canonical class order of FER2013's seven emotions; FER+ appends contempt, so its first seven
# outputs mean what a FER2013 model's do. A model's own classes are in its metadata.
CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
FERPLUS_CLASSES: tuple[str, ...] = (*CLASSES, "contempt")
