"""The live-update stores against real PostgreSQL and Redis servers (started by infra.services).

A known sequence of ticker, L1 and trade states, with a duplicate and out-of-order older updates,
goes through the stores' writers; what the databases hold is compared with an independent
plain-Python computation of the newest update per market and of every distinct update. The last
test feeds the stores from a running server tailing real landed frames.
"""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from lake.config import reveal
from lake.serve.app import create_app
from lake.serve.feeds import LandingTail
from lake.serve.settings import ServeSettings, StoreSettings
from lake.serve.stores import (
    TICKER_QUOTE_EXCHANGES,
    PostgresStore,
    RedisStore,
    StoreWriter,
    is_quote,
    last_per_second,
)
from lake.tables import Lake, LakeSettings
from tests.conftest import seconds
from tests.serve.helpers import running_server
from tests.serve.test_stream import landing_writer, start_feed

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms


def state(
    exchange: str,
    native: str,
    channel: str,
    t_ms: int,
    *,
    bid: str | None = None,
    ask: str | None = None,
    last: str | None = None,
    has_event_time: bool = True,
) -> dict[str, Any]:
    """A market state as the feed publishes it; received 5 ms after ``t_ms``."""
    return {
        "exchange": exchange,
        "native_symbol": native,
        "symbol": native.replace("USDT", "-USDT") if "-" not in native else native,
        "base": "BTC",
        "quote": "USDT",
        "channel": channel,
        "last": last,
        "bid": bid,
        "bid_size": "1.5" if bid else None,
        "ask": ask,
        "ask_size": "0.5" if ask else None,
        "last_usdt": last,
        "mid_usdt": None,
        "event_ts_ms": t_ms if has_event_time else None,
        "recv_ts_ns": (t_ms + 5) * 1_000_000,
    }


KU, BN, CB = "kucoin", "binance", "coinbase"
UPDATES = [
    state(KU, "BTC-USDT", "ticker", T0, last="100", bid="99.9", ask="100.1"),
    state(KU, "BTC-USDT", "l1", T0 + 400, bid="99.95", ask="100.05"),
    state(KU, "BTC-USDT", "l1", T0 + 400, bid="99.95", ask="100.05"),  # duplicate
    state(KU, "BTC-USDT", "l1", T0 + 200, bid="90", ask="110"),  # older, arrives late
    state(BN, "BTCUSDT", "l1", T0 + 100, bid="100", ask="100.01", has_event_time=False),
    state(KU, "BTC-USDT", "l1", T0 + 1300, bid="100.2", ask="100.3"),
    state(BN, "BTCUSDT", "l1", T0 + 900, bid="100.4", ask="100.41", has_event_time=False),
    # A mini ticker has no book (its bid/ask are the feed's merged state) and an event time before
    # the last quote's receive time: it updates last, not the quote.
    state(BN, "BTCUSDT", "ticker", T0 + 600, last="100.45", bid="100.4", ask="100.41"),
    state(BN, "BTCUSDT", "trades", T0 + 950, last="100.5", bid="100.4", ask="100.41"),  # no store's
    state(CB, "BTC-USD", "ticker", T0 + 500, last="99.8", bid="99.7", ask="99.9"),
    state(CB, "BTC-USD", "ticker", T0 + 100, last="98", bid="97", ask="99"),  # older, arrives late
    state(KU, "BTC-USDT", "l1", T0 + 2500, bid="100.6", ask="100.7"),
    state(KU, "BTC-USDT", "l1", T0 + 900, bid="95", ask="105"),  # older, arrives late
]


def order(s: dict[str, Any]) -> tuple[int, int]:
    """An update's time (event time, else receive time) in ns, then its receive time."""
    t = s["event_ts_ms"] * 1_000_000 if s["event_ts_ms"] is not None else s["recv_ts_ns"]
    return t, s["recv_ts_ns"]


#: (channel, exchange) of the tickers that are also quotes (as silver.l1_quotes takes them).
TICKER_QUOTES = {("ticker", KU), ("ticker", CB)}


def ts(s: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(order(s)[0] / 1e9, tz=UTC)


def row(s: dict[str, Any]) -> tuple[Any, ...]:
    def dec(v: str | None) -> Decimal | None:
        return Decimal(v) if v is not None else None

    ts = datetime.fromtimestamp(order(s)[0] / 1e9, tz=UTC)
    return (s["exchange"], s["native_symbol"], s["channel"], dec(s["last"]), dec(s["bid"]), dec(s["ask"]), ts)


def expected_latest(updates: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    """Per market: the newest ticker's last and the newest quote's bid and ask, with their times."""
    tickers: dict[tuple[str, str], dict[str, Any]] = {}
    quotes: dict[tuple[str, str], dict[str, Any]] = {}
    for s in updates:
        key = (s["exchange"], s["native_symbol"])
        quote = s["bid"] is not None and (
            s["channel"] == "l1" or (s["channel"], s["exchange"]) in TICKER_QUOTES
        )
        for newest, taken in ((tickers, s["channel"] == "ticker"), (quotes, quote)):
            if taken and (key not in newest or order(s) > order(newest[key])):
                newest[key] = s
    rows = set()
    for key in tickers.keys() | quotes.keys():
        t, q = tickers.get(key), quotes.get(key)
        rows.add(
            (
                *key,
                Decimal(t["last"]) if t else None,
                ts(t) if t else None,
                Decimal(q["bid"]) if q else None,
                Decimal(q["ask"]) if q else None,
                ts(q) if q else None,
            )
        )
    return rows


def expected_history(updates: list[dict[str, Any]], channels: set[str]) -> set[tuple[Any, ...]]:
    return {row(s) for s in updates if s["channel"] in channels}


SELECT = {
    "live_tickers": "SELECT exchange, native_symbol, last, last_ts, bid, ask, quote_ts FROM live_tickers",
    "live_ticker_history": "SELECT exchange, native_symbol, channel, last, bid, ask, event_ts"
    " FROM live_ticker_history",
}


def query(settings: StoreSettings, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(
        host=settings.postgres_host,
        port=settings.postgres_port,
        dbname=settings.postgres_database,
        user=settings.postgres_user,
        password=reveal(settings.postgres_password),
    ) as conn:
        return conn.execute(SELECT[table]).fetchall()  # type: ignore[arg-type]


def feed(writer: StoreWriter, updates: list[dict[str, Any]], *, batch: int = 4) -> None:
    writer.start()
    for i in range(0, len(updates), batch):
        writer.offer(updates[i : i + batch])
    assert writer.flush(timeout=seconds(10))


def test_postgres_keeps_the_newest_update_per_market_and_every_distinct_update_once(
    postgres_store_settings: StoreSettings,
) -> None:
    writer = StoreWriter(PostgresStore(postgres_store_settings))
    try:
        feed(writer, UPDATES)
        feed_again = UPDATES[::-1]  # a replay in the worst order changes nothing
        for i in range(0, len(feed_again), 3):
            writer.offer(feed_again[i : i + 3])
        assert writer.flush(timeout=seconds(10))
    finally:
        writer.close()
    channels = {"ticker", "l1"}
    latest = query(postgres_store_settings, "live_tickers")
    assert len(latest) == 3, "one row per exchange and symbol"
    assert set(latest) == expected_latest(UPDATES)
    history = query(postgres_store_settings, "live_ticker_history")
    assert len(history) == len(set(history)) == len(UPDATES) - 2  # the duplicate once, no trade
    assert set(history) == expected_history(UPDATES, channels)
    assert writer.status()["errors"] == 0 and writer.status()["dropped"] == 0


def test_redis_hash_holds_the_newest_quote_and_a_time_range_returns_exactly_its_quotes(
    redis_store_settings: StoreSettings,
) -> None:
    store = RedisStore(redis_store_settings)
    writer = StoreWriter(store)
    try:
        feed(writer, UPDATES, batch=5)
        # The quotes silver.l1_quotes takes: L1 updates, and KuCoin's and Coinbase's tickers.
        l1 = [s for s in UPDATES if s["channel"] == "l1" or (s["channel"], s["exchange"]) in TICKER_QUOTES]
        for exchange, native in ((KU, "BTC-USDT"), (BN, "BTCUSDT"), (CB, "BTC-USD")):
            mine = [s for s in l1 if (s["exchange"], s["native_symbol"]) == (exchange, native)]
            newest = max(mine, key=order)
            snapshot = store.latest(exchange, native)
            assert (snapshot["bid"], snapshot["ask"], snapshot["bid_size"]) == (
                newest["bid"],
                newest["ask"],
                "1.5",
            )
            assert int(snapshot["time_ms"]) == order(newest)[0] // 1_000_000
        assert store.latest(CB, "BTC-USD")["bid"] == "99.7", "the late older ticker does not overwrite"

        start, end = T0 + 200, T0 + 1300  # [start, end): the quote at T0 + 1300 is outside
        got = store.quotes(KU, "BTC-USDT", start_ms=start, end_ms=end)
        ku = sorted({order(s)[0] // 1_000_000: s for s in l1 if s["exchange"] == KU}.items())
        want = [
            {"time_ms": t, "bid": s["bid"], "ask": s["ask"], "bid_size": "1.5", "ask_size": "0.5"}
            for t, s in ku
            if start <= t < end
        ]
        assert got == want
        assert [q["time_ms"] for q in got] == [T0 + 200, T0 + 400, T0 + 900]
        everything = store.quotes(KU, "BTC-USDT", start_ms=0, end_ms=T0 + 10_000)
        assert [q["time_ms"] for q in last_per_second(everything)] == [T0 + 900, T0 + 1300, T0 + 2500]
    finally:
        writer.close()


def test_the_stores_quotes_are_the_ones_silver_l1_quotes_takes() -> None:
    from spark_jobs.parsers import TICKER_L1_EXCHANGES

    assert set(TICKER_L1_EXCHANGES) == TICKER_QUOTE_EXCHANGES
    assert not is_quote(state(BN, "BTCUSDT", "ticker", T0, last="1", bid="1", ask="2"))
    assert not is_quote(state(KU, "BTC-USDT", "trades", T0, last="1"))


def test_redis_trims_quotes_older_than_the_retention_and_beyond_the_count_bound(
    redis_store_settings: StoreSettings,
) -> None:
    from dataclasses import replace

    by_age = RedisStore(replace(redis_store_settings, redis_retention_s=1.0))
    by_count = RedisStore(replace(redis_store_settings, redis_max_quotes=2))
    try:
        times = [T0, T0 + 500, T0 + 1700, T0 + 2600]
        by_age.write([state(KU, "ETH-USDT", "l1", t, bid="10", ask=str(11 + i)) for i, t in enumerate(times)])
        kept = by_age.quotes(KU, "ETH-USDT", start_ms=0, end_ms=T0 + 10_000)
        assert [q["time_ms"] for q in kept] == [T0 + 1700, T0 + 2600], "newest minus 1 s onwards"
        by_count.write([state(KU, "SOL-USDT", "l1", T0 + i, bid="1", ask=str(2 + i)) for i in range(5)])
        kept = by_count.quotes(KU, "SOL-USDT", start_ms=0, end_ms=T0 + 10_000)
        assert [q["time_ms"] for q in kept] == [T0 + 3, T0 + 4]
    finally:
        by_age.close()
        by_count.close()


def both(postgres: StoreSettings, redis: StoreSettings) -> StoreSettings:
    """Settings with both stores on: PostgreSQL's from ``postgres``, Redis's from ``redis``."""
    from dataclasses import replace

    keys = ("redis_host", "redis_port", "redis_db", "redis_password")
    return replace(postgres, redis=True, **{k: getattr(redis, k) for k in keys})


def kucoin_level1(bid: str, ask: str, t_ms: int) -> str:
    data = {"asks": [ask, "2"], "bids": [bid, "3"], "timestamp": t_ms}
    return json.dumps(
        {"type": "message", "topic": "/spotMarket/level1:BTC-USDT", "subject": "level1", "data": data}
    )


def test_the_server_feeds_both_stores_from_its_live_feed(
    tmp_path: Path, postgres_store_settings: StoreSettings, redis_store_settings: StoreSettings
) -> None:

    stores = both(postgres_store_settings, redis_store_settings)
    writers = [StoreWriter(PostgresStore(stores)), StoreWriter(RedisStore(stores))]
    landing = landing_writer(tmp_path / "landing")
    staging = tmp_path / "landing" / "_staging"
    app = create_app(
        ServeSettings(poll_s=0.05, min_interval_s=0.0),
        Lake(LakeSettings(root=str(tmp_path / "lake"))),
        source_factory=lambda: LandingTail(staging),
        source_name="landing",
        stores=writers,
    )
    frames = [("99", "101", T0 + 100), ("98", "102", T0 + 1200), ("97", "103", T0 + 700)]  # last is late
    try:
        with running_server(app) as host:
            start_feed(host, landing)
            for bid, ask, t in frames:
                landing.write(KU, "l1", [("BTC-USDT", kucoin_level1(bid, ask, t))])
            deadline = time.monotonic() + seconds(10)
            while True:
                with urllib.request.urlopen(f"http://{host}/api/health", timeout=10) as r:
                    written = json.loads(r.read())["stores"]
                if all(w["written"] >= len(frames) for w in written.values()):
                    break
                assert time.monotonic() < deadline, f"stores did not get {len(frames)} updates: {written}"
                time.sleep(0.05)
            assert set(written) == {"postgres", "redis"}
    finally:
        landing.close()
    latest = query(stores, "live_tickers")
    ts = datetime.fromtimestamp((T0 + 1200) / 1000, tz=UTC)
    assert latest == [(KU, "BTC-USDT", None, None, Decimal("98"), Decimal("102"), ts)]
    assert len(query(stores, "live_ticker_history")) == 3
    redis_store = RedisStore(stores)
    try:
        got = redis_store.quotes(KU, "BTC-USDT", start_ms=T0, end_ms=T0 + 2000)
        assert [(q["time_ms"], q["bid"]) for q in got] == [
            (T0 + 100, "99"),
            (T0 + 700, "97"),
            (T0 + 1200, "98"),
        ]
        assert redis_store.latest(KU, "BTC-USDT")["bid"] == "98"
    finally:
        redis_store.close()
