"""The recommender's database: SQLAlchemy models, the default location and Alembic migrations.

SQLite under the user's data directory by default; ``EMOTORCH_DB`` or ``--db`` take any
SQLAlchemy URL (PostgreSQL for scale). :func:`connect` upgrades a database to the newest schema
with Alembic, so an existing database keeps its data across versions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import platformdirs
from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from emotorch.choices import CATEGORIES, CATEGORY_NAMES
from emotorch.errors import DatabaseUnavailable

MIGRATIONS = Path(__file__).with_name("migrations")
BUSY_TIMEOUT_S = 10.0  # how long a SQLite writer waits for another writer before giving up


def canonical_category(name: str) -> str | None:
    """``songs`` or ``Song`` -> ``song``; None for a name that is no category."""
    n = name.strip().lower()
    n = n.removesuffix("s") if n not in CATEGORIES else n
    return n if n in CATEGORIES else None


def checked_category(name: str) -> str:
    """The canonical category for a name users may write (``songs``, ``Song``); ValueError for others."""
    category = canonical_category(name)
    if category is None:
        raise ValueError(f"unknown category {name!r}; expected one of {', '.join(CATEGORY_NAMES)}")
    return category


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Item(Base):
    """A catalog entry placed in Russell's valence/arousal plane."""

    __tablename__ = "items"
    id: Mapped[str] = mapped_column(String(120), primary_key=True)
    category: Mapped[str] = mapped_column(String(16), index=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[str] = mapped_column(Text, default="")  # comma-separated, lower case
    valence: Mapped[float] = mapped_column(Float)
    arousal: Mapped[float] = mapped_column(Float)
    price: Mapped[float | None] = mapped_column(Float, nullable=True)
    url: Mapped[str | None] = mapped_column(Text, nullable=True)
    image_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    locale: Mapped[str] = mapped_column(String(16), default="")

    @property
    def tag_set(self) -> frozenset[str]:
        return frozenset(t for t in self.tags.split(",") if t)


class User(Base):
    """A known user; emotion context is stored only for those who opted in."""

    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(120), primary_key=True)
    opted_in: Mapped[bool] = mapped_column(Boolean, default=False)
    # sha256 of the API token the server issued (POST /v1/users); None: made by the operator, no API access
    token_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Preference(Base):
    """A user's strategy per category for the ``auto`` strategy."""

    __tablename__ = "preferences"
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    category: Mapped[str] = mapped_column(String(16), primary_key=True)
    strategy: Mapped[str] = mapped_column(String(16))


class Event(Base):
    """One impression, click or like, with the emotion context it happened in (if allowed)."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str | None] = mapped_column(String(120), index=True, nullable=True)
    session_id: Mapped[str | None] = mapped_column(String(120), index=True, nullable=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    strategy: Mapped[str | None] = mapped_column(String(16), nullable=True)  # match | uplift, on impressions
    context: Mapped[list[float] | None] = mapped_column(JSON, nullable=True)  # emotion probabilities
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, index=True)


class BanditArm(Base):
    """LinUCB statistics of one item over all users: A = I + sum x x^T, b = sum r x."""

    __tablename__ = "bandit_arms"
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    a: Mapped[list[list[float]]] = mapped_column(JSON)
    b: Mapped[list[float]] = mapped_column(JSON)


class StrategyStat(Base):
    """Impressions and clicks of one strategy in one mood sign: per category for everyone (scope
    ``*``), or over all categories (category ``*``) for one opted-in user (scope = user id)."""

    __tablename__ = "strategy_stats"
    scope: Mapped[str] = mapped_column(String(120), primary_key=True)
    category: Mapped[str] = mapped_column(String(16), primary_key=True)
    negative: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    strategy: Mapped[str] = mapped_column(String(16), primary_key=True)
    impressions: Mapped[int] = mapped_column(Integer, default=0)
    clicks: Mapped[int] = mapped_column(Integer, default=0)


def default_url() -> str:
    """``EMOTORCH_DB``, else a SQLite file in the user's data directory."""
    if url := os.environ.get("EMOTORCH_DB"):
        return as_url(url)
    path = Path(platformdirs.user_data_dir("emotorch")) / "emotorch.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def as_url(database: str) -> str:
    """A SQLAlchemy URL as given, or a plain file path (``/data/x.db``, ``x.db``) as a SQLite URL."""
    return database if "://" in database else f"sqlite:///{Path(database).expanduser().absolute()}"


def safe_url(url: object) -> str:
    """``url`` fit to print: its password replaced by ``***``, even where SQLAlchemy cannot parse it."""
    text_url = url.render_as_string(hide_password=True) if hasattr(url, "render_as_string") else str(url)
    return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", text_url)


def describe(engine_or_url: Engine | str, error: BaseException) -> DatabaseUnavailable:
    """A one-line :class:`DatabaseUnavailable` for ``error`` (the driver's own message, password hidden)."""
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else engine_or_url
    name = safe_url(url)
    cause = getattr(error, "orig", None) or error
    reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    reason = reason.replace(str(url), name) if str(url) else reason  # drivers may quote the URL back
    return DatabaseUnavailable(f"database {name}: {reason}")


def connect(
    url: str | None = None, *, revision: str = "head", on_create: Callable[[Engine], None] | None = None
) -> Engine:
    """An engine on ``url`` whose schema has been upgraded to ``revision`` (default: newest).

    ``on_create`` runs once, right after a database is created (to load the starter catalog).
    A database that cannot be opened or upgraded raises :class:`DatabaseUnavailable`.
    """
    logging.getLogger("alembic").setLevel(logging.WARNING)  # no migration chatter on every command
    # Alembic (about 0.1 s): only where a database is opened, not for the page's or the CLI's start
    from alembic import command
    from alembic.config import Config

    url = as_url(url) if url else default_url()
    try:
        engine = create_engine(url)
    except (SQLAlchemyError, ValueError, ImportError) as e:  # an unknown scheme or a malformed URL
        raise describe(url, e) from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    try:
        created = schema_revision(engine) is None
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        if created and on_create is not None:
            on_create(engine)
    except (SQLAlchemyError, OSError) as e:
        engine.dispose()
        raise describe(engine, e) from None
    return engine


_WRITERS: dict[str, threading.Lock] = {}  # one per SQLite database: this process's writers take turns
_WRITERS_GUARD = threading.Lock()


def _writer_lock(engine: Engine) -> contextlib.AbstractContextManager:
    """On SQLite, a lock this process's writers queue on: a waiting writer wakes the moment the one before it
    commits, where SQLite's busy handler polls with growing sleeps (writes under load waited seconds and
    some past the busy timeout). Other databases queue writers themselves."""
    if engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    with _WRITERS_GUARD:
        return _WRITERS.setdefault(str(engine.url), threading.Lock())


@contextlib.contextmanager
def writing(engine: Engine) -> Iterator[Session]:
    """A session in a write transaction, committed at the end. On SQLite it starts with
    ``BEGIN IMMEDIATE``: concurrent writers queue (this process's on a lock, others' for up to
    :data:`BUSY_TIMEOUT_S`) instead of reading the same row and losing one of two updates; on
    PostgreSQL rows are locked with FOR UPDATE."""
    with _writer_lock(engine), Session(engine) as session, session.begin():
        session.connection(execution_options={"emotorch_write": True})  # the BEGIN, with the write flag
        yield session


def writable(engine: Engine) -> str | None:
    """None when the database can be written now, else why not (one line): a health check that
    takes the write lock and writes nothing."""
    try:
        with writing(engine) as session:
            session.execute(text("UPDATE alembic_version SET version_num = version_num WHERE 1 = 0"))
    except SQLAlchemyError as e:
        return str(describe(engine, e))
    return None


def schema_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext  # Alembic: as above

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _sqlite_connect(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # transactions are begun by _sqlite_begin, not by the driver
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer; a killed import rolls back
    cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")  # a writer waits for another one
    cur.execute("PRAGMA secure_delete=ON")  # deleted rows (a forgotten user) are overwritten, not left readable
    cur.close()


def _sqlite_begin(conn) -> None:
    """BEGIN IMMEDIATE for writes (the write lock first, then the reads), plain BEGIN for reads."""
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("emotorch_write") else "BEGIN")


def checkpoint(engine: Engine) -> None:
    """Fold SQLite's write-ahead log into the database and empty it, so deleted rows leave no copy there."""
    if engine.dialect.name == "sqlite":
        raw = engine.raw_connection()  # outside any transaction: a checkpoint waits for none
        try:
            raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()
