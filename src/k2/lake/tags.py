"""Iceberg tags on K2's tables: named snapshots that outlive snapshot expiry (``k2 tag ...``).

A tag is a named reference to one snapshot in the table's metadata. Iceberg never expires a snapshot a
ref points at, and K2's maintenance keeps every file a live snapshot references, so a tagged state reads
bit-exact for as long as the tag exists: ``as_of="tag:eod-2024-08-09"``.

* ``k2 tag create NAME [--table T] [--snapshot ID | --at TIME] [--retain DAYS]``
* End-of-day tags ``eod-YYYY-MM-DD`` (UTC day) are made by the landing service's schedule
  (``K2_EOD_TAGS``): for each ended day, the last snapshot committed before midnight.

Hazards, candidly:

* Creating a tag is a metadata commit without a new snapshot: it does not touch the snapshot summary
  (the Kafka offsets stay those of the current snapshot).
* ``--retain`` sets Iceberg's ``max-ref-age-ms``; the tag is dropped by ``k2 maintain`` once the
  tagged snapshot is older than that, and then its snapshot may expire like any other.
* A tag on a snapshot that was already expired cannot be made: time travel cannot bring it back.

Example:
    >>> eod_tag_name(datetime(2024, 8, 9, 13, 0, tzinfo=UTC))
    'eod-2024-08-09'
    >>> check_tag_name("eod-2024-08-09")
    'eod-2024-08-09'
    >>> check_tag_name("bad name")
    Traceback (most recent call last):
    ...
    ValueError: expected a tag name of letters, digits, '.', '_' or '-' (1-100 characters), found 'bad name'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import structlog
from pyiceberg.table import Table
from pyiceberg.table.refs import SnapshotRefType

from k2.config import Settings
from k2.pacing import Periodic

log = structlog.get_logger("k2.tags")

EOD_PREFIX = "eod-"
TAG_PREFIX = "tag:"
TAG_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class TagInfo:
    """One tag: its name, the snapshot it names and when that snapshot was committed."""

    table: str
    name: str
    snapshot_id: int
    committed_at: datetime
    max_ref_age_ms: int | None

    @property
    def expires_at(self) -> datetime | None:
        """When ``k2 maintain`` drops the tag (None: kept forever)."""
        if self.max_ref_age_ms is None:
            return None
        return self.committed_at + timedelta(milliseconds=self.max_ref_age_ms)


def check_tag_name(name: str) -> str:
    """The name when it is a valid tag name, else ValueError saying what was expected."""
    if not TAG_NAME.fullmatch(name):
        raise ValueError(
            f"expected a tag name of letters, digits, '.', '_' or '-' (1-100 characters), found {name!r}"
        )
    return name


def eod_tag_name(day: date | datetime) -> str:
    """``eod-YYYY-MM-DD`` for a UTC day (a datetime is converted to UTC first)."""
    if isinstance(day, datetime):
        if day.tzinfo is None:
            raise ValueError(f"expected a timezone-aware datetime, found {day!r}")
        day = day.astimezone(UTC).date()
    return f"{EOD_PREFIX}{day.isoformat()}"


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"expected a timezone-aware datetime, found {moment!r}")
    return int(moment.timestamp() * 1000)


def snapshot_at(table: Table, moment: datetime) -> int:
    """The id of the snapshot current at ``moment`` (the last one committed at or before it)."""
    at_ms = _ms(moment)
    candidates = [s for s in table.metadata.snapshots if s.timestamp_ms <= at_ms]
    if not candidates:
        raise LookupError(
            f"expected a snapshot of {table.name()} committed at or before {moment.isoformat()}, found none"
        )
    return max(candidates, key=lambda s: (s.timestamp_ms, s.sequence_number or 0)).snapshot_id


def list_tags(table: Table) -> list[TagInfo]:
    """Every tag of the table, oldest snapshot first.

    A tag whose snapshot is missing from the metadata (which Iceberg forbids) is reported with the
    epoch as its time rather than hidden.
    """
    out = []
    for name, ref in table.metadata.refs.items():
        if ref.snapshot_ref_type != SnapshotRefType.TAG:
            continue
        snapshot = table.metadata.snapshot_by_id(ref.snapshot_id)
        ms = snapshot.timestamp_ms if snapshot is not None else 0
        out.append(
            TagInfo(
                ".".join(table.name()),
                name,
                ref.snapshot_id,
                datetime.fromtimestamp(ms / 1000, UTC),
                ref.max_ref_age_ms,
            )
        )
    return sorted(out, key=lambda t: (t.committed_at, t.name))


def resolve_tag(table: Table, name: str) -> int:
    """The snapshot id a tag names; LookupError naming the tags that do exist otherwise."""
    ref = table.metadata.refs.get(name)
    if ref is None or ref.snapshot_ref_type != SnapshotRefType.TAG:
        known = ", ".join(t.name for t in list_tags(table)) or "none"
        raise LookupError(f"expected a tag {name!r} on {'.'.join(table.name())}, found none (tags: {known})")
    return ref.snapshot_id


def create_tag(
    table: Table,
    name: str,
    *,
    snapshot_id: int | None = None,
    at: datetime | None = None,
    retain_days: float | None = None,
) -> TagInfo:
    """Tag a snapshot (default: the current one; or ``snapshot_id``; or the one current ``at`` a time).

    Raises ValueError for a bad name, a name already used, both ``snapshot_id`` and ``at``, or a
    retention <= 0; LookupError when the snapshot does not exist (or no longer does).
    """
    check_tag_name(name)
    if snapshot_id is not None and at is not None:
        raise ValueError("expected at most one of snapshot_id and at, found both")
    if retain_days is not None and retain_days <= 0:
        raise ValueError(f"expected a retention in days > 0, found {retain_days}")
    if name in table.metadata.refs:
        raise ValueError(
            f"expected a new tag name, found {name!r} already on {'.'.join(table.name())} (drop it first)"
        )
    if at is not None:
        snapshot_id = snapshot_at(table, at)
    elif snapshot_id is None:
        current = table.current_snapshot()
        if current is None:
            raise LookupError(f"expected a snapshot to tag on {'.'.join(table.name())}, found an empty table")
        snapshot_id = current.snapshot_id
    if table.metadata.snapshot_by_id(snapshot_id) is None:
        raise LookupError(
            f"expected snapshot {snapshot_id} in {'.'.join(table.name())}, found none (expired or never existed)"
        )
    max_age = None if retain_days is None else int(retain_days * _DAY_MS)
    table.manage_snapshots().create_tag(snapshot_id, name, max_ref_age_ms=max_age).commit()
    table.refresh()
    return next(t for t in list_tags(table) if t.name == name)


def drop_tag(table: Table, name: str) -> None:
    """Remove a tag (its snapshot then expires like any other); LookupError if there is none."""
    resolve_tag(table, name)
    table.manage_snapshots().remove_tag(name).commit()
    table.refresh()


def drop_expired_tags(table: Table, now: datetime, dry_run: bool = False) -> list[str]:
    """Drop the tags whose retention (``max-ref-age-ms``) has passed at ``now``; returns their names."""
    expired = [t.name for t in list_tags(table) if t.expires_at is not None and t.expires_at <= now]
    if expired and not dry_run:
        manage = table.manage_snapshots()
        for name in expired:
            manage = manage.remove_tag(name)
        manage.commit()
        table.refresh()
    return expired


def eod_tags_due(table: Table, now: datetime) -> dict[str, int]:
    """``{eod-YYYY-MM-DD: snapshot_id}`` for every ended UTC day that has commits but no end-of-day tag.

    The snapshot is the last one committed before the day's end (midnight UTC). Days before the
    table's newest end-of-day tag are not revisited, so dropping an old tag does not bring it back.
    """
    snapshots = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms)
    if not snapshots:
        return {}
    existing = {t.name for t in list_tags(table) if t.name.startswith(EOD_PREFIX)}
    today = now.astimezone(UTC).date()
    day = datetime.fromtimestamp(snapshots[0].timestamp_ms / 1000, UTC).date()
    newest = max(
        (date.fromisoformat(n[len(EOD_PREFIX) :]) for n in existing if _is_eod_name(n)), default=None
    )
    if newest is not None:
        day = max(day, newest + timedelta(days=1))
    due: dict[str, int] = {}
    while day < today:
        end_ms = _ms(datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1))
        before = [s for s in snapshots if s.timestamp_ms < end_ms]
        name = eod_tag_name(day)
        if before and name not in existing:
            due[name] = before[-1].snapshot_id
        day += timedelta(days=1)
    return due


def _is_eod_name(name: str) -> bool:
    try:
        date.fromisoformat(name[len(EOD_PREFIX) :])
    except ValueError:
        return False
    return True


def make_eod_tags(table: Table, now: datetime, retain_days: float | None = None) -> list[str]:
    """Create the end-of-day tags :func:`eod_tags_due` lists, in one metadata commit; returns their names."""
    due = eod_tags_due(table, now)
    if not due:
        return []
    max_age = None if retain_days is None else int(retain_days * _DAY_MS)
    manage = table.manage_snapshots()
    for name, snapshot_id in due.items():
        manage = manage.create_tag(snapshot_id, name, max_ref_age_ms=max_age)
    manage.commit()
    table.refresh()
    return list(due)


def make_eod_tags_everywhere(settings: Settings, now: datetime | None = None) -> dict[str, list[str]]:
    """End-of-day tags on every existing K2 table (``{table: [tags made]}``); tables not created yet are skipped."""
    from pyiceberg.exceptions import NoSuchTableError

    from k2.lake.catalog import TABLES, load_catalog, load_table

    catalog = load_catalog(settings)
    made: dict[str, list[str]] = {}
    for short in TABLES:
        try:
            table = load_table(catalog, short)
        except NoSuchTableError:
            continue
        names = make_eod_tags(table, now or datetime.now(UTC), settings.eod_tag_retain_days)
        if names:
            made[short] = names
    return made


class EodTagger(Periodic):
    """The landing service's schedule for end-of-day tags: checks every ``eod_tag_check_seconds`` (thread).

    Example (needs a catalog)::

        tagger = EodTagger(settings).start()
        ...
        tagger.stop()
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__("k2-eod-tags", settings.eod_tag_check_seconds, run_at_start=True)
        self.settings = settings
        self.made: dict[str, list[str]] = {}

    def run_once(self) -> None:
        for short, names in make_eod_tags_everywhere(self.settings).items():
            self.made.setdefault(short, []).extend(names)
            log.info("end-of-day tags made", table=short, tags=names)


def start_eod_tagger(settings: Settings) -> EodTagger | None:
    """Start the end-of-day tagger when ``eod_tags`` is on (the default), else None.

    Example:
        >>> from k2.config import Settings
        >>> start_eod_tagger(Settings(eod_tags=False)) is None
        True
    """
    if not settings.eod_tags:
        return None
    tagger = EodTagger(settings)
    tagger.start()
    return tagger
