"""Every read and write of the recommender's data: the catalog's items, events, users and their consent,
preferences, learned statistics and bandit arms; forgetting a user. One transaction per write, retried
when a concurrent request created the same new row first."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from emotorch.choices import FEEDBACK_KINDS
from emotorch.recommend.db import BanditArm, Event, Item, Preference, StrategyStat, User, checkpoint, writing
from emotorch.recommend.learning import Counts, arm_stats, updated_arm
from emotorch.recommend.mood import Mood

# What a user or session id may be: the API refuses others, and ``*`` (everyone's statistics) is never one
ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
TOKEN_BYTES = 32  # an API user's token: 256 random bits
EVERYONE = "*"  # the scope of statistics pooled over every viewer


class ItemNotFound(ValueError):
    """Feedback named an item that is not in the catalog."""


def check_id(user_id: str) -> str:
    """``user_id`` if it is a valid id, else ValueError (``*`` names everyone's statistics, never a user)."""
    if not re.fullmatch(ID_PATTERN, user_id):
        raise ValueError(f"{user_id!r} is not a user id: 1-128 letters, digits, '_', '.', ':' or '-'")
    return user_id


def token_digest(token: str) -> str:
    """What the database keeps of a token: its sha256, so a copy of the database grants no access."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def _who(user_id: str | None, session_id: str | None):
    """The events of this user, else of this session, else None (an anonymous viewer has no history)."""
    if user_id is not None:
        return Event.user_id == user_id
    if session_id is not None:
        return Event.session_id == session_id
    return None


@dataclass
class Reading:
    """What one recommendation reads from the database (:meth:`Store.reading`)."""

    items: list[Item]
    seen: set[str]  # items this viewer was shown lately
    preferences: dict[str, str]  # category -> the user's chosen strategy
    counts: tuple[dict[str, dict[str, Counts]], dict[str, Counts]]  # everyone's and the user's strategy counts
    tag_events: list[tuple[str, str]]  # (kind, the item's comma-separated tags) of this viewer's events
    arms: dict[str, BanditArm]


class Store:
    """The recommender's database: ``recent`` is how long a viewer's impressions keep an item out."""

    def __init__(self, engine: Engine, recent: timedelta = timedelta(hours=24)) -> None:
        self.engine, self.recent = engine, recent

    def reading(self, categories: list[str], user_id: str | None, session_id: str | None, negative: bool) -> Reading:
        """Everything one recommendation reads, in one session: the categories' items, what this viewer saw
        lately, the user's chosen strategies, the strategy counts in moods of this sign, the viewer's events
        with their items' tags, and the items' bandit arms."""
        with Session(self.engine) as session:
            items = list(session.scalars(select(Item).where(Item.category.in_(categories)).order_by(Item.id)))
            who = _who(user_id, session_id)
            seen, tags = set(), []
            if who is not None:
                since = datetime.now(UTC) - self.recent
                recent = select(Event.item_id).where(who, Event.kind == "impression", Event.created_at >= since)
                seen = set(session.scalars(recent))
                tags = [
                    tuple(r)
                    for r in session.execute(
                        select(Event.kind, Item.tags).join(Item, Item.id == Event.item_id).where(who)
                    )
                ]
            return Reading(
                items=items,
                seen=seen,
                preferences=_preferences(session, user_id),
                counts=_strategy_counts(session, user_id, negative),
                tag_events=tags,
                arms=_arms(session, [it.id for it in items]),
            )

    # --- feedback ----------------------------------------------------------------------------

    def require_item(self, item_id: str) -> None:
        with Session(self.engine) as session:
            if session.get(Item, item_id) is None:
                raise ItemNotFound(f"no item {item_id!r} in the catalog")

    def record(
        self, current: Mood, shown: list[tuple[str, str | None]], kind: str, user_id: str | None, session_id: str | None
    ) -> None:
        """Store events for (item id, strategy) pairs and update the items' bandit arms and strategy counts.
        The emotion context is stored, and the user's own counts kept, only with the user's consent."""
        x = current.context()
        item_ids = [item_id for item_id, _ in shown]

        def work(session: Session) -> None:
            user = session.get(User, user_id) if user_id else None
            if user_id and user is None:
                user = User(id=user_id)
                session.add(user)
            keep_context = bool(user and user.opted_in)  # emotion data only with consent
            arms = _arms(session, item_ids, lock=True)  # read-modify-write: no update is lost
            scopes = [EVERYONE] + ([user_id] if keep_context else [])  # per-user learning only with consent
            for item_id, strategy in shown:
                was_shown = kind == "impression"
                if kind != "impression":  # credit the strategy that showed this item to this viewer
                    was_shown, strategy = _shown_by(session, item_id, user_id, session_id)
                session.add(
                    Event(
                        user_id=user_id,
                        session_id=session_id,
                        item_id=item_id,
                        kind=kind,
                        strategy=strategy,
                        context=list(current.probs) if keep_context else None,
                    )
                )
                if strategy is not None:
                    _count(session, scopes, item_id, current.negative, strategy, kind)
                arm = arms.get(item_id) or BanditArm(item_id=item_id)
                a, b = arm_stats(arm.a, arm.b, len(x))
                # a click on an unrecorded showing: it was seen too
                a, b = updated_arm(a, b, x, shown=kind == "impression" or not was_shown, clicked=kind != "impression")
                arm.a, arm.b = a.tolist(), b.tolist()
                session.add(arm)

        write(self.engine, work)


def _preferences(session: Session, user_id: str | None) -> dict[str, str]:
    """The user's chosen strategy per category."""
    if user_id is None:
        return {}
    return {p.category: p.strategy for p in session.scalars(select(Preference).where(Preference.user_id == user_id))}


def _strategy_counts(
    session: Session, user_id: str | None, negative: bool
) -> tuple[dict[str, dict[str, Counts]], dict[str, Counts]]:
    """(impressions, clicks) per category and strategy for everyone, and per strategy for the user (over all
    categories), in moods of this sign."""
    scopes = [EVERYONE] + ([user_id] if user_id else [])
    rows = session.scalars(
        select(StrategyStat).where(StrategyStat.scope.in_(scopes), StrategyStat.negative == negative)
    )
    everyone: dict[str, dict[str, Counts]] = {}
    mine: dict[str, Counts] = {}
    for r in rows:
        if r.scope == EVERYONE:
            everyone.setdefault(r.category, {})[r.strategy] = (r.impressions, r.clicks)
        elif r.category == EVERYONE:
            mine[r.strategy] = (r.impressions, r.clicks)
    return everyone, mine


def _arms(session: Session, item_ids: list[str], lock: bool = False) -> dict[str, BanditArm]:
    """The items' bandit arms; ``lock`` holds their rows (FOR UPDATE) until the transaction ends."""
    query = select(BanditArm).where(BanditArm.item_id.in_(item_ids)).order_by(BanditArm.item_id)
    return {a.item_id: a for a in session.scalars(query.with_for_update() if lock else query)}


def _shown_by(session: Session, item_id: str, user_id: str | None, session_id: str | None) -> tuple[bool, str | None]:
    """Whether this viewer has a recorded impression of the item, and the strategy that showed it."""
    who = _who(user_id, session_id)
    if who is None:
        return False, None
    query = (
        select(Event.id, Event.strategy)
        .where(who, Event.item_id == item_id, Event.kind == "impression")
        .order_by(Event.id.desc())
        .limit(1)
    )
    row = session.execute(query).first()
    return (True, row.strategy) if row else (False, None)


def _count(session: Session, scopes: list[str], item_id: str, negative: bool, strategy: str, kind: str) -> None:
    """Count an impression or click for the strategy: per category for everyone, over all categories per user."""
    category = session.get(Item, item_id).category
    for scope in scopes:
        key = (scope, category if scope == EVERYONE else EVERYONE, negative, strategy)
        stat = session.get(StrategyStat, key, with_for_update=True)
        if stat is None:
            stat = StrategyStat(
                scope=key[0], category=key[1], negative=negative, strategy=strategy, impressions=0, clicks=0
            )
            session.add(stat)
        if kind == "impression":
            stat.impressions += 1
        elif kind == "click":  # a like usually follows a click: count each shown item once
            stat.clicks += 1


def write(engine: Engine, work: Callable[[Session], None], attempts: int = 4) -> None:
    """Run ``work`` in one transaction; when a concurrent request created the same new row first
    (a user, an item's bandit arm, a strategy counter), run it again: the row now exists."""
    for attempt in range(attempts):
        try:
            with writing(engine) as session:
                work(session)
            return
        except IntegrityError:
            if attempt == attempts - 1:
                raise


class Users:
    """Users, their tokens, consent and choices, and forgetting them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def set_user(self, user_id: str, opted_in: bool | None, strategies: Mapping[str, str]) -> None:
        """Create or update a user: consent to storing emotion context, per-category strategies."""

        def work(session: Session) -> None:
            user = session.get(User, user_id) or User(id=user_id, opted_in=False)
            if opted_in is not None:
                user.opted_in = opted_in
            session.add(user)
            for category, strat in strategies.items():
                session.merge(Preference(user_id=user_id, category=category, strategy=strat))

        write(self.engine, work)

    def create_user(self) -> tuple[str, str]:
        """A new API user: (its id, its token). Only the token's sha256 is stored; the token is shown once."""
        user_id, token = f"u-{secrets.token_hex(12)}", secrets.token_urlsafe(TOKEN_BYTES)
        write(
            self.engine, lambda session: session.add(User(id=user_id, opted_in=False, token_sha256=token_digest(token)))
        )
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
            opted_in, prefs = bool(user.opted_in), _preferences(session, user_id)
            kinds = Counter(session.scalars(select(Event.kind).where(Event.user_id == user_id)))
        return {
            "user_id": user_id,
            "opted_in": opted_in,
            "strategies": dict(sorted(prefs.items())),
            "events": {k: kinds.get(k, 0) for k in FEEDBACK_KINDS},
        }

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
