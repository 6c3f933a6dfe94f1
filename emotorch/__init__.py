"""EmoTorch: facial emotion recognition on FER2013-style data with PyTorch."""

__version__ = "0.1.0"

from emotorch.data import CLASSES, DataError, Dataset, FaceSet, load_dataset
from emotorch.evaluate import compute_metrics, evaluate, load_model, predict_proba
from emotorch.models import create_model, list_models
from emotorch.pipeline import EmotionRecognizer, FaceResult
from emotorch.train import TrainConfig, config_from_preset, train

__all__ = [
    "CLASSES",
    "DataError",
    "Dataset",
    "EmotionRecognizer",
    "FaceResult",
    "FaceSet",
    "TrainConfig",
    "__version__",
    "compute_metrics",
    "config_from_preset",
    "create_model",
    "evaluate",
    "list_models",
    "load_dataset",
    "load_model",
    "predict_proba",
    "train",
]
