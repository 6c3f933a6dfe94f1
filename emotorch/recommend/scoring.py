"""How items score for a mood, over plain numbers (no database): closeness to the strategy's target point
in the valence/arousal plane, the bandit's term, the viewer's tag affinities, a greedy diverse pick, and
the sentence that says why. Every weight is named in :class:`Weights`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from emotorch.recommend.learning import ARM_PRIOR, ucb
from emotorch.recommend.mood import EMOTION_VA, UPLIFT_VA, Mood

T = TypeVar("T")

LOW_CONFIDENCE = 0.35  # at or above this top probability a mood is clear
CLARITY_FLOOR = 0.2  # at or below this top probability a mood is unreadable: clarity 0
SIGMA = 0.35  # width of the closeness kernel in the valence/arousal plane
TAG_PRIOR = 5.0  # pseudo-impressions at the viewer's overall rate that each tag's click rate starts from
OFTEN_CLICKS = 3  # picks of a tag before a reason may say "you often pick" it
OFTEN_MARGIN = 0.15  # ... and by how much its click rate must beat the viewer's overall rate
NEAR_DUPLICATE = 0.75  # tag Jaccard similarity at which two items count as near-duplicates

# what the reason calls an item for each mood (tables: four emotions to a line)
UPLIFT_WORD = {
    "angry": "calming", "disgust": "refreshing", "fear": "reassuring", "happy": "upbeat",
    "neutral": "pleasant", "sad": "comforting", "surprise": "exciting", "contempt": "warm-hearted",
}  # fmt: skip # a table
MATCH_WORD = {
    "angry": "intense", "disgust": "edgy", "fear": "suspenseful", "happy": "joyful",
    "neutral": "easy-going", "sad": "gentle, reflective", "surprise": "surprising", "contempt": "wry",
}  # fmt: skip # a table
AS_ADJECTIVE = {
    "angry": "angry", "disgust": "disgusted", "fear": "afraid", "happy": "happy",
    "neutral": "calm", "sad": "sad", "surprise": "surprised", "contempt": "unimpressed",
}  # fmt: skip # a table
NOUN = {"product": "pick", "place": "place to visit", "food": "dish", "song": "song", "movie": "film"}


@dataclass(frozen=True)
class Weights:
    """The knobs of an item's score: ``fit_floor + (1 - fit_floor) * clarity`` times its closeness to the
    target, plus ``learned`` times the bandit's expected click rate and ``alpha`` times its exploration
    bonus, plus ``taste`` times the viewer's tag affinity; each pick then pays ``diversity`` times its tag
    overlap with the picks before it."""

    alpha: float = 0.3  # LinUCB exploration
    learned: float = 2.0  # the bandit's expected click rate
    taste: float = 2.0  # the viewer's own tag affinities
    diversity: float = 0.5  # the price of tag overlap with earlier picks
    fit_floor: float = 0.5  # the share of closeness an unreadable mood still counts
    arm_prior: float = ARM_PRIOR  # pseudo-impressions that shrink each item's arm toward no clicks
    tag_prior: float = TAG_PRIOR


def clarity(confidence: float) -> float:
    """How readable a mood is, from its top probability: 0 at :data:`CLARITY_FLOOR`, 1 from :data:`LOW_CONFIDENCE`."""
    return float(np.clip((confidence - CLARITY_FLOOR) / (LOW_CONFIDENCE - CLARITY_FLOOR), 0.0, 1.0))


def targets(current: Mood, clear: float) -> dict[str, np.ndarray]:
    """Each strategy's target point: the mood's point in its table, pulled toward neutral's when unclear."""
    return {
        name: clear * current.point(table) + (1 - clear) * np.asarray(table["neutral"])
        for name, table in (("match", EMOTION_VA), ("uplift", UPLIFT_VA))
    }


def closeness(valence: float, arousal: float, target: np.ndarray) -> float:
    """A Gaussian kernel (width :data:`SIGMA`) of an item's distance to the target point."""
    d2 = (valence - target[0]) ** 2 + (arousal - target[1]) ** 2
    return float(np.exp(-d2 / (2 * SIGMA**2)))


def ucb_term(a: np.ndarray, b: np.ndarray, x: np.ndarray, w: Weights) -> float:
    """The bandit's part of a score: :func:`emotorch.recommend.learning.ucb` with these weights."""
    return ucb(a, b, x, prior=w.arm_prior, alpha=w.alpha, weight=w.learned)


def tag_affinity(
    events: Iterable[tuple[str, str]], prior: float = TAG_PRIOR
) -> tuple[dict[str, tuple[float, int]], float]:
    """Per-tag (click rate, clicks) of one viewer from their (kind, comma-separated tags) events, and their
    overall click rate. A click or like counts as shown even without a recorded impression, and each tag's
    rate is shrunk toward the overall rate by ``prior`` pseudo-impressions, so one like moves a tag a
    little and only repeated picks make it stand out."""
    events = list(events)
    shown, clicked = Counter(), Counter()
    for kind, tags in events:
        for tag in filter(None, tags.split(",")):
            (shown if kind == "impression" else clicked)[tag] += 1
    total_clicked = sum(1 for kind, _ in events if kind != "impression")
    total_shown = max(sum(1 for kind, _ in events if kind == "impression"), total_clicked)
    base = (total_clicked + 1) / (total_shown + 2)
    rates = {
        t: ((clicked[t] + prior * base) / (max(shown[t], clicked[t]) + prior), clicked[t]) for t in shown | clicked
    }
    return rates, base


def tag_bonus(tags: Iterable[str], affinity: Mapping[str, tuple[float, int]], base: float) -> tuple[float, str | None]:
    """How much more than usual this viewer picks these tags, and a tag they *often* pick (or None)."""
    rates = [(affinity[t][0], affinity[t][1], t) for t in tags if t in affinity]
    if not rates:
        return 0.0, None
    bonus = float(np.mean([r for r, _, _ in rates]) - base)
    often = [(r, t) for r, clicks, t in rates if clicks >= OFTEN_CLICKS and r > base + OFTEN_MARGIN]
    return bonus, max(often)[1] if often else None


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def diverse_top(
    scored: Sequence[tuple[float, T]], n: int, tags: Callable[[T], frozenset[str]], diversity: float
) -> list[tuple[float, T]]:
    """Greedy selection of ``n`` (score, item) pairs: each pick pays ``diversity`` times its largest tag
    overlap with the picks before it, and a near-duplicate of one of them (:data:`NEAR_DUPLICATE`) 1 more."""
    pool = sorted(scored, key=lambda s: -s[0])
    chosen: list[tuple[float, T]] = []
    while pool and len(chosen) < n:

        def adjusted(entry: tuple[float, T]) -> float:
            overlap = max((jaccard(tags(entry[1]), tags(c[1])) for c in chosen), default=0.0)
            return entry[0] - diversity * overlap - (1.0 if overlap >= NEAR_DUPLICATE else 0.0)

        best = max(pool, key=adjusted)
        pool.remove(best)
        chosen.append(best)
    return chosen


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def reason(current: Mood, clear: float, category: str, description: str, strategy: str, liked_tag: str | None) -> str:
    """Why an item is shown, in one line: the mood as read, what the item does for it, what sets it apart."""
    noun = NOUN[category]
    if clear < 0.5:
        text = f"your mood is hard to read: a well-liked {noun}"
    elif strategy == "match":
        word = MATCH_WORD[current.emotion]
        text = f"you seem {AS_ADJECTIVE[current.emotion]}: {_article(word)} {word} {noun} to match"
    else:
        word = UPLIFT_WORD[current.emotion]
        text = f"you seem {AS_ADJECTIVE[current.emotion]}: {_article(word)} {word} {noun}"
    detail = description.split(":")[0].strip()  # what sets this item apart from the others of its kind
    if detail:  # lower-cased mid-sentence, unless it opens with a name ("Freddie Mercury ...")
        words = detail.split()
        text += f" - {detail if len(words) > 1 and words[1][:1].isupper() else detail[0].lower() + detail[1:]}"
    return text + (f" (you often pick {liked_tag})" if liked_tag else "")
