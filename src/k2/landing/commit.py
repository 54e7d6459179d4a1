"""The Iceberg commit of one landed batch: its snapshot summary and a table view that fails on conflict.

The summary (built by the one builder, :func:`k2.lake.summary.commit_summary`) carries the cumulative
Kafka offsets, this batch's offset spans, the last message's (offset, crc) per partition (the reset check
on the next assignment, :mod:`k2.landing.assignment`), correlation ids and the batch's counts.
"""

from __future__ import annotations

import json
from typing import Any

from pyiceberg.table import Table

from k2.lake.summary import CLUSTER_KEY, OffsetMap, commit_summary
from k2.landing.assignment import LAST_KEY, summary_json
from k2.landing.batch import Coverage
from k2.landing.dedup import DedupResult
from k2.telemetry.logging import CIDS_SUMMARY_KEY

QUALITY_KEY = "k2.quality"


def commit_view(table: Table) -> Table:
    """A view of ``table`` whose commits fail on a conflict instead of being rebased by pyiceberg.

    pyiceberg (>= 0.10) retries a conflicting append by rebasing it onto the new snapshot with the
    *same* snapshot properties; K2's properties hold the cumulative Kafka offsets computed from the
    snapshot the batch was checked against, so a silent rebase would overwrite another writer's offsets.
    The view only changes the local copy of the table properties; nothing is written to the table.

    Example (needs a catalog)::

        append(commit_view(table), data, "trades", properties)
    """
    properties = {**table.metadata.properties, "commit.retry.num-retries": "0"}
    metadata = table.metadata.model_copy(update={"properties": properties})
    return Table(table.name(), metadata, table.metadata_location, table.io, table.catalog)


def commit_properties(
    summary: Any,
    coverage: Coverage,
    writer: str,
    cluster: str,
    landed: int,
    result: DedupResult,
    rejected: int,
) -> dict[str, str]:
    """The snapshot summary of the commit: cumulative offsets (k2.lake.summary), spans, last crc, counts."""
    covered: OffsetMap = {}
    spans: dict[str, dict[str, list[int]]] = {}
    for (t, p), span in coverage.ranges.items():
        covered.setdefault(t, {})[str(p)] = span[1] + 1
        spans.setdefault(t, {})[str(p)] = span
    last = summary_json(summary, LAST_KEY)
    for (t, p), (offset, crc) in coverage.last_crc.items():
        last.setdefault(t, {})[str(p)] = f"{offset}:{crc}"
    # The one summary builder (k2.lake.summary): the parent's positions carried, this batch's merged over them.
    properties = commit_summary(
        summary,
        writer,
        {
            LAST_KEY: json.dumps(last, sort_keys=True),
            CLUSTER_KEY: cluster,
            CIDS_SUMMARY_KEY: ",".join(sorted(coverage.cids)),
            "k2.rows.landed": str(landed),
            "k2.rows.duplicates": str(result.duplicates),
            "k2.rows.late": str(result.late),
            "k2.rows.dead_lettered": str(rejected),
        },
        offsets=covered,
        ranges=spans,
    )
    quality = {f"{e}/{s}": [d, late] for (e, s), (d, late) in result.per_symbol.items()}
    if quality:
        properties[QUALITY_KEY] = json.dumps(quality, sort_keys=True)
    return properties
