"""``emotorch catalog``, ``recommend``, ``feedback``, ``user`` and ``forget``: the recommender and its data."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from emotorch.choices import FEEDBACK_KINDS, FERPLUS_CLASSES, STRATEGIES
from emotorch.cli.options import Parser, add_db, add_force, add_json, add_model, add_threads, refuse_overwrite, to_json
from emotorch.errors import DataError
from emotorch.runtime.registry import PHOTO_MODEL


def add(sub: argparse._SubParsersAction) -> None:
    cat = sub.add_parser("catalog", help="the recommendation catalog").add_subparsers(
        dest="catalog_command", required=True, parser_class=Parser
    )
    imp = cat.add_parser("import", help="validate and import a CSV or JSON catalog in one transaction")
    imp.add_argument("file", help="a .csv or .json catalog (see the README for the fields)")
    imp.add_argument("--replace", action="store_true", help="also remove items the file does not list")
    exp = cat.add_parser("export", help="write the catalog as CSV or JSON")
    exp.add_argument("--format", choices=["csv", "json"], default="csv", help="file format")
    exp.add_argument("--out", help="file to write (default: stdout)")
    add_force(exp)
    lst = cat.add_parser("list", help="list catalog items")
    lst.add_argument("--category", help="only this category (product, place, food, song or movie; plurals too)")
    add_json(lst, "print one JSON list")
    for p in (imp, exp, lst):
        add_db(p)
        p.set_defaults(run=catalog_command)

    rec = sub.add_parser("recommend", help="recommendations for an emotion or a probability vector")
    mood_args = rec.add_mutually_exclusive_group(required=True)
    mood_args.add_argument("--emotion", type=str.lower, choices=list(FERPLUS_CLASSES), help="the mood, as one emotion")
    mood_args.add_argument("--probs", help='probabilities as JSON, e.g. \'{"sad": 0.7, "neutral": 0.3}\'')
    mood_args.add_argument("--image", help="a photo: the largest face's emotion probabilities drive the list")
    add_model(rec, PHOTO_MODEL, prefix="with --image: ")
    rec.add_argument(
        "--category",
        action="append",
        help="product, place, food, song or movie; plurals too (repeatable, or comma-separated)",
    )
    rec.add_argument("-n", type=int, default=5, help="how many items")
    rec.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="auto",
        help="match the mood, lift it, or auto: the user's or learned choice per category",
    )
    add_json(rec, "print one JSON object with a list `items`")
    add_threads(rec)
    rec.set_defaults(run=recommend_command)

    fb = sub.add_parser("feedback", help="record an impression, click or like")
    fb.add_argument("item", help="catalog item id")
    fb.add_argument("--kind", choices=FEEDBACK_KINDS, required=True, help="what the viewer did with the item")
    add_json(fb, "print the recorded event as one JSON object")
    fb_mood = fb.add_mutually_exclusive_group()
    fb_mood.add_argument(
        "--emotion", type=str.lower, choices=list(FERPLUS_CLASSES), help="the viewer's mood at the time"
    )
    fb_mood.add_argument("--probs", help="the viewer's mood as probabilities in JSON (as for recommend)")
    fb.set_defaults(run=feedback_command)
    for p in (rec, fb):
        who = p.add_mutually_exclusive_group()
        who.add_argument("--user", help="user id (recent items are not repeated)")
        who.add_argument("--session", help="anonymous session id")

    usr = sub.add_parser("user", help="a user's consent and per-category strategies")
    usr.add_argument("user_id", help="the user to show or change")
    consent = usr.add_mutually_exclusive_group()
    consent.add_argument("--opt-in", action="store_true", help="allow storing emotion context with feedback")
    consent.add_argument(
        "--opt-out", action="store_true", help="withdraw that consent (stored context is kept until `forget`)"
    )
    usr.add_argument(
        "--prefer",
        action="append",
        default=[],
        metavar="CATEGORY=STRATEGY",
        help="strategy (match or uplift) that `auto` uses for a category, e.g. songs=uplift",
    )
    add_json(usr, "print the user's stored settings as one JSON object")
    usr.set_defaults(run=user_command)

    fg = sub.add_parser("forget", help="delete everything stored about a user")
    fg.add_argument("--user", required=True, help="the user whose events, preferences and taste are deleted")
    fg.set_defaults(run=forget_command)
    for p in (rec, fb, usr, fg):
        add_db(p)


def _mood(args: argparse.Namespace):
    """The mood the options give: a photo's largest face, one emotion, probabilities, or none."""
    from emotorch.recommend import mood  # SQLAlchemy: when the command runs

    if getattr(args, "image", None):
        from emotorch.runtime.pipeline import EmotionRecognizer  # OpenCV and ONNX Runtime: only for --image

        faces = EmotionRecognizer(args.model).predict(args.image)  # the photo is read, never stored
        if not faces:
            raise DataError(f"{args.image}: no face found")
        largest = max(faces, key=lambda f: f.box[2] * f.box[3])
        return mood(probs=largest.probabilities)
    if args.emotion is None and args.probs is None:
        return None
    if args.probs is None:
        return mood(args.emotion)
    try:
        probs = json.loads(args.probs)
    except json.JSONDecodeError as e:
        raise ValueError(f"--probs is not valid JSON: {e.msg}") from None
    return mood(probs=probs)


def catalog_command(args: argparse.Namespace) -> None:
    from emotorch.recommend import export, import_file, list_items, open_database  # SQLAlchemy: when it runs

    engine = open_database(args.db)
    if args.catalog_command == "import":
        print(f"{args.file}: {import_file(engine, args.file, replace=args.replace)}")
    elif args.catalog_command == "export":
        text = export(engine, args.format)
        if not args.out:
            sys.stdout.write(text)
            return
        dest = Path(args.out)
        refuse_overwrite([dest], args.force)
        dest.write_text(text, encoding="utf-8")
        print(f"wrote {len(list_items(engine))} items to {dest} ({args.format})")
    else:
        items = list_items(engine, args.category)
        if args.json:
            print(to_json(items, ensure_ascii=False))
            return
        for it in items:
            print(f"{it['id']:<55} {it['valence']:+.2f} {it['arousal']:+.2f}  {', '.join(it['tags'])}")


def recommend_command(args: argparse.Namespace) -> None:
    from emotorch.recommend import Recommender  # SQLAlchemy: when the command runs

    current = _mood(args)
    categories = [c.strip() for arg in args.category for c in arg.split(",") if c.strip()] if args.category else None
    recs = Recommender(args.db).recommend(
        current,
        categories=categories,
        n=args.n,
        strategy=args.strategy,
        user_id=args.user,
        session_id=args.session,
        record=bool(args.user or args.session),
    )
    if args.json:
        items = [
            {
                "id": r.id,
                "category": r.category,
                "title": r.title,
                "score": r.score,
                "reason": r.reason,
                "strategy": r.strategy,
            }
            for r in recs
        ]
        print(
            to_json({"emotion": current.emotion, "confidence": current.confidence, "items": items}, ensure_ascii=False)
        )
        return
    for r in recs:
        print(f"{r.category:<8} {r.title:<50} {r.score:6.3f}  {r.reason}")


def feedback_command(args: argparse.Namespace) -> None:
    from emotorch.recommend import Recommender  # SQLAlchemy: when the command runs

    current = _mood(args)
    Recommender(args.db).feedback(args.item, args.kind, current, user_id=args.user, session_id=args.session)
    event = {
        "item": args.item,
        "kind": args.kind,
        "user": args.user,
        "session": args.session,
        "emotion": current.emotion if current else None,
    }
    if args.json:
        print(to_json(event))
        return
    who = f" by user {args.user}" if args.user else f" in session {args.session}" if args.session else ""
    print(f"recorded {args.kind} of {args.item}{who}" + (f" (mood: {current.emotion})" if current else ""))


def user_command(args: argparse.Namespace) -> None:
    # SQLAlchemy: when the command runs
    from emotorch.recommend import Recommender
    from emotorch.recommend.db import canonical_category

    prefs = dict(p.split("=", 1) for p in args.prefer if "=" in p)
    if len(prefs) != len(args.prefer):
        raise ValueError("--prefer takes CATEGORY=STRATEGY, e.g. song=uplift")
    consent = True if args.opt_in else False if args.opt_out else None
    recommender = Recommender(args.db)
    if consent is not None or prefs:
        recommender.set_user(args.user_id, opted_in=consent, strategies=prefs)
    info = recommender.user(args.user_id)
    if args.json:
        print(to_json(info or {"user_id": args.user_id, "known": False}))
        return
    if info is None:
        print(f"user {args.user_id}: nothing stored (give --opt-in, --opt-out or --prefer to create the user)")
        return
    if consent is not None or prefs:
        changed = ([f"consent {'given' if consent else 'withdrawn'}"] if consent is not None else []) + [
            f"{canonical_category(c)} -> {s}" for c, s in prefs.items()
        ]
        print(f"user {args.user_id}: updated ({', '.join(changed)})")
    strategies = ", ".join(f"{c}={s}" for c, s in info["strategies"].items()) or "none (auto learns or defaults)"
    consent_text = (
        "opted in (emotion context stored with feedback)"
        if info["opted_in"]
        else "not opted in (no emotion context stored)"
    )
    events = ", ".join(f"{n} {k}(s)" for k, n in info["events"].items())
    print(f"user {args.user_id}: {consent_text}\n  preferred strategies: {strategies}\n  stored events: {events}")


def forget_command(args: argparse.Namespace) -> None:
    from emotorch.recommend import Recommender  # SQLAlchemy: when the command runs

    removed = Recommender(args.db).forget(args.user)
    print(f"forgot user {args.user}: {removed} events deleted")
