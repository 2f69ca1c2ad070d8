"""The candle wire format of each venue (documented shapes, exchanges.md) and the poller's timing."""

from __future__ import annotations

from extractors.exchanges import binance, coinbase, kucoin
from extractors.exchanges.base import Candle
from extractors.klines import due_range

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def test_each_venue_asks_for_the_inclusive_minute_range_in_its_own_units() -> None:
    end = T0 + 3 * 60_000 - 1  # the last millisecond of the third minute
    b = binance.klines_request("BTCUSDT", start_ms=T0, end_ms=end)
    assert (b.path, b.weight) == ("/api/v3/klines", 2)
    assert b.params == (
        ("symbol", "BTCUSDT"),
        ("interval", "1m"),
        ("startTime", str(T0)),
        ("endTime", str(end)),
        ("limit", "3"),
    )
    k = kucoin.klines_request("BTC-USDT", start_ms=T0, end_ms=end)
    assert (k.path, k.weight) == ("/api/v1/market/candles", 3)
    assert k.params == (
        ("symbol", "BTC-USDT"),
        ("type", "1min"),
        ("startAt", "1767225600"),
        ("endAt", "1767225779"),
    )
    c = coinbase.klines_request("BTC-USD", start_ms=T0, end_ms=end)
    assert c.path == "/products/BTC-USD/candles"
    assert c.params == (
        ("granularity", "60"),
        ("start", "2026-01-01T00:00:00Z"),
        ("end", "2026-01-01T00:02:59Z"),
    )


def test_documented_candle_rows_parse_to_start_volume_and_count() -> None:
    body = (
        '[[1767225600000,"94210.01","94230.00","94190.10","94220.55","12.40510",1767225659999,'
        '"1168771.2",1841,"6.10200","574910.1","0"]]'
    )
    assert binance.parse_klines(body) == [Candle(T0, "12.40510", 1841)]
    body = (
        '{"code":"200000","data":[["1767225660","1","2","3","0.5","0.018","0.000945"],'
        '["1767225600","94210.0","94220.5","94230.0","94190.1","12.405","1168771.2"]]}'
    )
    assert kucoin.parse_klines(body) == [Candle(T0, "12.405"), Candle(T0 + 60_000, "0.018")]
    # Coinbase sends JSON numbers: the volume keeps its exact text (no float rounding).
    body = (
        "[[1767225660,1.5,2.5,2,2,0.10000000000000001],[1767225600,94190.1,94230.0,94210.0,94220.55,12.4051]]"
    )
    assert coinbase.parse_klines(body) == [Candle(T0, "12.4051"), Candle(T0 + 60_000, "0.10000000000000001")]


def test_a_minute_is_due_once_it_closed_delay_ago_and_rows_are_capped() -> None:
    # At 00:02:30 with a 20 s delay, 00:00 and 00:01 are due (00:01 closed at 00:02:00).
    assert due_range(T0, now_ms=T0 + 150_000, delay_ms=20_000, max_rows=1000) == (T0, T0 + 60_000)
    # With a 40 s delay 00:01 is not due yet (it closed only 30 s ago).
    assert due_range(T0, now_ms=T0 + 150_000, delay_ms=40_000, max_rows=1000) == (T0, T0)
    assert due_range(T0 + 60_000, now_ms=T0 + 150_000, delay_ms=40_000, max_rows=1000) is None
    # A poller far behind catches up max_rows minutes per request.
    assert due_range(T0, now_ms=T0 + 36_000_000, delay_ms=0, max_rows=300) == (T0, T0 + 299 * 60_000)
