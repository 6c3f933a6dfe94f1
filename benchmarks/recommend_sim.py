"""Offline evaluation of the recommender: simulated users whose taste depends on their mood.

    python benchmarks/recommend_sim.py [--rounds 3000] [--users 100] [--seed 0] [--seeds 1]

The user model (seeded, so every run prints the same table):
- each item has a hidden appeal q ~ N(0, 0.6), shared by everyone;
- each user has three favourite tags and a type: 60% are "uplifters" who, when sad, angry,
  afraid or disgusted, want items near that emotion's uplift point, the rest want items that
  match their mood; every user's preferred point is shifted by their own offset (±0.25);
- a round draws a user, an emotion (FER2013's class frequencies) and a noisy probability
  vector around it (top probability 0.5-0.95), and a category; the policy shows 5 items and the
  user clicks each with probability sigmoid(-3 + 3 closeness + q + 1.2 [a favourite tag]).

Policies: random items; the static mood mapping (the Recommender's ``auto`` strategy with no
feedback); the learning Recommender (the same, plus impressions and clicks fed back: LinUCB
over the emotion vector, per-user tag affinity, strategies learned from clicks); and, for
comparison, the learning Recommender without shrinkage (``unshrunk``: a ridge of 1 on each
item's arm, one pseudo-impression per tag, strategies chosen before any click), which lets a
single like outweigh the mood. Repeat suppression is off (recent_hours=0) so all choose from
the same items every round. Prints click-through per block of rounds; with ``--seeds N`` the
mean over N seeds (users and rounds drawn anew) and each policy's spread across them.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from emotorch.choices import CATEGORIES, CLASSES
from emotorch.recommend import Recommender, list_items, mood
from emotorch.recommend.mood import EMOTION_VA, UPLIFT_VA

FER_FREQ = np.array([3995, 436, 4097, 7215, 4965, 4830, 3171], float)
NEGATIVE = {"angry", "disgust", "fear", "sad"}


class Users:
    def __init__(self, n: int, items: list[dict], rng: np.random.Generator) -> None:
        tags = sorted({t for it in items for t in it["tags"]})
        self.uplifter = rng.random(n) < 0.6
        self.offset = rng.uniform(-0.25, 0.25, size=(n, 2))
        self.favourites = [set(rng.choice(tags, 3, replace=False)) for _ in range(n)]
        self.appeal = {it["id"]: rng.normal(0, 0.6) for it in items}

    def click_prob(self, u: int, emotion: str, item: dict) -> float:
        table = UPLIFT_VA if self.uplifter[u] and emotion in NEGATIVE else EMOTION_VA
        target = np.asarray(table[emotion]) + self.offset[u]
        d2 = (item["valence"] - target[0]) ** 2 + (item["arousal"] - target[1]) ** 2
        closeness = np.exp(-d2 / (2 * 0.3**2))
        logit = -3 + 3 * closeness + self.appeal[item["id"]] + 1.2 * bool(self.favourites[u] & set(item["tags"]))
        return float(1 / (1 + np.exp(-logit)))


POLICIES = {
    "random": {},
    "static": {},
    "learning": {},
    "unshrunk": {"arm_prior": 1.0, "tag_prior": 1.0, "min_strategy_clicks": 0},
}


def simulate(policy: str, args: argparse.Namespace, db: str, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)  # the same users and rounds for every policy
    rec = Recommender(db, recent_hours=0.0, **POLICIES[policy])
    for u in range(args.users):  # simulated users consent to storing their emotion context
        rec.set_user(f"user{u}", opted_in=True)
    items = list_items(rec.engine)
    by_category = {c: [it for it in items if it["category"] == c] for c in CATEGORIES}
    users = Users(args.users, items, rng)
    click_rng = np.random.default_rng(seed + 1)
    pick_rng = np.random.default_rng(seed + 2)
    clicks = np.zeros(args.rounds)
    for t in range(args.rounds):
        u = int(rng.integers(args.users))
        e = int(rng.choice(len(CLASSES), p=FER_FREQ / FER_FREQ.sum()))
        top = rng.uniform(0.5, 0.95)
        probs = rng.dirichlet(np.ones(len(CLASSES))) * (1 - top)
        probs[e] += top
        category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        current = mood(probs=probs.tolist())
        learning = policy in ("learning", "unshrunk")
        if policy == "random":
            shown = [by_category[category][i] for i in pick_rng.choice(len(by_category[category]), 5, replace=False)]
        else:
            recs = rec.recommend(
                current, categories=category, n=5, user_id=f"user{u}" if learning else None, record=learning
            )
            shown = [r.item for r in recs]
        for item in shown:
            if click_rng.random() < users.click_prob(u, CLASSES[e], item):
                clicks[t] += 1
                if learning:
                    rec.feedback(item["id"], "click", current, user_id=f"user{u}")
    return [float(b.sum() / (5 * len(b))) for b in np.array_split(clicks, args.blocks)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1, help="average over this many seeds from --seed on")
    args = parser.parse_args()
    results = {p: [] for p in POLICIES}
    with tempfile.TemporaryDirectory(prefix="emotorch-sim-") as tmp:
        for seed in range(args.seed, args.seed + args.seeds):
            for policy in POLICIES:
                db = f"sqlite:///{Path(tmp) / f'{policy}-{seed}'}.db"
                results[policy].append(simulate(policy, args, db, seed * 10))
    size = args.rounds // args.blocks
    header = "".join(f"{f'rounds {i * size + 1}-{(i + 1) * size}':>18}" for i in range(args.blocks))
    print(
        f"click-through rate per shown item, {args.users} users, {args.rounds} rounds of 5 items, {args.seeds} seed(s)"
    )
    print(f"{'policy':<12}{header}{'overall':>10}{'min-max over seeds':>22}")
    for policy, runs in results.items():
        ctr, overall = np.mean(runs, 0), np.mean(runs, 1)
        spread = f"{overall.min():.3f}-{overall.max():.3f}"
        print(f"{policy:<12}" + "".join(f"{c:>18.3f}" for c in ctr) + f"{overall.mean():>10.3f}{spread:>22}")


if __name__ == "__main__":
    main()
