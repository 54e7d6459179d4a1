"""Upgrading a trades table written by the version before lineage (issue 17 §2, docs/upgrade.md).

The previous model is rebuilt here from its field list (a frozen copy: the schema before ``currency`` and
the lineage columns). A table created and filled with it is upgraded in place by ``ensure_tables`` (what
``k2 init`` and the landing's start run): old rows read NULL lineage and currency, rows landed after
the upgrade carry both, and queries (current and time travel to before the upgrade) answer as before.
"""

from __future__ import annotations

import dataclasses

from k2.bus import MarketDataProducer, topic_name
from k2.config import Settings
from k2.lake.catalog import TABLES, ensure_tables, load_catalog, table_properties
from k2.landing import LandingConsumer
from k2.model import LINEAGE_FIELDS, TRADE
from k2.model.arrow import records_to_arrow
from k2.model.schema import FieldSpec
from k2.query.client import Client
from tests.landing.helpers import make_trades
from tests.support.landing import land_messages


def _s(name: str, kind: str, doc: str, required: bool = True) -> FieldSpec:
    return FieldSpec(name, kind, required, doc)  # type: ignore[arg-type]


# The TRADE fields of the previous version, verbatim (before currency and the table-side lineage).
PREVIOUS_TRADE = dataclasses.replace(
    TRADE,
    fields=(
        _s("exchange", "string", "Venue code, lower case (binance, coinbase, asx)."),
        _s("symbol", "string", "Exchange-native symbol (BTCUSDT, BTC-USD, BHP)."),
        _s(
            "instrument",
            "string",
            "Canonical instrument: BASE-QUOTE for pairs (BTC-USDT), the ticker for equities.",
        ),
        _s("asset_class", "string", "crypto, equities, futures or options."),
        _s(
            "trade_id",
            "long",
            "Exchange-native trade id (deterministic synthetic id for venues without one).",
        ),
        _s("price", "decimal", "Trade price, exact."),
        _s("quantity", "decimal", "Base quantity, exact."),
        _s(
            "quote_quantity", "decimal", "Quote quantity (price x quantity as published, or computed).", False
        ),
        _s("side", "string", "Aggressor side: BUY, SELL or UNKNOWN."),
        _s("exchange_ts", "timestamp", "Exchange trade time (UTC, microseconds)."),
        _s(
            "receipt_ts",
            "timestamp",
            "When K2 received the message (UTC, microseconds); import time for files.",
        ),
        _s("ingest_ts", "timestamp", "When the message was produced to Kafka (UTC, microseconds)."),
        _s(
            "source_sequence",
            "long",
            "Sequence number of the source message, where the venue has one.",
            False,
        ),
        _s("conditions", "string_list", "Trade conditions (e.g. AUCTION, BEST_MATCH)."),
        _s("vendor", "string_map", "Vendor-specific fields kept as strings."),
    ),
    table_fields=(),
)


def test_a_table_from_the_previous_version_upgrades_in_place(settings: Settings, unique: str) -> None:
    settings = settings.model_copy(update={"consumer_group": f"g-{unique}"})
    exchange = f"old{unique}"
    previous = dataclasses.replace(TABLES["trades"], record=PREVIOUS_TRADE)
    catalog = load_catalog(settings)
    catalog.create_namespace("market_data")
    old_table = catalog.create_table(
        previous.identifier,
        schema=PREVIOUS_TRADE.iceberg_schema(),
        partition_spec=previous.partition_spec(settings.symbol_buckets),
        sort_order=previous.sort_order(),
        properties=table_properties(settings),
    )
    old_rows = [
        {**r, "ingest_ts": r["receipt_ts"]} for r in make_trades("BTCUSDT", 1, 200, exchange=exchange)
    ]
    old_table.append(records_to_arrow(PREVIOUS_TRADE, old_rows).sort_by([("exchange_ts", "ascending")]))
    before_upgrade = old_table.current_snapshot()
    assert before_upgrade is not None
    assert "lineage_offset" not in {f.name for f in old_table.schema().fields}

    # The new version starts: ensure_tables (k2 init, landing start) evolves the schema in place.
    upgraded = ensure_tables(load_catalog(settings), settings)["trades"]
    names = [f.name for f in upgraded.schema().fields]
    assert names == [f.name for f in PREVIOUS_TRADE.fields] + ["currency"] + [f.name for f in LINEAGE_FIELDS]
    assert upgraded.current_snapshot().snapshot_id == before_upgrade.snapshot_id  # no data rewritten

    new_rows = make_trades("BTCUSDT", 201, 100, exchange=exchange)
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, [{**r, "currency": "USDT"} for r in new_rows])
    consumer = LandingConsumer(settings, topics=[topic_name("crypto", "trades", exchange)])
    land_messages(consumer, len(new_rows))

    table = consumer.tables["trades"]
    table.refresh()
    landed = {r["trade_id"]: r for r in table.scan().to_arrow().to_pylist()}
    assert sorted(landed) == list(range(1, 301))
    for trade_id, row in landed.items():
        if trade_id <= 200:  # written by the previous version: NULL lineage and currency
            assert all(row[f.name] is None for f in LINEAGE_FIELDS) and row["currency"] is None
        else:
            assert row["lineage_topic"] == topic_name("crypto", "trades", exchange)
            assert row["lineage_offset"] is not None and row["lineage_sequence"] is not None
            assert row["currency"] == "USDT"

    # Queries are unchanged: every row, exact values; time travel to the pre-upgrade snapshot still reads.
    with Client(settings) as client:
        now = client.trades("BTCUSDT", exchange=exchange, include_recent=False).table
        prices = dict(zip(now["trade_id"].to_pylist(), now["price"].to_pylist(), strict=True))
        assert sorted(prices) == list(range(1, 301))
        assert not any(name.startswith("lineage_") for name in now.column_names)  # queries: message columns
        for row in records_to_arrow(PREVIOUS_TRADE, old_rows).to_pylist():
            assert prices[row["trade_id"]] == row["price"]
        then = client.trades(
            "BTCUSDT", exchange=exchange, as_of=before_upgrade.snapshot_id, include_recent=False
        ).table
        assert sorted(then["trade_id"].to_pylist()) == list(range(1, 201))
        assert then["currency"].null_count == 200
        traced = client.trace("trades", f"{exchange}:BTCUSDT:7")
        assert traced.source["kind"] == "unknown" and traced.snapshot is not None
        assert traced.snapshot["snapshot_id"] == before_upgrade.snapshot_id
