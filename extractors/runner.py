"""The shared runner: one :class:`Extractor` per process, one :class:`ExchangeRunner` per exchange.

An exchange runner discovers markets over REST, spreads them over websocket connections (each
within the exchange's per-connection limit), keeps every connection alive, fills trade-id gaps
over REST and persists its resume points. It wires four parts, each in its own module:

* :class:`~extractors.discovery.Discovery` (``extractors/discovery.py``): discovery and
  rediscovery, the markets of each connection (new listings subscribed and delisted markets
  unsubscribed live), the market watch (quiet markets, the L1 poller);
* :class:`~extractors.connection.ConnectionLoop` (``extractors/connection.py``): connect,
  subscribe, read, ping, the watchdog, reconnect with backoff, and every frame to an
  :class:`~extractors.envelope.Envelope` (data), a counter (control) or a dead letter;
* :class:`~extractors.tracking.TradeTracker` (``extractors/tracking.py``, no I/O): trade ids per
  market, drops, resubscriptions, REST pages and durable batches, and the REST fills they call
  for (an id jump, a reconnect, a malformed frame, a heartbeat's newer id, a restart);
* :class:`~extractors.gapfill.GapFiller` (``extractors/gapfill.py``): the tracker's actions and
  the REST fills, whose pages land with ``source="rest"``; trades REST cannot return become a
  record in channel ``gaps``.

Crash safety: per market, the last trade id the sinks have made durable (held below every
unfinished fill) is persisted by a :class:`~extractors.resume.ResumeFile` per exchange and shard;
a restarted process fills every market from its point over REST while the socket streams, so
what a ``kill -9`` caught in memory is fetched again.

The :class:`Extractor` feeds every runner's envelopes to one
:class:`~extractors.batcher.Batcher`, whose batches the :class:`~extractors.writer.Writer` writes
to the sinks, and shuts down within one :class:`~extractors.shutdown.ShutdownBudget`.

Frames may be landed twice (duplicates from the exchange, or overlap between a gap fill and the
socket); downstream dedupes by trade id. Nothing received is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence

import aiohttp
from prometheus_client import Counter

from extractors.backoff import sleep_unless_stopped
from extractors.batcher import Batcher
from extractors.connection import Connection, ConnectionLoop
from extractors.discovery import Discovery
from extractors.envelope import Batch, Channel, Envelope
from extractors.exchanges import connector as get_connector
from extractors.exchanges.base import Connector, RestRequest
from extractors.gapfill import GAP_JOB_ATTEMPTS, GAP_WORKERS, GapFiller
from extractors.klines import KlinePoller
from extractors.metrics import Metrics
from extractors.rest import RestClient
from extractors.resume import ResumeFile
from extractors.settings import ExchangeSettings, Settings, parse_shard, urls
from extractors.shutdown import ShutdownBudget
from extractors.sinks import batch_bytes_limit
from extractors.sinks.base import Sink
from extractors.tracking import TradeTracker
from extractors.writer import Writer

__all__ = ["ExchangeRunner", "Extractor", "ResumeFile", "ShutdownBudget"]

logger = logging.getLogger(__name__)


class ExchangeRunner:
    """Extracts one exchange; see the module docstring.

    ``discovery``, ``connections`` and ``gaps`` are its parts; they share the trade tracker,
    the REST client, the stop event and the per-market maps created here.
    """

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
        rest_url, ws_url = urls(connector, self.xs)
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
        self.m = metrics
        self._stop = stop
        self._tasks: list[asyncio.Task[None]] = []
        self._tg: asyncio.TaskGroup | None = None
        self._rest_seq = 0
        #: Where the resume points persist (None: not persisted, e.g. unit tests).
        self.resume_file = resume_file
        resume = resume_file.load() if resume_file is not None else {}
        if resume_file is not None and resume:
            logger.info(
                "resuming %d markets from %s", len(resume), resume_file.path, extra={"exchange": self.name}
            )
        #: Trade ids, drops, fills and resume points: the decisions; the parts do the I/O.
        self.tracker = TradeTracker(
            consecutive_ids=connector.CONSECUTIVE_IDS, resume=resume, max_attempts=GAP_JOB_ATTEMPTS
        )
        #: Native symbol -> the connection that carries it: the markets subscribed.
        self._conn_of: dict[str, Connection] = {}
        #: Native symbol -> ``time.monotonic()`` of its latest data frame / L1 or ticker frame.
        last_data: dict[str, float] = {}
        last_l1: dict[str, float] = {}
        self.gaps = GapFiller(
            connector,
            rest=self.rest,
            tracker=self.tracker,
            markets=self._conn_of,
            emit=emit,
            rest_id=self._next_rest_id,
            metrics=metrics,
            stop=stop,
        )
        self.connections = ConnectionLoop(
            connector,
            ext=self.ext,
            channels=self.channels,
            ws_url=ws_url,
            rest=self.rest,
            tracker=self.tracker,
            emit=emit,
            hand_on=self.gaps.hand_on,
            handle=self.gaps.handle,
            last_data=last_data,
            last_l1=last_l1,
            metrics=metrics,
            stop=stop,
            room=room,
        )
        self.discovery = Discovery(
            connector,
            ext=self.ext,
            xs=self.xs,
            channels=self.channels,
            shard=self.shard,
            rest=self.rest,
            tracker=self.tracker,
            conn_of=self._conn_of,
            last_data=last_data,
            last_l1=last_l1,
            land_rest=self._land_rest,
            handle=self.gaps.handle,
            start=self._start_connection,
            metrics=metrics,
            stop=stop,
        )

    # --- lifecycle ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until the stop event; then finish in-flight gap fills within the shutdown budget."""
        markets = await self.discovery.discover_until_ok()
        if markets is None:
            return
        self.tracker.track(markets)
        per_conn = self.discovery.per_conn
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for chunk_start in range(0, len(markets), per_conn):
                self.discovery.add_connection(markets[chunk_start : chunk_start + per_conn])
            if not self.discovery.connections:
                logger.warning("no markets selected", extra={"exchange": self.name})
            self._tasks += [tg.create_task(self.gaps.worker(i)) for i in range(GAP_WORKERS)]
            self._tasks.append(tg.create_task(self.discovery.rediscovery_loop()))
            self._tasks.append(tg.create_task(self.discovery.watch_loop()))
            if self.ext.klines:
                self._tasks.append(tg.create_task(self._klines_poller().run()))
            if self.resume_file is not None:
                self._tasks.append(tg.create_task(self._state_loop()))
        self._tg = None

    def _start_connection(self, conn: Connection) -> None:
        """Run a new connection's loop (once the runner runs; before that, ``run`` starts it)."""
        if self._tg is not None:
            self._tasks.append(self._tg.create_task(self.connections.run(conn)))

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
        self.gaps.durable(envelopes)

    def abandon_fills(self) -> None:
        """Shutdown's budget is spent: record every fill still queued or running as a gap."""
        self.gaps.handle(self.tracker.shutdown())

    # --- REST pages and the resume state ----------------------------------------------------------

    def _next_rest_id(self) -> str:
        """The ``conn_id`` of the next REST request this runner lands."""
        self._rest_seq += 1
        return f"rest-{self.name}-{self._rest_seq}"

    def _land_rest(
        self,
        channel: Channel,
        request: RestRequest,
        body: str,
        recv_ns: int,
        symbol: str | None,
    ) -> None:
        self._emit(
            Envelope(
                exchange=self.name,
                channel=channel,
                stream=request.target,
                payload=body,
                recv_ts_ns=recv_ns,
                conn_id=self._next_rest_id(),
                conn_seq=1,
                source="rest",
                native_symbol=symbol,
            )
        )

    async def _state_loop(self) -> None:
        """Persist the resume points whenever they moved, every ``state_interval_s``."""
        while not await sleep_unless_stopped(self._stop, self.ext.state_interval_s):
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
        self.writer = Writer(
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
