"""The WebSocket side of a live feed: open a link, read it, reconnect with backoff, hand over before the cut.

* **Connect** with TLS verified (:func:`~k2.sources.live.tls.tls_context`), permessage-deflate off, a
  bounded frame size, each attempt paid from the connection bucket (:mod:`k2.sources.live.limits`).
  Server pings are answered by the WebSocket layer as frames arrive; a reader task per :class:`Link`
  keeps reading into the link's queue even while the runner waits on REST, so pongs never starve.
* **Reconnect** with exponential backoff and *equal jitter* (``cap/2 + U(0, cap/2)``, :class:`k2.pacing.Backoff`;
  the runner resets it once a connection delivers data).
* **Stall detection**: no frame for ``stall_seconds`` -> the reader signals ``stall``.
* **Proactive reconnect**: after ``max_connection_seconds`` the reader signals ``max_age``; the runner
  opens the next link first and :meth:`Connector.retire` reads the old one for a grace period before
  closing it, so the two overlap instead of leaving a hole (the overlap is removed by dedup).

The queue carries ``(frame, receipt_us, signal, argument)``: a frame with its receipt time, or a
signal (``stall``, ``closed``, ``error``, ``max_age`` from the reader; ``stop``, ``catchup``,
``retry_gaps`` from the runner, see :func:`signal`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from k2.pacing import Backoff
from k2.sources.live.adapter import FeedAdapter, FeedStats, Frame, now_us
from k2.sources.live.limits import ConnectionLimits
from k2.sources.live.tls import tls_context
from k2.telemetry.metrics import metric

log = structlog.get_logger("k2.sources.live")

QueueItem = tuple[Frame | None, int, str | None, str | None]
FrameHandler = Callable[["Link", Frame, int], Awaitable[str | None]]


@dataclass
class Link:
    """One open connection: its frames and signals queue, its reader task, and what ended it."""

    conn: ClientConnection
    queue: asyncio.Queue[QueueItem]
    reader: asyncio.Task[None] | None = None
    opened: float = field(default_factory=time.monotonic)
    got_data: bool = False
    close_detail: str = ""


def signal(link: Link, name: str, arg: str | None = None) -> None:
    """Queue the signal ``name`` behind the link's frames (never blocks: a full queue gets it from a task)."""
    item: QueueItem = (None, 0, name, arg)
    try:
        link.queue.put_nowait(item)
    except asyncio.QueueFull:
        asyncio.get_running_loop().create_task(link.queue.put(item))


async def close_link(link: Link) -> None:
    """Close the connection and end its reader."""
    # The reader keeps reading (into the queue) while the closing handshake runs, so a venue that
    # is still streaming cannot stall the handshake behind unread frames.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(link.conn.close(), 3)
    if link.reader is not None and not link.reader.done():
        link.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await link.reader


class Connector:
    """Opens, reads and retires the links of one adapter (counts go to the runner's ``stats``)."""

    def __init__(
        self,
        adapter: FeedAdapter,
        stats: FeedStats,
        *,
        limits: ConnectionLimits,
        backoff: Backoff,
        ssl_context: ssl.SSLContext | None,
        queue_size: int,
        stall_seconds: float,
        max_connection_seconds: float,
        handover_grace_seconds: float,
    ) -> None:
        self.adapter = adapter
        self.stats = stats
        self.limits = limits
        self.backoff = backoff
        self.ssl_context = ssl_context
        self.queue_size = queue_size
        self.stall_seconds = stall_seconds
        self.max_connection_seconds = max_connection_seconds
        self.handover_grace_seconds = handover_grace_seconds
        self._m_errors = metric("k2_source_errors_total")

    async def open(self) -> Link:
        """Connect (paced), start the reader and let the adapter subscribe; the link is closed if that fails."""
        await self.limits.connect.acquire()
        url = self.adapter.url()
        context = (
            self.ssl_context
            if self.ssl_context is not None
            else (tls_context() if url.startswith("wss://") else None)
        )
        conn = await connect(
            url,
            ssl=context,
            open_timeout=10,
            ping_interval=None,  # the venue pings us; stall detection covers dead connections
            close_timeout=2,
            compression=None,
            max_size=8 * 1024 * 1024,
            max_queue=1024,
            user_agent_header="k2-lakehouse",
        )
        link = Link(conn, asyncio.Queue(maxsize=self.queue_size))
        link.reader = asyncio.create_task(self._read(link))
        self.stats.connections += 1
        try:
            await self.adapter.on_open(self.limits.paced(conn.send))
        except BaseException:
            await close_link(link)
            raise
        return link

    async def connect_with_backoff(
        self, first: bool, stopping: Callable[[], bool], sleep: Callable[[float], Awaitable[None]]
    ) -> Link | None:
        """A new link, waiting a backoff delay before each attempt but the very first; None once stopping."""
        delay_first = not first
        while not stopping():
            if delay_first:
                await sleep(self.backoff.next_delay())
                if stopping():
                    return None
            delay_first = True
            try:
                return await self.open()
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError, ConnectionClosed) as exc:
                reason = "tls" if isinstance(exc, ssl.SSLError) else "connect_error"
                self._m_errors.labels(source=self.adapter.source, reason=reason).inc()
                self.stats.reconnects[reason] = self.stats.reconnects.get(reason, 0) + 1
                log.warning(
                    "feed_connect_failed",
                    source=self.adapter.source,
                    url=self.adapter.url(),
                    error=f"{type(exc).__name__}: {exc}",
                )
        return None

    async def _read(self, link: Link) -> None:
        """Reader task: frames -> queue with their receipt time; signals stall/closed/max_age."""
        conn = link.conn
        aged = False  # max_age is signalled once; reading goes on until the handover closes us
        try:
            while True:
                timeout = self.stall_seconds
                if not aged:
                    remaining_age = self.max_connection_seconds - (time.monotonic() - link.opened)
                    if remaining_age <= 0:
                        aged = True
                        await link.queue.put((None, 0, "max_age", None))
                        continue
                    timeout = min(timeout, remaining_age)
                try:
                    async with asyncio.timeout(timeout):
                        frame = await conn.recv()
                except TimeoutError:
                    if not aged and time.monotonic() - link.opened >= self.max_connection_seconds:
                        continue  # signalled at the top of the loop
                    await link.queue.put((None, 0, "stall", None))
                    return
                await link.queue.put((frame, now_us(), None, None))
        except ConnectionClosed as exc:
            link.close_detail = (
                f"code={exc.rcvd.code if exc.rcvd else None} reason={exc.rcvd.reason if exc.rcvd else ''}"
            )
            await link.queue.put((None, 0, "closed", None))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # anything else on the socket: reconnect, but say what it was
            link.close_detail = f"{type(exc).__name__}: {exc}"
            await link.queue.put((None, 0, "error", None))

    async def retire(self, old: Link, handle_frame: FrameHandler) -> None:
        """The old half of a handover: handle what ``old`` still delivers for the grace period, then close it."""
        deadline = time.monotonic() + self.handover_grace_seconds
        ended = False
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                frame, receipt, sig, _ = await asyncio.wait_for(old.queue.get(), remaining)
            except TimeoutError:
                break
            if sig is not None or frame is None:
                ended = True
                break
            await handle_frame(old, frame, receipt)
        if not ended:
            # Close the old connection while still processing what it delivers until the close completes.
            closing = asyncio.create_task(old.conn.close())
            with contextlib.suppress(TimeoutError):
                while True:
                    frame, receipt, sig, _ = await asyncio.wait_for(old.queue.get(), 5)
                    if sig is not None or frame is None:
                        break
                    await handle_frame(old, frame, receipt)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(closing, 3)
        await close_link(old)
