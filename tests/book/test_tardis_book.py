"""Tardis.dev ``incremental_book_L2`` CSV import (issue 14 item 3). The fixture is hand-written in Tardis'
documented format (header, microsecond times, absolute amounts, ``is_snapshot`` runs): no Tardis L2 file
is in ../shared/data. It holds two symbols, a restart (a second snapshot run), and bad rows."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from k2.bus.topics import topic_name
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.landing.consumer import LandingConsumer
from k2.query.client import Client
from k2.sources.tardis_book import TardisL2Reader, import_tardis_book, iter_rows
from tests.sources.helpers import REPO
from tests.support.landing import land_messages

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "tardis" / "incremental_book_L2_sample.csv"
T0 = 1723161000000000


def _read() -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
    rows: list[dict[str, Any]] = []
    rejects: list[tuple[str, str, str]] = []
    reader = TardisL2Reader(
        rows.append, lambda ex, sym, reason, detail, raw: rejects.append((sym, reason, detail))
    )
    for row, raw in iter_rows(SAMPLE):
        reader.feed(row, raw)
    reader.finish()
    assert reader.snapshots == 3
    return rows, rejects


def test_tardis_l2_rows_events_ids_and_rejects() -> None:
    rows, rejects = _read()
    assert [(s, r) for s, r, _ in rejects] == [
        ("ETHUSDT", "no_snapshot"),
        ("BTCUSDT", "unknown_side"),
        ("BTCUSDT", "bad_number"),
    ]
    btc = [r for r in rows if r["symbol"] == "BTCUSDT"]
    ids = [r["last_update_id"] for r in btc]
    assert ids == sorted(ids) and ids[0] == T0 * 1000
    first_snapshot = [r for r in btc if r["last_update_id"] == ids[0]]
    assert len(first_snapshot) == 4 and all(r["is_snapshot"] for r in first_snapshot)
    assert [r["is_event_end"] for r in first_snapshot] == [False, False, False, True]
    restart = [r for r in btc if r["is_snapshot"] and r["last_update_id"] != ids[0]]
    assert len({r["last_update_id"] for r in restart}) == 1 and len(restart) == 3  # one snapshot run, one id
    assert btc[0]["instrument"] == "BTC-USDT" and btc[0]["asset_class"] == "crypto"
    assert btc[0]["receipt_ts"] == T0 + 1000


def test_tardis_l2_import_lands_once_and_rebuilds_the_book(private_settings: Settings) -> None:
    settings = private_settings
    ensure_tables(load_catalog(settings), settings)
    report = import_tardis_book([SAMPLE], settings)
    assert (report.lines, report.snapshots, dict(report.dead_lettered)) == (
        18,
        3,
        {"no_snapshot": 1, "unknown_side": 1, "bad_number": 1},
    )
    topics = [topic_name("crypto", "depth", "binance")]
    first = land_messages(LandingConsumer(settings, topics=topics), report.rows, max_seconds=60)
    assert first.landed == report.rows == 15
    import_tardis_book([SAMPLE], settings)  # a re-import: same synthetic ids, nothing lands twice
    again = land_messages(LandingConsumer(settings, topics=topics), report.rows, max_seconds=60)
    assert again.landed == 0
    d = Decimal
    with Client(settings) as client:
        before_restart = client.book("BTCUSDT", "2024-08-08T23:50:00.35Z", 5, include_recent=False)
        assert before_restart.side("BID") == [(d("61000"), d("1.5"))]
        assert before_restart.side("ASK") == [(d("61000.7"), d("2")), (d("61001"), d("3"))]
        final = client.book("BTCUSDT", "2024-08-09T00:00:00Z", 5, include_recent=False)
        assert final.side("BID") == [(d("60991"), d("1")), (d("60990"), d("7"))]
        assert final.side("ASK") == [(d("60995"), d("8")), (d("60996"), d("9"))]
        eth = client.book("ETHUSDT", "2024-08-09T00:00:00Z", 5, include_recent=False)
        assert eth.side("BID") == [(d("2600"), d("4"))] and eth.side("ASK") == [
            (d("2600.5"), d("0.00000014"))
        ]


def test_k2_import_tardis_book_l2_refuses_another_layout_naming_its_header(tmp_path: Path) -> None:
    other = tmp_path / "trades.csv"
    other.write_text("exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "K2_DATA_DIR": str(tmp_path / "k2")}
    done = subprocess.run(
        [sys.executable, "-m", "k2.cli", "import", "tardis-book-l2", str(other)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "expected the incremental_book_L2 header" in " ".join(done.stderr.split())
