"""What the recommender learns, over plain counts and arrays (no database): each item's LinUCB arm in the
emotion context, and which strategy (match or uplift) earns more clicks per category and mood sign."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from emotorch.choices import CATEGORIES, LEARNED_STRATEGIES

DEFAULT_STRATEGY = {"product": "uplift", "place": "uplift", "food": "uplift", "song": "match", "movie": "match"}
PRIOR_STRENGTH = 10.0  # how many of a user's own impressions weigh as much as everyone's rate
MIN_STRATEGY_CLICKS = 3  # clicks in a category before ``auto`` may depart from its default strategy
STRATEGY_BONUS = 0.3  # weight of the UCB1 exploration bonus a user who has clicked gets per strategy
ARM_PRIOR = 5.0  # ridge strength of an item's bandit arm: pseudo-impressions without a click

Counts = tuple[int, int]  # (impressions, clicks)


def arm_stats(a: list | None, b: list | None, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """An arm's (A, b) in a ``dim``-sized context (the identity and zeros for a new one); arms stored before
    contempt joined the context (7 probabilities and a bias) get its row and column as if never seen."""
    if a is None:
        return np.eye(dim), np.zeros(dim)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(b) == dim - 1:  # insert contempt before the bias term
        a = np.insert(np.insert(a, dim - 2, 0.0, axis=0), dim - 2, 0.0, axis=1)
        a[dim - 2, dim - 2] = 1.0
        b = np.insert(b, dim - 2, 0.0)
    return a, b


def updated_arm(
    a: np.ndarray, b: np.ndarray, x: np.ndarray, *, shown: bool, clicked: bool
) -> tuple[np.ndarray, np.ndarray]:
    """An arm after one event in context ``x``: a showing adds ``x x^T`` to A, a click adds ``x`` to b."""
    return (a + np.outer(x, x) if shown else a), (b + x if clicked else b)


def ucb(a: np.ndarray, b: np.ndarray, x: np.ndarray, *, prior: float, alpha: float, weight: float) -> float:
    """LinUCB: the expected click rate in context ``x`` (ridge-shrunk toward 0 by ``prior`` pseudo-impressions
    and clipped to [0, 1]) times ``weight``, plus ``alpha`` times the exploration bonus."""
    a_inv = np.linalg.inv(a + (prior - 1) * np.eye(len(x)))  # stored arms start from the identity
    expected = float(np.clip(a_inv @ b @ x, 0.0, 1.0))
    return float(weight * expected + alpha * np.sqrt(x @ a_inv @ x))


def learned_strategies(
    everyone: Mapping[str, Mapping[str, Counts]], mine: Mapping[str, Counts], min_clicks: int = MIN_STRATEGY_CLICKS
) -> dict[str, str]:
    """The strategy per category that earned more clicks in moods of this sign, where it is not the default.

    ``everyone[category][strategy]`` counts everyone's impressions and clicks; ``mine[strategy]`` an opted-in
    user's own, over all categories (someone who wants cheering up when sad wants it in songs and food
    alike). Only clicks are evidence: until a category has ``min_clicks`` of them, ``auto`` keeps the
    default. Each strategy's click rate is shrunk toward the category's pooled rate, so a strategy nobody
    has tried ties with the default (which then wins); only a user who has clicked gets a UCB1 bonus, so
    the alternative keeps being tried for them.
    """
    mine = {s: mine.get(s, (0, 0)) for s in LEARNED_STRATEGIES}
    own_clicks = sum(c for _, c in mine.values())
    learned = {}
    for category in CATEGORIES:
        counts = {s: everyone.get(category, {}).get(s, (0, 0)) for s in LEARNED_STRATEGIES}
        if sum(c for _, c in counts.values()) + own_clicks < min_clicks:
            continue
        pooled = (sum(c for _, c in counts.values()) + 1) / (sum(n for n, _ in counts.values()) + 2)
        seen = sum(n for n, _ in counts.values()) + sum(n for n, _ in mine.values())
        value = {}
        for s in LEARNED_STRATEGIES:
            (n_all, c_all), (n_me, c_me) = counts[s], mine[s]
            prior = (c_all + PRIOR_STRENGTH * pooled) / (n_all + PRIOR_STRENGTH)
            rate = (c_me + PRIOR_STRENGTH * prior) / (n_me + PRIOR_STRENGTH)
            bonus = STRATEGY_BONUS * np.sqrt(np.log(seen + 1) / (n_all + n_me + 1)) if own_clicks else 0.0
            value[s] = rate + bonus
        default = DEFAULT_STRATEGY[category]
        best = max(LEARNED_STRATEGIES, key=lambda s: (value[s], s == default))
        if best != default:
            learned[category] = best
    return learned
