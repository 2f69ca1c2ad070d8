"""Optional live-update stores: the feed's market states copied into PostgreSQL and Redis.

Both are off by default (section ``stores:``) and never needed by the lake: they hold the freshest
values for programs that would rather query a database than open a stream. They receive the same
states the server fans out (:func:`lake.serve.feeds.run_feed` hands every published batch to
:meth:`StoreWriter.offer`), each store in its own thread behind a bounded queue, so a slow or
down database never slows the feed: batches beyond ``stores.max_queued`` are dropped and counted.
A failed write is retried with capped, jittered backoff on a new connection.

Ordering: an update's time is the exchange's event time, or the receive time when the frame has
none (Binance ``bookTicker``). An update older than the stored one never replaces it, and a
duplicate (same time) changes nothing, in either store (Redis breaks equal times by receive time).

**PostgreSQL** (:class:`PostgresStore`), channels ``ticker`` and ``l1``:

- ``live_tickers``: one row per (exchange, native_symbol): the newest ticker's ``last`` (and
  ``last_usdt``, ``last_ts``) and the newest quote's best bid/ask (``quote_ts``; the quotes are
  the ones ``silver.l1_quotes`` takes, see :func:`is_quote`), each part upserted on its own time;
- ``live_ticker_history``: every update, append-only, keyed (exchange, native_symbol, channel,
  event_ts) like ``silver.tickers`` and ``silver.l1_quotes``, so a re-sent update is kept once.

**Redis** (:class:`RedisStore`), the L1 quotes ``silver.l1_quotes`` takes: channel ``l1``, and the
tickers of the exchanges whose tickers carry the best bid/ask (:data:`TICKER_QUOTE_EXCHANGES`):

- ``orderbook:<exchange>:<native symbol>``: a hash with the newest best bid/ask;
- ``orderbook:<exchange>:<native symbol>:quotes``: a sorted set of quotes (JSON members, score =
  event time in ms) for time-range queries (:meth:`RedisStore.quotes`), trimmed on every write to
  ``redis_retention_s`` before the market's newest quote and to ``redis_max_quotes`` entries.
  One Lua script per update does the guard, the add and the trim atomically.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import orjson

from extractors.backoff import Backoff
from lake.config import reveal
from lake.serve.settings import StoreSettings

logger = logging.getLogger(__name__)

State = dict[str, Any]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
QUOTE_FIELDS = ("bid", "bid_size", "ask", "ask_size")
PRICE_FIELDS = ("last", "bid", "bid_size", "ask", "ask_size", "last_usdt", "mid_usdt")
#: Exchanges whose ticker is also an L1 quote (``spark_jobs.parsers.TICKER_L1_EXCHANGES``, kept
#: here so the server imports no Spark; a test checks they agree). A Binance mini ticker has no book.
TICKER_QUOTE_EXCHANGES = frozenset({"kucoin", "coinbase", "kraken", "okx"})


def event_ns(state: State) -> int:
    """The update's time in ns since the epoch: the exchange's event time, else the receive time."""
    ms = state.get("event_ts_ms")
    return int(ms) * 1_000_000 if isinstance(ms, int) else int(state.get("recv_ts_ns") or 0)


def is_quote(state: State) -> bool:
    """Whether the state is an L1 quote: an ``l1`` update or a ticker that carries the book, with
    both sides."""
    channel = state.get("channel")
    book = channel == "l1" or (channel == "ticker" and state.get("exchange") in TICKER_QUOTE_EXCHANGES)
    return book and state.get("bid") is not None and state.get("ask") is not None


class Store(Protocol):
    name: str

    def write(self, states: Sequence[State]) -> None: ...

    def close(self) -> None: ...


# --- PostgreSQL --------------------------------------------------------------------------------

#: The columns both tables share; the history adds ``channel`` and the update's ``event_ts``.
_LAST = ("last", "last_usdt")  # from tickers
_QUOTE = ("bid", "bid_size", "ask", "ask_size", "mid_usdt")  # from L1 quotes
_LATEST = ("exchange", "native_symbol", "symbol", "base", "quote", *_LAST, "last_ts", *_QUOTE, "quote_ts")
_HISTORY = ("exchange", "native_symbol", "symbol", "base", "quote", "channel", *PRICE_FIELDS, "event_ts")


def _numeric(names: Iterable[str]) -> str:
    return ", ".join(f"{c} numeric" for c in names)


_DDL = f"""
CREATE TABLE IF NOT EXISTS live_tickers (
    exchange text NOT NULL, native_symbol text NOT NULL, symbol text, base text, quote text,
    {_numeric(_LAST)}, last_ts timestamptz, {_numeric(_QUOTE)}, quote_ts timestamptz,
    recv_ts_ns bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (exchange, native_symbol)
);
CREATE TABLE IF NOT EXISTS live_ticker_history (
    exchange text NOT NULL, native_symbol text NOT NULL, symbol text, base text, quote text,
    channel text NOT NULL, {_numeric(PRICE_FIELDS)}, event_ts timestamptz NOT NULL,
    recv_ts_ns bigint NOT NULL, inserted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (exchange, native_symbol, channel, event_ts)
);
"""


def _newer(ts: str) -> str:
    return f"(EXCLUDED.{ts} IS NOT NULL AND (t.{ts} IS NULL OR EXCLUDED.{ts} > t.{ts}))"


def _take(columns: Iterable[str], ts: str) -> str:
    """``SET`` items that take the new values of ``columns`` when ``ts`` is newer, else keep."""
    return ", ".join(f"{c} = CASE WHEN {_newer(ts)} THEN EXCLUDED.{c} ELSE t.{c} END" for c in columns)


def _insert(table: str, columns: Sequence[str], alias: str = "") -> str:
    names = ", ".join([*columns, "recv_ts_ns"])
    return f"INSERT INTO {table}{alias} ({names}) VALUES ({', '.join(['%s'] * (len(columns) + 1))})"


#: The ticker part and the quote part of a row each change only for a newer update of their own
#: kind (a ticker's time says nothing about how fresh the book is, and the other way round).
_UPSERT = (
    _insert("live_tickers", _LATEST, " AS t")
    + " ON CONFLICT (exchange, native_symbol) DO UPDATE SET "
    + ", ".join(f"{c} = COALESCE(EXCLUDED.{c}, t.{c})" for c in ("symbol", "base", "quote"))
    + f", {_take([*_LAST, 'last_ts'], 'last_ts')}, {_take([*_QUOTE, 'quote_ts'], 'quote_ts')}"
    + ", recv_ts_ns = GREATEST(t.recv_ts_ns, EXCLUDED.recv_ts_ns), updated_at = now()"
    + f" WHERE {_newer('last_ts')} OR {_newer('quote_ts')}"
)
_APPEND = _insert("live_ticker_history", _HISTORY) + " ON CONFLICT DO NOTHING"


def _decimal(text: Any) -> Decimal | None:
    return Decimal(str(text)) if text is not None else None


def _ts(ns: int) -> datetime:
    return EPOCH + timedelta(microseconds=ns // 1000)


def postgres_rows(state: State) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """A state as a ``live_tickers`` row (the ticker part only from a ticker, the quote part only
    from a quote) and a ``live_ticker_history`` row; prices exact, times ``timestamptz``."""
    names = (
        state["exchange"],
        state["native_symbol"],
        state.get("symbol"),
        state.get("base"),
        state.get("quote"),
    )
    at, recv = _ts(event_ns(state)), int(state.get("recv_ts_ns") or 0)
    ticker, quote = state.get("channel") == "ticker", is_quote(state)
    last = tuple(_decimal(state.get(c)) if ticker else None for c in _LAST)
    book = tuple(_decimal(state.get(c)) if quote else None for c in _QUOTE)
    latest = (*names, *last, at if ticker else None, *book, at if quote else None, recv)
    history = (*names, state.get("channel"), *(_decimal(state.get(c)) for c in PRICE_FIELDS), at, recv)
    return latest, history


class PostgresStore:
    """Latest tickers and their history in PostgreSQL (see the module docstring)."""

    name = "postgres"
    channels = frozenset({"ticker", "l1"})

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self._conn: Any = None

    def connect(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            s = self.settings
            self._conn = psycopg.connect(
                host=s.postgres_host,
                port=s.postgres_port,
                dbname=s.postgres_database,
                user=s.postgres_user,
                password=reveal(s.postgres_password),
                connect_timeout=5,
                application_name="cryptolake-serve",
            )
            with self._conn.transaction():
                self._conn.execute(_DDL)
        return self._conn

    def write(self, states: Sequence[State]) -> None:
        rows = [postgres_rows(s) for s in states if s.get("channel") in self.channels]
        if not rows:
            return
        conn = self.connect()
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(_APPEND, [history for _, history in rows])
            cur.executemany(_UPSERT, [latest for latest, _ in rows])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# --- Redis -------------------------------------------------------------------------------------

#: KEYS: hash, sorted set. ARGV: score (ms), member, recv_ts_ns, retention (ms), max entries,
#: then the hash's field/value pairs. The hash changes only for a strictly newer quote.
_LUA = """
local score, recv = tonumber(ARGV[1]), ARGV[3]
redis.call('ZADD', KEYS[2], score, ARGV[2])
local newest = tonumber(redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (newest - tonumber(ARGV[4])))
local keep = tonumber(ARGV[5])
if keep > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -keep - 1) end
local old = redis.call('HMGET', KEYS[1], 'time_ms', 'recv_ts_ns')
local old_score = tonumber(old[1])
local newer = old_score == nil or score > old_score
if not newer and score == old_score and old[2] then
  newer = #recv > #old[2] or (#recv == #old[2] and recv > old[2])
end
if newer then redis.call('HSET', KEYS[1], unpack(ARGV, 6)) end
return newer and 1 or 0
"""


def hash_key(exchange: str, native_symbol: str) -> str:
    return f"orderbook:{exchange}:{native_symbol}"


def quotes_key(exchange: str, native_symbol: str) -> str:
    return f"{hash_key(exchange, native_symbol)}:quotes"


def quote_of(state: State) -> dict[str, Any]:
    """The quote a sorted-set member holds: its time (ms) and best bid/ask as exact text."""
    return {"time_ms": event_ns(state) // 1_000_000, **{f: state.get(f) for f in QUOTE_FIELDS}}


def last_per_second(quotes: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last quote of each second (what ``gold.l1_1s`` keeps), from time-ordered quotes."""
    by_second: dict[int, dict[str, Any]] = {}
    for quote in quotes:
        by_second[int(quote["time_ms"]) // 1000] = quote
    return list(by_second.values())


class RedisStore:
    """L1 snapshots and their recent history in Redis (see the module docstring)."""

    name = "redis"

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self._client: Any = None
        self._script: Any = None

    def connect(self) -> Any:
        import redis

        if self._client is None:
            s = self.settings
            self._client = redis.Redis(
                host=s.redis_host,
                port=s.redis_port,
                db=s.redis_db,
                password=reveal(s.redis_password),
                socket_timeout=10,
                socket_connect_timeout=5,
                decode_responses=True,
            )
            self._script = self._client.register_script(_LUA)
        return self._client

    def write(self, states: Sequence[State]) -> None:
        quotes = [s for s in states if is_quote(s)]
        if not quotes:
            return
        client = self.connect()
        retention_ms = int(self.settings.redis_retention_s * 1000)
        pipe = client.pipeline(transaction=False)
        for state in quotes:
            quote = quote_of(state)
            snapshot = {
                **quote,
                "recv_ts_ns": int(state.get("recv_ts_ns") or 0),
                "symbol": state.get("symbol"),
                "mid_usdt": state.get("mid_usdt"),
            }
            pairs = [str(x) for kv in snapshot.items() if kv[1] is not None for x in kv]
            args = [
                quote["time_ms"],
                orjson.dumps(quote, option=orjson.OPT_SORT_KEYS).decode(),
                snapshot["recv_ts_ns"],
                retention_ms,
                self.settings.redis_max_quotes,
                *pairs,
            ]
            keys = [
                hash_key(state["exchange"], state["native_symbol"]),
                quotes_key(state["exchange"], state["native_symbol"]),
            ]
            self._script(keys=keys, args=args, client=pipe)
        pipe.execute()

    def latest(self, exchange: str, native_symbol: str) -> dict[str, str]:
        """The market's newest quote (the hash), ``{}`` when there is none."""
        return dict(self.connect().hgetall(hash_key(exchange, native_symbol)))

    def quotes(
        self, exchange: str, native_symbol: str, *, start_ms: int, end_ms: int
    ) -> list[dict[str, Any]]:
        """Quotes with ``start_ms <= time_ms < end_ms``, oldest first."""
        members = self.connect().zrangebyscore(quotes_key(exchange, native_symbol), start_ms, f"({end_ms}")
        return [orjson.loads(m) for m in members]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def open_stores(settings: StoreSettings) -> list[Store]:
    """The stores the settings enable (none by default)."""
    stores: list[Store] = []
    if settings.postgres:
        stores.append(PostgresStore(settings))
    if settings.redis:
        stores.append(RedisStore(settings))
    return stores


# --- the writer --------------------------------------------------------------------------------


class StoreWriter:
    """One store fed from a bounded queue by its own thread (see the module docstring).

    :meth:`offer` never blocks; ``written``, ``dropped``, ``errors`` and ``last_error`` count what
    happened (``/api/health`` shows them). :meth:`flush` waits until every queued batch is written.
    """

    def __init__(self, store: Store, *, max_queued: int = 1000, backoff: Backoff | None = None) -> None:
        self.store = store
        self._queue: queue.Queue[list[State]] = queue.Queue(maxsize=max_queued)
        self._backoff = backoff or Backoff(initial=0.5, cap=30.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"store-{store.name}", daemon=True)
        self.written = 0
        self.dropped = 0
        self.errors = 0
        self.last_error: str | None = None

    def start(self) -> StoreWriter:
        self._thread.start()
        return self

    def offer(self, states: Sequence[State]) -> None:
        try:
            self._queue.put_nowait(list(states))
        except queue.Full:
            if not self.dropped:
                logger.warning("%s store is behind: dropping updates (counted in dropped)", self.store.name)
            self.dropped += len(states)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batch = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            taken = 1
            while len(batch) < 5000:  # what queued meanwhile goes in the same transaction
                try:
                    batch += self._queue.get_nowait()
                except queue.Empty:
                    break
                taken += 1
            try:
                self._write(batch)
            finally:
                for _ in range(taken):
                    self._queue.task_done()

    def _write(self, batch: list[State]) -> None:
        while True:
            try:
                self.store.write(batch)
            except Exception as exc:  # the store is down or refused: retry on a new connection
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                delay = next(self._backoff)
                logger.warning("%s store write failed (%s); retrying in %.1fs", self.store.name, exc, delay)
                self.store.close()
                if self._stop.wait(delay):
                    self.dropped += len(batch)
                    return
                continue
            self._backoff.reset()
            self.written += len(batch)
            return

    def flush(self, *, timeout: float = 10.0) -> bool:
        """Wait until the queue is empty and written; ``False`` if ``timeout`` seconds pass first."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, *, timeout: float = 10.0) -> None:
        """Write what is queued (up to ``timeout`` seconds), then stop and close the store."""
        self.flush(timeout=timeout)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.store.close()

    def status(self) -> dict[str, Any]:
        return {
            "written": self.written,
            "dropped": self.dropped,
            "queued": self._queue.qsize(),
            "errors": self.errors,
            "last_error": self.last_error,
        }
