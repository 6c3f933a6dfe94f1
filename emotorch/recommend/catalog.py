"""Catalog import, export and listing: every row validated, one transaction per import."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from emotorch.choices import CATEGORIES
from emotorch.errors import CatalogBusy, CatalogError
from emotorch.recommend.db import Item, canonical_category, checked_category, writing

STARTER_CATALOG = Path(__file__).with_name("starter_catalog.csv")
FIELDS = ("id", "category", "title", "description", "tags", "valence", "arousal", "price", "url", "image_url", "locale")


MAX_LISTED = 20  # bad rows an import error lists (it counts them all)


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0

    def __str__(self) -> str:
        return f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, {self.removed} removed"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Raw rows of a CSV or JSON (a list of objects, or {"items": [...]}) catalog file."""
    if not path.is_file():
        raise CatalogError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CatalogError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
        rows = data.get("items") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise CatalogError(f"{path}: expected a list of item objects (or {{'items': [...]}})")
        return rows
    if path.suffix.lower() != ".csv":
        raise CatalogError(f"{path}: a catalog is a .csv or .json file")
    return list(csv.DictReader(io.StringIO(text)))


def validate(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """One validated item dict; raises CatalogError naming ``where`` and the field."""

    def fail(field: str, problem: str) -> CatalogError:
        return CatalogError(f"{where}, field {field!r}: {problem}")

    unknown = set(raw) - set(FIELDS)
    if unknown:
        raise fail(sorted(unknown)[0], f"unknown field; fields are {', '.join(FIELDS)}")
    category = canonical_category(str(raw.get("category") or ""))
    if category is None:
        raise fail("category", f"{raw.get('category')!r} is not one of {', '.join(CATEGORIES)}")
    title = str(raw.get("title") or "").strip()
    if not title:
        raise fail("title", "is required")
    item: dict[str, Any] = {"category": category, "title": title}
    for field in ("valence", "arousal"):
        value = raw.get(field)
        if value is None or value == "":
            raise fail(
                field,
                "is required (a number from -1 to 1); this row has none"
                + ("" if field in raw else f", and the file has no {field!r} column"),
            )
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise fail(field, f"{value!r} is not a number") from None
        if not -1.0 <= number <= 1.0:
            raise fail(field, f"{number} is outside [-1, 1]")
        item[field] = number
    price = raw.get("price")
    if price in (None, ""):
        item["price"] = None
    else:
        try:
            item["price"] = float(price)
        except (TypeError, ValueError):
            raise fail("price", f"{price!r} is not a number") from None
        if item["price"] < 0:
            raise fail("price", "is negative")
    tags = raw.get("tags") or ""
    tag_list = tags if isinstance(tags, list) else re.split(r"[;,|]", str(tags))
    item["tags"] = ",".join(sorted({str(t).strip().lower() for t in tag_list if str(t).strip()}))
    for field in ("description", "locale"):
        item[field] = str(raw.get(field) or "").strip()
    for field in ("url", "image_url"):
        item[field] = str(raw.get(field) or "").strip() or None
    item["id"] = str(raw.get("id") or "").strip() or f"{category}:{slug(title)}"
    return item


def import_file(engine: Engine, path: str | Path, *, replace: bool = False) -> ImportReport:
    """Validate every row, then apply all of them in one transaction (or none on any error)."""
    path = Path(path)
    items: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    first_line = 2 if path.suffix.lower() == ".csv" else None
    for i, raw in enumerate(read_rows(path), start=1):
        where = f"{path}, row {i}" + (f" (line {i + first_line - 1})" if first_line else "")
        try:
            item = validate(raw, where)
            if item["id"] in items:
                raise CatalogError(f"{where}, field 'id': {item['id']!r} repeats an earlier row")
        except CatalogError as e:
            problems.append(str(e))
            continue
        items[item["id"]] = item
    if problems:
        listed = "\n".join(f"  {p}" for p in problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise CatalogError(f"{path}: {len(problems)} bad row(s), nothing imported:\n{listed}{more}")
    report = ImportReport()
    try:
        with writing(engine) as session:
            existing = {it.id: it for it in session.scalars(select(Item))}
            for item_id, values in items.items():
                current = existing.get(item_id)
                if current is None:
                    session.add(Item(**values))
                    report.added += 1
                elif any(getattr(current, k) != v for k, v in values.items()):
                    for k, v in values.items():
                        setattr(current, k, v)
                    report.updated += 1
                else:
                    report.unchanged += 1
            if replace:
                gone = [i for i in existing if i not in items]
                if gone:
                    session.execute(delete(Item).where(Item.id.in_(gone)))
                report.removed = len(gone)
    except (IntegrityError, OperationalError) as e:
        if isinstance(e, OperationalError) and "locked" not in str(e.orig):
            raise
        raise CatalogBusy(
            f"{path}: the catalog was being changed by another process at the same time; "
            "nothing was imported (run it again)"
        ) from None
    return report


def item_dict(item: Item) -> dict[str, Any]:
    return {f: getattr(item, f) for f in FIELDS} | {"tags": sorted(item.tag_set)}


def list_items(engine: Engine, category: str | None = None) -> list[dict[str, Any]]:
    with Session(engine) as session:
        query = select(Item).order_by(Item.category, Item.title)
        if category:
            query = query.where(Item.category == checked_category(category))
        return [item_dict(it) for it in session.scalars(query)]


def export(engine: Engine, fmt: str = "csv") -> str:
    """The whole catalog as CSV or JSON text that :func:`import_file` reads back unchanged."""
    items = list_items(engine)
    if fmt == "json":
        return json.dumps({"items": items}, indent=2, ensure_ascii=False) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for it in items:
        writer.writerow({**it, "tags": ";".join(it["tags"]), "price": "" if it["price"] is None else it["price"]})
    return buf.getvalue()
