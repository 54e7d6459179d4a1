"""The fake exchange itself: what it serves, its REST API and limits, and that each fault really happens."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from k2.sources.fake_exchange import (
    CaptureMessage,
    FakeExchange,
    Faults,
    load_binance_depth_snapshots,
    load_coinbase,
    parse_ranges,
)
from tests.sources.helpers import BINANCE_CAPTURES, COINBASE_CAPTURE, FIRST_ID

TRADE_STREAMS = "/stream?streams=btcusdt@trade"
BOTH_STREAMS = "/stream?streams=btcusdt@trade/btcusdt@bookTicker"


def connect(url: str) -> ClientConnection:
    """A client that does not wait long for the closing handshake (the fake keeps streaming meanwhile)."""
    return ws_connect(url, close_timeout=0.5, compression=None)


def _read(ws: ClientConnection, idle: float = 0.5, limit: int | None = None) -> list[str | bytes]:
    """Frames until the connection closes, ``idle`` seconds pass without one, or ``limit`` frames."""
    frames: list[str | bytes] = []
    try:
        while limit is None or len(frames) < limit:
            frames.append(ws.recv(timeout=idle))
    except (TimeoutError, ConnectionClosed):
        pass
    return frames


def _trade_id(frame: str | bytes) -> int | None:
    data = orjson.loads(frame).get("data", {})
    return data.get("t")


def test_serves_only_subscribed_streams_in_capture_order(binance_messages: list[CaptureMessage]) -> None:
    with (
        FakeExchange(faults=Faults(max_messages=3_000), messages=binance_messages) as fake,
        connect(fake.ws_url + TRADE_STREAMS) as ws,
    ):
        frames = _read(ws)
    expected = [m.text for m in binance_messages[:3_000] if m.channel == "btcusdt@trade"]
    assert frames == expected and len(expected) > 100
    assert fake.stats.sent == len(expected)


def test_subscribe_list_and_the_incoming_message_limit(binance_messages: list[CaptureMessage]) -> None:
    with (
        FakeExchange(faults=Faults(max_messages=500), messages=binance_messages) as fake,
        connect(fake.ws_url + "/stream?streams=btcusdt@bookTicker") as ws,
    ):
        ws.send('{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}')
        ws.send('{"method":"LIST_SUBSCRIPTIONS","id":2}')
        replies = [f for f in _read(ws, 0.3) if b'"id"' in (f if isinstance(f, bytes) else f.encode())]
        assert [orjson.loads(r) for r in replies] == [
            {"result": None, "id": 1},
            {"result": ["btcusdt@bookTicker", "btcusdt@trade"], "id": 2},
        ]
        try:
            for i in range(6):  # Binance spot accepts 5 incoming messages per second
                ws.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 10 + i}).decode())
        except ConnectionClosed:
            pass  # a slow client: the first two requests still counted in this second, the close came earlier
        _read(ws, 1.0)
        assert ws.close_code == 1008
    assert fake.stats.control_violations == 1


def test_rest_serves_past_trades_only_and_leaves_out_missing_ids(
    binance_messages: list[CaptureMessage],
) -> None:
    faults = Faults(max_messages=2_000, rest_missing=((FIRST_ID + 5, FIRST_ID + 7),))
    with FakeExchange(faults=faults, messages=binance_messages) as fake:
        url = fake.rest_url + "/api/v3/historicalTrades"
        assert (
            httpx.get(url, params={"symbol": "BTCUSDT", "fromId": FIRST_ID}).json() == []
        )  # nothing happened yet
        with connect(fake.ws_url + TRADE_STREAMS) as ws:
            frames = _read(ws)
        passed = [_trade_id(f) for f in frames]
        response = httpx.get(url, params={"symbol": "BTCUSDT", "fromId": FIRST_ID, "limit": 1000})
        assert response.status_code == 200 and response.headers["X-MBX-USED-WEIGHT-1M"] == "50"
        body = response.json()
        assert [t["id"] for t in body] == [i for i in passed if not FIRST_ID + 5 <= i <= FIRST_ID + 7]  # type: ignore[operator]
        first = orjson.loads(frames[0])["data"]
        assert body[0] == {
            "id": first["t"],
            "price": first["p"],
            "qty": first["q"],
            "quoteQty": "1236.75260000",
            "time": first["T"],
            "isBuyerMaker": first["m"],
            "isBestMatch": first["M"],
        }
        limited = httpx.get(url, params={"symbol": "BTCUSDT", "fromId": FIRST_ID + 10, "limit": 3}).json()
        assert [t["id"] for t in limited] == [FIRST_ID + 10, FIRST_ID + 11, FIRST_ID + 12]
        recent = httpx.get(fake.rest_url + "/api/v3/trades", params={"symbol": "BTCUSDT", "limit": 2}).json()
        assert [t["id"] for t in recent] == passed[-2:]
        unknown = httpx.get(url, params={"symbol": "NOPEUSDT"})
        assert unknown.status_code == 400 and unknown.json()["code"] == -1121


def test_weight_limit_answers_429_then_bans_clients_that_ignore_retry_after(
    binance_messages: list[CaptureMessage],
) -> None:
    with FakeExchange(
        faults=Faults(max_messages=10, rest_weight_limit=60), messages=binance_messages
    ) as fake:
        url = fake.rest_url + "/api/v3/historicalTrades"
        statuses = [httpx.get(url, params={"symbol": "BTCUSDT"}).status_code for _ in range(2)]
        throttled = httpx.get(url, params={"symbol": "BTCUSDT"})
        banned = httpx.get(url, params={"symbol": "BTCUSDT"})
    assert statuses == [200, 200]
    assert throttled.status_code == 429 and 1 <= int(throttled.headers["Retry-After"]) <= 60
    assert throttled.headers["X-MBX-USED-WEIGHT-1M"] == "50"
    assert banned.status_code == 418 and int(banned.headers["Retry-After"]) == 120
    assert (fake.stats.rest_429, fake.stats.rest_418) == (1, 1)


def test_drop_skip_advance_and_malformed_happen_where_asked(binance_messages: list[CaptureMessage]) -> None:
    faults = Faults(
        drop_every=300,
        max_drops=2,
        drop_mode="mixed",
        reconnect_advance=100,
        skip_at=frozenset({50}),
        skip_count=3,
        malformed_at=frozenset({10}),
    )
    trades = [m for m in binance_messages if m.channel == "btcusdt@trade"]
    with FakeExchange(faults=faults, messages=binance_messages) as fake:
        with connect(fake.ws_url + TRADE_STREAMS) as ws:
            first = _read(ws, 1.0)
            assert ws.close_code == 1001  # the first drop is a clean close
        with connect(fake.ws_url + TRADE_STREAMS) as ws:
            second = _read(ws, 1.0)
            assert ws.close_code == 1006  # the second is a TCP abort: no close frame (abnormal closure)
        with connect(fake.ws_url + TRADE_STREAMS) as ws:
            third = _read(ws, limit=5)
    assert len(first) == 301 and first[10] in fake.stats.malformed  # 300 real frames + 1 injected
    real = [f for f in first if f not in fake.stats.malformed]
    assert [_trade_id(f) for f in real] == [m.trade_id for m in trades[:50] + trades[53:303]]
    assert fake.stats.skipped_trade_ids == [m.trade_id for m in trades[50:53]]
    # While the client was away the capture moved on by 100 messages (of every stream): those trades
    # were never sent, and the next connection starts right after them.
    position = {id(m): i for i, m in enumerate(binance_messages)}
    resume = position[id(trades[302])] + 1 + 100
    after = [m for m in binance_messages[resume:] if m.channel == "btcusdt@trade"]
    assert [_trade_id(f) for f in second] == [m.trade_id for m in after[:300]]
    resume = position[id(after[299])] + 1 + 100
    assert (
        _trade_id(third[0])
        == next(m for m in binance_messages[resume:] if m.channel == "btcusdt@trade").trade_id
    )
    assert (fake.stats.drops, fake.stats.advanced) == (2, 200)
    assert fake.stats.connections == 3


def test_malformed_variants_and_stall(binance_messages: list[CaptureMessage]) -> None:
    faults = Faults(max_messages=3_000, malformed_every=20, stall_at=frozenset({30}), stall_seconds=1.0)
    stamps: list[float] = []
    frames: list[str | bytes] = []
    with (
        FakeExchange(faults=faults, messages=binance_messages) as fake,
        connect(fake.ws_url + BOTH_STREAMS) as ws,
    ):
        try:
            while len(frames) < 120:
                frames.append(ws.recv(timeout=2.0))
                stamps.append(time.monotonic())
        except TimeoutError:
            pass
    assert fake.stats.stalls == 1
    assert max(b - a for a, b in zip(stamps, stamps[1:], strict=False)) >= 0.9
    kinds = set()
    for frame in fake.stats.malformed:
        if isinstance(frame, bytes):
            kinds.add("binary")
            continue
        try:
            data = orjson.loads(frame)["data"]
        except orjson.JSONDecodeError:
            kinds.add("truncated")
            continue
        kinds.add("missing" if not ({"p", "b"} & set(data)) else "bad_number")
    assert kinds == {"binary", "truncated", "missing", "bad_number"}


def test_a_hold_sends_nothing_past_its_position_until_a_depth_snapshot_was_answered(
    binance_messages: list[CaptureMessage],
) -> None:
    streams = "/stream?streams=btcusdt@trade/btcusdt@bookTicker/btcusdt@depth@100ms"
    faults = Faults(max_messages=3_000, hold_for_depth_snapshots=((200, 1),), hold_seconds=60.0)
    snapshots = load_binance_depth_snapshots(BINANCE_CAPTURES)
    with (
        FakeExchange(faults=faults, messages=binance_messages, depth_snapshots=snapshots) as fake,
        connect(fake.ws_url + streams) as ws,
    ):
        before = _read(ws, idle=1.0)
        answer = httpx.get(fake.rest_url + "/api/v3/depth", params={"symbol": "BTCUSDT"}).json()
        after = _read(ws, idle=1.0, limit=100)
    assert before == [m.text for m in binance_messages[:200]]  # held at position 200 ...
    depth_before = [orjson.loads(f)["data"]["u"] for f in before if b"depthUpdate" in _bytes(f)]
    assert answer["lastUpdateId"] >= depth_before[-1]  # ... so the snapshot is the book there
    assert after == [m.text for m in binance_messages[200:300]]  # ... and the replay goes on once answered


def _bytes(frame: str | bytes) -> bytes:
    return frame if isinstance(frame, bytes) else frame.encode()


def test_coinbase_handshake_last_match_and_rest_pagination() -> None:
    messages = load_coinbase(COINBASE_CAPTURE)
    faults = Faults(drop_every=40, max_drops=1, reconnect_advance=0, rest_requests_per_second=3)
    subscribe = {
        "type": "subscribe",
        "product_ids": ["SKL-USD", "DASH-BTC"],
        "channels": ["matches", "ticker", "heartbeat"],
    }
    with FakeExchange("coinbase", faults=faults, messages=messages) as fake:
        with connect(fake.ws_url) as ws:
            ws.send(orjson.dumps({**subscribe, "product_ids": ["FOO-BAR"]}).decode())
            error = orjson.loads(ws.recv(timeout=2))
            assert error == {
                "type": "error",
                "message": "Failed to subscribe",
                "reason": "FOO-BAR is not a valid product",
            }
        with connect(fake.ws_url) as ws:
            ws.send(orjson.dumps(subscribe).decode())
            first = [orjson.loads(f) for f in _read(ws, 1.0)]
        assert first[0]["type"] == "subscriptions"
        assert {c["name"] for c in first[0]["channels"]} == {"matches", "ticker", "heartbeat"}
        assert {m["product_id"] for m in first[1:]} == {"SKL-USD", "DASH-BTC"} and len(first) == 41
        last_seen = max(
            m["trade_id"] for m in first[1:] if m["type"] == "match" and m["product_id"] == "SKL-USD"
        )
        with connect(fake.ws_url) as ws:
            ws.send(orjson.dumps(subscribe).decode())
            second = [orjson.loads(f) for f in _read(ws, 0.5)]
        replayed = [m for m in second[1:3] if m["type"] == "last_match"]
        assert {m["product_id"]: m["trade_id"] for m in replayed}["SKL-USD"] == last_seen

        url = fake.rest_url + "/products/SKL-USD/trades"
        page = httpx.get(url, params={"limit": 5})
        ids = [t["trade_id"] for t in page.json()]
        assert ids == sorted(ids, reverse=True) and page.headers["CB-AFTER"] == str(ids[-1])
        older = httpx.get(url, params={"limit": 5, "after": page.headers["CB-AFTER"]}).json()
        assert [t["trade_id"] for t in older] == list(range(ids[-1] - 1, ids[-1] - 6, -1))
        with httpx.Client() as client:  # one connection pool: requests fast enough even on a loaded machine
            statuses = [client.get(url).status_code for _ in range(8)]
        assert 429 in statuses  # 3 requests per second in this test (Coinbase: 10)
        time.sleep(1.1)
        assert httpx.get(fake.rest_url + "/products/FOO-BAR/trades").status_code == 404


def test_parse_ranges() -> None:
    assert parse_ranges("1-3, 7") == ((1, 3), (7, 7))
    with pytest.raises(ValueError, match="expected id ranges"):
        parse_ranges("a-b")
