"""Issue 10 §5: the landing's memory is bounded by ``landing_max_buffered_bytes`` plus a stated constant.

The landing runs in a child process on a real broker, registry and catalog and drains a backlog many
times its buffer bound. Its first commit is the warm-up (imports, DuckDB's Avro reader, pyiceberg's
writer are one-time costs): the RSS right after it is the reference, and the peak RSS is reset there
(``/proc/self/clear_refs``). Asserted over the remaining commits: peak RSS - warm RSS <=
landing_max_buffered_bytes + 2 x consumer_fetch_max_bytes (librdkafka's pre-fetch queue and one fetch in
flight) + 64 MiB (allocator slack, the last consumed batch, Iceberg metadata). No timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from k2.bus import MarketDataProducer, topic_name
from k2.config import Settings
from k2.model import TRADE
from tests.landing.helpers import make_trades

REPO = Path(__file__).resolve().parents[2]
MIB = 1_048_576
SLACK = 64 * MIB

_CHILD = """
import json, sys
from k2.config import Settings
from k2.landing import LandingConsumer

def status(field):
    for line in open("/proc/self/status").read().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)

settings = Settings.model_validate_json(sys.argv[1])
warm = []

def after_commit(short, rows):
    if not warm:
        warm.append(status("VmRSS"))
        open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM: the peak from here on

consumer = LandingConsumer(settings, topics=[sys.argv[2]], on_commit=after_commit)
stats = consumer.run(idle_exit_seconds=2)
print(json.dumps({"warm": warm[0], "peak": status("VmHWM"), "landed": stats.landed, "commits": stats.commits}))
"""


def test_landing_rss_stays_within_the_buffer_bound_draining_a_backlog(
    settings: Settings, unique: str
) -> None:
    bound = 32 * MIB
    settings = settings.model_copy(
        update={
            "consumer_group": f"g-{unique}",
            "consumer_session_timeout_ms": 1000,
            "landing_max_buffered_bytes": bound,
            "landing_commit_rows": 1_000_000,
            "landing_commit_interval_seconds": 300.0,  # only the byte bound commits
        }
    )
    backlog_topic = topic_name("crypto", "trades", f"backlog{unique}")
    backlog = 100_000
    with MarketDataProducer(settings) as producer:
        for i, symbol in enumerate(("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")):
            producer.send_many(
                TRADE, make_trades(symbol, 1, backlog // 4, exchange=f"backlog{unique}", seed=i)
            )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, settings.model_dump_json(), backlog_topic],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["landed"] == backlog
    assert result["commits"] >= 3  # the backlog is larger than the bound: the bound, not the end, committed
    allowed = bound + 2 * settings.consumer_fetch_max_bytes + SLACK
    grown = result["peak"] - result["warm"]
    print(
        f"warm {result['warm'] / MIB:.0f} MiB, peak {result['peak'] / MIB:.0f} MiB, {result['commits']} commits"
    )
    assert grown <= allowed, (
        f"expected peak RSS - warm RSS <= {allowed / MIB:.0f} MiB, found {grown / MIB:.0f} MiB"
    )
