"""Emotion-aware recommendations (products, places, food, songs, movies) over a catalog database."""

from emotorch.errors import CatalogBusy, CatalogError
from emotorch.recommend.catalog import ImportReport, export, import_file, list_items
from emotorch.recommend.engine import Recommendation, Recommender, open_database
from emotorch.recommend.mood import Mood, mood

__all__ = [
    "CatalogBusy",
    "CatalogError",
    "ImportReport",
    "Mood",
    "Recommendation",
    "Recommender",
    "export",
    "import_file",
    "list_items",
    "mood",
    "open_database",
]
