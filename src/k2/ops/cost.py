"""The cost model behind ``k2 cost``: monthly cloud cost and cost per million messages.

Every price and workload assumption is an input from a TOML price book: the shipped
``k2/ops/assets/prices.toml`` (AWS us-east-1 list prices, each section naming its source page, all
marked "to be checked"), optionally overridden key by key with ``--prices FILE``. Stored bytes per
message come from the price book, ``--bytes-per-msg``, or K2's own trades table (``--from-table``:
``total-files-size / total-records`` of the current snapshot).

Line items (``M`` = messages per month = msgs/s x 86,400 x ``days_per_month``; ``H`` = hours per month =
24 x ``days_per_month``; ``GB`` = ``bytes_per_gb`` bytes):

* broker instances: ``brokers x broker_per_hour_usd x H``
* broker storage: ``msgs/s x kafka_bytes_per_message x kafka_retention_hours x 3600 x replication / GB``
  GB-month x ``storage_per_gb_month_usd``
* object storage: ``msgs/s x 86,400 x retention_days x bytes_per_message / GB`` GB-month (the steady
  state once the retention window is full) x ``storage_per_gb_month_usd``
* PUT requests: landing commits (every ``commit_interval_seconds``, or every ``commit_rows`` messages
  when that is sooner) x (``data_files_per_commit`` + ``metadata_puts_per_commit``) + compaction output
  files (``M x bytes_per_message / compaction_target_file_bytes``), per 1,000
* GET requests: compaction reads each landed data file once + ``queries_per_month x gets_per_query``
* catalog database: ``instance_per_hour_usd x H + storage_gb x storage_per_gb_month_usd``
* landing compute: ``max(min_landing_instances, ceil(msgs/s / landing_msgs_per_sec_per_vcpu /
  vcpus_per_instance))`` instances x ``instance_per_hour_usd x H``; API compute: ``api_instances x ...``
* cross-AZ transfer: ``M x kafka_bytes_per_message x 2`` (produce + consume) ``/ GB x cross_az_fraction x
  cross_az_per_gb_usd``

Example:
    >>> book = load_prices()
    >>> result = estimate(book, msgs_per_sec=1000, retention_days=30, bytes_per_message=10)
    >>> result.messages_per_month
    2592000000.0
    >>> round(result.total_usd / (result.messages_per_month / 1e6), 6) == round(result.cost_per_million_usd, 6)
    True
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

from k2.config import Settings


class CostError(ValueError):
    """A bad price file, a bad input, or a table that cannot be measured."""


# Every key of the price book: section -> key -> (type, must be > 0). Strings are documentation.
_SCHEMA: dict[str, dict[str, tuple[type, bool]]] = {
    "billing": {
        "currency": (str, False),
        "region": (str, False),
        "prices_as_of": (str, False),
        "bytes_per_gb": (float, True),
        "days_per_month": (float, True),
    },
    "workload": {
        "iceberg_bytes_per_message": (float, True),
        "kafka_bytes_per_message": (float, True),
        "retention_days": (float, False),
        "kafka_retention_hours": (float, False),
        "kafka_replication_factor": (float, True),
        "commit_interval_seconds": (float, True),
        "commit_rows": (float, True),
        "data_files_per_commit": (float, False),
        "metadata_puts_per_commit": (float, False),
        "compaction_target_file_bytes": (float, True),
        "queries_per_month": (float, False),
        "gets_per_query": (float, False),
    },
    "broker": {
        "source": (str, False),
        "instance_type": (str, False),
        "brokers": (float, False),
        "broker_per_hour_usd": (float, False),
        "storage_per_gb_month_usd": (float, False),
    },
    "object_storage": {
        "source": (str, False),
        "storage_per_gb_month_usd": (float, False),
        "put_per_1000_usd": (float, False),
        "get_per_1000_usd": (float, False),
    },
    "catalog_db": {
        "source": (str, False),
        "instance_type": (str, False),
        "instance_per_hour_usd": (float, False),
        "storage_gb": (float, False),
        "storage_per_gb_month_usd": (float, False),
    },
    "compute": {
        "source": (str, False),
        "instance_type": (str, False),
        "vcpus_per_instance": (float, True),
        "instance_per_hour_usd": (float, False),
        "landing_msgs_per_sec_per_vcpu": (float, True),
        "min_landing_instances": (float, False),
        "api_instances": (float, False),
    },
    "transfer": {
        "source": (str, False),
        "cross_az_per_gb_usd": (float, False),
        "cross_az_fraction": (float, False),
    },
}

PriceBook = dict[str, dict[str, Any]]


def default_prices_path() -> Path:
    """Path of the price book shipped with K2."""
    return Path(str(resources.files("k2.ops") / "assets" / "prices.toml"))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise CostError(
            f"price file: expected an existing TOML file, found no file at {str(path)!r}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise CostError(
            f"price file {str(path)!r}: expected valid TOML, found a syntax error: {exc}"
        ) from None


def validate_prices(raw: dict[str, Any], origin: str = "price file", partial: bool = False) -> PriceBook:
    """Check sections, keys, types and ranges; return the book with numbers as floats.

    Raises :class:`CostError` naming ``section.key``, what was expected and what was found.

    Example:
        >>> validate_prices({"object_storage": {"put_per_1000_usd": "cheap"}}, partial=True)
        Traceback (most recent call last):
        ...
        k2.ops.cost.CostError: price file: object_storage.put_per_1000_usd: expected a number, found 'cheap'
    """
    book: PriceBook = {}
    for section, values in raw.items():
        if section not in _SCHEMA:
            raise CostError(
                f"{origin}: expected sections {sorted(_SCHEMA)}, found unknown section [{section}]"
            )
        if not isinstance(values, dict):
            raise CostError(f"{origin}: expected [{section}] to be a table of keys, found {values!r}")
        book[section] = {}
        for key, value in values.items():
            spec = _SCHEMA[section].get(key)
            name = f"{section}.{key}"
            if spec is None:
                raise CostError(f"{origin}: {name}: unknown key; expected one of {sorted(_SCHEMA[section])}")
            kind, positive = spec
            if kind is str:
                if not isinstance(value, str):
                    raise CostError(f"{origin}: {name}: expected a string, found {value!r}")
                book[section][key] = value
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise CostError(f"{origin}: {name}: expected a number, found {value!r}")
            if not math.isfinite(value) or value < 0 or (positive and value == 0):
                raise CostError(
                    f"{origin}: {name}: expected a {'positive' if positive else 'non-negative'} number, found {value!r}"
                )
            book[section][key] = float(value)
    if not partial:
        for section, keys in _SCHEMA.items():
            for key in keys:
                if key not in book.get(section, {}):
                    raise CostError(f"{origin}: {section}.{key}: expected a value, found the key missing")
    return book


def load_prices(override: Path | None = None) -> PriceBook:
    """The shipped price book, with ``override``'s keys (a TOML file of the same shape) replacing its values.

    Example:
        >>> load_prices()["object_storage"]["storage_per_gb_month_usd"] > 0
        True
    """
    book = validate_prices(_read_toml(default_prices_path()), origin=str(default_prices_path()))
    if override is not None:
        changes = validate_prices(_read_toml(override), origin=f"price file {str(override)!r}", partial=True)
        for section, values in changes.items():
            book[section].update(values)
    return book


@dataclass(frozen=True)
class LineItem:
    """One line of the estimate: what, the formula with its inputs, the monthly cost."""

    component: str
    item: str
    formula: str
    monthly_usd: float
    scales_with_volume: bool


@dataclass
class CostEstimate:
    """A monthly estimate: inputs, line items, total and cost per million messages."""

    msgs_per_sec: float
    retention_days: float
    bytes_per_message: float
    bytes_source: str
    messages_per_month: float
    items: list[LineItem] = field(default_factory=list)
    prices_as_of: str = ""
    region: str = ""

    @property
    def total_usd(self) -> float:
        """Monthly total."""
        return sum(i.monthly_usd for i in self.items)

    @property
    def cost_per_million_usd(self) -> float:
        """Total divided by millions of messages per month."""
        return self.total_usd / (self.messages_per_month / 1e6)

    def item(self, name: str) -> LineItem:
        """The line item called ``name`` (KeyError naming the known ones otherwise)."""
        for line in self.items:
            if line.item == name:
                return line
        raise KeyError(f"expected one of {[i.item for i in self.items]}, found {name!r}")

    def as_dict(self) -> dict[str, Any]:
        """Plain data (``k2 cost --json``)."""
        data = asdict(self)
        data["total_usd"] = round(self.total_usd, 2)
        data["cost_per_million_usd"] = self.cost_per_million_usd
        return data


# long: a price sheet read top to bottom, one line item after another (each with its assumption).
def estimate(
    prices: PriceBook,
    msgs_per_sec: float,
    retention_days: float | None = None,
    bytes_per_message: float | None = None,
    bytes_source: str | None = None,
) -> CostEstimate:
    """Compute the monthly estimate (formulas in the module docstring).

    Example:
        >>> e = estimate(load_prices(), msgs_per_sec=2000, retention_days=10, bytes_per_message=10)
        >>> e.item("object storage").formula.startswith("2,000 msg/s")
        True
    """
    if not math.isfinite(msgs_per_sec) or msgs_per_sec <= 0:
        raise CostError(f"--msgs-per-sec: expected a positive number, found {msgs_per_sec!r}")
    w, b = prices["workload"], prices["billing"]
    retention = w["retention_days"] if retention_days is None else retention_days
    if not math.isfinite(retention) or retention < 0:
        raise CostError(f"--retention-days: expected a number >= 0, found {retention!r}")
    if bytes_per_message is None:
        bytes_per_message, bytes_source = (
            w["iceberg_bytes_per_message"],
            "price book workload.iceberg_bytes_per_message",
        )
    if not math.isfinite(bytes_per_message) or bytes_per_message <= 0:
        raise CostError(f"bytes per message: expected a positive number, found {bytes_per_message!r}")
    gb = b["bytes_per_gb"]
    seconds = b["days_per_month"] * 86_400
    hours = b["days_per_month"] * 24
    msgs_month = msgs_per_sec * seconds
    out = CostEstimate(
        msgs_per_sec=msgs_per_sec,
        retention_days=retention,
        bytes_per_message=bytes_per_message,
        bytes_source=bytes_source or "given",
        messages_per_month=msgs_month,
        prices_as_of=str(b["prices_as_of"]),
        region=str(b["region"]),
    )
    add = out.items.append
    rate = f"{msgs_per_sec:,.0f} msg/s"

    p = prices["broker"]
    add(
        LineItem(
            "broker",
            "broker instances",
            f"{p['brokers']:g} x {p['instance_type']} x ${p['broker_per_hour_usd']}/h x {hours:g} h",
            p["brokers"] * p["broker_per_hour_usd"] * hours,
            False,
        )
    )
    kafka_gb = (
        msgs_per_sec
        * w["kafka_bytes_per_message"]
        * w["kafka_retention_hours"]
        * 3600
        * w["kafka_replication_factor"]
        / gb
    )
    add(
        LineItem(
            "broker",
            "broker storage",
            f"{rate} x {w['kafka_bytes_per_message']:g} B x {w['kafka_retention_hours']:g} h x RF {w['kafka_replication_factor']:g} = "
            f"{kafka_gb:,.1f} GB x ${p['storage_per_gb_month_usd']}/GB-month",
            kafka_gb * p["storage_per_gb_month_usd"],
            True,
        )
    )

    s = prices["object_storage"]
    lake_gb = msgs_per_sec * 86_400 * retention * bytes_per_message / gb
    add(
        LineItem(
            "object storage",
            "object storage",
            f"{rate} x 86,400 s x {retention:g} d x {bytes_per_message:.2f} B = {lake_gb:,.1f} GB x ${s['storage_per_gb_month_usd']}/GB-month",
            lake_gb * s["storage_per_gb_month_usd"],
            True,
        )
    )
    commits_per_sec = max(1 / w["commit_interval_seconds"], msgs_per_sec / w["commit_rows"])
    commits = commits_per_sec * seconds
    landing_puts = commits * (w["data_files_per_commit"] + w["metadata_puts_per_commit"])
    compaction_puts = msgs_month * bytes_per_message / w["compaction_target_file_bytes"]
    puts = landing_puts + compaction_puts
    add(
        LineItem(
            "object storage",
            "PUT requests",
            f"{commits:,.0f} commits x {w['data_files_per_commit'] + w['metadata_puts_per_commit']:g} + {compaction_puts:,.0f} compacted files "
            f"= {puts:,.0f} x ${s['put_per_1000_usd']}/1000",
            puts / 1000 * s["put_per_1000_usd"],
            msgs_per_sec / w["commit_rows"] >= 1 / w["commit_interval_seconds"],
        )
    )
    compaction_gets = commits * w["data_files_per_commit"]
    query_gets = w["queries_per_month"] * w["gets_per_query"]
    add(
        LineItem(
            "object storage",
            "GET requests",
            f"{compaction_gets:,.0f} compaction reads + {w['queries_per_month']:,.0f} queries x {w['gets_per_query']:g} "
            f"= {compaction_gets + query_gets:,.0f} x ${s['get_per_1000_usd']}/1000",
            (compaction_gets + query_gets) / 1000 * s["get_per_1000_usd"],
            False,
        )
    )

    c = prices["catalog_db"]
    add(
        LineItem(
            "catalog database",
            "catalog database",
            f"{c['instance_type']} ${c['instance_per_hour_usd']}/h x {hours:g} h + {c['storage_gb']:g} GB x ${c['storage_per_gb_month_usd']}/GB-month",
            c["instance_per_hour_usd"] * hours + c["storage_gb"] * c["storage_per_gb_month_usd"],
            False,
        )
    )

    m = prices["compute"]
    vcpus = msgs_per_sec / m["landing_msgs_per_sec_per_vcpu"]
    landing_instances = max(m["min_landing_instances"], math.ceil(vcpus / m["vcpus_per_instance"]))
    add(
        LineItem(
            "compute",
            "landing compute",
            f"{landing_instances:g} x {m['instance_type']} (need {vcpus:.2f} vCPU at {m['landing_msgs_per_sec_per_vcpu']:,.0f} msg/s/vCPU, "
            f"min {m['min_landing_instances']:g}) x ${m['instance_per_hour_usd']}/h x {hours:g} h",
            landing_instances * m["instance_per_hour_usd"] * hours,
            False,
        )
    )
    add(
        LineItem(
            "compute",
            "API compute",
            f"{m['api_instances']:g} x {m['instance_type']} x ${m['instance_per_hour_usd']}/h x {hours:g} h",
            m["api_instances"] * m["instance_per_hour_usd"] * hours,
            False,
        )
    )

    t = prices["transfer"]
    transfer_gb = msgs_month * w["kafka_bytes_per_message"] * 2 / gb
    add(
        LineItem(
            "transfer",
            "cross-AZ transfer",
            f"{transfer_gb:,.1f} GB produced+consumed x {t['cross_az_fraction']:g} cross-AZ x ${t['cross_az_per_gb_usd']}/GB",
            transfer_gb * t["cross_az_fraction"] * t["cross_az_per_gb_usd"],
            True,
        )
    )
    return out


@dataclass(frozen=True)
class MeasuredBytes:
    """Stored bytes per record of a table's current snapshot."""

    table: str
    snapshot_id: int
    total_bytes: int
    total_records: int

    @property
    def bytes_per_message(self) -> float:
        """Stored bytes per record."""
        return self.total_bytes / self.total_records

    def describe(self) -> str:
        """Where the figure came from."""
        return (
            f"{self.table} snapshot {self.snapshot_id}: {self.total_bytes:,} B / {self.total_records:,} rows"
        )


def measure_bytes_per_message(settings: Settings, table: str = "trades") -> MeasuredBytes:
    """``total-files-size / total-records`` of the table's current snapshot (K2's own storage density).

    Example (needs a catalog with data)::

        measure_bytes_per_message(load_settings()).bytes_per_message
    """
    from pyiceberg.exceptions import NoSuchTableError

    from k2.lake.catalog import load_catalog, load_table

    try:
        tbl = load_table(load_catalog(settings), table)
    except NoSuchTableError:
        raise CostError(
            f"--from-table: expected K2's {table} table to exist, found none (run `k2 init` and land data)"
        ) from None
    snapshot = tbl.current_snapshot()
    props = (
        snapshot.summary.additional_properties
        if snapshot is not None and snapshot.summary is not None
        else {}
    )
    records = int(props.get("total-records", 0) or 0)
    size = int(props.get("total-files-size", 0) or 0)
    if snapshot is None or records <= 0 or size <= 0:
        raise CostError(f"--from-table: expected rows in K2's {table} table, found {records} records")
    return MeasuredBytes(".".join(tbl.name()), snapshot.snapshot_id, size, records)


def render_estimate(result: CostEstimate, console: Console) -> None:
    """Print the estimate as a rich table (line items with their formula inputs, total, per million)."""
    out = RichTable(title=f"K2 monthly cost estimate ({result.region}, prices {result.prices_as_of})")
    out.add_column("component")
    out.add_column("item")
    out.add_column("formula (inputs)", overflow="fold")
    out.add_column("USD / month", justify="right")
    for line in result.items:
        out.add_row(line.component, line.item, line.formula, f"{line.monthly_usd:,.2f}")
    out.add_section()
    out.add_row("", "total", f"{result.messages_per_month:,.0f} messages / month", f"{result.total_usd:,.2f}")
    out.add_row(
        "",
        "per million messages",
        "total / (messages per month / 1e6)",
        f"{result.cost_per_million_usd:,.4f}",
    )
    console.print(out)
    console.print(
        f"bytes per stored message: {result.bytes_per_message:.2f} ({result.bytes_source}); "
        "every price is an input to check: see k2/ops/assets/prices.toml or pass --prices."
    )
