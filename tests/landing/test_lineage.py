"""Lineage on every row (issue 17 §2): each landed row names its Kafka message (topic, partition, offset,
the producer's ``k2.mid`` message id) or, for a direct import, its file and line; ``k2 trace`` shows it.

Checked against the real broker: every row's (partition, offset) is read back from Kafka and the message
there decodes to that very row, with the header the row's message id was taken from.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
from confluent_kafka import Consumer, TopicPartition
from typer.testing import CliRunner

from k2.api.keys import KeyStore
from k2.bus import MarketDataProducer, topic_name
from k2.bus.lineage import MID_HEADER
from k2.bus.serde import AvroBatchDecoder, registry_client
from k2.cli import app
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.writer import append
from k2.landing import LandingConsumer
from k2.landing.direct import DirectLanding
from k2.landing.ledger import gap_row
from k2.model import GAP, QUOTE, TRADE
from k2.model.arrow import records_to_arrow
from k2.query.client import Client
from k2.query.errors import QueryError
from k2.sources.files import import_files
from k2.sources.files.formats import FORMATS
from tests.api.helpers import serve
from tests.landing.helpers import make_trades
from tests.support.landing import land_messages

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "binance-BTCUSDT-trades-2021-01-03-first40.csv"


def _read_topic(settings: Settings, topic: str, partitions: int) -> dict[tuple[int, int], object]:
    """Every message of ``topic`` by (partition, offset), read from the log start."""
    consumer = Consumer(
        {**settings.kafka_client_config(), "group.id": "lineage-check", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    found: dict[tuple[int, int], object] = {}
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)
    }
    want = sum(ends.values())
    try:
        for _ in range(200):
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                if msg.error() is None:
                    found[(int(msg.partition() or 0), int(msg.offset() or 0))] = msg
            if len(found) >= want:
                break
    finally:
        consumer.close()
    return found


def test_every_kafka_row_points_at_its_message(settings: Settings, unique: str) -> None:
    settings = settings.model_copy(update={"consumer_group": f"g-{unique}"})
    exchange = f"lin{unique}"
    rows = make_trades("BTCUSDT", 1, 400, exchange=exchange) + make_trades(
        "ETHUSDT", 1, 300, exchange=exchange
    )
    quotes = [
        {
            **{
                k: r[k]
                for k in ("exchange", "symbol", "instrument", "asset_class", "exchange_ts", "receipt_ts")
            },
            "update_id": r["trade_id"],
            "bid_price": r["price"],
            "bid_size": r["quantity"],
            "ask_price": r["price"] + 1_000_000,
            "ask_size": r["quantity"],
            "ingest_ts": None,
            "vendor": {},
            "currency": "USDT",
        }
        for r in rows[:50]
    ]
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, rows)
        producer.send_many(QUOTE, quotes)
        session = producer.correlation_id
    trade_topic, quote_topic = (
        topic_name("crypto", "trades", exchange),
        topic_name("crypto", "quotes", exchange),
    )
    consumer = LandingConsumer(settings, topics=[trade_topic, quote_topic])
    land_messages(consumer, len(rows) + len(quotes))

    registry = registry_client(settings.registry_url)
    for short, record, topic, expected in (
        ("trades", TRADE, trade_topic, len(rows)),
        ("quotes", QUOTE, quote_topic, len(quotes)),
    ):
        table = consumer.tables[short]
        table.refresh()
        landed = table.scan(row_filter=f"exchange == '{exchange}'").to_arrow()
        assert landed.num_rows == expected
        messages = _read_topic(settings, topic, settings.topic_partitions)
        id_column = "trade_id" if short == "trades" else "update_id"
        decoder = AvroBatchDecoder(registry, record)
        for row in landed.to_pylist():
            assert row["lineage_topic"] == topic
            assert row["lineage_file"] is None and row["lineage_line"] is None
            msg = messages[(row["lineage_partition"], row["lineage_offset"])]
            payload = decoder.decode([msg.value()]).table.to_pylist()  # type: ignore[attr-defined]
            assert len(payload) == 1
            # The message at that offset is this row: same key and values (lineage aside).
            assert {k: v for k, v in row.items() if not k.startswith("lineage_")} == payload[0]
            headers = dict(msg.headers())  # type: ignore[attr-defined]
            assert headers[MID_HEADER].decode() == f"{row['lineage_producer']}:{row['lineage_sequence']}"
            assert row["lineage_producer"] == session
            assert payload[0][id_column] == row[id_column]
    # One producer session numbers its messages 1..n without holes: the lake holds all of them.
    trades = consumer.tables["trades"].scan(row_filter=f"exchange == '{exchange}'").to_arrow()
    assert sorted(trades["lineage_sequence"].to_pylist()) == list(range(1, len(rows) + 1))


def test_direct_import_rows_name_their_file_and_line(tmp_path: Path) -> None:
    lake = Settings(data_dir=tmp_path / "k2", kafka_bootstrap_servers="127.0.0.1:1")
    path = tmp_path / "BTCUSDT-trades-2021-01-03.csv"
    path.write_bytes(FIXTURE.read_bytes())
    lines = path.read_text().splitlines()
    landers: dict[str, DirectLanding] = {}
    import_files(
        "binance-trades", [path], lake, lander=lambda s: landers.setdefault(s, DirectLanding(lake, s))
    )
    table = ensure_tables(load_catalog(lake), lake)["trades"]
    landed = table.scan().to_arrow().to_pylist()
    assert len(landed) == len(lines) == 40
    for row in landed:
        assert row["lineage_file"] == path.name and row["lineage_topic"] is None
        # The line it names holds this trade: id, price and quantity as the file spells them.
        trade_id, price, quantity = lines[row["lineage_line"] - 1].split(",")[:3]
        assert (int(trade_id), price, quantity) == (row["trade_id"], str(row["price"]), str(row["quantity"]))


def test_trace_one_row(settings: Settings, unique: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings.model_copy(update={"consumer_group": f"g-{unique}"})
    exchange = f"tr{unique}"
    rows = make_trades("BTCUSDT", 100, 20, exchange=exchange)
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, rows)
    topic = topic_name("crypto", "trades", exchange)
    land_messages(LandingConsumer(settings, topics=[topic]), len(rows))
    # Gap ledger context: a gap below the traced id, one above it, one of another symbol (not shown).
    gaps = ensure_tables(load_catalog(settings), settings)["gaps"]
    append(
        gaps,
        records_to_arrow(
            GAP,
            [
                gap_row(exchange, "BTCUSDT", "trades", 90, 99, 1, "open"),
                gap_row(exchange, "BTCUSDT", "trades", 120, 130, 1, "open"),
                gap_row(exchange, "BTCUSDT", "trades", 120, 130, 2, "backfilled"),
                gap_row(exchange, "ETHUSDT", "trades", 101, 102, 1, "open"),
            ],
        ),
        "gaps",
    )
    with Client(settings) as client:
        traced = client.trace("trades", f"{exchange}:BTCUSDT:105")
        with pytest.raises(QueryError, match="expected EXCHANGE:SYMBOL:NUMBER .* found 'BTCUSDT:105'"):
            client.trace("trades", "BTCUSDT:105")
        with pytest.raises(QueryError, match="expected one of trades, quotes, book_deltas, found 'bars'"):
            client.trace("bars", f"{exchange}:BTCUSDT:105")
    assert [r["trade_id"] for r in traced.rows] == [105]
    assert traced.source["kind"] == "kafka" and traced.source["topic"] == topic
    assert traced.snapshot is not None and traced.snapshot["found_by"] == "kafka ranges"
    span = json.loads(traced.snapshot["summary"]["k2.kafka.ranges"])[topic][str(traced.source["partition"])]
    assert span[0] <= traced.source["offset"] <= span[1]
    assert [(g["first_missing_id"], g["status"], g["position"]) for g in traced.gaps] == [
        (90, "open", "before"),
        (120, "backfilled", "after"),
    ]

    monkeypatch.setenv("K2_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("K2_KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers or "")
    monkeypatch.setenv("K2_SCHEMA_REGISTRY_URL", settings.schema_registry_url or "")
    result = CliRunner().invoke(app, ["trace", "trades", f"{exchange}:BTCUSDT:105"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert f"kafka {topic}[{traced.source['partition']}] @ offset {traced.source['offset']}" in text
    assert f"message id {traced.source['message_id']}" in text
    assert f"snapshot  {traced.snapshot['snapshot_id']} committed" in text
    assert "gap  before the id: ids 90..99" in text and "gap  after the id: ids 120..130" in text
    as_json = json.loads(
        CliRunner().invoke(app, ["trace", "trades", f"{exchange}:BTCUSDT:105", "--json"]).stdout
    )
    assert as_json["rows"][0]["trade_id"] == 105 and as_json["source"] == traced.source
    bad = CliRunner().invoke(app, ["trace", "trades", "nope"])
    assert bad.exit_code == 2 and "expected EXCHANGE:SYMBOL:NUMBER" in bad.stderr

    # The REST API: GET /v1/trace answers the same trace; a malformed id is a 400, a missing row a 404.
    read_key, _ = KeyStore.from_settings(settings).create("reader", "read")
    with (
        serve(settings) as server,
        httpx.Client(base_url=server.url, headers={"X-API-Key": read_key}) as http,
    ):
        answer = http.get("/v1/trace", params={"table": "trades", "id": f"{exchange}:BTCUSDT:105"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["source"] == traced.source and answer.json()["rows"][0]["trade_id"] == 105
        malformed = http.get("/v1/trace", params={"table": "trades", "id": "BTCUSDT"})
        assert malformed.status_code == 400 and "expected EXCHANGE:SYMBOL:NUMBER" in malformed.text
        missing = http.get("/v1/trace", params={"table": "trades", "id": f"{exchange}:BTCUSDT:999999"})
        assert missing.status_code == 404


def test_arrow_lineage_is_not_in_the_message() -> None:
    """Kafka coordinates are table-side: the Avro schema and the decoded batches never carry them."""
    for record in (TRADE, QUOTE):
        assert not [f for f in record.avro_schema()["fields"] if f["name"].startswith("lineage_")]
        assert "lineage_offset" in record.table_arrow_schema().names
        assert record.arrow_schema().field("currency").type == pa.string()
    assert FORMATS["binance-trades"].record is TRADE


def test_message_ids_of_foreign_or_malformed_headers_are_null() -> None:
    """A message from another producer (no k2.mid, a non-UTF-8 or malformed one) lands with a null id."""
    from k2.bus.lineage import message_ids

    producers, sequences = message_ids(
        [
            [("k2.cid", b"ab"), ("k2.mid", b"ab:3")],
            None,
            [("k2.mid", b"\xff\xfe:1")],
            [("k2.mid", b":1")],
            [("k2.mid", b"a:b")],
            {"k2.mid": "s:5"},
            [("k2.mid", b"x:99999999999999999999")],
            [("k2.mid", b"a:b:7"), ("other", b"1")],
        ]
    )
    assert producers.to_pylist() == ["ab", None, None, None, None, "s", None, "a:b"]
    assert sequences.to_pylist() == [3, None, None, None, None, 5, None, 7]


def test_currency_from_the_source_or_reference_data_never_guessed(tmp_path: Path) -> None:
    """Binance files do not say which part of BTCUSDT is the quote asset: null until reference data
    (Binance's symbol info in reference.instruments) says USDT; Coinbase's product id says USD."""
    from k2.sources.coinbase import parse_match
    from k2.sources.reference import parse_exchange_info, write_instruments

    lake = Settings(data_dir=tmp_path / "k2", kafka_bootstrap_servers="127.0.0.1:1")
    name = "BTCUSDT-trades-2021-01-03.csv"
    first, second = tmp_path / "first" / name, tmp_path / "second" / name
    lines = FIXTURE.read_text().splitlines(keepends=True)
    for path, part in ((first, lines[:20]), (second, lines[20:])):
        path.parent.mkdir()
        path.write_text("".join(part))
    landers: dict[str, DirectLanding] = {}

    def lander(short: str) -> DirectLanding:
        return landers.setdefault(short, DirectLanding(lake, short))

    import_files("binance-trades", [first], lake, lander=lander)
    tables = ensure_tables(load_catalog(lake), lake)
    info = json.loads((FIXTURE.parent / "binance_exchange_info.json").read_text())
    write_instruments(tables["instruments"], parse_exchange_info(info))
    landers.clear()  # a new import run reads the reference as it is now
    import_files("binance-trades", [second], lake, lander=lander)
    tables["trades"].refresh()
    rows = tables["trades"].scan().to_arrow().to_pylist()
    assert len(rows) == 40 and {r["lineage_file"] for r in rows} == {name}
    boundary = int(lines[20].split(",")[0])
    assert {r["currency"] for r in rows if r["trade_id"] < boundary} == {None}  # the reference knew nothing
    assert {r["currency"] for r in rows if r["trade_id"] >= boundary} == {"USDT"}  # quoteAsset of BTCUSDT

    coinbase = parse_match(
        {
            "type": "match",
            "trade_id": 1,
            "sequence": 5,
            "maker_order_id": "a",
            "taker_order_id": "b",
            "time": "2021-04-17T16:43:30.244075Z",
            "product_id": "BTC-USD",
            "size": "0.1",
            "price": "60000.01",
            "side": "sell",
        },
        0,
    )
    assert coinbase["currency"] == "USD"
