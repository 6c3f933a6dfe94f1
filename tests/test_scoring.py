"""The recommender's scoring and learning on plain numbers: no database."""

from __future__ import annotations

import numpy as np
import pytest

from emotorch.recommend import mood
from emotorch.recommend.learning import DEFAULT_STRATEGY, arm_stats, learned_strategies, ucb, updated_arm
from emotorch.recommend.mood import EMOTION_VA, UPLIFT_VA
from emotorch.recommend.scoring import clarity, closeness, diverse_top, reason, tag_affinity, tag_bonus, targets


def test_an_unclear_mood_aims_at_neutral_and_a_clear_one_at_its_own_point():
    flat = mood(probs=[1 / 8] * 8)
    assert clarity(flat.confidence) == 0.0 and clarity(0.9) == 1.0
    aims = targets(flat, clarity(flat.confidence))
    np.testing.assert_allclose(aims["match"], EMOTION_VA["neutral"])
    sad = mood("sad")
    np.testing.assert_allclose(targets(sad, 1.0)["uplift"], UPLIFT_VA["sad"])
    assert closeness(*UPLIFT_VA["sad"], targets(sad, 1.0)["uplift"]) == pytest.approx(1.0)
    assert closeness(*EMOTION_VA["happy"], targets(sad, 1.0)["match"]) < 0.01


def test_one_like_moves_a_tag_a_little_and_repeated_picks_make_it_stand_out():
    once, base = tag_affinity([("impression", "jazz,calm"), ("like", "jazz")])
    assert once["jazz"][0] > base and once["jazz"][0] - base < 0.2
    events = [("impression", "jazz"), ("click", "jazz")] * 4 + [("impression", "rock")] * 8
    often, base = tag_affinity(events)
    bonus, liked = tag_bonus({"jazz"}, often, base)
    assert bonus > 0.2 and liked == "jazz"
    assert tag_bonus({"rock"}, often, base)[0] < 0 and tag_bonus({"folk"}, often, base) == (0.0, None)


def test_the_diverse_pick_passes_over_a_near_duplicate():
    tags = {"a": frozenset({"jazz", "calm"}), "b": frozenset({"jazz", "calm"}), "c": frozenset({"rock"})}
    picked = diverse_top([(1.0, "a"), (0.95, "b"), (0.7, "c")], 2, tags.__getitem__, diversity=0.5)
    assert [item for _, item in picked] == ["a", "c"]


def test_clicks_raise_an_arms_expected_rate_most_in_their_own_mood():
    x_sad, x_happy = mood("sad").context(), mood("happy").context()
    a, b = arm_stats(None, None, len(x_sad))
    before = ucb(a, b, x_sad, prior=5.0, alpha=0.0, weight=1.0)
    for _ in range(5):
        a, b = updated_arm(a, b, x_sad, shown=True, clicked=True)
    sad = ucb(a, b, x_sad, prior=5.0, alpha=0.0, weight=1.0)
    assert sad > before + 0.3
    assert ucb(a, b, x_happy, prior=5.0, alpha=0.0, weight=1.0) < sad - 0.2  # only the bias term is shared
    old_a, old_b = np.eye(8).tolist(), [0.0] * 8  # an arm stored before contempt joined the context
    assert arm_stats(old_a, old_b, 9)[0].shape == (9, 9)


def test_strategies_change_only_on_enough_clicks():
    songs = DEFAULT_STRATEGY["song"]
    other = "uplift" if songs == "match" else "match"
    assert learned_strategies({"song": {other: (10, 2)}}, {}) == {}  # fewer than 3 clicks: the default holds
    assert learned_strategies({"song": {other: (40, 20), songs: (40, 1)}}, {}) == {"song": other}
    assert learned_strategies({}, {}) == {}


def test_the_reason_names_the_mood_and_the_item():
    text = reason(mood("sad"), 1.0, "song", "Bill Withers: a soul classic", "uplift", "soul")
    assert text == "you seem sad: a comforting song - Bill Withers (you often pick soul)"
    assert reason(mood("sad"), 0.2, "food", "", "match", None) == "your mood is hard to read: a well-liked dish"
