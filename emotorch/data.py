"""FER2013-style data: the one place that knows classes, codes, file formats and preprocessing.

Every format (``fer2013.csv``, the Kaggle ``train.csv``/``test.csv`` pair, image folders) loads
into :class:`FaceSet` objects holding 48x48 uint8 faces. Decoded arrays are cached in the user's
cache directory, keyed by the source files' paths, sizes and modification times.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import platformdirs
from PIL import Image, UnidentifiedImageError

from emotorch.errors import DataError

# Canonical class order: the output order of every model EmoTorch trains.
CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
# FER2013's CSV codes are NOT alphabetical: 0=Angry 1=Disgust 2=Fear 3=Happy 4=Sad 5=Surprise 6=Neutral.
CSV_CODE_TO_CLASS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
CLASS_ALIASES: dict[str, str] = {
    "anger": "angry", "angry": "angry", "mad": "angry",
    "disgust": "disgust", "disgusted": "disgust", "contempt": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear",
    "happy": "happy", "happiness": "happy", "joy": "happy",
    "neutral": "neutral", "calm": "neutral",
    "sad": "sad", "sadness": "sad",
    "surprise": "surprise", "surprised": "surprise",
}  # fmt: skip
# FER2013 "Usage" values and the split names EmoTorch uses for them.
USAGE_TO_SPLIT: dict[str, str] = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}

IMAGE_SIZE = 48
# Grayscale mean/std of the FER2013 Training split (pixels scaled to [0, 1]); stored in every
# checkpoint, from which all consumers build their preprocessing.
FER_MEAN = 0.5077
FER_STD = 0.2550
UNLABELED = -1
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
_CACHE_VERSION = 1


@dataclass(frozen=True)
class BadRecord:
    """One input that could not be loaded: where it is and what is wrong with it."""

    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


@dataclass
class FaceSet:
    """Faces of one split: ``images`` (N, 48, 48) uint8, ``labels`` (N,) int64 (-1 = unlabeled)."""

    images: np.ndarray
    labels: np.ndarray
    sources: list[str]
    skipped: list[BadRecord] = field(default_factory=list)
    source_sizes: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def labeled(self) -> bool:
        return bool(len(self.labels)) and bool((self.labels != UNLABELED).all())

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels[self.labels >= 0], minlength=len(CLASSES))
        return {name: int(c) for name, c in zip(CLASSES, counts, strict=True)}

    def subset(self, index: np.ndarray) -> FaceSet:
        return FaceSet(self.images[index], self.labels[index], [self.sources[i] for i in index])


@dataclass
class Dataset:
    """All splits found at one path, in the order they were found."""

    path: Path
    format: str
    splits: dict[str, FaceSet]
    unknown_classes: list[str] = field(default_factory=list)

    def split(self, name: str) -> FaceSet:
        if name not in self.splits:
            raise DataError(f"{self.path}: no split {name!r}; it has {', '.join(self.splits)}")
        return self.splits[name]

    def summary(self) -> dict:
        """Counts per split and class: recorded in checkpoints as the training data summary."""
        return {
            "path": str(self.path),
            "format": self.format,
            "splits": {s: {"n": len(fs), **fs.class_counts()} for s, fs in self.splits.items()},
        }


def canonical_class(name: str) -> str | None:
    """Map a folder name such as ``Happiness`` or ``fearful`` to a canonical class, or None."""
    return CLASS_ALIASES.get(name.strip().lower())


def cache_dir() -> Path:
    """Where decoded data sets are cached (``EMOTORCH_CACHE`` overrides the user cache dir)."""
    return Path(os.environ.get("EMOTORCH_CACHE") or platformdirs.user_cache_dir("emotorch"))


def load_dataset(
    path: str | os.PathLike,
    *,
    skip_bad: bool = False,
    skip_unknown: bool = False,
    use_cache: bool = True,
    progress: bool = True,
) -> Dataset:
    """Load every split at ``path``: a FER2013 CSV, a folder with train.csv/test.csv, or images.

    Bad records raise :class:`DataError` naming the first of them unless ``skip_bad`` is set, in
    which case they are counted in each split's ``skipped`` list. Class folders with unknown
    names raise unless ``skip_unknown`` is set.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    fmt, sources = _detect_format(path)
    key = _cache_key(path, fmt, sources)
    cached = cache_dir() / "datasets" / f"{key}.npz"
    ds = _read_cache(cached, path, fmt) if use_cache else None
    if ds is None:
        ds = _LOADERS[fmt](path, sources, progress)
        if use_cache:
            _write_cache(cached, ds)
    if ds.unknown_classes and not skip_unknown:
        names = ", ".join(ds.unknown_classes)
        raise DataError(
            f"{path}: unknown class folder(s) {names}; expected one of {', '.join(CLASSES)} "
            "(or an alias such as happiness, fearful); pass --skip-unknown to ignore them"
        )
    bad = [b for fs in ds.splits.values() for b in fs.skipped]
    if bad and not skip_bad:
        more = f" (and {len(bad) - 1} more bad record(s))" if len(bad) > 1 else ""
        raise DataError(f"{bad[0]}{more}; pass --skip-bad to skip and count them")
    return ds


# --- format detection -----------------------------------------------------------------------


def _detect_format(path: Path) -> tuple[str, list[Path]]:
    """Return the format name and the files whose (size, mtime) key the cache."""
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DataError(f"{path}: not a CSV file or a folder of images")
        return "csv", [path]
    csvs = [p for p in (path / "fer2013.csv", path / "train.csv", path / "test.csv") if p.is_file()]
    if csvs:
        return "csv", csvs
    return "folders", []


def _cache_key(path: Path, fmt: str, files: list[Path]) -> str:
    h = hashlib.sha256(f"{_CACHE_VERSION}|{fmt}|{path.resolve()}".encode())
    if fmt == "folders":
        files = sorted(_walk_files(path))
    for f in files:
        st = f.stat()
        h.update(f"|{f}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def _walk_files(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath, f) for f in filenames if not f.startswith("."))
    return out


# --- CSV --------------------------------------------------------------------------------------


def _load_csv_sources(path: Path, files: list[Path], progress: bool) -> Dataset:
    splits: dict[str, FaceSet] = {}
    for f in files:
        parsed = _parse_csv(f, progress)
        if not parsed:
            raise DataError(f"{f}: no rows after the header")
        for name, fs in parsed.items():
            if name in splits:
                raise DataError(f"{f}: split {name!r} also comes from another CSV file in {path}")
            splits[name] = fs
    return Dataset(path, "csv", splits)


def _parse_csv(path: Path, progress: bool) -> dict[str, FaceSet]:
    """Parse one CSV with columns ``pixels`` and optionally ``emotion`` and ``Usage``."""
    from tqdm import tqdm

    n_pixels = IMAGE_SIZE * IMAGE_SIZE
    rows: dict[str, tuple[list[np.ndarray], list[int], list[str], list[BadRecord]]] = {}
    default_split = path.stem.lower()
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip().lower() for h in next(reader, [])]
            if not header:
                raise DataError(f"{path}: empty file; expected a header emotion,pixels[,Usage]")
            if "pixels" not in header:
                raise DataError(
                    f"{path}: header {header} has no 'pixels' column; expected emotion,pixels[,Usage]"
                )
            i_pix = header.index("pixels")
            i_emo = header.index("emotion") if "emotion" in header else None
            i_use = header.index("usage") if "usage" in header else None
            lines = tqdm(reader, desc=f"reading {path.name}", unit=" rows", disable=None if progress else True,
                         file=sys.stderr, leave=False)
            end = reader.line_num  # the last line read so far
            for row in lines:
                line, end = end + 1, reader.line_num  # a row starts after the last; a quoted field may span lines
                where = f"{path}, line {line}"
                if not row or all(not c.strip() for c in row):
                    continue
                split = default_split
                problem = None
                if end > line:
                    problem = f"a quote opened on this line is not closed until line {end}"
                elif len(row) != len(header):
                    problem = f"has {len(row)} fields, expected {len(header)} ({','.join(header)})"
                elif i_use is not None:
                    usage = row[i_use].strip()
                    split = USAGE_TO_SPLIT.get(usage)
                    if split is None:
                        problem = f"unknown Usage {usage!r}; expected one of {', '.join(USAGE_TO_SPLIT)}"
                label = UNLABELED
                if problem is None and i_emo is not None:
                    code = row[i_emo].strip()
                    if not (code.isascii() and code.isdigit()) or int(code) >= len(CSV_CODE_TO_CLASS):
                        problem = f"unknown emotion code {code!r}; expected an integer 0-6"
                    else:
                        label = CLASSES.index(CSV_CODE_TO_CLASS[int(code)])
                pixels = None
                if problem is None:
                    pixels, problem = _parse_pixels(row[i_pix], n_pixels)
                bucket = rows.setdefault(split or default_split, ([], [], [], []))
                if problem is not None:
                    bucket[3].append(BadRecord(where, problem))
                    continue
                bucket[0].append(pixels)
                bucket[1].append(label)
                bucket[2].append(f"{path.name}:{line}")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text CSV file ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise DataError(f"{path}, line {reader.line_num}: malformed CSV: {e}") from None
    out = {}
    for split, (imgs, labels, sources, bad) in rows.items():
        images = np.stack(imgs) if imgs else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        sizes = {f"{IMAGE_SIZE}x{IMAGE_SIZE}": len(imgs)} if imgs else {}
        out[split] = FaceSet(images, np.asarray(labels, np.int64), sources, bad, sizes)
    return out


PIXEL_TEXT = re.compile(r"[-0-9 \t\r\n]*")  # only ASCII digits are numbers: int() would read "٣" as 3
INTEGER = re.compile(r"-?[0-9]+")


def _parse_pixels(text: str, n_pixels: int) -> tuple[np.ndarray | None, str | None]:
    tokens = text.split()
    if len(tokens) != n_pixels:
        return None, f"pixels has {len(tokens)} values, expected {n_pixels} ({IMAGE_SIZE}x{IMAGE_SIZE})"
    try:
        if not PIXEL_TEXT.fullmatch(text):
            raise ValueError
        values = np.array(tokens, dtype=np.int64)
    except ValueError:
        bad = next(((i, t) for i, t in enumerate(tokens) if not INTEGER.fullmatch(t)), None)
        if bad is None:  # the tokens are fine: a separator is not a space, tab or newline
            char = next(c for c in text if not PIXEL_TEXT.fullmatch(c))
            return None, f"pixels are separated by {char!r}, not spaces"
        return None, f"pixel {bad[0]} is {bad[1]!r}, not an integer"
    if values.min() < 0 or values.max() > 255:
        pos = int(np.flatnonzero((values < 0) | (values > 255))[0])
        return None, f"pixel {pos} is {values[pos]}, outside 0-255"
    return values.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE), None


# --- image folders ----------------------------------------------------------------------------


def _load_folders(path: Path, _files: list[Path], progress: bool) -> Dataset:
    subdirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not subdirs:
        raise DataError(f"{path}: no class folders or split folders (nor a CSV) found")
    unknown: list[str] = []
    if any(canonical_class(d.name) for d in subdirs):  # ROOT/<emotion>/*
        layout = {"all": subdirs}
    else:  # ROOT/<split>/<emotion>/*
        layout = {
            d.name.lower(): sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith("."))
            for d in subdirs
        }
    splits = {}
    for split, class_dirs in layout.items():
        items: list[tuple[Path, int]] = []
        for d in class_dirs:
            cls = canonical_class(d.name)
            if cls is None:
                unknown.append(str(d))
                continue
            label = CLASSES.index(cls)
            items += [(f, label) for f in sorted(_walk_files(d))]
        if items:
            splits[split] = _decode_images(items, f"{path.name}/{split}", progress)
    if not splits and not unknown:
        raise DataError(f"{path}: no images found in class folders")
    return Dataset(path, "folders", splits, unknown)


def _decode_images(items: list[tuple[Path, int]], desc: str, progress: bool) -> FaceSet:
    from tqdm import tqdm

    images = np.zeros((len(items), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    labels, sources, bad, sizes = [], [], [], Counter()
    for f, label in tqdm(items, desc=f"decoding {desc}", unit=" img", disable=None if progress else True,
                         file=sys.stderr, leave=False):
        try:
            with Image.open(f) as im:
                sizes[f"{im.width}x{im.height}"] += 1
                images[len(labels)] = to_face_array(im)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            bad.append(BadRecord(str(f), f"unreadable or truncated image ({e})"))
            continue
        labels.append(label)
        sources.append(str(f))
    return FaceSet(images[: len(labels)], np.asarray(labels, np.int64), sources, bad, dict(sizes))


def to_8bit(image: Image.Image) -> Image.Image:
    """16- and 32-bit integer or float images rescaled to 8 bits (Pillow's convert would clip them)."""
    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return image
    a = np.asarray(image, dtype=np.float64)
    top = 1.0 if image.mode == "F" and a.max() <= 1.0 else 255.0 if a.max() <= 255 else 65535.0
    return Image.fromarray(np.clip(a / top * 255 + 0.5, 0, 255).astype(np.uint8))


def to_face_array(image: Image.Image) -> np.ndarray:
    """Any PIL image to a 48x48 uint8 grayscale face: centre-cropped to square, then resized."""
    image.load()
    gray = to_8bit(image).convert("L")
    w, h = gray.size
    if w != h:
        s = min(w, h)
        gray = gray.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    if gray.size != (IMAGE_SIZE, IMAGE_SIZE):
        gray = gray.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(gray, dtype=np.uint8)


_LOADERS = {"csv": _load_csv_sources, "folders": _load_folders}


# --- cache ------------------------------------------------------------------------------------


def _write_cache(file: Path, ds: Dataset) -> None:
    arrays: dict[str, np.ndarray] = {}
    meta = {"unknown_classes": ds.unknown_classes, "splits": {}}
    for i, (name, fs) in enumerate(ds.splits.items()):
        arrays[f"images{i}"] = fs.images
        arrays[f"labels{i}"] = fs.labels
        arrays[f"sources{i}"] = np.asarray(fs.sources, dtype=str)
        meta["splits"][name] = {
            "index": i,
            "skipped": [[b.where, b.problem] for b in fs.skipped],
            "source_sizes": fs.source_sizes,
        }
    arrays["meta"] = np.asarray(json.dumps(meta))
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, file)


def _read_cache(file: Path, path: Path, fmt: str) -> Dataset | None:
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            splits = {}
            for name, m in meta["splits"].items():
                i = m["index"]
                splits[name] = FaceSet(
                    z[f"images{i}"], z[f"labels{i}"], z[f"sources{i}"].tolist(),
                    [BadRecord(*b) for b in m["skipped"]], m["source_sizes"],
                )  # fmt: skip
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache entry is rebuilt, never trusted
    return Dataset(path, fmt, splits, meta["unknown_classes"])


# --- tensors ----------------------------------------------------------------------------------


def normalize(images, mean: float = FER_MEAN, std: float = FER_STD):
    """uint8 faces (N, 48, 48) as a numpy array or tensor -> float tensor (N, 1, 48, 48)."""
    import torch

    x = torch.as_tensor(images)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    return (x.float() / 255.0 - mean) / std
