"""The connection loop: connect, subscribe, read, ping, watch, reconnect; every frame to an envelope.

A :class:`Connection` is one websocket slot of an exchange runner: its markets survive
reconnects. :meth:`ConnectionLoop.run` keeps one slot connected until the stop event:

* connect (after the exchange's bootstrap call, e.g. KuCoin's token), await a welcome if the
  exchange sends one, send the subscriptions paced under the client-message limit (a rejected
  round is sent again after a backoff delay), send app-level pings if the exchange needs them;
* a watchdog closes a connection that received no frame for ``stale_after_s``, that outlived the
  exchange's forced lifetime, or whose server announced a shutdown; the loop reconnects after a
  :class:`~extractors.backoff.Backoff` delay (none for planned rotations);
* a reader paused by back-pressure (the writer's ``room`` clear) is not stale.

:meth:`ConnectionLoop.on_message` is the hot path: every frame becomes an
:class:`~extractors.envelope.Envelope` (data) or a counter (control); its trade ids go to the
:class:`~extractors.tracking.TradeTracker`; bad frames become dead letters and the connection
stays up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import websockets
from prometheus_client import Counter
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosedOK
from websockets.frames import BINARY, CONT, TEXT, Frame, Opcode
from websockets.protocol import Event

from extractors.backoff import Backoff, RetryableError, is_retryable, sleep_unless_stopped
from extractors.envelope import Channel, Envelope
from extractors.exchanges.base import Connector, UnknownFrame
from extractors.metrics import Metrics
from extractors.rest import RestClient
from extractors.settings import ExtractorSettings
from extractors.tracking import Action, TradeTracker

logger = logging.getLogger(__name__)

#: websockets' own frame limit: far above ``max_frame_bytes`` so oversized frames reach the
#: runner (and become dead letters) instead of closing the connection.
_WS_HARD_MAX_BYTES = 64 * 1024 * 1024
#: Dead letters keep at most this much of an oversized frame.
_DEADLETTER_KEEP_BYTES = 64 * 1024


class DirectConnection(ClientConnection):
    """A websockets client connection that hands each data message to a callback from
    ``data_received``, as soon as it is parsed, instead of queueing it for ``recv()``: no queue
    and no coroutine wake-up per frame. websockets still does the handshake, TLS, the size limit,
    the order of fragments, pings, pongs and the close handshake.

    :meth:`hold` pauses reading and keeps the messages already read (at most one socket read's
    worth) until :meth:`release`: a paused reader takes no frame, as with ``recv()``. Messages are
    held from the start until :meth:`attach` (the handshake's segment may carry a welcome). A text
    message that is not UTF-8 is handed on as ``bytes`` (the runner dead-letters it). An exception
    from the callback aborts the connection and is kept in ``failure``, for :meth:`raise_close`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_data: Callable[[str | bytes], None] | None = None
        self._held: deque[str | bytes] | None = deque()
        #: Opcode and parts of a fragmented message being joined.
        self._parts: list[bytes | bytearray | memoryview] = []
        self._opcode: Opcode | None = None
        self.failure: Exception | None = None

    def attach(self, on_data: Callable[[str | bytes], None]) -> None:
        self._on_data = on_data
        self.release()

    def hold(self) -> None:
        if self._held is None:
            self._held = deque()
            self.transport.pause_reading()

    def release(self) -> None:
        """Hand on the held messages (until one of them holds again), then read on."""
        held, self._held = self._held or deque(), None
        while held and self._held is None:
            self._deliver(held.popleft())
        if self._held is not None:
            self._held.extendleft(reversed(held))
        else:
            self.transport.resume_reading()

    def process_event(self, event: Event) -> None:
        # Per frame: module constants, not Opcode.X lookups; try/except, not contextlib.suppress
        # (600 ns a call).
        opcode = getattr(event, "opcode", None)
        if opcode is TEXT or opcode is BINARY:
            assert isinstance(event, Frame)
            if not event.fin:
                self._opcode, self._parts = opcode, [event.data]
                return
            data: bytes | bytearray | memoryview = event.data
        elif opcode is CONT:
            assert isinstance(event, Frame)
            self._parts.append(event.data)  # websockets rejects a continuation out of order
            if not event.fin:
                return
            opcode, data = self._opcode, b"".join(self._parts)
            self._opcode, self._parts = None, []
        else:
            super().process_event(event)  # the handshake response; ping, pong, close
            return
        raw = bytes(data)
        message: str | bytes = raw
        if opcode is TEXT:
            try:
                message = raw.decode()
            except UnicodeDecodeError:
                message = raw
        if self._held is not None:
            self._held.append(message)
        else:
            self._deliver(message)

    def _deliver(self, message: str | bytes) -> None:
        if self.failure is not None or self._on_data is None:
            return
        try:
            self._on_data(message)
        except Exception as exc:
            self.failure = exc
            self.transport.abort()

    def raise_close(self) -> None:
        """After ``wait_closed()``: raise what ``async for message in ws`` would have (nothing on
        a normal closure), or the callback's failure."""
        if self.failure is not None:
            raise self.failure
        exc = self.protocol.close_exc
        if not isinstance(exc, ConnectionClosedOK):
            raise exc


@dataclass(slots=True)
class Connection:
    """One websocket slot: its markets survive reconnects; ``ws`` and counters are per connection."""

    index: int
    markets: list[str]
    firehose: bool
    ws: DirectConnection | None = None
    conn_id: str = ""
    seq: int = 0
    opened_at: float = 0.0
    last_frame: float = 0.0
    acks: int = 0
    #: Error replies while a subscription round is outstanding: rejected subscriptions.
    rejects: int = 0
    subscribing: bool = False
    #: The reader waits for room in the write queue (back-pressure): not a stale peer.
    paused: bool = False
    close_reason: str = ""
    outbox: asyncio.Queue[str] = field(default_factory=asyncio.Queue)


class ConnectionLoop:
    """Runs every websocket connection of one exchange runner; see the module docstring.

    ``hand_on`` emits an envelope about a market's trades with the tracker's mark and ``handle``
    performs the tracker's actions (both :class:`~extractors.gapfill.GapFiller`'s); ``last_data``
    and ``last_l1`` are updated per market with the ``time.monotonic()`` of its latest data
    frame (and L1/ticker frame), for the runner's market watch.
    """

    def __init__(
        self,
        connector: Connector,
        *,
        ext: ExtractorSettings,
        channels: tuple[Channel, ...],
        ws_url: str,
        rest: RestClient,
        tracker: TradeTracker,
        emit: Callable[[Envelope], None],
        hand_on: Callable[[Envelope, str | None], None],
        handle: Callable[[Sequence[Action]], None],
        last_data: dict[str, float],
        last_l1: dict[str, float],
        metrics: Metrics,
        stop: asyncio.Event,
        room: asyncio.Event | None = None,
    ) -> None:
        self.c = connector
        self.name = connector.NAME
        self.ext = ext
        self.channels = channels
        self.ws_url = ws_url
        self.rest = rest
        self.tracker = tracker
        self._emit = emit
        self._hand_on = hand_on
        self._handle = handle
        self._last_data = last_data
        self._last_l1 = last_l1
        self.m = metrics
        self._stop = stop
        #: Cleared while the sinks are behind: websocket readers pause, so memory stays bounded
        #: and the backlog the peer holds is TCP's, not ours.
        self._room = room
        #: Close handshakes started by a server's shutdown notice (references kept).
        self._closing: set[asyncio.Task[None]] = set()
        self._frame_counters = {
            kind: metrics.frames.labels(self.name, "", kind)
            for kind in ("control", "ack", "error", "deadletter")
        }
        self._data_frames: dict[str, Counter] = {}
        self._local = metrics.local

    async def run(self, conn: Connection) -> None:
        """Keep ``conn`` connected until the stop event; reconnect after a backoff delay."""
        backoff = Backoff(initial=self.ext.backoff_initial_s, cap=self.ext.backoff_max_s)
        while not self._stop.is_set():
            if not conn.markets and not conn.firehose:
                if await sleep_unless_stopped(self._stop, 1.0):
                    return
                continue
            conn.conn_id = f"{self.name}-{conn.index}-{uuid.uuid4().hex[:8]}"
            conn.close_reason = ""
            error: BaseException | None = None
            try:
                await self._connect_and_read(conn)
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                error = exc
            finally:
                conn.ws = None
                conn.paused = conn.subscribing = False
                if not self._stop.is_set():
                    # Where the reconnect fills from (an earlier unfilled drop's point is kept).
                    self.tracker.dropped(conn.markets)
            if self._stop.is_set():
                return
            if conn.opened_at and time.monotonic() - conn.opened_at >= self.ext.healthy_after_s:
                backoff.reset()
            reason = conn.close_reason or (type(error).__name__ if error else "closed")
            delay = 0.0 if reason in ("rotate", "server_shutdown") else next(backoff)
            self.m.reconnects.labels(self.name, reason).inc()
            logger.warning(
                "connection %s lost (%s%s); reconnecting in %.2fs",
                conn.conn_id,
                reason,
                f": {error}" if error else "",
                delay,
                extra={"exchange": self.name, "conn_id": conn.conn_id},
            )
            if await sleep_unless_stopped(self._stop, delay):
                return

    async def _connect_and_read(self, conn: Connection) -> None:
        bootstrap = self.c.bootstrap_request()
        body = (await self.rest.call(bootstrap)).body if bootstrap is not None else None
        session = self.c.session(ws_url=self.ws_url, bootstrap_body=body, conn_id=conn.conn_id)
        async with websockets.connect(
            session.url,
            ping_interval=None,
            max_size=_WS_HARD_MAX_BYTES,
            open_timeout=self.ext.connect_timeout_s,
            close_timeout=1.0,
            create_connection=DirectConnection,
        ) as ws:
            assert isinstance(ws, DirectConnection)
            conn.ws = ws
            conn.seq = 0
            conn.acks = conn.rejects = 0
            self.tracker.opened(conn.markets)
            conn.opened_at = conn.last_frame = time.monotonic()
            while not conn.outbox.empty():
                conn.outbox.get_nowait()
            self.m.connections.labels(self.name).inc()
            closed = asyncio.ensure_future(ws.wait_closed())
            first: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            resumers: set[asyncio.Task[None]] = set()

            def on_data(message: str | bytes) -> None:
                kind = self.on_message(conn, message)
                if not first.done():
                    first.set_result(kind)
                room = self._room
                if room is not None and not room.is_set() and not self._stop.is_set() and not conn.paused:
                    conn.paused = True  # our pause, not the peer's silence
                    ws.hold()
                    task = asyncio.get_running_loop().create_task(self._resume_when_room(conn, ws))
                    resumers.add(task)
                    task.add_done_callback(resumers.discard)

            helpers: list[asyncio.Task[None]] = []
            try:
                ws.attach(on_data)
                if session.await_welcome:
                    await asyncio.wait(
                        (first, closed),
                        timeout=self.ext.connect_timeout_s,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if not first.done():
                        if closed.done():
                            ws.raise_close()
                        raise RetryableError("no welcome frame")
                    if first.result() != "welcome":
                        raise RetryableError("first frame was not a welcome")
                helpers = [
                    asyncio.create_task(self._subscribe(conn, ws)),
                    asyncio.create_task(self._sender(conn, ws)),
                    asyncio.create_task(self._watchdog(conn, ws)),
                ]
                if session.ping_interval_s:
                    helpers.append(asyncio.create_task(self._pinger(conn, session.ping_interval_s)))
                # Frames are handled in data_received (DirectConnection); this waits for the end.
                await asyncio.shield(closed)
                ws.raise_close()
            finally:
                try:
                    for task in (*helpers, *resumers, closed):
                        task.cancel()
                    results = await asyncio.gather(*helpers, *resumers, return_exceptions=True)
                    for result in results:
                        if isinstance(result, Exception) and not is_retryable(result):
                            raise result
                finally:
                    self.m.connections.labels(self.name).dec()

    async def _resume_when_room(self, conn: Connection, ws: DirectConnection) -> None:
        try:
            await self._wait_for_room()
        finally:
            conn.paused = False
            conn.last_frame = time.monotonic()
            ws.release()

    async def _wait_for_room(self) -> None:
        """Until the writer has room again, or the stop event fires: a stopping reader reads on
        until the close handshake, so what the peer sent before it (TCP's backlog) is landed."""
        assert self._room is not None
        waiters = [asyncio.ensure_future(self._room.wait()), asyncio.ensure_future(self._stop.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _subscribe(self, conn: Connection, ws: ClientConnection) -> None:
        """Send the subscriptions until none is rejected, then gap-fill what the socket missed.

        An error reply while a round is outstanding counts as a rejection: the whole round is
        sent again (subscribing twice is harmless) after a backoff delay. Missing acks after
        ``subscribe_timeout_s`` are logged and the fill goes ahead.
        """
        messages = self.c.subscribe_messages(list(conn.markets), self.channels, firehose=conn.firehose)
        interval = 1.0 / self.c.WS_MESSAGES_PER_S
        backoff = Backoff(initial=self.ext.backoff_initial_s, cap=self.ext.backoff_max_s)
        while True:
            conn.acks = conn.rejects = 0
            conn.subscribing = True
            for message in messages:
                await ws.send(message)
                await asyncio.sleep(interval)
            deadline = time.monotonic() + self.ext.subscribe_timeout_s
            while conn.acks + conn.rejects < len(messages) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            conn.subscribing = False
            if not conn.rejects:
                break
            self.m.subscribe_rejected.labels(self.name).inc(conn.rejects)
            delay = next(backoff)
            logger.warning(
                "%d of %d subscriptions rejected on %s; resubscribing in %.2fs",
                conn.rejects,
                len(messages),
                conn.conn_id,
                delay,
                extra={"exchange": self.name, "conn_id": conn.conn_id},
            )
            await asyncio.sleep(delay)
        if conn.acks < len(messages):
            logger.warning(
                "%d of %d subscriptions acknowledged on %s",
                conn.acks,
                len(messages),
                conn.conn_id,
                extra={"exchange": self.name, "conn_id": conn.conn_id},
            )
        self._handle(self.tracker.subscribed(conn.markets))

    async def _sender(self, conn: Connection, ws: ClientConnection) -> None:
        interval = 1.0 / self.c.WS_MESSAGES_PER_S
        while True:
            message = await conn.outbox.get()
            await ws.send(message)
            await asyncio.sleep(interval)

    async def _pinger(self, conn: Connection, interval: float) -> None:
        n = 0
        while True:
            await asyncio.sleep(interval)
            n += 1
            message = self.c.ping_message(n)
            if message is not None:
                conn.outbox.put_nowait(message)

    async def _watchdog(self, conn: Connection, ws: ClientConnection) -> None:
        gauge = self.m.last_frame_age.labels(self.name, str(conn.index))
        tick = min(0.5, self.ext.stale_after_s / 4)
        while True:
            stopping = await sleep_unless_stopped(self._stop, tick)
            now = time.monotonic()
            if conn.paused:
                conn.last_frame = now  # waiting for the sinks is no silence of the peer
            age = now - conn.last_frame
            gauge.set(age)
            if stopping:
                conn.close_reason = "shutdown"
            elif age > self.ext.stale_after_s:
                conn.close_reason = "stale"
            elif now - conn.opened_at > self.c.MAX_CONNECTION_AGE_S:
                conn.close_reason = "rotate"
            if conn.close_reason:
                logger.info(
                    "closing %s: %s",
                    conn.conn_id,
                    conn.close_reason,
                    extra={"exchange": self.name, "conn_id": conn.conn_id},
                )
                if conn.close_reason == "stale":
                    # A stalled peer will not answer a close handshake: drop the TCP connection.
                    ws.transport.abort()
                else:
                    await ws.close()
                return

    # --- frames -----------------------------------------------------------------------------------

    def on_message(self, conn: Connection, message: str | bytes) -> str:
        """Land or count one frame; returns the frame's kind/detail (for the welcome check)."""
        recv_ns = time.time_ns()
        conn.seq += 1
        conn.last_frame = time.monotonic()
        if isinstance(message, bytes):
            try:
                text = message.decode()
            except UnicodeDecodeError:
                self._dead(conn, message.decode(errors="replace"), recv_ns, "invalid_utf8")
                return "deadletter"
        else:
            text = message
        if len(text) > self.ext.max_frame_bytes:
            self._dead(conn, text[:_DEADLETTER_KEEP_BYTES], recv_ns, f"oversized: {len(text)} chars")
            return "deadletter"
        try:
            frame = self.c.classify(text)
        except UnknownFrame as exc:
            self._dead(conn, text, recv_ns, f"unknown_shape: {exc}")
            return "deadletter"
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            reason = "invalid_json" if isinstance(exc, json.JSONDecodeError) else f"bad_field: {exc}"
            self._dead(conn, text, recv_ns, reason)
            self._verify_after_bad_frame(conn, text)
            return "deadletter"
        if frame.kind == "data" and frame.channel is not None:
            symbol = frame.native_symbol
            # The one envelope built with positional arguments, on purpose: this runs per frame,
            # and keywords to a class call cost a dict per call (0.6 us a frame, 14 % of this
            # method; 2026-12-01, the shared 2-core dev machine, CPython 3.11). Fields: Envelope.
            envelope = Envelope(
                self.name, frame.channel, frame.stream, text, recv_ns, conn.conn_id, conn.seq, "ws", symbol
            )
            data_frames = self._data_frames.get(frame.channel)
            if data_frames is None:
                data_frames = self._data_frames[frame.channel] = self.m.frames.labels(
                    self.name, frame.channel, "data"
                )
            self._local.inc(data_frames)
            if symbol is None or not frame.trade_ids:
                self._emit(envelope)
            else:
                for trade_id in frame.trade_ids:
                    actions = self.tracker.trade(symbol, trade_id)
                    if actions:  # nearly always none: skip the call
                        self._handle(actions)
                self._hand_on(envelope, symbol)
            if symbol is not None:
                now = conn.last_frame
                self._last_data[symbol] = now
                if frame.channel in ("l1", "ticker"):
                    self._last_l1[symbol] = now
            return "data"
        self._local.inc(self._frame_counters.get(frame.kind, self._frame_counters["control"]))
        if frame.kind == "ack":
            conn.acks += 1
        elif frame.kind == "error":
            if conn.subscribing:
                conn.rejects += 1
            logger.warning(
                "exchange error on %s: %s",
                conn.conn_id,
                frame.detail,
                extra={"exchange": self.name, "conn_id": conn.conn_id},
            )
            self._dead(conn, text, recv_ns, f"exchange_error: {frame.detail}", counted=True)
        elif frame.kind == "reconnect" and conn.ws is not None:
            conn.close_reason = "server_shutdown"
            task = asyncio.get_running_loop().create_task(conn.ws.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        elif frame.last_trade_id is not None and frame.native_symbol is not None:
            self.tracker.heartbeat(frame.native_symbol, frame.last_trade_id, time.monotonic())
        return frame.detail or frame.kind

    def _dead(self, conn: Connection, text: str, recv_ns: int, reason: str, *, counted: bool = False) -> None:
        if not counted:
            self._local.inc(self._frame_counters["deadletter"])
        self.m.deadletters.labels(self.name, reason.split(":", 1)[0]).inc()
        self._emit(
            Envelope(
                exchange=self.name,
                channel="deadletter",
                stream="",
                payload=text,
                recv_ts_ns=recv_ns,
                conn_id=conn.conn_id,
                conn_seq=conn.seq,
                source="ws",
                native_symbol=None,
                error=reason,
            )
        )

    def _verify_after_bad_frame(self, conn: Connection, text: str) -> None:
        """A truncated frame may have carried a trade: re-check the markets it could belong to.

        The tracker keeps at most one queued fill per market, so a burst of bad frames costs at
        most one REST walk per market of the connection.
        """
        named = [s for s in conn.markets if s in text]
        self._handle(self.tracker.bad_frame(named or conn.markets))
