"""One WebSocket session of the fake venue: the capture replayed in wire order, with every fault.

A session resumes at the server's cursor (moved on by ``reconnect_advance`` after the first session:
the messages that "happened" while the client was away, which it must backfill from REST; negative
values re-send messages to exercise dedup). A newer session takes the stream over from an older one.
``speed`` > 0 paces the replay by the capture's receive times (``speed`` times real time); 0 sends as
fast as the client reads.

Faults, per eligible (subscribed) message: stall, hold until a depth snapshot was served, skip (the
client sees id jumps), a malformed copy before the real message, hold back one message and send it
after the next (reorder), drop the connection (clean close or TCP abort) every N messages or at given
positions; and a pinger that counts the client's pongs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from k2.sources.fake_exchange.captures import CaptureMessage
from k2.sources.fake_exchange.faults import malformed_copy
from k2.sources.fake_exchange.state import ReplayState


class Replay(ReplayState):
    """The replay loop and its faults over the shared replay state."""

    async def _stream(
        self,
        conn: ServerConnection,
        eligible: Callable[[CaptureMessage], bool],
        prelude: Callable[[], list[str]],
    ) -> None:
        """Send ``prelude()`` then every eligible message from the cursor on, until taken over or closed."""
        self._generation += 1
        generation = self._generation
        faults = self.faults
        self._resume()
        for text in prelude():
            await conn.send(text)
        sent_here = 0
        held: str | None = None  # a message held back by Faults.reorder_at
        anchor: tuple[float, int] | None = None
        messages = self.messages
        while True:
            if generation != self._generation or self._closing or conn.state is not State.OPEN:
                return  # another connection took over, or we are shutting down
            if self.position >= self.end:
                if faults.at_end == "close":
                    await conn.close(1000, "end of capture")
                    return
                await asyncio.sleep(0.05)
                continue
            msg = messages[self.position]
            if not eligible(msg):
                self.position += 1
                continue
            index = self.eligible_seen
            if self._stall_due(index):
                await self._stall(index, generation)
                anchor = None
                continue
            if self._hold_due(index):
                await self._hold_for_depth_snapshots(index, generation)
                anchor = None
                continue
            if self.speed > 0:
                # Pace before taking the message, so a connection taken over while waiting holds none.
                now = time.monotonic()
                if anchor is None:
                    anchor = (now, msg.ns)
                due = anchor[0] + (msg.ns - anchor[1]) / 1e9 / self.speed
                if due > now + 0.001:
                    await asyncio.sleep(min(due - now, 0.05))
                    continue
            self.position += 1
            self.eligible_seen += 1
            if self._skipped(msg, index):
                continue
            if faults._due(faults.malformed_every, faults.malformed_at, index):
                await conn.send(self._malformed(msg))
            if index in faults.reorder_at and held is None:
                held = msg.text  # sent right after the next message
                self.stats.reordered += 1
                continue
            if self.speed <= 0 and sent_here % 64 == 0:
                await asyncio.sleep(0)  # let REST requests and pings in
            await conn.send(msg.text)
            if held is not None:
                await conn.send(held)
                held = None
            sent_here += 1
            self.stats.sent += 1
            if msg.trade_id is not None:
                self.stats.sent_trade_ids += 1
            if self._drop_due(sent_here, index):
                await self._drop(conn)
                return

    def _resume(self) -> None:
        """A new session starts at the cursor, moved on by ``reconnect_advance`` after the first session."""
        faults = self.faults
        if self._sessions and faults.reconnect_advance:
            moved = max(0, min(self.end, self.position + faults.reconnect_advance))
            self.stats.advanced += moved - self.position
            self.position = moved
        self._sessions += 1

    def _stall_due(self, index: int) -> bool:
        """True when eligible message ``index`` is a stall position not stalled yet (within ``max_stalls``)."""
        faults = self.faults
        return (
            faults.stall_seconds > 0
            and index not in self._stalled
            and faults._due(faults.stall_every, faults.stall_at, index)
            and (faults.max_stalls is None or self.stats.stalls < faults.max_stalls)
        )

    async def _stall(self, index: int, generation: int) -> None:
        """Send nothing for ``stall_seconds`` (ends early if the session is taken over or the server stops)."""
        self._stalled.add(index)
        self.stats.stalls += 1
        deadline = time.monotonic() + self.faults.stall_seconds
        while time.monotonic() < deadline and generation == self._generation and not self._closing:
            await asyncio.sleep(0.02)

    def _hold_due(self, index: int) -> bool:
        """True when eligible message ``index`` is a hold position not held yet."""
        return index not in self._held and any(at == index for at, _ in self.faults.hold_for_depth_snapshots)

    async def _hold_for_depth_snapshots(self, index: int, generation: int) -> None:
        """Send nothing until enough REST depth snapshots were answered (``Faults.hold_for_depth_snapshots``).

        Once per position: a client that never asks gets the rest after ``hold_seconds``."""
        self._held.add(index)
        wanted = max(answers for at, answers in self.faults.hold_for_depth_snapshots if at == index)
        deadline = time.monotonic() + self.faults.hold_seconds
        while (
            sum(self._depth_answers.values()) < wanted
            and time.monotonic() < deadline
            and generation == self._generation
            and not self._closing
        ):
            await asyncio.sleep(0.02)

    def _skipped(self, msg: CaptureMessage, index: int) -> bool:
        """True (and counted) when ``msg`` falls in a skip run that starts at a skip position."""
        faults = self.faults
        if faults._due(faults.skip_every, faults.skip_at, index):
            self._skip_left = faults.skip_count
        if self._skip_left <= 0:
            return False
        self._skip_left -= 1
        self.stats.skipped += 1
        if msg.trade_id is not None:
            self.stats.skipped_trade_ids.append(msg.trade_id)
        return True

    def _drop_due(self, sent_here: int, index: int) -> bool:
        """True when the connection is to be dropped after this message (within ``max_drops``)."""
        faults = self.faults
        drop = (faults.drop_every > 0 and sent_here % faults.drop_every == 0) or index in faults.drop_at
        return drop and (faults.max_drops is None or self.stats.drops < faults.max_drops)

    def _malformed(self, msg: CaptureMessage) -> str | bytes:
        """The next malformed copy of ``msg`` (the four ways in turn), remembered in ``stats.malformed``."""
        frame = malformed_copy(msg, len(self.stats.malformed) % 4)
        self.stats.malformed.append(frame)
        return frame

    async def _drop(self, conn: ServerConnection) -> None:
        self.stats.drops += 1
        mode = self.faults.drop_mode
        if mode == "mixed":
            mode = "abort" if self.stats.drops % 2 == 0 else "close"
        if mode == "abort":
            conn.transport.abort()
        else:
            await conn.close(1001, "fake exchange: forced disconnect")

    async def _pinger(self, conn: ServerConnection) -> None:
        assert self.faults.ping_interval is not None
        while conn.state is State.OPEN:
            await asyncio.sleep(self.faults.ping_interval)
            try:
                waiter = await conn.ping()
                self.stats.pings += 1
                await asyncio.wait_for(waiter, self.faults.ping_timeout)
                self.stats.pongs += 1
            except TimeoutError:
                self.stats.ping_timeouts += 1
                await conn.close(1011, "keepalive ping timeout")
                return
            except ConnectionClosed:
                return
