from __future__ import annotations

import csv
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from emotorch.recommend import CatalogError, Recommender, export, import_file, list_items, mood, open_database
from emotorch.recommend.catalog import STARTER_CATALOG
from emotorch.recommend.db import Event, Item, StrategyStat, connect, schema_revision
from emotorch.recommend.scoring import NEAR_DUPLICATE, jaccard


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'emotorch.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request, tmp_path):
    """The same tests on the embedded default and on a real PostgreSQL server (a fresh database each)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'emotorch.db'}"
    from sqlalchemy import create_engine, text

    server = request.getfixturevalue("postgres_url")
    name = f"t{abs(hash(request.node.nodeid)) % 10**9}"
    with create_engine(server, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    return server.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def rec(db_url):
    return Recommender(db_url)


def titles(recs):
    return [r.title for r in recs]


def count_items(engine) -> int:
    with Session(engine) as s:
        return s.scalar(select(func.count()).select_from(Item))


def test_starter_catalog_has_sixty_items_per_category(rec):
    items = list_items(rec.engine)
    for category in ("product", "place", "food", "song", "movie"):
        assert sum(it["category"] == category for it in items) >= 60
    assert all(-1 <= it["valence"] <= 1 and -1 <= it["arousal"] <= 1 and it["tags"] for it in items)


def test_probabilities_are_checked_not_silently_renormalised():
    assert mood(probs={"sad": 0.97, "happy": 0.02}).probs[5] == pytest.approx(0.97 / 0.99)  # close to 1: renormalised
    for bad, message in (
        ({"sad": 2}, "within \\[0, 1\\]"),
        ({"sad": 0.5}, "sum to 0.5"),
        ({"sad": 0.9, "happy": 0.9}, "sum to 1.8"),
        ({"sad": float("nan")}, "within"),
        ({"sad": 1e308, "happy": 1e308}, "within"),
    ):
        with pytest.raises(ValueError, match=message):
            mood(probs=bad)
    res = cli("recommend", "--probs", '{"sad": 2}')
    assert res.returncode == 2 and "within [0, 1]" in res.stderr


def test_different_emotions_give_different_lists(rec):
    lists = {
        e: set(titles(rec.recommend(mood(e), categories="song", n=5, strategy="match", record=False)))
        for e in ("happy", "sad", "angry", "neutral")
    }
    for a in lists:
        for b in lists:
            if a < b:
                assert len(lists[a] & lists[b]) <= 1, (a, b)


def test_uplift_for_sad_differs_from_match_and_lifts_valence(rec):
    match = rec.recommend(mood("sad"), categories="song", n=5, strategy="match", record=False)
    uplift = rec.recommend(mood("sad"), categories="song", n=5, strategy="uplift", record=False)
    assert not set(titles(match)) & set(titles(uplift))
    assert min(r.item["valence"] for r in uplift) > max(r.item["valence"] for r in match)
    assert all("comforting" in r.reason for r in uplift) and all("to match" in r.reason for r in match)


def test_low_confidence_falls_back_near_neutral(rec):
    unsure = rec.recommend(mood(probs=[1 / 7] * 7), categories="food", n=5, record=False)
    assert all("hard to read" in r.reason for r in unsure)
    assert all(abs(r.item["arousal"]) <= 0.6 for r in unsure)


def test_lists_are_diverse(rec):
    for emotion in ("happy", "sad", "fear"):
        recs = rec.recommend(mood(emotion), n=8, record=False)
        tags = [frozenset(r.item["tags"]) for r in recs]
        assert all(jaccard(a, b) < NEAR_DUPLICATE for i, a in enumerate(tags) for b in tags[i + 1 :])


def test_no_repeats_for_the_same_user_or_session(rec):
    first = titles(rec.recommend(mood("happy"), categories="movie", n=5, user_id="u1"))
    second = titles(rec.recommend(mood("happy"), categories="movie", n=5, user_id="u1"))
    assert not set(first) & set(second)
    other = titles(rec.recommend(mood("happy"), categories="movie", n=5, session_id="s9", record=False))
    anonymous = titles(rec.recommend(mood("happy"), categories="movie", n=5, record=False))
    assert other == anonymous  # what u1 saw is left out for u1 alone


def test_feedback_changes_later_recommendations(any_db):
    rec = Recommender(any_db)

    def score(emotion: str, item_id: str) -> float:
        ranked = rec.recommend(mood(emotion), categories="food", n=60, strategy="uplift", record=False)
        return next(r.score for r in ranked if r.id == item_id)

    before = rec.recommend(mood("sad"), categories="food", n=5, strategy="uplift", record=False)
    target = next(it for it in list_items(rec.engine, "food") if it["id"] not in {r.id for r in before})
    sad_before, happy_before = score("sad", target["id"]), score("happy", target["id"])
    for i in range(12):  # many sad viewers click this dish
        rec.feedback(target["id"], "impression", mood("sad"), session_id=f"s{i}")
        rec.feedback(target["id"], "click", mood("sad"), session_id=f"s{i}")
    after = rec.recommend(mood("sad"), categories="food", n=5, strategy="uplift", record=False)
    assert target["id"] in {r.id for r in after}
    # the bandit's context is the emotion vector: the gain is largest in the mood it was earned in
    assert score("sad", target["id"]) - sad_before > score("happy", target["id"]) - happy_before


def test_user_tag_affinity_shows_in_the_reason(rec):
    for i in range(6):
        recs = rec.recommend(mood("neutral"), categories="song", n=5, user_id="fan")
        for r in recs:
            if "jazz" in r.item["tags"] or i == 0:
                rec.feedback(r.id, "click", mood("neutral"), user_id="fan")
    jazz = [it["id"] for it in list_items(rec.engine, "song") if "jazz" in it["tags"]]
    for j in jazz:
        rec.feedback(j, "click", mood("neutral"), user_id="fan")
    recs = rec.recommend(mood("neutral"), categories="song", n=5, user_id="fan", record=False)
    assert any("you often pick" in r.reason for r in recs)


def test_privacy_context_only_with_consent_and_forget(any_db):
    rec = Recommender(any_db)
    rec.recommend(mood("sad"), categories="song", n=2, user_id="anon-user")
    rec.set_user("consenting", opted_in=True)
    rec.recommend(mood("sad"), categories="song", n=2, user_id="consenting")
    with Session(rec.engine) as s:
        contexts = dict(s.execute(select(Event.user_id, Event.context)).all())
    assert contexts["anon-user"] is None and contexts["consenting"][5] == 1.0  # sad
    assert rec.forget("consenting") == 2
    with Session(rec.engine) as s:
        assert s.scalar(select(func.count()).where(Event.user_id == "consenting")) == 0


def test_auto_uses_the_users_preference(rec):
    default = rec.recommend(mood("sad"), categories="song", n=3, record=False)
    assert all(r.strategy == "match" for r in default)
    rec.set_user("u", strategies={"song": "uplift"})
    mine = rec.recommend(mood("sad"), categories="song", n=3, user_id="u", record=False)
    assert all(r.strategy == "uplift" for r in mine)
    with pytest.raises(ValueError, match="unknown strategy 'sideways'"):
        rec.set_user("u", strategies={"song": "sideways"})
    rec.set_user("u", strategies={"Movies": "uplift"})  # singular or plural, any case
    assert rec.user("u")["strategies"] == {"movie": "uplift", "song": "uplift"}
    with pytest.raises(ValueError, match="unknown category 'tunes'"):
        rec.set_user("u", strategies={"tunes": "match"})


def test_new_sessions_get_the_default_strategy_until_there_are_clicks(rec):
    """Impressions alone are no evidence: without clicks, ``auto`` never leaves the category default."""
    for i in range(30):
        for category, default in (("song", "match"), ("food", "uplift")):
            recs = rec.recommend(mood("sad"), categories=category, n=5, session_id=f"new-{i}")
            assert {r.strategy for r in recs} == {default}, (i, category)


def test_one_like_does_not_dominate_and_reasons_are_true(rec):
    item = "song:lean-on-me-bill-withers"
    ranked = rec.recommend(mood("sad"), categories="song", n=60, user_id="alice", record=False)
    before = {r.id: r.score for r in ranked}
    rec.feedback(item, "like", mood("sad"), user_id="alice")  # a like with no recorded impression
    ranked = rec.recommend(mood("sad"), categories="song", n=60, user_id="alice", record=False)
    after = {r.id: r.score for r in ranked}
    others = sorted((s for i, s in after.items() if i != item), reverse=True)
    assert after[item] - before[item] < 0.8  # a nudge: less than the range of the mood fit (0-1)
    assert after[item] < others[0]  # a song that does not match the mood does not jump to the top
    assert not any("often" in r.reason for r in ranked)  # one pick is not "often"
    for _ in range(4):  # repeated picks of the same kind of song do show, and are then "often"
        for r in rec.recommend(mood("sad"), categories="song", n=5, user_id="alice"):
            if "warm" in r.item["tags"]:
                rec.feedback(r.id, "click", mood("sad"), user_id="alice")
        rec.feedback(item, "click", mood("sad"), user_id="alice")
    ranked = rec.recommend(mood("sad"), categories="song", n=10, user_id="alice", record=False)
    assert any("you often pick warm" in r.reason for r in ranked)


def test_import_with_one_bad_row_changes_nothing(any_db, tmp_path):
    rec = Recommender(any_db)
    before = export(rec.engine)
    path = tmp_path / "new.csv"
    rows = [
        {"category": "song", "title": "Clocks (Coldplay)", "valence": "0.3", "arousal": "0.5", "tags": "rock;piano"},
        {"category": "song", "title": "Yellow (Coldplay)", "valence": "1.7", "arousal": "0.2", "tags": "rock"},
    ]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["category", "title", "valence", "arousal", "tags"])
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(CatalogError, match=r"row 2 \(line 3\), field 'valence': 1.7 is outside \[-1, 1\]"):
        import_file(rec.engine, path)
    assert export(rec.engine) == before


def test_import_error_lists_every_bad_row_up_to_a_limit(rec, tmp_path):
    path = tmp_path / "many.csv"
    lines = ["category,title,valence,arousal"] + [f"song,Song {i},{2 if i % 2 else 0},0" for i in range(50)]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CatalogError) as err:
        import_file(rec.engine, path)
    message = str(err.value)
    assert "25 bad row(s), nothing imported" in message
    assert "row 2 (line 3), field 'valence'" in message and "row 4 (line 5)" in message
    assert message.count("field 'valence'") == 20 and "... and 5 more" in message


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"category": "books", "title": "X", "valence": 0, "arousal": 0}, "field 'category'"),
        ({"category": "song", "title": "", "valence": 0, "arousal": 0}, "field 'title': is required"),
        ({"category": "song", "title": "X", "valence": "high", "arousal": 0}, "'high' is not a number"),
        ({"category": "food", "title": "X", "valence": 0, "arousal": 0, "price": -2}, "field 'price': is negative"),
        ({"category": "food", "title": "X", "valence": 0, "arousal": 0, "colour": "red"}, "field 'colour'"),
    ],
)
def test_import_validates_fields(rec, tmp_path, row, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([row]))
    with pytest.raises(CatalogError, match=message):
        import_file(rec.engine, path)


def test_reimport_is_idempotent_and_replace_removes(rec, tmp_path):
    path = tmp_path / "catalog.json"
    path.write_text(export(rec.engine, "json"))
    report = import_file(rec.engine, path)
    assert (report.added, report.updated, report.unchanged) == (0, 0, 300)
    small = tmp_path / "small.json"
    small.write_text(
        json.dumps(
            [
                {
                    "id": "movie:paddington-2",
                    "category": "movie",
                    "title": "Paddington 2",
                    "valence": 0.95,
                    "arousal": 0.3,
                    "tags": ["family"],
                }
            ]
        )
    )
    report = import_file(rec.engine, small, replace=True)
    assert (report.updated, report.removed) == (1, 299)
    assert [it["id"] for it in list_items(rec.engine)] == ["movie:paddington-2"]


def test_existing_database_upgrades_without_loss(any_db):
    db_url = any_db
    old = connect(db_url, revision="0001")  # a database from the first schema version
    import_file(old, STARTER_CATALOG)
    assert schema_revision(old) == "0001"
    engine = open_database(db_url)
    assert schema_revision(engine) == "0004" and count_items(engine) == 300
    Recommender(engine).recommend(mood("happy"), n=3, user_id="x")  # the new tables work


def test_database_survives_a_kill_mid_import(db_url, tmp_path):
    engine = open_database(db_url)
    big = tmp_path / "big.csv"
    with big.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["category", "title", "valence", "arousal", "tags", "description"])
        for i in range(60_000):
            writer.writerow(["product", f"Gadget {i}", "0.1", "0.2", "gadget;test", "x" * 200])
    wal = tmp_path / "emotorch.db-wal"
    proc = subprocess.Popen(
        [sys.executable, "-m", "emotorch.cli", "catalog", "import", str(big), "--db", db_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 60
    while proc.poll() is None and time.time() < deadline and not (wal.exists() and wal.stat().st_size > 1_000_000):
        time.sleep(0.01)
    assert proc.poll() is None, "the import finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(tmp_path / "emotorch.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert count_items(engine) == 300


def cli(*args: str) -> subprocess.CompletedProcess:
    return run_cli(*args, quiet=False)


def test_cli_feedback_and_user_say_what_they_did(db_url):
    res = cli("user", "alice", "--opt-in", "--prefer", "songs=uplift", "--db", db_url)
    assert res.returncode == 0, res.stderr
    assert "updated (consent given, song -> uplift)" in res.stdout and "song=uplift" in res.stdout
    res = cli(
        "feedback",
        "song:lean-on-me-bill-withers",
        "--kind",
        "like",
        "--emotion",
        "sad",
        "--user",
        "alice",
        "--db",
        db_url,
    )
    assert res.returncode == 0 and "recorded like of song:lean-on-me-bill-withers by user alice" in res.stdout
    shown = cli("user", "alice", "--db", db_url)
    assert "opted in" in shown.stdout and "song=uplift" in shown.stdout and "1 like(s)" in shown.stdout
    doc = json.loads(cli("user", "alice", "--json", "--db", db_url).stdout)
    assert doc == {
        "user_id": "alice",
        "opted_in": True,
        "strategies": {"song": "uplift"},
        "events": {"impression": 0, "click": 0, "like": 1},
    }
    assert "nothing stored" in cli("user", "bob", "--db", db_url).stdout


def test_cli_recommend_json(db_url):
    res = cli(
        "recommend",
        "--emotion",
        "happy",
        "--category",
        "songs",
        "-n",
        "5",
        "--strategy",
        "uplift",
        "--json",
        "--db",
        db_url,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert len(out["items"]) == 5
    assert all({"id", "category", "title", "score", "reason"} <= set(it) for it in out["items"])
    assert {it["category"] for it in out["items"]} == {"song"}


def test_auto_learns_a_users_strategy(any_db):
    rec = Recommender(any_db)
    rec.set_user("cheer-me-up", opted_in=True)
    first = rec.recommend(mood("sad"), categories="song", n=5, user_id="cheer-me-up", record=False)
    assert all(r.strategy == "match" for r in first)  # the default for songs
    for _ in range(8):  # food is shown to lift the mood by default; songs and movies to match it
        for r in rec.recommend(mood("sad"), categories=["song", "movie", "food"], n=6, user_id="cheer-me-up"):
            if r.strategy == "uplift":  # this user only ever clicks what cheers them up
                rec.feedback(r.id, "click", mood("sad"), user_id="cheer-me-up")
    final = rec.recommend(mood("sad"), categories="song", n=5, user_id="cheer-me-up", record=False)
    assert all(r.strategy == "uplift" for r in final)
    assert rec.forget("cheer-me-up") > 0
    with Session(rec.engine) as s:  # their learned taste goes too
        assert s.scalar(select(func.count()).where(StrategyStat.scope == "cheer-me-up")) == 0


def test_cli_recommend_from_a_photo(db_url, tmp_path):
    pytest.importorskip("yuface", reason="the YuNet detector package is not installed")
    from pathlib import Path

    import emotorch

    sample = Path(emotorch.__file__).with_name("samples") / "astronaut.jpg"
    cmd = ["recommend", "--image", str(sample), "--category", "song", "-n", "3", "--json", "--db", db_url]
    res = cli(*cmd)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["emotion"] == "happy" and len(out["items"]) == 3
    assert all("you seem happy" in it["reason"] for it in out["items"])
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("RGB", (200, 200), (120, 120, 120)).save(blank)
    res = cli(*cmd[:2], str(blank), *cmd[3:])
    assert res.returncode == 1 and "no face found" in res.stderr


def test_concurrent_first_requests_of_one_user_do_not_collide(any_db):
    """The web page asks for five categories at once for a brand-new user: every request must land."""
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from emotorch.recommend.db import Event

    rec = Recommender(any_db)
    jobs = [("food", "u-new"), ("song", "u-new"), ("movie", "u-new"), ("food", "u-other"), ("food", "u-third")] * 2
    with ThreadPoolExecutor(8) as pool:
        lists = list(pool.map(lambda job: rec.recommend(mood("sad"), categories=job[0], n=3, user_id=job[1]), jobs))
    assert all(len(items) == 3 for items in lists)
    with Session(rec.engine) as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 3 * len(jobs)


def test_concurrent_feedback_loses_no_bandit_update(any_db):
    """Every acknowledged event is counted exactly once in the item's arm and the strategy counters."""
    from concurrent.futures import ThreadPoolExecutor

    from emotorch.recommend.db import BanditArm

    rec = Recommender(any_db)
    item = "song:lean-on-me-bill-withers"
    rec.recommend(mood("sad"), categories="song", n=1, record=False)

    def viewer(i: int) -> int:
        clicks = 0
        for j in range(6):
            rec.feedback(item, "impression", mood("sad"), session_id=f"s{i}")
            if j % 2 == 0:
                rec.feedback(item, "click", mood("sad"), session_id=f"s{i}")
                clicks += 1
        return clicks

    with ThreadPoolExecutor(8) as pool:
        clicks = sum(pool.map(viewer, range(8)))
    with Session(rec.engine) as s:
        arm = s.get(BanditArm, item)
    assert arm.a[-1][-1] == 1 + 8 * 6  # the bias term counts impressions (the arm starts from the identity)
    assert arm.b[-1] == clicks == 8 * 3


def test_two_imports_at_once_never_crash(db_url, tmp_path):
    path = tmp_path / "items.csv"
    rows = [f"song,Concurrent Song {i},0.1,0.2,test" for i in range(200)]
    path.write_text("category,title,valence,arousal,tags\n" + "\n".join(rows) + "\n")
    cli("catalog", "list", "--db", db_url)  # create the database first
    cmd = [sys.executable, "-m", "emotorch.cli", "catalog", "import", str(path), "--db", db_url]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(120), *p.communicate()) for p in procs]
    for code, _out, err in results:
        assert "Traceback" not in err and code in (0, 1), err
        assert code == 0 or "being changed by another process" in err
    assert any(code == 0 for code, _, _ in results)
    assert count_items(open_database(db_url)) == 300 + 200


def test_contempt_has_a_place_and_a_reason(rec):
    assert mood("contempt").emotion == "contempt" and mood(probs=[0.0] * 7 + [1.0]).emotion == "contempt"
    assert len(mood(probs=[0.1, 0, 0, 0.9, 0, 0, 0]).probs) == 8  # a FER2013 model's seven: contempt at 0
    uplift = rec.recommend(mood("contempt"), categories="movie", n=3, strategy="uplift", record=False)
    match = rec.recommend(mood("contempt"), categories="movie", n=3, strategy="match", record=False)
    assert all("you seem unimpressed" in r.reason for r in uplift + match)
    assert all("warm-hearted" in r.reason for r in uplift) and all("wry" in r.reason for r in match)
    assert mood("contempt").negative


def test_bandit_arms_from_seven_class_contexts_keep_counting(rec):
    """Arms stored before contempt joined the context (8 numbers) grow a contempt row and column."""
    import numpy as np

    from emotorch.recommend.db import BanditArm

    item = "song:lean-on-me-bill-withers"
    with Session(rec.engine) as s:
        s.add(BanditArm(item_id=item, a=(np.eye(8) * 2).tolist(), b=[0.0] * 7 + [1.0]))
        s.commit()
    rec.recommend(mood("sad"), categories="song", n=5, record=False)  # scoring reads the old arm
    rec.feedback(item, "click", mood("contempt"), session_id="s")
    with Session(rec.engine) as s:
        arm = s.get(BanditArm, item)
    assert len(arm.b) == 9 and arm.b[-1] == 2.0 and arm.b[7] == 1.0  # bias kept last; contempt counted
    assert arm.a[6][6] == 2.0 and arm.a[7][7] == 2.0  # old surprise row kept; contempt: identity + this one


def test_tokens_are_stored_hashed_and_forget_never_takes_everyones_statistics(db_url):
    rec = Recommender(db_url)
    alice, token = rec.create_user()
    assert rec.token_owner(token) == alice and rec.token_owner(token + "x") is None
    for r in rec.recommend(mood("sad"), categories="song", n=3, user_id=alice):
        rec.feedback(r.id, "click", mood("sad"), user_id=alice)
    with Session(rec.engine) as s:
        everyone = s.scalar(select(func.count()).select_from(StrategyStat).where(StrategyStat.scope == "*"))
    assert everyone > 0
    assert token.encode() not in Path(rec.engine.url.database).read_bytes()  # only its sha256 is stored
    for bad in ("*", "", "x" * 129, "a b"):
        with pytest.raises(ValueError, match="not a user id"):
            rec.forget(bad)
    assert rec.forget(alice) == 6 and rec.token_owner(token) is None  # 3 impressions and 3 clicks
    with Session(rec.engine) as s:
        assert s.scalar(select(func.count()).select_from(StrategyStat).where(StrategyStat.scope == "*")) == everyone


def test_a_plain_path_is_a_sqlite_database_and_passwords_are_never_printed(tmp_path):
    from emotorch.errors import DatabaseUnavailable

    engine = connect(str(tmp_path / "plain.db"))
    assert engine.dialect.name == "sqlite" and (tmp_path / "plain.db").is_file() and schema_revision(engine)
    for url in ("mysql://admin:S3cretPW@127.0.0.1:1/x", "foo://admin:S3cretPW@127.0.0.1:1/x"):
        with pytest.raises(DatabaseUnavailable) as caught:
            connect(url)
        assert "S3cretPW" not in str(caught.value) and "admin:***@" in str(caught.value)


def test_every_starter_item_links_to_a_public_page(db_url):
    from urllib.parse import urlparse

    items = list_items(open_database(db_url))
    hosts = {urlparse(it["url"]).netloc for it in items}
    assert all(it["url"].startswith("https://") for it in items)
    assert hosts == {"en.wikipedia.org", "www.openstreetmap.org", "musicbrainz.org"}
