"""The shared runner: connections, keep-alive, reconnects, gap fill, rediscovery, batching, shutdown.

One :class:`Extractor` per process runs one :class:`ExchangeRunner` per exchange. An exchange runner
discovers markets over REST, spreads them over websocket connections (each within the exchange's
per-connection limit), and keeps every connection alive:

* connect (after the exchange's bootstrap call, e.g. KuCoin's token), await a welcome if needed,
  send the subscriptions paced under the client-message limit, send app-level pings if needed;
* a watchdog closes a connection that received no frame for ``stale_after_s``, that outlived the
  exchange's forced lifetime, or whose server announced a shutdown; the loop reconnects after a
  :class:`~extractors.backoff.Backoff` delay (none for planned rotations);
* every frame becomes an :class:`~extractors.envelope.Envelope` (data) or a counter (control);
  bad frames become dead letters and the connection stays up;
* trade ids are tracked per market by a :class:`~extractors.tracking.TradeTracker` (no I/O):
  the runner feeds it frames, drops, resubscriptions, REST pages and durable batches and does the
  REST fills it asks for (an id jump, a reconnect, a malformed frame, a heartbeat's newer id, a
  restart), whose pages land with ``source="rest"``; trades REST cannot return become a record
  in channel ``gaps``;
* crash safety: per market, the last trade id the sinks have made durable (held below every
  unfinished fill) is persisted in a small state file per exchange and shard (write temp, fsync,
  rename); a restarted process fills every market from its point over REST while the socket
  streams, so what a ``kill -9`` caught in memory is fetched again;
* a rejected subscription is retried with backoff; a reader paused by back-pressure is not stale;
* rediscovery adds new listings and drops delisted markets, live (subscribe/unsubscribe).

Frames may be landed twice (duplicates from the exchange, or overlap between a gap fill and the
socket); downstream dedupes by trade id. Nothing received is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import websockets
from prometheus_client import Counter
from websockets.asyncio.client import ClientConnection

from extractors.backoff import Backoff, FatalError, RetryableError, is_retryable
from extractors.batcher import Batcher
from extractors.envelope import Batch, Channel, Envelope
from extractors.exchanges import connector as get_connector
from extractors.exchanges.base import Connector, Market, RestRequest, UnknownFrame, takes_firehose
from extractors.klines import KlinePoller
from extractors.metrics import Metrics
from extractors.rest import RestClient, RestError
from extractors.settings import ExchangeSettings, Settings, parse_shard, select_markets, urls
from extractors.sinks import batch_bytes_limit
from extractors.sinks.base import Sink, SinkError, write_all
from extractors.tracking import Action, Duplicate, FillRequest, GapRecord, Mark, TradeTracker

logger = logging.getLogger(__name__)

#: websockets' own frame limit: far above ``max_frame_bytes`` so oversized frames reach the
#: runner (and become dead letters) instead of closing the connection.
_WS_HARD_MAX_BYTES = 64 * 1024 * 1024
#: Dead letters keep at most this much of an oversized frame.
_DEADLETTER_KEEP_BYTES = 64 * 1024
_GAP_WORKERS = 2
_GAP_JOB_ATTEMPTS = 3
_STATE_VERSION = 1
#: The writer hands at most this many queued batches to a sink in one call (a group commit).
GROUP_BATCHES = 64


@dataclass(slots=True)
class _Connection:
    """One websocket slot: its markets survive reconnects; ``ws`` and counters are per connection."""

    index: int
    markets: list[str]
    firehose: bool
    ws: ClientConnection | None = None
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


class ResumeFile:
    """The crash-safe file of one exchange runner's resume points (per extractor and shard).

    JSON ``{"version": 1, "exchange": ..., "shard": "i/n", "markets": {native_symbol: id}}``,
    replaced atomically: written to a temporary file, fsynced, renamed over the old one, and the
    folder fsynced. A missing file means a first start; an unreadable one is logged and ignored
    (the markets then start like new ones: a baseline fill, no resume).
    """

    def __init__(self, directory: str | Path, *, exchange: str, shard: tuple[int, int]) -> None:
        index, count = shard
        self.path = Path(directory) / f"{exchange}-shard-{index}-of-{count}.json"
        self.exchange = exchange
        self.shard = f"{index}/{count}"
        self._lock = threading.Lock()

    def load(self) -> dict[str, int]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            markets = doc["markets"]
            return {str(symbol): int(point) for symbol, point in markets.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.error("resume state %s unreadable (%s); starting without it", self.path, exc)
            return {}

    def save(self, points: Mapping[str, int]) -> None:
        """Replace the file with ``points`` (blocking; one writer at a time)."""
        with self._lock:
            self._save(points)

    def _save(self, points: Mapping[str, int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"version": _STATE_VERSION, "exchange": self.exchange, "shard": self.shard}
        text = json.dumps({**doc, "markets": dict(sorted(points.items()))}, separators=(",", ":"))
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with temp.open("w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, self.path)
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


class ExchangeRunner:
    """Extracts one exchange; see the module docstring."""

    def __init__(
        self,
        connector: Connector,
        settings: Settings,
        *,
        emit: Callable[[Envelope], None],
        metrics: Metrics,
        http: aiohttp.ClientSession,
        stop: asyncio.Event,
        room: asyncio.Event | None = None,
        resume_file: ResumeFile | None = None,
    ) -> None:
        self.c = connector
        self.name = connector.NAME
        self.settings = settings
        self.ext = settings.extractors
        self.xs: ExchangeSettings = settings.exchange(self.name)
        self.channels: tuple[Channel, ...] = settings.channels
        self.shard = parse_shard(self.ext.shard)
        rest_url, self.ws_url = urls(connector, self.xs)
        self.rest = RestClient(
            http,
            exchange=self.name,
            base_url=rest_url,
            weight_per_s=self.xs.rest_weight_per_s or connector.REST_WEIGHT_PER_S,
            burst=connector.REST_WEIGHT_BURST,
            timeout_s=self.ext.rest_timeout_s,
            max_attempts=self.ext.rest_max_attempts,
            metrics=metrics,
        )
        self._emit = emit
        #: Cleared while the sinks are behind: websocket readers pause, so memory stays bounded
        #: and the backlog the peer holds is TCP's, not ours.
        self._room = room
        self.m = metrics
        self._stop = stop
        self._per_conn = self.xs.markets_per_connection or connector.MARKETS_PER_CONNECTION
        self._connections: list[_Connection] = []
        self._conn_of: dict[str, _Connection] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._tg: asyncio.TaskGroup | None = None
        #: Trade ids, drops, fills and resume points: the decisions; this class does the I/O.
        #: Where the resume points persist (None: not persisted, e.g. unit tests).
        self.resume_file = resume_file
        resume = resume_file.load() if resume_file is not None else {}
        if resume_file is not None and resume:
            logger.info(
                "resuming %d markets from %s", len(resume), resume_file.path, extra={"exchange": self.name}
            )
        self.tracker = TradeTracker(
            consecutive_ids=connector.CONSECUTIVE_IDS, resume=resume, max_attempts=_GAP_JOB_ATTEMPTS
        )
        #: The tracker's mark of every envelope handed on and not yet durable, by object id.
        self._marks: dict[int, Mark] = {}
        self._fill_ready = asyncio.Event()
        self._last_data: dict[str, float] = {}
        self._last_l1: dict[str, float] = {}
        self._rediscover_now = asyncio.Event()
        self._rest_seq = 0
        self._frame_counters = {
            kind: metrics.frames.labels(self.name, "", kind)
            for kind in ("control", "ack", "error", "deadletter")
        }
        self._data_frames: dict[str, Counter] = {}
        self._local = metrics.local

    # --- lifecycle ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until the stop event; then finish in-flight gap fills within the shutdown budget."""
        markets = await self._discover_until_ok()
        if markets is None:
            return
        self.tracker.track(markets)
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for chunk_start in range(0, len(markets), self._per_conn):
                self._add_connection(markets[chunk_start : chunk_start + self._per_conn])
            if not self._connections:
                logger.warning("no markets selected", extra={"exchange": self.name})
            self._tasks += [tg.create_task(self._gap_worker(i)) for i in range(_GAP_WORKERS)]
            self._tasks.append(tg.create_task(self._rediscovery_loop()))
            self._tasks.append(tg.create_task(self._market_watch_loop()))
            if self.ext.klines:
                self._tasks.append(tg.create_task(self._klines_poller().run()))
            if self.resume_file is not None:
                self._tasks.append(tg.create_task(self._state_loop()))
        self._tg = None

    def _klines_poller(self) -> KlinePoller:
        ext = self.ext
        return KlinePoller(
            self.c,
            self.rest,
            markets=lambda: self.markets,
            emit=self._emit,
            stop=self._stop,
            delay_s=ext.klines_delay_s,
            rest_share=ext.klines_rest_share,
        )

    def _add_connection(self, markets: list[str]) -> _Connection:
        conn = _Connection(
            index=len(self._connections),
            markets=list(markets),
            firehose=takes_firehose(shard=self.shard, connection_index=len(self._connections)),
        )
        self._connections.append(conn)
        for symbol in markets:
            self._conn_of[symbol] = conn
        self.m.markets.labels(self.name).set(len(self._conn_of))
        if self._tg is not None:
            self._tasks.append(self._tg.create_task(self._connection_loop(conn)))
        return conn

    @property
    def markets(self) -> list[str]:
        return sorted(self._conn_of)

    @property
    def last_ids(self) -> dict[str, int]:
        """Highest trade ordering id seen per market (socket or REST)."""
        return self.tracker.last_ids

    @property
    def idle(self) -> bool:
        """No gap fill queued, running, or waiting for a market's resubscription (tests wait for
        this before stopping)."""
        return self.tracker.queued == 0 and self.tracker.running == 0 and self.tracker.awaiting == 0

    def durable(self, envelopes: Iterable[Envelope]) -> None:
        """The sinks have made these envelopes durable: let the resume points advance."""
        marks = [m for m in (self._marks.pop(id(e), None) for e in envelopes) if m is not None]
        if marks:
            self.tracker.durable(marks)

    def abandon_fills(self) -> None:
        """Shutdown's budget is spent: record every fill still queued or running as a gap."""
        self._handle(self.tracker.shutdown())

    def _hand_on(self, envelope: Envelope, symbol: str | None) -> None:
        """Emit an envelope about ``symbol``'s trades with the tracker's mark."""
        self._emit(envelope)
        if symbol is not None and self.tracker.tracks(symbol):
            self._marks[id(envelope)] = self.tracker.mark(symbol)

    def _handle(self, actions: Sequence[Action]) -> None:
        """Perform what the tracker asked for."""
        for action in actions:
            if isinstance(action, Duplicate):
                self.m.duplicates.labels(self.name).inc()
            elif isinstance(action, FillRequest):
                self.m.gaps_detected.labels(self.name, action.reason).inc()
            elif isinstance(action, GapRecord):
                self._record_gap(action)
        if self.tracker.queued:
            self._fill_ready.set()

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; True when the stop event fired."""
        if seconds <= 0:
            return self._stop.is_set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self._stop.is_set()

    # --- discovery --------------------------------------------------------------------------------

    async def _discover(self) -> list[Market]:
        request = self.c.discovery_request()
        response = await self.rest.call(request)
        self._land_rest("markets", request, response.body, response.recv_ts_ns, None)
        try:
            return self.c.parse_markets(response.body)
        except (ValueError, KeyError, TypeError) as exc:
            raise RetryableError(f"discovery response not understood: {exc}") from exc

    async def _discover_until_ok(self) -> list[str] | None:
        backoff = Backoff(initial=self.ext.backoff_initial_s, cap=self.ext.backoff_max_s)
        while not self._stop.is_set():
            try:
                found = await self._discover()
            except Exception as exc:
                if not is_retryable(exc) and not (isinstance(exc, RestError) and exc.status in (403, 404)):
                    raise
                delay = next(backoff)
                logger.warning(
                    "discovery failed (%s); retry in %.2fs", exc, delay, extra={"exchange": self.name}
                )
                if await self._sleep(delay):
                    return None
                continue
            chosen = select_markets(found, self.xs, shard=self.shard)
            logger.info(
                "discovered %d markets, %d selected (shard %s)",
                len(found),
                len(chosen),
                self.ext.shard,
                extra={"exchange": self.name},
            )
            return chosen
        return None

    async def _rediscovery_loop(self) -> None:
        while not self._stop.is_set():
            waiters = [
                asyncio.create_task(self._stop.wait()),
                asyncio.create_task(self._rediscover_now.wait()),
            ]
            try:
                await asyncio.wait(
                    waiters, timeout=self.ext.rediscover_interval_s, return_when="FIRST_COMPLETED"
                )
            finally:
                for waiter in waiters:
                    waiter.cancel()
            self._rediscover_now.clear()
            if self._stop.is_set():
                return
            try:
                found = await self._discover()
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                logger.warning("rediscovery failed: %s", exc, extra={"exchange": self.name})
                continue
            self.apply_markets(select_markets(found, self.xs, shard=self.shard))

    def apply_markets(self, wanted: Sequence[str]) -> None:
        """Subscribe new listings and unsubscribe delisted/halted markets on live connections."""
        current = set(self._conn_of)
        added = [s for s in wanted if s not in current]
        removed = sorted(current - set(wanted))
        by_conn: dict[int, list[str]] = {}
        for symbol in removed:
            conn = self._conn_of.pop(symbol)
            conn.markets.remove(symbol)
            by_conn.setdefault(conn.index, []).append(symbol)
            self.tracker.forget(symbol)
            self._last_data.pop(symbol, None)
        for index, symbols in by_conn.items():
            for message in self.c.unsubscribe_messages(symbols, self.channels):
                self._connections[index].outbox.put_nowait(message)
        if removed:
            self.m.delisted.labels(self.name).inc(len(removed))
            logger.info("dropping %d markets: %s", len(removed), removed[:20], extra={"exchange": self.name})
        fresh: list[str] = []
        for symbol in added:
            spare = next((c for c in self._connections if len(c.markets) < self._per_conn), None)
            if spare is None:
                self.tracker.track([symbol])
                fresh.append(symbol)
                if len(fresh) == self._per_conn:
                    self._add_connection(fresh)
                    fresh = []
                continue
            spare.markets.append(symbol)
            self._conn_of[symbol] = spare
            for message in self.c.subscribe_messages([symbol], self.channels, firehose=False):
                spare.outbox.put_nowait(message)
            self._handle(self.tracker.listed(symbol))
        if fresh:
            self._add_connection(fresh)
        if added:
            self.m.listed.labels(self.name).inc(len(added))
            logger.info("adding %d markets: %s", len(added), added[:20], extra={"exchange": self.name})
        self.m.markets.labels(self.name).set(len(self._conn_of))

    # --- connections ------------------------------------------------------------------------------

    async def _connection_loop(self, conn: _Connection) -> None:
        backoff = Backoff(initial=self.ext.backoff_initial_s, cap=self.ext.backoff_max_s)
        while not self._stop.is_set():
            if not conn.markets and not conn.firehose:
                if await self._sleep(1.0):
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
            if await self._sleep(delay):
                return

    async def _connect_and_read(self, conn: _Connection) -> None:
        bootstrap = self.c.bootstrap_request()
        body = (await self.rest.call(bootstrap)).body if bootstrap is not None else None
        session = self.c.session(ws_url=self.ws_url, bootstrap_body=body, conn_id=conn.conn_id)
        async with websockets.connect(
            session.url,
            ping_interval=None,
            max_size=_WS_HARD_MAX_BYTES,
            open_timeout=self.ext.connect_timeout_s,
            close_timeout=1.0,
            max_queue=256,
        ) as ws:
            conn.ws = ws
            conn.seq = 0
            conn.acks = conn.rejects = 0
            self.tracker.opened(conn.markets)
            conn.opened_at = conn.last_frame = time.monotonic()
            while not conn.outbox.empty():
                conn.outbox.get_nowait()
            self.m.connections.labels(self.name).inc()
            try:
                if session.await_welcome:
                    first = await asyncio.wait_for(ws.recv(), self.ext.connect_timeout_s)
                    if self._on_message(conn, first) != "welcome":
                        raise RetryableError("first frame was not a welcome")
                helpers = [
                    asyncio.create_task(self._subscribe(conn, ws)),
                    asyncio.create_task(self._sender(conn, ws)),
                    asyncio.create_task(self._watchdog(conn, ws)),
                ]
                if session.ping_interval_s:
                    helpers.append(asyncio.create_task(self._pinger(conn, session.ping_interval_s)))
                try:
                    async for message in ws:
                        self._on_message(conn, message)
                        if self._room is not None and not self._room.is_set() and not self._stop.is_set():
                            conn.paused = True  # our pause, not the peer's silence
                            try:
                                await self._wait_for_room()
                            finally:
                                conn.paused = False
                                conn.last_frame = time.monotonic()
                finally:
                    for task in helpers:
                        task.cancel()
                    results = await asyncio.gather(*helpers, return_exceptions=True)
                    for result in results:
                        if isinstance(result, Exception) and not is_retryable(result):
                            raise result
            finally:
                self.m.connections.labels(self.name).dec()

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

    async def _subscribe(self, conn: _Connection, ws: ClientConnection) -> None:
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

    async def _sender(self, conn: _Connection, ws: ClientConnection) -> None:
        interval = 1.0 / self.c.WS_MESSAGES_PER_S
        while True:
            message = await conn.outbox.get()
            await ws.send(message)
            await asyncio.sleep(interval)

    async def _pinger(self, conn: _Connection, interval: float) -> None:
        n = 0
        while True:
            await asyncio.sleep(interval)
            n += 1
            message = self.c.ping_message(n)
            if message is not None:
                conn.outbox.put_nowait(message)

    async def _watchdog(self, conn: _Connection, ws: ClientConnection) -> None:
        gauge = self.m.last_frame_age.labels(self.name, str(conn.index))
        tick = min(0.5, self.ext.stale_after_s / 4)
        while True:
            stopping = await self._sleep(tick)
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

    def _on_message(self, conn: _Connection, message: str | bytes) -> str:
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
            envelope = Envelope(
                self.name,
                frame.channel,
                frame.stream,
                text,
                recv_ns,
                conn.conn_id,
                conn.seq,
                "ws",
                symbol,
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
            self._tasks.append(asyncio.get_running_loop().create_task(conn.ws.close()))
        elif frame.last_trade_id is not None and frame.native_symbol is not None:
            self.tracker.heartbeat(frame.native_symbol, frame.last_trade_id, time.monotonic())
        return frame.detail or frame.kind

    def _dead(
        self, conn: _Connection, text: str, recv_ns: int, reason: str, *, counted: bool = False
    ) -> None:
        if not counted:
            self._local.inc(self._frame_counters["deadletter"])
        self.m.deadletters.labels(self.name, reason.split(":", 1)[0]).inc()
        self._emit(
            Envelope(self.name, "deadletter", "", text, recv_ns, conn.conn_id, conn.seq, "ws", None, reason)
        )

    def _verify_after_bad_frame(self, conn: _Connection, text: str) -> None:
        """A truncated frame may have carried a trade: re-check the markets it could belong to.

        The tracker keeps at most one queued fill per market, so a burst of bad frames costs at
        most one REST walk per market of the connection.
        """
        named = [s for s in conn.markets if s in text]
        self._handle(self.tracker.bad_frame(named or conn.markets))

    # --- gap fill ---------------------------------------------------------------------------------

    async def _gap_worker(self, n: int) -> None:
        while True:
            job = self.tracker.take_fill()
            if job is None:
                if self._stop.is_set():
                    return
                self._fill_ready.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._fill_ready.wait(), 0.25)
                continue
            if job.native_symbol not in self._conn_of:
                self.tracker.fill_done(job)
                continue
            try:
                await self._fill(job)
            except Exception as exc:
                if not is_retryable(exc) and not isinstance(exc, RestError | ValueError | KeyError):
                    raise
                actions = self.tracker.fill_failed(job, str(exc))
                if actions:
                    logger.error("gap fill %s failed for good: %s", job, exc, extra={"exchange": self.name})
                else:
                    logger.warning(
                        "gap fill %s failed (%s); retrying", job, exc, extra={"exchange": self.name}
                    )
                self._handle(actions)
            finally:
                self._handle([])  # a fill queued behind this one for the same market may go now

    async def _fill(self, job: FillRequest) -> None:
        """Fetch ``job``'s pages; a baseline (no ``after_id``) takes the first page only."""
        symbol = job.native_symbol
        self._rest_seq += 1
        rest_id = f"rest-{self.name}-{self._rest_seq}"
        baseline = job.after_id is None
        if job.after_id is None:
            request: RestRequest | None = self.c.recent_trades_request(symbol)
        else:
            request = self.c.gap_fill_request(symbol, after_id=job.after_id, until_id=job.until_id)
        page_no = 0
        recovered = 0
        while request is not None:
            page_no += 1
            response = await self.rest.call(request)
            envelope = Envelope(
                self.name,
                "trades",
                request.target,
                response.body,
                response.recv_ts_ns,
                rest_id,
                page_no,
                "rest",
                symbol,
            )
            try:
                page = self.c.parse_trades_page(
                    response.body,
                    request=request,
                    headers=response.headers,
                    after_id=job.after_id if job.after_id is not None else -1,
                    until_id=job.until_id,
                )
            except Exception:
                self._emit(envelope)  # the raw page is kept; the fill is retried
                raise
            recovered += len(page.ids)
            # Gap records go out before the page, and the hole closes before the last page's
            # mark: the resume point passes the hole only once both are durable.
            self._handle(self.tracker.fill_page(job, page.ids, page.gap))
            request = None if baseline else page.next_request
            if request is None:
                self.tracker.fill_done(job)
            self._hand_on(envelope, symbol)
        self.m.gap_trades.labels(self.name).inc(recovered)
        self.m.gaps_filled.labels(self.name).inc()

    def _record_gap(self, gap: GapRecord) -> None:
        """Land a ``gaps`` record: trades strictly between its two ids are lost for good."""
        self.m.gaps_unrecoverable.labels(self.name).inc()
        logger.warning(
            "unrecoverable gap in %s: trades after %s and before %s (%s)",
            gap.native_symbol,
            gap.after_id,
            gap.before_id,
            gap.reason,
            extra={"exchange": self.name},
        )
        envelope = Envelope(
            self.name,
            "gaps",
            "gap",
            json.dumps(gap.payload()),
            time.time_ns(),
            "runner",
            0,
            "rest",
            gap.native_symbol,
            None,
        )
        self._hand_on(envelope, gap.native_symbol)

    def _land_rest(
        self,
        channel: Channel,
        request: RestRequest,
        body: str,
        recv_ns: int,
        symbol: str | None,
    ) -> None:
        self._rest_seq += 1
        rest_id = f"rest-{self.name}-{self._rest_seq}"
        self._emit(Envelope(self.name, channel, request.target, body, recv_ns, rest_id, 1, "rest", symbol))

    async def _state_loop(self) -> None:
        """Persist the resume points whenever they moved, every ``state_interval_s``."""
        while not await self._sleep(self.ext.state_interval_s):
            await self.save_state()

    async def save_state(self) -> None:
        """Write the resume points if they moved since the last write (a no-op without a file)."""
        resume_file = self.resume_file
        if resume_file is None or not self.tracker.resume_changed:
            return
        self.tracker.resume_changed = False
        points = self.tracker.resume_points()
        try:
            await asyncio.to_thread(resume_file.save, points)
        except OSError as exc:
            self.tracker.resume_changed = True
            self.m.state_errors.labels(self.name).inc()
            logger.error(
                "resume state %s not saved: %s", resume_file.path, exc, extra={"exchange": self.name}
            )

    # --- quiet markets and the L1 poller ------------------------------------------------------------

    async def _market_watch_loop(self) -> None:
        started = time.monotonic()
        stale_before: set[str] = set()
        poll = self.ext.l1_poll_interval_s
        polled: dict[str, float] = {}
        while not await self._sleep(1.0):
            now = time.monotonic()
            self._handle(self.tracker.tick(now))
            quiet = {
                s
                for s in self._conn_of
                if now - self._last_data.get(s, started) > self.ext.market_quiet_after_s
            }
            self.m.stale_markets.labels(self.name).set(len(quiet))
            if quiet - stale_before:
                logger.info(
                    "%d markets quiet for %.0fs; rediscovering",
                    len(quiet - stale_before),
                    self.ext.market_quiet_after_s,
                    extra={"exchange": self.name},
                )
                self._rediscover_now.set()
            stale_before = quiet
            if not poll or "l1" not in self.channels:
                continue
            for symbol in list(self._conn_of):
                request = self.c.l1_poll_request(symbol)
                if request is None:
                    break
                last = max(self._last_l1.get(symbol, started), polled.get(symbol, started))
                if now - last < poll or self.rest.bucket.available() < self.c.REST_WEIGHT_BURST / 2:
                    continue
                polled[symbol] = now
                try:
                    response = await self.rest.call(request)
                except RestError as exc:
                    logger.warning("L1 poll %s failed: %s", symbol, exc, extra={"exchange": self.name})
                    continue
                self._land_rest("l1", request, response.body, response.recv_ts_ns, symbol)


@dataclass(frozen=True, slots=True)
class ShutdownBudget:
    """One deadline for the whole shutdown, measured from the stop signal (``time.monotonic()``).

    The steps run one after the other, each by its own point inside the budget and each taking
    only what it needs (what one leaves, the next gets): in-flight gap fills until half of it
    (:data:`FILL_SHARE`; what is still queued then becomes ``gaps`` records), the final flush of
    the batcher and the writes of the batches queued for the sinks until :data:`WRITE_SHARE` (what
    is not durable by then is excluded from the resume state, so the next start fetches it over
    REST), then closing the sinks (spool drain, landing parts, Kafka producer) by ``deadline``.
    """

    #: Gap fills may use this share of the budget.
    FILL_SHARE = 0.5
    #: The final flush and the sink writes end at this share; closing the sinks has the rest.
    WRITE_SHARE = 0.8

    started: float
    total_s: float

    @classmethod
    def start(cls, total_s: float, *, now: float | None = None) -> ShutdownBudget:
        return cls(time.monotonic() if now is None else now, max(0.0, total_s))

    @property
    def deadline(self) -> float:
        return self.started + self.total_s

    @property
    def fills_until(self) -> float:
        return self.started + self.total_s * self.FILL_SHARE

    @property
    def writes_until(self) -> float:
        return self.started + self.total_s * self.WRITE_SHARE

    def left(self, until: float) -> float:
        """Seconds from now until ``until`` (0 when it has passed)."""
        return max(0.0, until - time.monotonic())


class _Writer:
    """Writes flushed batches to every sink, in order, retrying a failing sink within a bound."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        *,
        retry_s: float,
        max_pending: int,
        metrics: Metrics,
        on_durable: Callable[[Batch], None] = lambda batch: None,
    ) -> None:
        self.sinks = list(sinks)
        #: Called once every sink's ``write`` of a batch has returned (the batch is durable).
        self._on_durable = on_durable
        self.queue: asyncio.Queue[Batch | None] = asyncio.Queue()
        #: Set while fewer than ``max_pending`` batches wait or are being written; readers
        #: pause while it is clear.
        self.room = asyncio.Event()
        self.room.set()
        self._max_pending = max_pending
        #: Batches taken from the queue and being written (one group).
        self._in_flight = 0
        self._retry_s = retry_s
        self.m = metrics

    @property
    def pending(self) -> int:
        """Batches not yet durable: queued plus the group being written (what memory holds)."""
        return self.queue.qsize() + self._in_flight

    def abandon(self) -> tuple[int, int]:
        """Empty the queue (shutdown's budget is spent); returns (batches, envelopes) dropped
        from memory. Their trades are not durable, so the resume points stay below them."""
        batches = envelopes = 0
        while not self.queue.empty():
            batch = self.queue.get_nowait()
            if batch is not None:
                batches += 1
                envelopes += len(batch.envelopes)
        self.m.write_queue.set(0)
        return batches, envelopes

    def put(self, batch: Batch) -> None:
        self.m.local.flush()  # the per-frame counters, once per batch
        self.m.batch_size.labels(batch.exchange, batch.channel).observe(len(batch.envelopes))
        self.queue.put_nowait(batch)
        self.m.write_queue.set(self.queue.qsize())
        if self.pending >= self._max_pending:
            self.room.clear()

    async def run(self) -> None:
        """Write queued batches until the ``None`` sentinel: up to :data:`GROUP_BATCHES` at a
        time, as one group commit per sink (one thread hop and one fsync per landing part for
        the group, instead of one per batch), in order; each is durable when the call returns."""
        while True:
            first = await self.queue.get()
            group: list[Batch] = []
            done = first is None
            if first is not None:
                group.append(first)
            limit = min(GROUP_BATCHES, self._max_pending)
            while not done and len(group) < limit and not self.queue.empty():
                more = self.queue.get_nowait()
                if more is None:
                    done = True
                else:
                    group.append(more)
            self.m.write_queue.set(self.queue.qsize())
            self._in_flight = len(group)
            if group:
                try:
                    await asyncio.gather(*(self._write(sink, group) for sink in self.sinks))
                finally:
                    self._in_flight = 0
                for batch in group:
                    self._on_durable(batch)
            if self.pending < self._max_pending:
                self.room.set()
            if done:
                return

    async def _write(self, sink: Sink, group: Sequence[Batch]) -> None:
        backoff = Backoff(initial=0.1, cap=5.0)
        deadline = time.monotonic() + self._retry_s
        while True:
            started = time.monotonic()
            try:
                await write_all(sink, group)
            except SinkError as exc:
                self.m.sink_errors.labels(sink.name).inc()
                delay = next(backoff)
                if not exc.retryable or time.monotonic() + delay > deadline:
                    ids = (
                        f"{group[0].batch_id}..{group[-1].batch_id}" if len(group) > 1 else group[0].batch_id
                    )
                    raise FatalError(f"sink {sink.name} failed for batch {ids}: {exc}") from exc
                logger.warning("sink %s failed (%s); retry in %.2fs", sink.name, exc, delay)
                await asyncio.sleep(delay)
                continue
            self.m.sink_latency.labels(sink.name).observe(time.monotonic() - started)
            depth = getattr(sink, "depth", None)
            if isinstance(depth, int):
                self.m.spool_depth.labels(sink.name).set(depth)
            return


class Extractor:
    """Every configured exchange in one process, batching into the given sinks.

    ``await run(stop)`` returns after ``stop`` is set and every buffer has been flushed to the
    sinks, all within the :class:`ShutdownBudget` fixed when ``stop`` fired (``self.shutdown``;
    whoever closes the sinks gives them its ``deadline``), or raises when a sink fails beyond its
    retry bound or an unretryable error occurs. It does not close the sinks.
    """

    def __init__(self, settings: Settings, sinks: Sequence[Sink], *, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.writer = _Writer(
            sinks,
            retry_s=settings.extractors.sink_retry_s,
            max_pending=settings.extractors.max_pending_batches,
            metrics=self.metrics,
            on_durable=self._durable,
        )
        per_symbol = {
            name: get_connector(name).PER_SYMBOL_BATCH_CHANNELS for name in settings.extractors.exchanges
        }
        self.batcher = Batcher(
            max_envelopes=settings.extractors.batch_max_envelopes,
            max_age_s=settings.extractors.batch_max_age_s,
            on_batch=self.writer.put,
            max_bytes=batch_bytes_limit(sinks),  # one batch always fits one Kafka record
            per_symbol_channels=per_symbol,
        )
        self.runners: dict[str, ExchangeRunner] = {}
        self._local = self.metrics.local
        #: Set when the stop event fires: the one deadline every shutdown step keeps.
        self.shutdown: ShutdownBudget | None = None
        self._counters: dict[tuple[str, str, str], Counter] = {}

    def emit(self, envelope: Envelope) -> None:
        key = (envelope.exchange, envelope.channel, envelope.source)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.metrics.envelopes.labels(*key)
        self._local.inc(counter)
        self.batcher.add(envelope)

    async def _flush_counts(self, stop: asyncio.Event) -> None:
        """Add the buffered per-frame counts to Prometheus every 0.25 s (the scrape's view)."""
        while not stop.is_set():
            self._local.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)

    def _durable(self, batch: Batch) -> None:
        runner = self.runners.get(batch.exchange)
        if runner is not None:
            runner.durable(batch.envelopes)

    @property
    def idle(self) -> bool:
        return all(r.idle for r in self.runners.values())

    async def run(self, stop: asyncio.Event) -> None:
        ext = self.settings.extractors
        shard = parse_shard(ext.shard)
        runner_stop = asyncio.Event()
        batcher_stop = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=32)
        async with aiohttp.ClientSession(connector=connector) as http:
            for name in ext.exchanges:
                self.runners[name] = ExchangeRunner(
                    get_connector(name),
                    self.settings,
                    emit=self.emit,
                    metrics=self.metrics,
                    http=http,
                    stop=runner_stop,
                    room=self.writer.room,
                    resume_file=ResumeFile(ext.state_dir, exchange=name, shard=shard),
                )
            async with asyncio.TaskGroup() as tg:
                writer = tg.create_task(self.writer.run())
                batcher = tg.create_task(self.batcher.run(batcher_stop))
                counts = tg.create_task(self._flush_counts(batcher_stop))
                runners = [tg.create_task(r.run()) for r in self.runners.values()]
                await stop.wait()
                budget = ShutdownBudget.start(ext.shutdown_timeout_s)
                self.shutdown = budget
                logger.info("stopping: finishing gap fills and flushing buffers within %.2fs", budget.total_s)
                runner_stop.set()
                _, pending = await asyncio.wait(runners, timeout=budget.left(budget.fills_until))
                for task in pending:
                    task.cancel()
                await asyncio.wait(runners)
                for runner in self.runners.values():
                    runner.abandon_fills()  # what is still queued becomes gaps records
                batcher_stop.set()
                await batcher
                await counts
                self.batcher.flush_all()
                self.writer.queue.put_nowait(None)
                done, _ = await asyncio.wait([writer], timeout=budget.left(budget.writes_until))
                if not done:
                    writer.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await writer
                    left = self.writer.abandon()
                    logger.error(
                        "shutdown budget spent with %d batch(es) (%d envelopes) not yet durable; the "
                        "resume state excludes them, so the next start fetches their trades over REST",
                        left[0],
                        left[1],
                    )
                for runner in self.runners.values():
                    await runner.save_state()
                self._local.flush()
        logger.info("stopped; every buffer flushed")
