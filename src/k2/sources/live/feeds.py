"""Run several venues' feeds at once: one producer, one gap ledger, one connection bucket per venue.

Hazard: the signal handlers (SIGINT/SIGTERM -> stop every feed) are only installed from the main
thread; a feed run from another thread must be stopped with :meth:`LiveRunner.stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Mapping, Sequence

from k2.bus.producer import MarketDataProducer
from k2.config import Settings
from k2.model import DataType
from k2.sources.gaps import GapLedger
from k2.sources.live.adapter import FeedAdapter, FeedStats
from k2.sources.live.limits import SharedConnectLimits
from k2.sources.live.rest import RestClient
from k2.sources.live.runner import LiveRunner


async def run_feeds(
    settings: Settings,
    adapters: Sequence[FeedAdapter],
    *,
    ledger: GapLedger | None = None,
    topics: Mapping[DataType, str] | None = None,
    idle_exit_seconds: float | None = None,
    install_signal_handlers: bool = True,
    on_start: Callable[[list[LiveRunner]], None] | None = None,
) -> list[FeedStats]:
    """Run every adapter's feed concurrently with one producer and gap ledger until stopped.

    SIGINT/SIGTERM stop the feeds cleanly (producer flushed, ledger written). The first feed that
    fails fatally stops the others and its error is raised.

    Example::

        stats = asyncio.run(run_feeds(load_settings(), BinanceFeed.for_symbols(["BTCUSDT"], settings)))
    """
    ledger = ledger if ledger is not None else GapLedger.for_settings(settings)
    rest_clients: dict[int, RestClient | None] = {}
    limits = SharedConnectLimits()
    runners: list[LiveRunner] = []
    with MarketDataProducer(settings) as producer:
        for adapter in adapters:
            rest = adapter.rest_client()
            rest_clients[id(adapter)] = rest
            runners.append(
                LiveRunner(
                    adapter,
                    settings,
                    producer,
                    ledger=ledger,
                    rest=rest,
                    topics=topics,
                    connect_limiter=limits.for_adapter(adapter),
                    idle_exit_seconds=idle_exit_seconds,
                )
            )
        loop = asyncio.get_running_loop()
        installed = _install_stop_handlers(loop, runners) if install_signal_handlers else []
        if on_start is not None:
            on_start(runners)
        try:
            results = await _run_all(runners)
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
            for rest in rest_clients.values():
                if rest is not None:
                    await rest.aclose()
        await asyncio.to_thread(ledger.flush)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, FeedStats)]


def _install_stop_handlers(
    loop: asyncio.AbstractEventLoop, runners: list[LiveRunner]
) -> list[signal.Signals]:
    """SIGINT/SIGTERM stop every runner (main thread only); returns the signals to uninstall later."""
    installed: list[signal.Signals] = []

    def stop_all() -> None:
        """SIGINT/SIGTERM: finish every feed cleanly."""
        for runner in runners:
            runner.stop()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop_all)
                installed.append(signum)
    return installed


async def _run_all(runners: list[LiveRunner]) -> list[FeedStats | BaseException]:
    """Run the runners to the end; the first one failing stops the others. Results (or errors) in order."""
    tasks = [asyncio.create_task(r.run()) for r in runners]
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    if any(t.exception() is not None for t in done):
        for runner in runners:
            runner.stop()
    return await asyncio.gather(*tasks, return_exceptions=True)
