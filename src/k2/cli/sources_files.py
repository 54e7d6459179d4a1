"""``k2 import ...``: vendor files -> K2 tables (directly to Iceberg, or ``--via-kafka``).

Example::

    k2 import binance-trades BTCUSDT-trades-2021-01-03.zip          # verifies BTCUSDT-...zip.CHECKSUM
    k2 import binance-trades --market usdm BTCUSDT-trades-2024-01-01.csv
    k2 import asx-trades ../shared/data/asx/trades/7078.csv         # ticker from company_info.csv
    k2 import tardis-quotes --via-kafka binance_quotes_2024-01-01_BTCUSDT.csv
    k2 import tardis-trades --contract inverse bitmex_trades_2020-04-01_XBTUSD.csv.gz
    k2 import binance-trades --max-rejects 0.1% data/futures/um/daily/trades/BTCUSDT/*.zip

Trades and quotes land through the landing's own dedup and gap ledger (:mod:`k2.landing.direct`), so a
direct import records the same ``quality.gaps`` rows as ``--via-kafka``. Exit codes: 0 every row landed or
was a known duplicate, 3 (``EXIT_REJECTED``) rows were rejected beyond ``--max-rejects``, 1 a file was
refused (layout, checksum, market); a summary line goes to stderr either way.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from k2.cli.safe import cell, markup, plain
from k2.config import Settings, load_settings

if TYPE_CHECKING:
    from k2.landing.direct import DirectLanding
    from k2.sources.files import ImportOptions, ImportReport
    from k2.sources.files.source import SourceFile

console = Console()
err_console = Console(stderr=True)

FILES = typer.Argument(
    ..., help="CSV files, .csv.gz, or official ZIPs holding one CSV (a .CHECKSUM beside a file is verified)."
)
SYMBOL = typer.Option(None, "--symbol", help="Symbol (default: from the file name / the file's rows).")
MARKET = typer.Option(
    "auto",
    "--market",
    help="Binance market: spot, usdm (USD-M futures) or auto (from the columns, booleans and the path; refused when they disagree).",
)
VIA_KAFKA = typer.Option(
    False, "--via-kafka", help="Produce Avro to Kafka for the landing consumer instead of writing Iceberg."
)
QUIET = typer.Option(
    False, "--quiet", "-q", help="No progress bar and no per-file table (errors still printed)."
)
MAX_REJECTS = typer.Option(
    "0",
    "--max-rejects",
    help="Rejected lines accepted before the exit code says so: a count (N) or a share of rows read (P%).",
)
EXIT_REJECTED = (
    3  # some rows were rejected (beyond --max-rejects): distinct from 1 (nothing imported, an error)
)


def parse_max_rejects(text: str) -> tuple[int | None, float | None]:
    """(count, percent) from ``--max-rejects`` (``10`` or ``0.5%``); raises typer.BadParameter.

    >>> parse_max_rejects("10"), parse_max_rejects("2.5%")
    ((10, None), (None, 2.5))
    """
    value = text.strip()
    try:
        if value.endswith("%"):
            percent = float(value[:-1])
            if not 0 <= percent <= 100:
                raise ValueError
            return None, percent
        count = int(value)
        if count < 0:
            raise ValueError
        return count, None
    except ValueError:
        raise typer.BadParameter(
            f"expected a count (10) or a percentage (0.5%), found {text!r}", param_hint="--max-rejects"
        ) from None


def rejects_exceeded(rows_read: int, rejected: int, limit: tuple[int | None, float | None]) -> bool:
    """Whether ``rejected`` of ``rows_read`` is beyond the ``--max-rejects`` limit."""
    count, percent = limit
    if percent is not None:
        return rejected > rows_read * percent / 100
    return rejected > (count or 0)


def landing_lander(settings: Settings) -> Callable[[str], DirectLanding]:
    """Direct imports of trades and quotes land through the landing's dedup and gap ledger (same code as Kafka)."""
    from k2.landing.direct import DirectLanding

    landers: dict[str, DirectLanding] = {}

    def make(short: str) -> DirectLanding:
        if short not in landers:
            landers[short] = DirectLanding(settings, short)
        return landers[short]

    return make


def import_landed(
    format_name: str,
    files: list[Path],
    settings: Settings,
    options: ImportOptions | None = None,
    via_kafka: bool = False,
    progress: Callable[[SourceFile], Callable[[int, int], None] | None] | None = None,
) -> list[ImportReport]:
    """:func:`k2.sources.files.import_files` wired to :mod:`k2.landing.direct` (what ``k2 import`` runs)."""
    from k2.sources.files import import_files

    return import_files(
        format_name,
        files,
        settings,
        options,
        via_kafka=via_kafka,
        progress=progress,
        lander=landing_lander(settings),
    )


class _RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        rows = int(task.fields.get("rows", 0))
        elapsed = task.elapsed or 0.0
        rate = rows / elapsed if elapsed > 0 else 0.0
        return Text(f"{rows:,} rows  {rate:,.0f} rows/s", style="cyan")


def _run(
    format_name: str,
    files: list[Path],
    quiet: bool,
    via_kafka: bool,
    symbol: str | None = None,
    market: str = "auto",
    interval: str | None = None,
    asset_class: str | None = None,
    reference: Path | None = None,
    max_rejects: str = "0",
    **extra: object,
) -> None:
    from k2.bus.serde import RegistryUnavailableError
    from k2.bus.topics import BrokerUnavailableError
    from k2.sources.files import FileImportError, ImportOptions
    from k2.sources.files.asx_reference import default_reference, ticker_map

    limit = parse_max_rejects(max_rejects)
    settings = load_settings()
    options = ImportOptions(symbol=symbol, market=market, interval=interval, asset_class=asset_class)
    for key, value in extra.items():
        setattr(options, key, value)
    show = not quiet and sys.stderr.isatty()
    try:
        if format_name.startswith("asx-") and symbol is None:
            ref = reference or (default_reference(files[0]) if files else None)
            if ref is None:
                raise FileImportError(
                    "expected --reference company_info.csv (or --symbol) to map ASX company ids to tickers, found neither"
                )
            options.tickers = ticker_map(ref)
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            _RowsPerSecond(),
            TimeElapsedColumn(),
            console=err_console,
            disable=not show,
            transient=True,
        )
        with progress:

            def hook_for(source: SourceFile) -> Callable[[int, int], None]:
                task = progress.add_task(source.csv_name, total=source.size, rows=0)

                def hook(nbytes: int, rows: int) -> None:
                    progress.update(
                        task, advance=nbytes, rows=int(progress.tasks[task].fields["rows"]) + rows
                    )

                return hook

            reports = import_landed(
                format_name, files, settings, options, via_kafka=via_kafka, progress=hook_for
            )
    except (FileImportError, BrokerUnavailableError, RegistryUnavailableError) as exc:
        # Bad input, or a stack part missing before anything was sent: one clear line, no traceback.
        # (A delivery that fails mid-way is a DeliveryError, reported by k2.cli.main with its counts.)
        err_console.print(f"[red]import failed:[/red] {markup(exc)}", markup=True, highlight=False)
        raise typer.Exit(1) from None
    _print_reports(reports, quiet, via_kafka)
    _exit_for(reports, limit, via_kafka)


def _exit_for(reports: Sequence[object], limit: tuple[int | None, float | None], via_kafka: bool) -> None:
    """One summary line (always, on stderr); exit EXIT_REJECTED when rejects exceed ``--max-rejects``."""
    from k2.sources.files import ImportReport

    typed = [r for r in reports if isinstance(r, ImportReport)]
    read = sum(r.rows_read for r in typed)
    rejected = sum(r.rejected for r in typed)
    verb = "produced" if via_kafka else "imported"
    line = (
        f"k2 import: {len(typed)} file(s), {read:,} rows read, {sum(r.imported for r in typed):,} {verb}, "
        f"{sum(r.duplicates for r in typed):,} duplicates, {rejected:,} rejected, {sum(r.gaps for r in typed):,} gaps opened"
    )
    if rejected and rejects_exceeded(read, rejected, limit):
        err_console.print(
            f"{line} - FAILED: {rejected:,} rejected rows (beyond --max-rejects)",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(EXIT_REJECTED)
    err_console.print(line, markup=False, highlight=False)


def _print_reports(reports: Sequence[object], quiet: bool, via_kafka: bool) -> None:
    from k2.sources.files import ImportReport

    rejected = 0
    for report in reports:
        assert isinstance(report, ImportReport)
        rejected += report.rejected
        for note in report.notes:
            err_console.print(f"[yellow]note:[/yellow] {markup(note)}", highlight=False)
        if report.rejected:
            reasons = ", ".join(f"{k}={v}" for k, v in sorted(report.rejected_by_reason.items()))
            err_console.print(
                f"[yellow]{markup(report.file)}: {report.rejected} bad lines ({markup(reasons)}) -> "
                f"{markup(report.rejects_destination)}[/yellow]",
                markup=True,
                highlight=False,
            )
            for sample in report.rejected_samples:
                err_console.print(f"  {plain(sample)}", markup=False, highlight=False)
            if report.rejected > len(report.rejected_samples):
                err_console.print(f"  ... and {report.rejected - len(report.rejected_samples)} more")
    if quiet:
        return
    table = Table(title="k2 import" + (" (via Kafka)" if via_kafka else ""))
    for column in (
        "file",
        "rows read",
        "imported" if not via_kafka else "produced",
        "duplicates",
        "rejected",
        "gaps",
        "rows/s",
        "checksum",
    ):
        table.add_column(column, justify="left" if column == "file" else "right")
    for report in reports:
        assert isinstance(report, ImportReport)
        table.add_row(
            cell(Path(report.file).name),
            f"{report.rows_read:,}",
            f"{report.imported:,}",
            f"{report.duplicates:,}",
            f"{report.rejected:,}",
            f"{report.gaps:,}",
            f"{report.rows_per_second:,.0f}",
            "verified" if report.checksum_verified else "-",
        )
    console.print(table)


def _reference(settings: Settings, path: Path, quiet: bool) -> None:
    from k2.sources.files import FileImportError
    from k2.sources.files.asx_reference import import_asx_reference

    try:
        report = import_asx_reference(path, settings)
    except FileImportError as exc:
        err_console.print(f"[red]import failed:[/red] {markup(exc)}", highlight=False)
        raise typer.Exit(1) from None
    _print_reports([report], quiet, False)


def _print_produced(dead_lettered: Mapping[str, int]) -> None:
    """The closing lines of an import to Kafka (capture, book L2): what went to the DLQ, what to run next."""
    if dead_lettered:
        console.print(f"dead-lettered: {dict(dead_lettered)}")
    console.print("produced to Kafka: run `k2 land` (the landing consumer) to land them")


def register(app: typer.Typer) -> None:
    """Add the ``k2 import`` command group to ``app``."""
    imp = typer.Typer(
        help="Import vendor files (Binance public data, Tardis.dev CSV, ASX) into K2's tables.",
        no_args_is_help=True,
    )

    @imp.command("binance-trades")
    def binance_trades(
        files: list[Path] = FILES,
        symbol: str | None = SYMBOL,
        market: str = MARKET,
        via_kafka: bool = VIA_KAFKA,
        quiet: bool = QUIET,
        max_rejects: str = MAX_REJECTS,
    ) -> None:
        """Binance public-data trades (spot: 7 columns, no header; USD-M futures: 6 columns, header)."""
        _run("binance-trades", files, quiet, via_kafka, symbol, market, max_rejects=max_rejects)

    @imp.command("binance-aggtrades")
    def binance_aggtrades(
        files: list[Path] = FILES,
        symbol: str | None = SYMBOL,
        market: str = MARKET,
        via_kafka: bool = VIA_KAFKA,
        quiet: bool = QUIET,
        max_rejects: str = MAX_REJECTS,
    ) -> None:
        """Binance public-data aggTrades (exchange code <exchange>-agg in the trades table)."""
        _run("binance-aggtrades", files, quiet, via_kafka, symbol, market, max_rejects=max_rejects)

    @imp.command("binance-klines")
    def binance_klines(
        files: list[Path] = FILES,
        symbol: str | None = SYMBOL,
        market: str = MARKET,
        interval: str | None = typer.Option(None, help="Bar interval (default: from the file name)."),
        via_kafka: bool = VIA_KAFKA,
        quiet: bool = QUIET,
        max_rejects: str = MAX_REJECTS,
    ) -> None:
        """Binance public-data klines (12 columns) into market_data.klines (direct only)."""
        _run(
            "binance-klines",
            files,
            quiet,
            via_kafka,
            symbol,
            market,
            interval=interval,
            max_rejects=max_rejects,
        )

    @imp.command("tardis-trades")
    def tardis_trades(
        files: list[Path] = FILES,
        symbol: str | None = SYMBOL,
        asset_class: str | None = typer.Option(None, help="Asset class (default: from the exchange id)."),
        contract: str | None = typer.Option(
            None, help="inverse or linear: amounts are contracts (needed on bitmex, deribit...)."
        ),
        multiplier: str | None = typer.Option(
            None, help="Contract multiplier (default 1): USD per inverse contract, coins per linear one."
        ),
        via_kafka: bool = VIA_KAFKA,
        quiet: bool = QUIET,
        max_rejects: str = MAX_REJECTS,
    ) -> None:
        """Tardis.dev trades CSV (exchange,symbol,timestamp,local_timestamp,id,side,price,amount)."""
        _run(
            "tardis-trades",
            files,
            quiet,
            via_kafka,
            symbol,
            asset_class=asset_class,
            max_rejects=max_rejects,
            contract=contract,
            multiplier=multiplier,
        )

    @imp.command("tardis-quotes")
    def tardis_quotes(
        files: list[Path] = FILES,
        symbol: str | None = SYMBOL,
        asset_class: str | None = typer.Option(None, help="Asset class (default: from the exchange id)."),
        via_kafka: bool = VIA_KAFKA,
        quiet: bool = QUIET,
        max_rejects: str = MAX_REJECTS,
    ) -> None:
        """Tardis.dev quotes CSV (exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount)."""
        _run(
            "tardis-quotes", files, quiet, via_kafka, symbol, asset_class=asset_class, max_rejects=max_rejects
        )

    reference_opt = typer.Option(
        None, "--reference", help="company_info.csv (default: reference-data/ beside the data folder)."
    )

    @imp.command("asx-trades")
    def asx_trades(
        files: list[Path] = FILES,
        symbol: str | None = SYMBOL,
        reference: Path | None = reference_opt,
        via_kafka: bool = VIA_KAFKA,
        quiet: bool = QUIET,
        max_rejects: str = MAX_REJECTS,
    ) -> None:
        """ASX trades (Date,Time,Price,Volume,Qualifiers,Venue,BuyerID; Sydney local time -> UTC)."""
        _run("asx-trades", files, quiet, via_kafka, symbol, reference=reference, max_rejects=max_rejects)

    @imp.command("asx-quotes")
    def asx_quotes(
        files: list[Path] = FILES,
        symbol: str | None = SYMBOL,
        reference: Path | None = reference_opt,
        via_kafka: bool = VIA_KAFKA,
        quiet: bool = QUIET,
        max_rejects: str = MAX_REJECTS,
    ) -> None:
        """ASX quotes (Date,Time,Bid,Ask,BidVolume,AskVolume; Sydney local time -> UTC)."""
        _run("asx-quotes", files, quiet, via_kafka, symbol, reference=reference, max_rejects=max_rejects)

    @imp.command("asx-reference")
    def asx_reference(file: Path = typer.Argument(..., help="company_info.csv"), quiet: bool = QUIET) -> None:
        """ASX company_info.csv into reference.instruments (duplicated tickers reported)."""
        _reference(load_settings(), file, quiet)

    @imp.command("binance-capture")
    def binance_capture(
        files: list[Path] = typer.Argument(
            ..., help="Capture files (<local_receive_ns> <raw JSON> a line; .gz or plain), in order."
        ),
        symbol: str | None = typer.Option(
            None, "--symbol", help="Symbol of the REST depth snapshot lines (default: the one waiting)."
        ),
        market: str = typer.Option(
            "spot", "--market", help="Binance market of the capture: spot, us or usdm."
        ),
    ) -> None:
        """Binance WebSocket captures: trades, bookTicker quotes and depth (with the book sync) to Kafka for landing."""
        from k2.sources.binance import MARKETS
        from k2.sources.binance_capture import import_binance_capture

        if market not in MARKETS:
            err_console.print(f"[red]--market:[/red] expected one of {sorted(MARKETS)}, found {market!r}")
            raise typer.Exit(2)
        report = import_binance_capture(files, load_settings(), MARKETS[market], symbol)
        rows = ", ".join(f"{kind} {count:,}" for kind, count in sorted(report.rows.items()))
        console.print(
            f"{report.lines:,} lines: {rows}; {report.snapshots} depth snapshot(s); {len(report.gaps)} depth gap(s)"
        )
        _print_produced(report.dead_lettered)

    @imp.command("tardis-book-l2")
    def tardis_book_l2(
        files: list[Path] = typer.Argument(
            ..., help="Tardis.dev incremental_book_L2 CSV files (.csv or .csv.gz), in time order."
        ),
    ) -> None:
        """Tardis.dev incremental_book_L2 CSV: book deltas (synthetic update ids) to Kafka for landing."""
        from k2.sources.tardis_book import import_tardis_book

        try:
            report = import_tardis_book(files, load_settings())
        except ValueError as exc:  # a file that is not incremental_book_L2 (its header named)
            err_console.print(f"error: {plain(exc)}", markup=False, highlight=False)
            raise typer.Exit(2) from None
        console.print(f"{report.lines:,} lines: {report.rows:,} book deltas; {report.snapshots} snapshot(s)")
        _print_produced(report.dead_lettered)

    @imp.command("tardis-book-snapshot")
    def tardis_book_snapshot(
        files: list[Path] = typer.Argument(
            ...,
            help="Tardis.dev book_snapshot_25 / book_snapshot_5 CSV files (.csv or .csv.gz), in time order.",
        ),
        depth: int | None = typer.Option(
            None, "--depth", help="Levels per side the files must have: 25 or 5 (default: from each header)."
        ),
        max_rejects: str = MAX_REJECTS,
    ) -> None:
        """Tardis.dev book_snapshot_25/_5 CSV: each row a restarting book snapshot (book deltas) to Kafka for landing.

        Exit codes as the other imports: 0, 3 rows dead-lettered beyond --max-rejects, 1 a file refused.
        """
        from k2.sources.tardis_book_snapshot import DEPTHS, import_tardis_book_snapshots

        limit = parse_max_rejects(max_rejects)
        if depth is not None and depth not in DEPTHS:
            err_console.print(f"--depth: expected one of {list(DEPTHS)}, found {depth}", markup=False)
            raise typer.Exit(2)
        try:
            report = import_tardis_book_snapshots(files, load_settings(), depth)
        except (
            ValueError,
            OSError,
        ) as exc:  # a file that is not book_snapshot_N, or unreadable: nothing produced
            err_console.print(f"error: {plain(exc)}", markup=False, highlight=False)
            raise typer.Exit(1) from None
        console.print(
            f"{report.lines:,} lines: {report.snapshots:,} book snapshot(s) of depth "
            f"{'/'.join(map(str, sorted(set(report.depths))))}, {report.rows:,} book deltas"
        )
        _print_produced(report.dead_lettered)
        rejected = sum(report.dead_lettered.values())
        if rejects_exceeded(report.lines, rejected, limit):
            err_console.print(
                f"{rejected:,} of {report.lines:,} rows dead-lettered (--max-rejects {max_rejects})"
            )
            raise typer.Exit(EXIT_REJECTED)

    app.add_typer(imp, name="import")
