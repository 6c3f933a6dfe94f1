"""Emotion-aware recommendations over the catalog: :class:`Recommender`, a thin front over the scoring
(:mod:`emotorch.recommend.scoring`), the learning (:mod:`emotorch.recommend.learning`) and the database
(:mod:`emotorch.recommend.store`).

An emotion probability vector maps to a point in Russell's valence/arousal plane
(:mod:`emotorch.recommend.mood`). A strategy turns it into a target point: ``match`` keeps the mood,
``uplift`` moves toward positive valence at a comfortable arousal (comfort for sad, calm for angry or
afraid), ``auto`` picks one per category (a default, learned from clicks, or the user's choice). Items
score by closeness to the target plus a LinUCB bandit term whose context is the emotion vector (learned
from everyone's impressions and clicks) plus the user's own tag affinities; a greedy pass keeps
near-duplicate tags apart and items seen recently by the same user or session are left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Engine

from emotorch.choices import CATEGORIES, FEEDBACK_KINDS, LEARNED_STRATEGIES, STRATEGIES
from emotorch.recommend import scoring
from emotorch.recommend.catalog import STARTER_CATALOG, import_file, item_dict
from emotorch.recommend.db import checked_category, connect
from emotorch.recommend.learning import ARM_PRIOR, DEFAULT_STRATEGY, MIN_STRATEGY_CLICKS, arm_stats, learned_strategies
from emotorch.recommend.mood import Mood, unknown_mood
from emotorch.recommend.scoring import TAG_PRIOR, Weights
from emotorch.recommend.store import Store, Users


@dataclass
class Recommendation:
    id: str
    category: str
    title: str
    score: float
    reason: str
    strategy: str
    item: dict[str, Any] = field(repr=False)


class Recommender:
    """Recommendations, feedback and privacy operations over one catalog database."""

    def __init__(
        self,
        engine: Engine | str | None = None,
        *,
        alpha: float = 0.3,
        learned_weight: float = 2.0,
        taste_weight: float = 2.0,
        recent_hours: float = 24.0,
        diversity: float = 0.5,
        arm_prior: float = ARM_PRIOR,
        tag_prior: float = TAG_PRIOR,
        min_strategy_clicks: int = MIN_STRATEGY_CLICKS,
    ) -> None:
        self.engine = engine if isinstance(engine, Engine) else open_database(engine)
        self.store, self.users = Store(self.engine, timedelta(hours=recent_hours)), Users(self.engine)
        self.weights = Weights(
            alpha=alpha,
            learned=learned_weight,
            taste=taste_weight,
            diversity=diversity,
            arm_prior=arm_prior,
            tag_prior=tag_prior,
        )
        self.min_strategy_clicks = min_strategy_clicks

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
        read = self.store.reading(_categories(categories), user_id, session_id, current.negative)
        if not read.items:
            return []
        fresh = [it for it in read.items if it.id not in read.seen]
        items = fresh if len(fresh) >= n else read.items
        prefs = learned_strategies(*read.counts, self.min_strategy_clicks) | read.preferences
        affinity, base_rate = scoring.tag_affinity(read.tag_events, self.weights.tag_prior)

        w, x = self.weights, current.context()
        clear = scoring.clarity(current.confidence)  # unclear moods lean toward neutral targets and popular items
        targets = scoring.targets(current, clear)
        scored = []
        for it in items:
            strat = strategy if strategy != "auto" else prefs.get(it.category, DEFAULT_STRATEGY[it.category])
            fit = scoring.closeness(it.valence, it.arousal, targets[strat])
            arm = read.arms.get(it.id)
            a, b = arm_stats(arm.a if arm else None, arm.b if arm else None, len(x))
            learned = scoring.ucb_term(a, b, x, w)
            tag_bonus, liked_tag = scoring.tag_bonus(it.tag_set, affinity, base_rate)
            score = (w.fit_floor + (1 - w.fit_floor) * clear) * fit + learned + w.taste * tag_bonus
            scored.append((score, (it, strat, liked_tag)))

        chosen = scoring.diverse_top(scored, n, lambda entry: entry[0].tag_set, w.diversity)
        recs = [
            Recommendation(
                it.id,
                it.category,
                it.title,
                round(score, 4),
                scoring.reason(current, clear, it.category, it.description, strat, tag),
                strat,
                item_dict(it),
            )
            for score, (it, strat, tag) in chosen
        ]
        if record and recs:
            self.store.record(current, [(r.id, r.strategy) for r in recs], "impression", user_id, session_id)
        return recs

    def feedback(
        self,
        item_id: str,
        kind: str,
        current: Mood | None = None,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
    ) -> None:
        """Store an impression, click or like and update the bandit with its emotion context."""
        if kind not in FEEDBACK_KINDS:
            raise ValueError(f"unknown feedback kind {kind!r}; expected one of {', '.join(FEEDBACK_KINDS)}")
        self.store.require_item(item_id)
        self.store.record(current or unknown_mood(), [(item_id, None)], kind, user_id, session_id)

    def set_user(
        self, user_id: str, *, opted_in: bool | None = None, strategies: Mapping[str, str] | None = None
    ) -> None:
        """Create or update a user: consent to storing emotion context, per-category strategies."""
        prefs = {checked_category(category): strat for category, strat in (strategies or {}).items()}
        for category, strat in prefs.items():
            if strat not in LEARNED_STRATEGIES:
                raise ValueError(f"unknown strategy {strat!r} for {category}; expected match or uplift")
        self.users.set_user(user_id, opted_in, prefs)

    def create_user(self) -> tuple[str, str]:
        """A new API user: (its id, its token, shown once)."""
        return self.users.create_user()

    def token_owner(self, token: str) -> str | None:
        """The id of the user this API token belongs to, or None."""
        return self.users.token_owner(token)

    def user(self, user_id: str) -> dict[str, Any] | None:
        """What is stored about a user: consent, per-category strategies and event counts (None if unknown)."""
        return self.users.user(user_id)

    def forget(self, user_id: str) -> int:
        """Delete everything stored about a user; returns the number of events removed."""
        return self.users.forget(user_id)


def _categories(categories: Sequence[str] | str | None) -> list[str]:
    if categories is None:
        return list(CATEGORIES)
    names = [categories] if isinstance(categories, str) else list(categories)
    return [checked_category(name) for name in names]


def open_database(url: str | None = None) -> Engine:
    """The catalog database at ``url`` (default: EMOTORCH_DB or the user data dir), upgraded to the
    newest schema; a newly created one is filled with the starter catalog."""
    return connect(url, on_create=lambda engine: import_file(engine, STARTER_CATALOG))
