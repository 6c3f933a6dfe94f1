"""FER2013-style data: the one place that knows classes, codes, file formats and preprocessing.

Every format (``fer2013.csv``, alone or paired with FER+'s ``fer2013new.csv``, the Kaggle
``train.csv``/``test.csv`` pair, image folders, the FERPlus layout) loads into :class:`FaceSet`
objects holding 48x48 uint8 faces and, for FER+ data, the ten crowd votes of each face. Decoded
arrays are cached in the user's cache directory, keyed by the source files' paths, sizes and
modification times.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import platformdirs
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from emotorch.choices import CLASSES, FERPLUS_CLASSES
from emotorch.errors import DataError
from emotorch.runtime.images import IMAGE_SIZE, to_8bit

# The columns of FaceSet.votes: FER+'s 8 emotions in FERPLUS_CLASSES order, then its two other answers.
VOTE_NAMES: tuple[str, ...] = (*FERPLUS_CLASSES, "unknown", "not_a_face")
# The vote columns of FER+'s label.csv and fer2013new.csv, in their own order.
FERPLUS_COLUMNS: tuple[str, ...] = (
    "neutral",
    "happy",
    "surprise",
    "sad",
    "angry",
    "disgust",
    "fear",
    "contempt",
    "unknown",
    "not_a_face",
)
FERPLUS_SPLITS: dict[str, str] = {"FER2013Train": "train", "FER2013Valid": "val", "FER2013Test": "test"}

# FER2013's CSV codes are NOT alphabetical: 0=Angry 1=Disgust 2=Fear 3=Happy 4=Sad 5=Surprise 6=Neutral.
CSV_CODE_TO_CLASS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
CLASS_ALIASES: dict[str, str] = {
    "anger": "angry",
    "angry": "angry",
    "mad": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "contempt": "contempt",
    "contemptuous": "contempt",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "neutral": "neutral",
    "calm": "neutral",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
}
# FER2013 "Usage" values and the split names EmoTorch uses for them.
USAGE_TO_SPLIT: dict[str, str] = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}

UNLABELED = -1
_CACHE_VERSION = 3  # 3: a folder of data sets is refused, not read as one data set


@dataclass(frozen=True)
class BadRecord:
    """One input that could not be loaded: where it is and what is wrong with it."""

    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


@dataclass
class FaceSet:
    """Faces of one split: ``images`` (N, 48, 48) uint8, ``labels`` (N,) int64 indices into
    ``classes`` (-1 = unlabeled) and, for FER+ data, ``votes`` (N, 10) in :data:`VOTE_NAMES` order.

    With votes, ``labels`` is the FER+ majority (-1 where the taggers reached none over the 8
    emotions), the standard ground truth for accuracy.
    """

    images: np.ndarray
    labels: np.ndarray
    sources: list[str]
    skipped: list[BadRecord] = field(default_factory=list)
    source_sizes: dict[str, int] = field(default_factory=dict)
    classes: tuple[str, ...] = CLASSES
    votes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def labeled(self) -> bool:
        """Every face has a label, or votes."""
        return bool(len(self.labels)) and (self.votes is not None or bool((self.labels != UNLABELED).all()))

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels[self.labels >= 0], minlength=len(self.classes))
        return {name: int(c) for name, c in zip(self.classes, counts, strict=True)}

    def vote_counts(self) -> dict[str, int]:
        """Faces per FER+ majority answer, ``unknown`` and ``not_a_face`` included, and ``no_majority``."""
        answers = majority(self.votes, emotions_only=False)
        counts = np.bincount(answers[answers >= 0], minlength=len(VOTE_NAMES))
        return {**{n: int(c) for n, c in zip(VOTE_NAMES, counts, strict=True)}, "no_majority": int((answers < 0).sum())}

    def subset(self, index: np.ndarray) -> FaceSet:
        votes = None if self.votes is None else self.votes[index]
        return FaceSet(
            self.images[index], self.labels[index], [self.sources[i] for i in index], classes=self.classes, votes=votes
        )


@dataclass
class Dataset:
    """All splits found at one path, in the order they were found."""

    path: Path
    format: str
    splits: dict[str, FaceSet]
    unknown_classes: list[str] = field(default_factory=list)

    @property
    def classes(self) -> tuple[str, ...]:
        return next(iter(self.splits.values())).classes if self.splits else CLASSES

    def split(self, name: str) -> FaceSet:
        if name not in self.splits:
            raise DataError(f"{self.path}: no split {name!r}; it has {', '.join(self.splits)}")
        return self.splits[name]

    def summary(self) -> dict:
        """Counts per split and class: recorded in checkpoints as the training data summary."""
        return {
            "path": str(self.path),
            "format": self.format,
            "classes": list(self.classes),
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
    labels: str | os.PathLike | None = None,
    skip_bad: bool = False,
    skip_unknown: bool = False,
    use_cache: bool = True,
    progress: bool = True,
) -> Dataset:
    """Load every split at ``path``: a FER2013 CSV, a folder with train.csv/test.csv, an image
    folder, or the FERPlus layout (FER2013Train/, FER2013Valid/, FER2013Test/ with label.csv).

    ``labels`` is FER+'s ``fer2013new.csv`` for a ``fer2013.csv`` at ``path``: the two pair up row
    by row (its image names are not row numbers) and each face gets its ten votes. Bad records
    raise :class:`DataError` naming the first of them unless ``skip_bad`` is set, in which case
    they are counted in each split's ``skipped`` list. Class folders with unknown names raise
    unless ``skip_unknown`` is set.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    fmt, sources = _detect_format(path)
    if labels is not None:
        labels = Path(labels).expanduser()
        if not labels.is_file():
            raise DataError(f"{labels}: no such label file")
        if fmt != "csv" or len(sources) != 1:
            raise DataError(f"{labels}: FER+ votes pair with one fer2013.csv (Usage column included), not with {path}")
        fmt, sources = "csv+votes", [*sources, labels]
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
    label_files = [path / d / "label.csv" for d in FERPLUS_SPLITS if (path / d / "label.csv").is_file()]
    if label_files:
        return "ferplus", label_files
    return "folders", []


def _cache_key(path: Path, fmt: str, files: list[Path]) -> str:
    h = hashlib.sha256(f"{_CACHE_VERSION}|{fmt}|{path.resolve()}".encode())
    if fmt == "folders":
        files = sorted(_walk_files(path))
    elif fmt == "ferplus":  # a changed PNG changes its folder's mtime only when added or removed
        files = [*files, *(f.parent for f in files)]
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
        if not parsed.faces:
            raise DataError(f"{f}: no rows after the header")
        for name, fs in parsed.faces.items():
            if name in splits:
                raise DataError(f"{f}: split {name!r} also comes from another CSV file in {path}")
            splits[name] = fs
    return Dataset(path, "csv", splits)


def _load_csv_votes(path: Path, files: list[Path], progress: bool) -> Dataset:
    """fer2013.csv with FER+'s fer2013new.csv: row i of one is row i of the other."""
    csv_file, label_file = files
    parsed = _parse_csv(csv_file, progress)
    if not parsed.faces:
        raise DataError(f"{csv_file}: no rows after the header")
    voted = _parse_vote_rows(label_file)
    if len(voted) != len(parsed.usages):
        raise DataError(
            f"{label_file} has {len(voted):,} rows and {csv_file} has {len(parsed.usages):,}: FER+ labels pair "
            "with fer2013.csv row by row, so both must have the same rows"
        )
    for i, ((line, usage, _, _), csv_usage) in enumerate(zip(voted, parsed.usages, strict=True)):
        if csv_usage is not None and usage != csv_usage:
            raise DataError(
                f"{label_file}, line {line}: Usage {usage!r}, but row {i + 1} of {csv_file} is {csv_usage!r}; "
                "the two files do not pair row by row"
            )
    splits = {}
    for name, fs in parsed.faces.items():
        keep, votes, bad = [], [], list(fs.skipped)
        for j, row in enumerate(parsed.rows[name]):
            line, _, v, problem = voted[row]
            if problem is not None:
                bad.append(BadRecord(f"{label_file}, line {line}", problem))
                continue
            keep.append(j)
            votes.append(v)
        votes_arr = np.stack(votes) if votes else np.zeros((0, len(VOTE_NAMES)), np.int64)
        splits[name] = FaceSet(
            fs.images[keep],
            majority(votes_arr),
            [fs.sources[j] for j in keep],
            bad,
            {f"{IMAGE_SIZE}x{IMAGE_SIZE}": len(keep)},
            FERPLUS_CLASSES,
            votes_arr,
        )
    return Dataset(path, "csv+votes", splits)


def _csv_rows(path: Path, *, header: bool) -> Iterator[tuple[int, int, list[str]]]:
    """A CSV file's rows as (first line, last line, fields): the header as it is (with ``header``),
    then every row that is not blank. Undecodable bytes and broken quoting become a DataError that
    names the file (and the line)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            end = 0  # the last line read so far: a row starts after it, and a quoted field may span lines
            for k, row in enumerate(reader):
                line, end = end + 1, reader.line_num
                if (header and k == 0) or any(c.strip() for c in row):
                    yield line, end, row
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text CSV file ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise DataError(f"{path}, line {reader.line_num}: malformed CSV: {e}") from None


@dataclass
class _ParsedCSV:
    faces: dict[str, FaceSet]  # split -> faces
    rows: dict[str, list[int]]  # split -> the data row (0-based, blank lines not counted) of each face
    usages: list[str | None]  # every data row's split, None where it had none or a bad one


def _parse_csv(path: Path, progress: bool) -> _ParsedCSV:
    """Parse one CSV with columns ``pixels`` and optionally ``emotion`` and ``Usage``."""
    n_pixels = IMAGE_SIZE * IMAGE_SIZE
    rows: dict[str, tuple[list[np.ndarray], list[int], list[str], list[BadRecord], list[int]]] = {}
    usages: list[str | None] = []
    default_split = path.stem.lower()
    records = _csv_rows(path, header=True)
    header = [h.strip().lower() for h in next(records, (0, 0, []))[2]]
    if not header:
        raise DataError(f"{path}: empty file; expected a header emotion,pixels[,Usage]")
    if "pixels" not in header:
        raise DataError(f"{path}: header {header} has no 'pixels' column; expected emotion,pixels[,Usage]")
    i_pix = header.index("pixels")
    i_emo = header.index("emotion") if "emotion" in header else None
    i_use = header.index("usage") if "usage" in header else None
    for line, end, row in tqdm(
        records,
        desc=f"reading {path.name}",
        unit=" rows",
        disable=None if progress else True,
        file=sys.stderr,
        leave=False,
    ):
        where = f"{path}, line {line}"
        usages.append(None)
        split = default_split
        problem = None
        if end > line:
            problem = f"a quote opened on this line is not closed until line {end}"
        elif len(row) != len(header):
            problem = f"has {len(row)} fields, expected {len(header)} ({','.join(header)})"
        elif i_use is not None:
            usages[-1] = usage = row[i_use].strip()
            split = USAGE_TO_SPLIT.get(usage)
            if split is None:
                usages[-1] = None
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
        bucket = rows.setdefault(split or default_split, ([], [], [], [], []))
        if problem is not None:
            bucket[3].append(BadRecord(where, problem))
            continue
        bucket[0].append(pixels)
        bucket[1].append(label)
        bucket[2].append(f"{path.name}:{line}")
        bucket[4].append(len(usages) - 1)
    faces = {}
    for split, (imgs, labels, sources, bad, _) in rows.items():
        images = np.stack(imgs) if imgs else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        sizes = {f"{IMAGE_SIZE}x{IMAGE_SIZE}": len(imgs)} if imgs else {}
        faces[split] = FaceSet(images, np.asarray(labels, np.int64), sources, bad, sizes)
    return _ParsedCSV(faces, {split: b[4] for split, b in rows.items()}, usages)


def _parse_vote_rows(path: Path) -> list[tuple[int, str | None, np.ndarray | None, str | None]]:
    """Every data row of fer2013new.csv as (line, Usage, votes in VOTE_NAMES order, problem)."""
    records = _csv_rows(path, header=True)
    header = [h.strip().lower() for h in next(records, (0, 0, []))[2]]
    if len(header) != 12 or header[0] != "usage":
        raise DataError(
            f"{path}: header {','.join(header) or '(none)'} is not FER+'s "
            "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
        )
    out = []
    for line, _, row in records:
        if len(row) != 12:
            out.append((line, None, None, f"has {len(row)} fields, expected 12 (Usage, Image name, 10 votes)"))
            continue
        votes, problem = parse_votes(row[2:])
        out.append((line, row[0].strip(), votes, problem))
    return out


_TO_VOTE_NAMES = [FERPLUS_COLUMNS.index(n) for n in VOTE_NAMES]


def parse_votes(fields: list[str]) -> tuple[np.ndarray | None, str | None]:
    """Ten FER+ vote counts, in FER+'s column order, as an int64 array in :data:`VOTE_NAMES` order."""
    for name, text in zip(FERPLUS_COLUMNS, fields, strict=True):
        t = text.strip()
        if not (t.isascii() and t.isdigit()):
            return None, f"the {name} vote count is {text!r}, not a non-negative integer"
    votes = np.array([int(t) for t in fields], np.int64)[_TO_VOTE_NAMES]
    if votes.sum() == 0:
        return None, "has no votes"
    return votes, None


def majority(votes: np.ndarray, *, emotions_only: bool = True) -> np.ndarray:
    """FER+'s majority answer per face (Barsoum et al. 2016): single votes are dropped as outliers,
    then the top answer must hold more than half of the rest; -1 where none does, or (with
    ``emotions_only``) where the majority says unknown or not a face."""
    v = np.where(votes > 1, votes, 0)
    top = v.argmax(1)
    ok = v.max(1) * 2 > v.sum(1)
    if emotions_only:
        ok &= top < len(FERPLUS_CLASSES)
    return np.where(ok, top, UNLABELED).astype(np.int64)


def paired_labels(faces: FaceSet, reference: FaceSet, max_difference: float = 6.0) -> np.ndarray:
    """The label ``reference`` gives each of ``faces``, found by pixels, as an index into ``faces.classes``.

    FER+ and FER2013 hold the same faces under different names (and JPEG or PNG), so each face is
    paired with the reference face nearest to it (16x16 thumbnails, then the whole face checked: the
    mean absolute difference must stay under ``max_difference`` grey levels). A reference class
    that ``faces.classes`` lacks gives -1; a face with no such twin is an error naming it.
    """
    import cv2  # OpenCV (0.07 s): only to pair two data sets, not to load one

    def thumbs(images: np.ndarray) -> np.ndarray:
        return (
            np.stack([cv2.resize(i, (16, 16), interpolation=cv2.INTER_AREA) for i in images])
            .reshape(len(images), -1)
            .astype(np.float32)
        )

    mine, theirs = thumbs(faces.images), thumbs(reference.images)
    norms = (theirs**2).sum(1)
    nearest = np.concatenate(
        [(norms[None] - 2 * mine[i : i + 2048] @ theirs.T).argmin(1) for i in range(0, len(mine), 2048)]
    )
    difference = np.abs(faces.images.astype(np.float32) - reference.images[nearest]).mean((1, 2))
    if len(difference) and difference.max() > max_difference:
        worst = int(difference.argmax())
        raise DataError(
            f"{faces.sources[worst]}: no face of the reference data matches it (mean difference "
            f"{difference[worst]:.1f} grey levels); are these the same faces?"
        )
    lookup = np.asarray([faces.classes.index(c) if c in faces.classes else -1 for c in reference.classes])
    labels = reference.labels[nearest]
    return np.where(labels >= 0, lookup[np.maximum(labels, 0)], -1)


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
        nested = [d for d in subdirs if _holds_data_set(d)]
        if nested:  # one folder too high: ROOT/<data set>/<split>/<emotion>/* (or its CSVs)
            sets = [d for d in subdirs if _holds_data_set(d) or any(canonical_class(c.name) for c in d.iterdir())]
            raise DataError(
                f"{path}: a folder of data sets, not one; name one of them: {', '.join(str(d) for d in sets)}"
            )
        layout = {
            d.name.lower(): sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")) for d in subdirs
        }
    found = [(split, d, canonical_class(d.name)) for split, class_dirs in layout.items() for d in class_dirs]
    unknown += [str(d) for _, d, cls in found if cls is None]
    # a contempt folder makes FER+'s eight classes (contempt last); otherwise FER2013's seven
    classes = FERPLUS_CLASSES if any(cls == "contempt" for _, _, cls in found) else CLASSES
    splits = {}
    for split in layout:
        items = [(f, classes.index(cls)) for s, d, cls in found if s == split and cls for f in sorted(_walk_files(d))]
        if items:
            splits[split] = _decode_images(items, f"{path.name}/{split}", progress)
            splits[split].classes = classes
    if not splits and not unknown:
        raise DataError(f"{path}: no images found in class folders")
    return Dataset(path, "folders", splits, unknown)


def _holds_data_set(folder: Path) -> bool:
    """Whether a folder is a data set of its own in a form deeper than class folders: CSVs, the FERPlus
    layout, or split folders of class folders."""
    if _detect_format(folder)[0] != "folders":
        return True
    return any(canonical_class(c.name) for d in folder.iterdir() if d.is_dir() for c in d.iterdir() if c.is_dir())


def _load_ferplus(path: Path, files: list[Path], progress: bool) -> Dataset:
    """The FERPlus layout: per split a folder of PNGs and a headerless label.csv of
    ``name,"(x, y, w, h)",<10 votes>`` rows."""
    splits = {}
    for label_file in files:
        items, boxes, votes, bad = [], [], [], []
        for line, _, row in _csv_rows(label_file, header=False):
            where = f"{label_file}, line {line}"
            if len(row) != 12:
                bad.append(BadRecord(where, f"has {len(row)} fields, expected 12 (image, box, 10 votes)"))
                continue
            box = re.fullmatch(r"\(\s*(\d+),\s*(\d+),\s*(\d+),\s*(\d+)\s*\)", row[1].strip())
            v, problem = parse_votes(row[2:])
            image = label_file.parent / row[0].strip()
            if problem is None and box is None:
                problem = f"face box {row[1]!r} is not (x, y, w, h)"
            if problem is None and (not row[0].strip() or not image.is_file()):
                problem = f"names {row[0].strip() or 'no image'}, which is not in {label_file.parent}"
            if problem is not None:
                bad.append(BadRecord(where, problem))
                continue
            x, y, w, h = map(int, box.groups())
            items.append((image, len(items)))  # the label is the item's index, to find its votes after decoding
            boxes.append((x, y, x + w, y + h))
            votes.append(v)
        split = FERPLUS_SPLITS[label_file.parent.name]
        fs = _decode_images(items, f"{path.name}/{label_file.parent.name}", progress, boxes=boxes)
        kept = fs.labels  # the item index of each face that decoded
        fs.votes = np.stack(votes)[kept] if len(kept) else np.zeros((0, len(VOTE_NAMES)), np.int64)
        fs.labels, fs.classes, fs.skipped = majority(fs.votes), FERPLUS_CLASSES, bad + fs.skipped
        splits[split] = fs
    return Dataset(path, "ferplus", splits)


def _decode_images(
    items: list[tuple[Path, int]], desc: str, progress: bool, boxes: list[tuple[int, int, int, int]] | None = None
) -> FaceSet:
    images = np.zeros((len(items), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    labels, sources, bad, sizes = [], [], [], Counter()
    for i, (f, label) in enumerate(
        tqdm(
            items,
            desc=f"decoding {desc}",
            unit=" img",
            disable=None if progress else True,
            file=sys.stderr,
            leave=False,
        )
    ):
        try:
            with Image.open(f) as im:
                sizes[f"{im.width}x{im.height}"] += 1
                face = im if boxes is None or boxes[i] == (0, 0, im.width, im.height) else im.crop(boxes[i])
                images[len(labels)] = to_face_array(face)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            bad.append(BadRecord(str(f), f"unreadable or truncated image ({e})"))
            continue
        labels.append(label)
        sources.append(str(f))
    return FaceSet(images[: len(labels)], np.asarray(labels, np.int64), sources, bad, dict(sizes))


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


def stats_report(ds: Dataset) -> dict:
    """What `emotorch data stats` reports: faces per split and class (with FER+ votes: per majority answer,
    unknown, not a face and no majority included), source image sizes and bad records."""
    return {
        "path": str(ds.path),
        "format": ds.format,
        "classes": list(ds.classes),
        "splits": {
            name: {
                "n": len(fs),
                "labeled": fs.labeled,
                "classes": (fs.vote_counts() if fs.votes is not None else fs.class_counts()) if fs.labeled else {},
                "image_sizes": fs.source_sizes,
                "bad": len(fs.skipped),
                "bad_examples": [str(b) for b in fs.skipped[:5]],
            }
            for name, fs in ds.splits.items()
        },
        "unknown_class_folders": ds.unknown_classes,
    }


def format_stats(report: dict) -> str:
    """A :func:`stats_report` as the table `emotorch data stats` prints."""
    voted = any("no_majority" in r["classes"] for r in report["splits"].values())
    columns = [*VOTE_NAMES, "no_majority"] if voted else report["classes"]
    lines = [f"{report['path']} ({report['format']})"]
    if voted:
        lines.append(
            "faces per FER+ majority answer (single votes dropped; no_majority: no answer has over half the votes)"
        )
    width = {c: max(9, len(c) + 1) for c in columns}
    lines.append(f"{'split':<10}{'faces':>8}" + "".join(f"{c:>{width[c]}}" for c in columns) + f"{'bad':>6}")
    for name, r in report["splits"].items():
        counts = "".join(f"{r['classes'].get(c, '-'):>{width[c]}}" for c in columns)
        lines.append(f"{name:<10}{r['n']:>8}{counts}{r['bad']:>6}")
    for name, r in report["splits"].items():
        sizes = ", ".join(f"{s} x{n}" for s, n in sorted(r["image_sizes"].items(), key=lambda kv: -kv[1])[:5])
        lines.append(f"{name}: image sizes {sizes or '-'}" + ("" if r["labeled"] else " (unlabeled)"))
        lines += [f"  bad: {example}" for example in r["bad_examples"]]
        if r["bad"] > len(r["bad_examples"]):
            lines.append(f"  ... and {r['bad'] - len(r['bad_examples'])} more bad")
    lines += [f"unknown class folder (not loaded): {folder}" for folder in report["unknown_class_folders"]]
    return "\n".join(lines)


_LOADERS = {"csv": _load_csv_sources, "csv+votes": _load_csv_votes, "folders": _load_folders, "ferplus": _load_ferplus}


# --- cache ------------------------------------------------------------------------------------


def _write_cache(file: Path, ds: Dataset) -> None:
    arrays: dict[str, np.ndarray] = {}
    meta = {"unknown_classes": ds.unknown_classes, "splits": {}}
    for i, (name, fs) in enumerate(ds.splits.items()):
        arrays[f"images{i}"] = fs.images
        arrays[f"labels{i}"] = fs.labels
        arrays[f"sources{i}"] = np.asarray(fs.sources, dtype=str)
        if fs.votes is not None:
            arrays[f"votes{i}"] = fs.votes
        meta["splits"][name] = {
            "index": i,
            "classes": list(fs.classes),
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
                    z[f"images{i}"],
                    z[f"labels{i}"],
                    z[f"sources{i}"].tolist(),
                    [BadRecord(*b) for b in m["skipped"]],
                    m["source_sizes"],
                    tuple(m["classes"]),
                    z.get(f"votes{i}"),
                )
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache entry is rebuilt, never trusted
    return Dataset(path, fmt, splits, meta["unknown_classes"])
