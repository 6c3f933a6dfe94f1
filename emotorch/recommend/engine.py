"""Emotion-aware recommendations over the catalog.

An emotion probability vector maps to a point in Russell's valence/arousal plane (the
probability-weighted mean of :data:`EMOTION_VA`). A strategy turns it into a target point:
``match`` keeps the mood, ``uplift`` moves toward positive valence at a comfortable arousal
(:data:`UPLIFT_VA`: comfort for sad, calm for angry or afraid), ``auto`` picks one per category
(:data:`DEFAULT_STRATEGY`, overridable per user). Items score by closeness to the target plus a
LinUCB bandit term whose context is the emotion vector (learned from everyone's impressions and
clicks) plus the user's own tag affinities; a greedy pass keeps near-duplicate tags apart and
items seen recently by the same user or session are left out.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from emotorch.choices import CATEGORIES, CLASSES, FEEDBACK_KINDS, FERPLUS_CLASSES, LEARNED_STRATEGIES, STRATEGIES
from emotorch.recommend.catalog import STARTER_CATALOG, import_file, item_dict
from emotorch.recommend.db import (
    BanditArm,
    Event,
    Item,
    Preference,
    StrategyStat,
    User,
    checked_category,
    checkpoint,
    connect,
    writing,
)

# What a user or session id may be: the API refuses others, and ``*`` (everyone's statistics) is never one
ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
TOKEN_BYTES = 32  # an API user's token: 256 random bits


def check_id(user_id: str) -> str:
    """``user_id`` if it is a valid id, else ValueError (``*`` names everyone's statistics, never a user)."""
    if not re.fullmatch(ID_PATTERN, user_id):
        raise ValueError(f"{user_id!r} is not a user id: 1-128 letters, digits, '_', '.', ':' or '-'")
    return user_id


def token_digest(token: str) -> str:
    """What the database keeps of a token: its sha256, so a copy of the database grants no access."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


# Where each emotion sits in the valence/arousal plane (after Russell 1980 and the circumplex
# placements used in affective computing): valence, arousal in [-1, 1].
EMOTION_VA: dict[str, tuple[float, float]] = {
    "angry": (-0.6, 0.7), "disgust": (-0.65, 0.35), "fear": (-0.65, 0.65), "happy": (0.8, 0.45),
    "neutral": (0.0, 0.0), "sad": (-0.7, -0.45), "surprise": (0.35, 0.75), "contempt": (-0.55, 0.25),
}  # fmt: skip
# Where ``uplift`` aims for each emotion: comfort for sad, calm for angry and afraid.
UPLIFT_VA: dict[str, tuple[float, float]] = {
    "angry": (0.35, -0.45), "disgust": (0.45, 0.0), "fear": (0.4, -0.35), "happy": (0.8, 0.45),
    "neutral": (0.55, 0.2), "sad": (0.5, -0.1), "surprise": (0.55, 0.5), "contempt": (0.5, 0.15),
}  # fmt: skip
UPLIFT_WORD = {"angry": "calming", "disgust": "refreshing", "fear": "reassuring", "happy": "upbeat",
               "neutral": "pleasant", "sad": "comforting", "surprise": "exciting",
               "contempt": "warm-hearted"}  # fmt: skip
MATCH_WORD = {"angry": "intense", "disgust": "edgy", "fear": "suspenseful", "happy": "joyful",
              "neutral": "easy-going", "sad": "gentle, reflective", "surprise": "surprising",
              "contempt": "wry"}  # fmt: skip
AS_ADJECTIVE = {"angry": "angry", "disgust": "disgusted", "fear": "afraid", "happy": "happy", "neutral": "calm",
                "sad": "sad", "surprise": "surprised", "contempt": "unimpressed"}  # fmt: skip
NOUN = {"product": "pick", "place": "place to visit", "food": "dish", "song": "song", "movie": "film"}
DEFAULT_STRATEGY = {"product": "uplift", "place": "uplift", "food": "uplift", "song": "match", "movie": "match"}
SUM_TOLERANCE = 0.05  # probabilities summing this close to 1 are renormalised; others are refused
LOW_CONFIDENCE = 0.35  # below this top probability the mood counts as unclear
SIGMA = 0.35  # width of the closeness kernel in the valence/arousal plane
PRIOR_STRENGTH = 10.0  # how many of a user's own impressions weigh as much as everyone's rate
MIN_STRATEGY_CLICKS = 3  # clicks in a category before ``auto`` may depart from its default strategy
TAG_PRIOR = 5.0  # pseudo-impressions at the viewer's overall rate that each tag's click rate starts from
OFTEN_CLICKS = 3  # picks of a tag before a reason may say "you often pick" it
ARM_PRIOR = 5.0  # ridge strength of an item's bandit arm: pseudo-impressions without a click
NEAR_DUPLICATE = 0.75  # tag Jaccard similarity at which two items count as near-duplicates


def _arm_stats(arm: BanditArm | None, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """An arm's (A, b) in a ``dim``-sized context; arms stored before contempt joined the context (7
    probabilities and a bias) get its row and column as if it had never been seen."""
    if arm is None or arm.a is None:
        return np.eye(dim), np.zeros(dim)
    a, b = np.asarray(arm.a, np.float64), np.asarray(arm.b, np.float64)
    if len(b) == dim - 1:  # insert contempt before the bias term
        a = np.insert(np.insert(a, dim - 2, 0.0, axis=0), dim - 2, 0.0, axis=1)
        a[dim - 2, dim - 2] = 1.0
        b = np.insert(b, dim - 2, 0.0)
    return a, b


class ItemNotFound(ValueError):
    """Feedback named an item that is not in the catalog."""


@dataclass(frozen=True)
class Mood:
    """An emotion probability vector over FER+'s eight classes (:data:`FERPLUS_CLASSES`; a FER2013
    model's seven leave contempt at 0) and where it sits in the valence/arousal plane."""

    probs: tuple[float, ...]

    @property
    def emotion(self) -> str:
        return FERPLUS_CLASSES[int(np.argmax(self.probs))]

    @property
    def confidence(self) -> float:
        return float(max(self.probs))

    def point(self, table: Mapping[str, tuple[float, float]]) -> np.ndarray:
        return np.asarray(self.probs) @ np.asarray([table[c] for c in FERPLUS_CLASSES])

    @property
    def negative(self) -> bool:
        """Whether the mood sits left of the valence axis (sad, angry, afraid, disgusted)."""
        return bool(self.point(EMOTION_VA)[0] < 0)

    def context(self) -> np.ndarray:
        """The bandit's context vector: the 8 probabilities and a bias term."""
        return np.append(np.asarray(self.probs), 1.0)


def mood(emotion: str | None = None, probs: Mapping[str, float] | Sequence[float] | None = None) -> Mood:
    """A :class:`Mood` from a label (certain) or a probability vector (by name, or in the class order of
    FER2013's seven or FER+'s eight classes)."""
    if (emotion is None) == (probs is None):
        raise ValueError("give exactly one of an emotion label or a probability vector")
    names = ", ".join(FERPLUS_CLASSES)
    if emotion is not None:
        if emotion not in FERPLUS_CLASSES:
            raise ValueError(f"unknown emotion {emotion!r}; expected one of {names}")
        return Mood(tuple(float(c == emotion) for c in FERPLUS_CLASSES))
    if isinstance(probs, Mapping):
        unknown = set(probs) - set(FERPLUS_CLASSES)
        if unknown:
            raise ValueError(f"unknown emotion(s) {', '.join(sorted(unknown))}; expected {names}")
        values = [float(probs.get(c, 0.0)) for c in FERPLUS_CLASSES]
    else:
        values = [float(p) for p in probs]
        if len(values) not in (len(CLASSES), len(FERPLUS_CLASSES)):
            raise ValueError(f"a probability vector has {len(CLASSES)} values ({', '.join(CLASSES)}) "
                             f"or {len(FERPLUS_CLASSES)} ({names})")  # fmt: skip
        values += [0.0] * (len(FERPLUS_CLASSES) - len(values))
    if not all(np.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
        raise ValueError("each probability must be a number within [0, 1]")
    total = sum(values)
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise ValueError(f"probabilities sum to {total:.4g}; they must sum to 1 (within {SUM_TOLERANCE})")
    return Mood(tuple(v / total for v in values))


@dataclass
class Recommendation:
    id: str
    category: str
    title: str
    score: float
    reason: str
    strategy: str
    item: dict[str, Any] = field(repr=False)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


class Recommender:
    """Recommendations, feedback and privacy operations over one catalog database."""

    def __init__(self, engine: Engine | str | None = None, *, alpha: float = 0.3, learned_weight: float = 2.0,
                 taste_weight: float = 2.0, recent_hours: float = 24.0, diversity: float = 0.5,
                 arm_prior: float = ARM_PRIOR, tag_prior: float = TAG_PRIOR,
                 min_strategy_clicks: int = MIN_STRATEGY_CLICKS) -> None:  # fmt: skip
        self.engine = engine if isinstance(engine, Engine) else open_database(engine)
        self.alpha = alpha  # LinUCB exploration weight
        self.learned_weight = learned_weight  # weight of the bandit's expected click rate
        self.taste_weight = taste_weight  # weight of the user's own tag affinities
        self.arm_prior, self.tag_prior, self.min_strategy_clicks = arm_prior, tag_prior, min_strategy_clicks
        self.recent = timedelta(hours=recent_hours)
        self.diversity = diversity

    # --- recommending ---------------------------------------------------------------------

    def recommend(
        self,
        current: Mood,
        *,
        categories: Sequence[str] | str | None = None,
        n: int = 5,
        strategy: str = "auto",
        user_id: str | None = None,
        session_id: str | None = None,
        record: bool = True,
    ) -> list[Recommendation]:
        """The ``n`` best items for ``current`` mood; impressions are recorded when ``record``."""
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
        cats = self._categories(categories)
        with Session(self.engine) as session:
            items = list(session.scalars(select(Item).where(Item.category.in_(cats)).order_by(Item.id)))
            if not items:
                return []
            seen = self._recently_seen(session, user_id, session_id)
            fresh = [it for it in items if it.id not in seen]
            if len(fresh) >= n:
                items = fresh
            prefs = self._learned_strategies(session, user_id, current) | self._preferences(session, user_id)
            affinity, base_rate = self._tag_affinity(session, user_id, session_id)
            arms = self._arms(session, [it.id for it in items])

        x = current.context()
        # Unclear moods lean toward neutral targets and what is popular with everyone.
        clarity = float(np.clip((current.confidence - 0.2) / (LOW_CONFIDENCE - 0.2), 0.0, 1.0))
        targets = {  # per strategy, computed once: the mood's point, pulled toward neutral when unclear
            name: clarity * current.point(table) + (1 - clarity) * np.asarray(table["neutral"])
            for name, table in (("match", EMOTION_VA), ("uplift", UPLIFT_VA))
        }
        scored = []
        for it in items:
            strat = strategy if strategy != "auto" else prefs.get(it.category, DEFAULT_STRATEGY[it.category])
            target = targets[strat]
            d2 = (it.valence - target[0]) ** 2 + (it.arousal - target[1]) ** 2
            fit = float(np.exp(-d2 / (2 * SIGMA**2)))
            learned = self._ucb(arms.get(it.id), x)
            tag_bonus, liked_tag = self._tag_bonus(it, affinity, base_rate)
            score = (0.5 + 0.5 * clarity) * fit + learned + self.taste_weight * tag_bonus
            scored.append((score, it, strat, liked_tag))

        chosen = self._diverse_top(scored, n)
        recs = [
            Recommendation(it.id, it.category, it.title, round(score, 4),
                           self._reason(current, clarity, it, strat, tag), strat, item_dict(it))
            for score, it, strat, tag in chosen
        ]  # fmt: skip
        if record and recs:
            self._record(current, [(r.id, r.strategy) for r in recs], "impression", user_id, session_id)
        return recs

    def _categories(self, categories: Sequence[str] | str | None) -> list[str]:
        if categories is None:
            return list(CATEGORIES)
        names = [categories] if isinstance(categories, str) else list(categories)
        return [checked_category(name) for name in names]

    def _recently_seen(self, session: Session, user_id: str | None, session_id: str | None) -> set[str]:
        who = self._who(user_id, session_id)
        if who is None:
            return set()
        since = datetime.now(UTC) - self.recent
        query = select(Event.item_id).where(who, Event.kind == "impression", Event.created_at >= since)
        return set(session.scalars(query))

    @staticmethod
    def _who(user_id: str | None, session_id: str | None):
        if user_id is not None:
            return Event.user_id == user_id
        if session_id is not None:
            return Event.session_id == session_id
        return None

    @staticmethod
    def _preferences(session: Session, user_id: str | None) -> dict[str, str]:
        if user_id is None:
            return {}
        rows = session.scalars(select(Preference).where(Preference.user_id == user_id))
        return {p.category: p.strategy for p in rows}

    def _learned_strategies(self, session: Session, user_id: str | None, current: Mood) -> dict[str, str]:
        """The strategy per category that earned more clicks in moods of this sign (valence < 0 or not).

        Only clicks are evidence: until a category has ``min_strategy_clicks`` of them (everyone's,
        or the user's own), ``auto`` keeps the category default, however many impressions there were.
        Each strategy's click rate is shrunk toward the category's pooled rate, so a strategy nobody
        has tried ties with the default (which then wins) instead of looking promising. Everyone's
        counts in the category form the prior; an opted-in user's own counts (over all categories:
        someone who wants cheering up when sad wants it in songs and food alike) refine it, and only a
        user who has clicked gets a UCB1 exploration bonus, so the alternative keeps being tried for them.
        """
        scopes = ["*"] + ([user_id] if user_id else [])
        rows = session.scalars(select(StrategyStat).where(StrategyStat.scope.in_(scopes),
                                                          StrategyStat.negative == current.negative))  # fmt: skip
        stats = {(r.scope != "*", r.category, r.strategy): (r.impressions, r.clicks) for r in rows}
        mine = {s: stats.get((True, "*", s), (0, 0)) for s in LEARNED_STRATEGIES}  # a user's taste spans categories
        own_clicks = sum(c for _, c in mine.values())
        learned = {}
        for category in CATEGORIES:
            everyone = {s: stats.get((False, category, s), (0, 0)) for s in LEARNED_STRATEGIES}
            if sum(c for _, c in everyone.values()) + own_clicks < self.min_strategy_clicks:
                continue
            pooled = (sum(c for _, c in everyone.values()) + 1) / (sum(n for n, _ in everyone.values()) + 2)
            seen = sum(n for n, _ in everyone.values()) + sum(n for n, _ in mine.values())
            value = {}
            for s in LEARNED_STRATEGIES:
                (n_all, c_all), (n_me, c_me) = everyone[s], mine[s]
                prior = (c_all + PRIOR_STRENGTH * pooled) / (n_all + PRIOR_STRENGTH)
                rate = (c_me + PRIOR_STRENGTH * prior) / (n_me + PRIOR_STRENGTH)
                bonus = 0.3 * np.sqrt(np.log(seen + 1) / (n_all + n_me + 1)) if own_clicks else 0.0
                value[s] = rate + bonus
            default = DEFAULT_STRATEGY[category]
            best = max(LEARNED_STRATEGIES, key=lambda s: (value[s], s == default))
            if best != default:
                learned[category] = best
        return learned

    @staticmethod
    def _arms(session: Session, item_ids: list[str], lock: bool = False) -> dict[str, BanditArm]:
        """The items' bandit arms; ``lock`` holds their rows (FOR UPDATE) until the transaction ends."""
        query = select(BanditArm).where(BanditArm.item_id.in_(item_ids)).order_by(BanditArm.item_id)
        return {a.item_id: a for a in session.scalars(query.with_for_update() if lock else query)}

    def _tag_affinity(self, session: Session, user_id: str | None,
                      session_id: str | None) -> tuple[dict[str, tuple[float, int]], float]:  # fmt: skip
        """Per-tag (click rate, clicks) of this user or session, and their overall click rate.

        A click or like counts as shown even without a recorded impression, and each tag's rate is
        shrunk toward the viewer's overall rate by ``tag_prior`` pseudo-impressions, so one like
        moves a tag a little and only repeated picks make it stand out.
        """
        who = self._who(user_id, session_id)
        if who is None:
            return {}, 0.0
        rows = session.execute(select(Event.kind, Item.tags).join(Item, Item.id == Event.item_id).where(who)).all()
        shown, clicked = Counter(), Counter()
        for kind, tags in rows:
            for tag in filter(None, tags.split(",")):
                (shown if kind == "impression" else clicked)[tag] += 1
        total_clicked = sum(1 for kind, _ in rows if kind != "impression")
        total_shown = max(sum(1 for kind, _ in rows if kind == "impression"), total_clicked)
        base = (total_clicked + 1) / (total_shown + 2)
        k = self.tag_prior
        return {t: ((clicked[t] + k * base) / (max(shown[t], clicked[t]) + k), clicked[t])
                for t in shown | clicked}, base  # fmt: skip

    @staticmethod
    def _tag_bonus(item: Item, affinity: dict[str, tuple[float, int]], base: float) -> tuple[float, str | None]:
        """How much more than usual this viewer picks the item's tags, and a tag they *often* pick (or None)."""
        rates = [(affinity[t][0], affinity[t][1], t) for t in item.tag_set if t in affinity]
        if not rates:
            return 0.0, None
        bonus = float(np.mean([r for r, _, _ in rates]) - base)
        often = [(r, t) for r, clicks, t in rates if clicks >= OFTEN_CLICKS and r > base + 0.15]
        return bonus, max(often)[1] if often else None

    def _ucb(self, arm: BanditArm | None, x: np.ndarray) -> float:
        """LinUCB: expected click rate in this context (ridge-shrunk toward 0 by ``arm_prior``
        pseudo-impressions, :data:`ARM_PRIOR`, and clipped to [0, 1]) plus an exploration bonus."""
        a, b = _arm_stats(arm, len(x))
        a_inv = np.linalg.inv(a + (self.arm_prior - 1) * np.eye(len(x)))  # stored arms start from the identity
        expected = float(np.clip(a_inv @ b @ x, 0.0, 1.0))
        return float(self.learned_weight * expected + self.alpha * np.sqrt(x @ a_inv @ x))

    def _diverse_top(self, scored: list, n: int) -> list:
        """Greedy selection: each pick pays for tag overlap with the picks before it."""
        pool = sorted(scored, key=lambda s: -s[0])
        chosen: list = []
        while pool and len(chosen) < n:
            def adjusted(entry) -> float:
                overlap = max((_jaccard(entry[1].tag_set, c[1].tag_set) for c in chosen), default=0.0)
                return entry[0] - self.diversity * overlap - (1.0 if overlap >= NEAR_DUPLICATE else 0.0)

            best = max(pool, key=adjusted)
            pool.remove(best)
            chosen.append(best)
        return chosen

    @staticmethod
    def _reason(current: Mood, clarity: float, item: Item, strategy: str, liked_tag: str | None) -> str:
        noun = NOUN[item.category]
        if clarity < 0.5:
            text = f"your mood is hard to read: a well-liked {noun}"
        elif strategy == "match":
            word = MATCH_WORD[current.emotion]
            text = f"you seem {AS_ADJECTIVE[current.emotion]}: {_article(word)} {word} {noun} to match"
        else:
            word = UPLIFT_WORD[current.emotion]
            text = f"you seem {AS_ADJECTIVE[current.emotion]}: {_article(word)} {word} {noun}"
        detail = item.description.split(":")[0].strip()  # what sets this item apart from the others of its kind
        if detail:  # lower-cased mid-sentence, unless it opens with a name ("Freddie Mercury ...")
            words = detail.split()
            text += f" - {detail if len(words) > 1 and words[1][:1].isupper() else detail[0].lower() + detail[1:]}"
        return text + (f" (you often pick {liked_tag})" if liked_tag else "")

    # --- feedback and privacy -------------------------------------------------------------

    def feedback(self, item_id: str, kind: str, current: Mood | None = None, *, user_id: str | None = None,
                 session_id: str | None = None) -> None:  # fmt: skip
        """Store an impression, click or like and update the bandit with its emotion context."""
        if kind not in FEEDBACK_KINDS:
            raise ValueError(f"unknown feedback kind {kind!r}; expected one of {', '.join(FEEDBACK_KINDS)}")
        with Session(self.engine) as session:
            if session.get(Item, item_id) is None:
                raise ItemNotFound(f"no item {item_id!r} in the catalog")
        unknown = mood(probs=[1 / len(FERPLUS_CLASSES)] * len(FERPLUS_CLASSES))  # no mood given: all equally likely
        self._record(current or unknown, [(item_id, None)], kind, user_id, session_id)

    def _record(self, current: Mood, shown: list[tuple[str, str | None]], kind: str, user_id: str | None,
                session_id: str | None) -> None:  # fmt: skip
        """Store events for (item id, strategy) pairs and update the items' bandit statistics."""
        x = current.context()
        item_ids = [item_id for item_id, _ in shown]

        def work(session: Session) -> None:
            user = session.get(User, user_id) if user_id else None
            if user_id and user is None:
                user = User(id=user_id)
                session.add(user)
            keep_context = bool(user and user.opted_in)  # emotion data only with consent
            arms = self._arms(session, item_ids, lock=True)  # read-modify-write: no update is lost
            scopes = ["*"] + ([user_id] if keep_context else [])  # per-user learning only with consent
            for item_id, strategy in shown:
                was_shown = kind == "impression"
                if kind != "impression":  # credit the strategy that showed this item to this viewer
                    was_shown, strategy = self._shown_by(session, item_id, user_id, session_id)
                session.add(Event(user_id=user_id, session_id=session_id, item_id=item_id, kind=kind,
                                  strategy=strategy, context=list(current.probs) if keep_context else None))
                if strategy is not None:
                    self._count(session, scopes, item_id, current.negative, strategy, kind)
                arm = arms.get(item_id) or BanditArm(item_id=item_id)
                a, b = _arm_stats(arm, len(x))
                if kind == "impression" or not was_shown:  # a click on an unrecorded showing: it was seen too
                    a = a + np.outer(x, x)
                if kind != "impression":
                    b = b + x
                arm.a, arm.b = a.tolist(), b.tolist()
                session.add(arm)

        self._write(work)

    def _write(self, work: Callable[[Session], None], attempts: int = 4) -> None:
        """Run ``work`` in one transaction; when a concurrent request created the same new row first
        (a user, an item's bandit arm, a strategy counter), run it again: the row now exists."""
        for attempt in range(attempts):
            try:
                with writing(self.engine) as session:
                    work(session)
                return
            except IntegrityError:
                if attempt == attempts - 1:
                    raise

    def _shown_by(self, session: Session, item_id: str, user_id: str | None,
                  session_id: str | None) -> tuple[bool, str | None]:  # fmt: skip
        """Whether this viewer has a recorded impression of the item, and the strategy that showed it."""
        who = self._who(user_id, session_id)
        if who is None:
            return False, None
        query = (select(Event.id, Event.strategy).where(who, Event.item_id == item_id, Event.kind == "impression")
                 .order_by(Event.id.desc()).limit(1))  # fmt: skip
        row = session.execute(query).first()
        return (True, row.strategy) if row else (False, None)

    @staticmethod
    def _count(session: Session, scopes: list[str], item_id: str, negative: bool, strategy: str, kind: str) -> None:
        category = session.get(Item, item_id).category
        for scope in scopes:
            key = (scope, category if scope == "*" else "*", negative, strategy)
            stat = session.get(StrategyStat, key, with_for_update=True)
            if stat is None:
                stat = StrategyStat(scope=key[0], category=key[1], negative=negative, strategy=strategy,
                                    impressions=0, clicks=0)  # fmt: skip
                session.add(stat)
            if kind == "impression":
                stat.impressions += 1
            elif kind == "click":  # a like usually follows a click: count each shown item once
                stat.clicks += 1

    def set_user(self, user_id: str, *, opted_in: bool | None = None,
                 strategies: Mapping[str, str] | None = None) -> None:  # fmt: skip
        """Create or update a user: consent to storing emotion context, per-category strategies."""
        prefs = {checked_category(category): strat for category, strat in (strategies or {}).items()}
        for category, strat in prefs.items():
            if strat not in LEARNED_STRATEGIES:
                raise ValueError(f"unknown strategy {strat!r} for {category}; expected match or uplift")

        def work(session: Session) -> None:
            user = session.get(User, user_id) or User(id=user_id, opted_in=False)
            if opted_in is not None:
                user.opted_in = opted_in
            session.add(user)
            for category, strat in prefs.items():
                session.merge(Preference(user_id=user_id, category=category, strategy=strat))

        self._write(work)

    def create_user(self) -> tuple[str, str]:
        """A new API user: (its id, its token). Only the token's sha256 is stored; the token is shown once."""
        user_id, token = f"u-{secrets.token_hex(12)}", secrets.token_urlsafe(TOKEN_BYTES)
        self._write(lambda session: session.add(User(id=user_id, opted_in=False, token_sha256=token_digest(token))))
        return user_id, token

    def token_owner(self, token: str) -> str | None:
        """The id of the user this API token belongs to, or None."""
        with Session(self.engine) as session:
            return session.scalar(select(User.id).where(User.token_sha256 == token_digest(token)))

    def user(self, user_id: str) -> dict[str, Any] | None:
        """What is stored about a user: consent, per-category strategies and event counts (None if unknown)."""
        with Session(self.engine) as session:
            user = session.get(User, user_id)
            if user is None:
                return None
            prefs = self._preferences(session, user_id)
            kinds = Counter(session.scalars(select(Event.kind).where(Event.user_id == user_id)))
        return {"user_id": user_id, "opted_in": bool(user.opted_in), "strategies": dict(sorted(prefs.items())),
                "events": {k: kinds.get(k, 0) for k in FEEDBACK_KINDS}}  # fmt: skip

    def forget(self, user_id: str) -> int:
        """Delete everything stored about a user; returns the number of events removed."""
        check_id(user_id)  # `*` would take everyone's learned statistics with it
        with writing(self.engine) as session:
            removed = session.execute(delete(Event).where(Event.user_id == user_id)).rowcount
            session.execute(delete(Preference).where(Preference.user_id == user_id))
            session.execute(delete(StrategyStat).where(StrategyStat.scope == user_id))
            session.execute(delete(User).where(User.id == user_id))
        checkpoint(self.engine)  # SQLite: no copy of the deleted rows stays in the write-ahead log
        return int(removed or 0)


def open_database(url: str | None = None) -> Engine:
    """The catalog database at ``url`` (default: EMOTORCH_DB or the user data dir), upgraded to the
    newest schema; a newly created one is filled with the starter catalog."""
    return connect(url, on_create=lambda engine: import_file(engine, STARTER_CATALOG))
