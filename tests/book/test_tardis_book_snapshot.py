"""Tardis.dev ``book_snapshot_25`` / ``book_snapshot_5`` CSV import (issue 14 item 3).

The fixtures are the real BTCUSDT capture's book (``data/samples/binance/spot_btcusdt_20240808.gz``, rebuilt
by K2's capture reader) written in Tardis' layout after each depth event that changed the top N (see
tests/fixtures/README.md). The truth check: after landing, ``book()`` at each row's timestamp (and between
rows) returns exactly that row's levels - nothing from an earlier row, nothing below the top N.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from k2.bus.topics import topic_name
from k2.cli import app
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.landing.consumer import LandingConsumer
from k2.landing.dlq import read_dead_letters
from k2.model.values import micros_to_datetime
from k2.query.client import Client
from k2.query.errors import UnknownSymbolError
from k2.sources.tardis_book_snapshot import SnapshotReader, import_tardis_book_snapshots, iter_rows
from tests.sources.helpers import REPO, cli_env
from tests.support.landing import land_messages

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tardis"
FIVE = FIXTURES / "binance_book_snapshot_5_2024-08-08_BTCUSDT.csv"
TWENTY_FIVE = FIXTURES / "binance_book_snapshot_25_2024-08-08_BTCUSDT.csv"
DEPTH_TOPIC = topic_name("crypto", "depth", "binance")


def _file_books(path: Path, depth: int) -> list[tuple[int, list[tuple[str, Decimal, Decimal]]]]:
    """(timestamp, [(side, price, amount) bids best first then asks best first]) of each row of a fixture."""
    with path.open() as handle:
        rows = list(csv.reader(handle))[1:]
    out = []
    for cells in rows:
        levels: dict[str, list[tuple[str, Decimal, Decimal]]] = {"BID": [], "ASK": []}
        for i in range(depth):
            for side, at in (("ASK", 4 + 4 * i), ("BID", 6 + 4 * i)):
                if cells[at]:
                    levels[side].append((side, Decimal(cells[at]), Decimal(cells[at + 1])))
        out.append((int(cells[2]), levels["BID"] + levels["ASK"]))
    return out


def _bad_rows(tmp_path: Path) -> Path:
    """The 5-level fixture with a bad copy of its first row after each good row: one per reason."""
    lines = FIVE.read_text().splitlines()
    head, good = lines[0], lines[1:]
    cells = good[0].split(",")
    crossed = cells.copy()
    crossed[6] = str(Decimal(cells[4]) + 1)  # best bid above best ask
    missing = cells.copy()
    missing[8], missing[9] = "", ""  # asks[1] empty, asks[2] present
    half = cells.copy()
    half[13] = ""  # asks[2] price without amount
    word = cells.copy()
    word[10] = "abc"  # bids[1].price not a number
    zero = cells.copy()
    zero[5] = "0"
    unsorted = cells.copy()
    unsorted[8], unsorted[12] = cells[12], cells[8]  # asks[1] and asks[2] swapped
    short = cells[:10]
    bad = [crossed, missing, half, word, zero, unsorted, short]
    mixed = [head]
    for i, line in enumerate(good):
        mixed.append(line)
        if i < len(bad):
            mixed.append(",".join(bad[i]))
    path = tmp_path / "binance_book_snapshot_5_2024-08-08_BTCUSDT.csv"
    path.write_text("\n".join(mixed) + "\n")
    return path


REASONS = [
    "crossed_book",
    "missing_level",
    "missing_level",
    "bad_number",
    "non_positive_size",
    "unsorted_levels",
    "bad_field",
]


def test_each_row_is_one_restarting_snapshot_and_bad_rows_are_rejected_with_a_reason(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = []
    rejects: list[tuple[str, str]] = []
    reader = SnapshotReader(
        rows.append, lambda ex, sym, reason, detail, raw: rejects.append((reason, detail)), 5
    )
    for cells, raw in iter_rows(_bad_rows(tmp_path)):
        reader.feed(cells, raw)
    assert [reason for reason, _ in rejects] == REASONS
    assert all("expected" in detail for _, detail in rejects)
    books = _file_books(FIVE, 5)
    assert reader.snapshots == len(books) == 12 and len(rows) == 12 * 10
    by_id: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_id.setdefault(row["last_update_id"], []).append(row)
    assert list(by_id) == sorted(by_id) and len(by_id) == 12  # one synthetic id per file row, rising
    for (micros, levels), event in zip(books, by_id.values(), strict=True):
        assert all(r["is_snapshot"] and r["exchange_ts"] == micros for r in event)
        assert [r["is_event_end"] for r in event] == [False] * 9 + [True]
        assert [(r["side"], r["price"], r["size"]) for r in event] == [
            (side, int(price * 10**8), int(size * 10**8)) for side, price, size in levels
        ]
    assert rows[0]["instrument"] == "BTC-USDT" and rows[0]["receipt_ts"] == 1723161254137307


@pytest.mark.parametrize(("path", "depth"), [(FIVE, 5), (TWENTY_FIVE, 25)], ids=["top5", "top25"])
def test_landed_snapshots_give_book_exactly_the_file_levels(
    private_settings: Settings, path: Path, depth: int
) -> None:
    settings = private_settings
    ensure_tables(load_catalog(settings), settings)
    books = _file_books(path, depth)
    report = import_tardis_book_snapshots([path], settings)
    assert (report.lines, report.snapshots, report.depths, dict(report.dead_lettered)) == (
        len(books),
        len(books),
        [depth],
        {},
    )
    first = land_messages(LandingConsumer(settings, topics=[DEPTH_TOPIC]), report.rows, max_seconds=60)
    assert first.landed == report.rows == len(books) * 2 * depth
    import_tardis_book_snapshots([path], settings)  # a re-import: the same ids, nothing lands twice
    again = land_messages(LandingConsumer(settings, topics=[DEPTH_TOPIC]), report.rows, max_seconds=60)
    assert again.landed == 0
    with Client(settings) as client:
        for micros, levels in books:
            for moment in (micros, micros + 50_000):  # at the row and between rows (events are 100 ms apart)
                book = client.book("BTCUSDT", micros_to_datetime(moment), 100, include_recent=False)
                found = [(r["side"], r["price"], r["size"]) for r in book.levels.to_pylist()]
                assert found == levels, moment
        last = client.book("BTCUSDT", micros_to_datetime(books[-1][0]), 3, include_recent=False)
        assert last.levels.num_rows == 6
        with pytest.raises(UnknownSymbolError):
            client.book("BTCUSDT", micros_to_datetime(books[0][0] - 1), 5, include_recent=False)


def test_bad_rows_go_to_the_dlq_with_their_bytes_and_the_cli_exit_code_says_so(
    private_settings: Settings, tmp_path: Path
) -> None:
    path = _bad_rows(tmp_path)
    env = {**cli_env(private_settings), "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "k2.cli", "import", "tardis-book-snapshot", "--depth", "5", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stderr  # rows dead-lettered beyond --max-rejects 0
    assert "7 of 19 rows dead-lettered" in " ".join(done.stderr.split())
    letters = read_dead_letters(private_settings, DEPTH_TOPIC + ".dlq")
    assert [d.reason for d in letters] == REASONS
    lines = path.read_bytes().splitlines()
    assert [d.value for d in letters] == [lines[2 * i + 2] for i in range(7)]  # the original bytes
    stats = land_messages(LandingConsumer(private_settings, topics=[DEPTH_TOPIC]), 12 * 10, max_seconds=60)
    assert stats.landed == 12 * 10  # every good row landed
    # The exit code at the process boundary is checked above; the same command in process (typer's runner,
    # ~2.5 s of CPU less than a Python process importing the CLI) for the allowance.
    allowed = CliRunner().invoke(
        app,
        ["import", "tardis-book-snapshot", "--max-rejects", "40%", str(path)],
        env=cli_env(private_settings),
    )
    assert allowed.exit_code == 0, allowed.output


def test_k2_import_tardis_book_snapshot_refuses_another_layout_naming_its_header(tmp_path: Path) -> None:
    """In process (typer's runner): the command's process boundary is covered by the dead-letter test above."""
    other = tmp_path / "incremental.csv"
    other.write_text("exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n")
    env = {"K2_DATA_DIR": str(tmp_path / "k2")}
    for args, expected in (
        ([str(other)], "expected the book_snapshot_5/25 header"),
        (["--depth", "25", str(FIVE)], "expected the book_snapshot_25 header"),
    ):
        done = CliRunner().invoke(app, ["import", "tardis-book-snapshot", *args], env=env)
        assert done.exit_code == 1, done.output
        assert expected in " ".join(done.stderr.split())
