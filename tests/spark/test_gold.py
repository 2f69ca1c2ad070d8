"""Gold upserts against a reference computed here in plain Python decimals.

``silver.trades`` is built by hand (known prices, sizes, ids, USDT prices) and written the way the
silver jobs write it (blind appends, an update-only MERGE for a re-pricing); gold must equal the
reference exactly after every step: a first batch, a late trade after its minute closed, a
duplicate delivery, a replayed batch, a re-pricing and the standalone streaming job.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Context, Decimal

import pytest
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from lake.delta_io import append, merge
from lake.tables import (
    GOLD_EXCHANGE_VOLUME_DAILY,
    GOLD_L1_1S,
    GOLD_L1_LATEST,
    GOLD_OHLCV_1M,
    GOLD_OHLCV_1M_COMPOSITE,
    SILVER_L1_QUOTES,
    SILVER_TRADES,
    Lake,
)
from spark_jobs import gold

pytestmark = pytest.mark.spark

D = Decimal
_CTX = Context(prec=100)
T0 = datetime(2026, 1, 1, 0, 0, 0)


def q(value: Decimal, places: int = 18) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP, context=_CTX)


def div(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    return None if a is None or b is None or b == 0 else q(_CTX.divide(a, b))


@dataclass(frozen=True)
class Trade:
    exchange: str
    symbol: str
    trade_id: str
    price: Decimal
    size: Decimal
    event_ts: datetime
    rate: Decimal | None = Decimal(1)

    @property
    def base(self) -> str:
        return self.symbol.split("-")[0]

    @property
    def quote(self) -> str:
        return self.symbol.split("-")[1]

    @property
    def price_usdt(self) -> Decimal | None:
        return None if self.rate is None else q(self.price * self.rate)

    @property
    def notional_usdt(self) -> Decimal | None:
        p = self.price_usdt
        return None if p is None else q(p * self.size, 15)

    def row(self) -> dict[str, object]:
        return {
            "exchange": self.exchange,
            "symbol": self.symbol,
            "native_symbol": self.symbol.replace("-", ""),
            "base": self.base,
            "quote": self.quote,
            "trade_id": self.trade_id,
            "price": self.price,
            "size": self.size,
            "side": "buy",
            "event_ts": self.event_ts,
            "recv_ts": self.event_ts + timedelta(milliseconds=5),
            "source": "ws",
            "usdt_rate": self.rate,
            "price_usdt": self.price_usdt,
            "notional_usdt": self.notional_usdt,
            "usdt_method": None if self.rate is None else "direct",
            "trade_date": self.event_ts.date(),
        }


# --- the reference, from the rules in docs/gold.md ---------------------------------------------


def _minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def reference_bars(trades: Iterable[Trade]) -> dict[tuple[str, str, datetime], tuple]:
    groups: dict[tuple[str, str, datetime], list[Trade]] = defaultdict(list)
    for t in trades:
        groups[(t.exchange, t.symbol, _minute(t.event_ts))].append(t)
    bars = {}
    for key, ts in groups.items():
        ts = sorted(ts, key=lambda t: (t.event_ts, len(t.trade_id), t.trade_id))
        volume = sum((t.size for t in ts), D(0))
        quote_volume = sum((q(t.price * t.size, 15) for t in ts), D(0))
        priced = all(t.price_usdt is not None for t in ts)
        volume_usdt = sum((t.notional_usdt or D(0) for t in ts), D(0)) if priced else None
        usdt = [t.price_usdt for t in ts]
        bars[key] = (
            ts[0].base,
            ts[0].quote,
            ts[0].price,
            max(t.price for t in ts),
            min(t.price for t in ts),
            ts[-1].price,
            volume,
            quote_volume,
            div(quote_volume, volume),
            len(ts),
            ts[0].event_ts,
            max(t.event_ts for t in ts),
            *(
                (usdt[0], max(usdt), min(usdt), usdt[-1], div(volume_usdt, volume), volume_usdt)  # type: ignore[type-var]
                if priced
                else (None,) * 6
            ),
        )
    return bars


def reference_composite(bars: dict[tuple[str, str, datetime], tuple]) -> dict[tuple[str, datetime], tuple]:
    groups: dict[tuple[str, datetime], list[tuple]] = defaultdict(list)
    for (exchange, symbol, minute), b in bars.items():
        if b[17] is not None:
            groups[(b[0], minute)].append((exchange, symbol, *b))
    out = {}
    for key, bs in groups.items():
        # b: exchange, symbol, base, quote, open..close, volume, qv, vwap, n, first, last, usdt x6
        first = min(bs, key=lambda b: (b[12], b[0], b[1]))
        last = max(bs, key=lambda b: (b[13], b[0], b[1]))
        volume = sum((b[8] for b in bs), D(0))
        volume_usdt = sum((b[19] for b in bs), D(0))
        out[key] = (
            first[14],
            max(b[15] for b in bs),
            min(b[16] for b in bs),
            last[17],
            div(volume_usdt, volume),
            volume,
            volume_usdt,
            sum(b[11] for b in bs),
            first[12],
            last[13],
            ",".join(sorted({b[0] for b in bs})),
            ",".join(sorted({b[1] for b in bs})),
        )
    return out


def reference_daily(bars: dict[tuple[str, str, datetime], tuple]) -> dict[tuple[str, date, str], tuple]:
    acc: dict[tuple[str, date, str], list] = {}
    for (exchange, symbol, minute), b in bars.items():
        row = acc.setdefault((exchange, minute.date(), symbol), [b[0], b[1], D(0), D(0), None, 0, 0])
        row[2] += b[6]
        row[3] += b[7]
        if b[17] is None:
            row[6] += b[9]
        else:
            row[4] = b[17] if row[4] is None else row[4] + b[17]
        row[5] += b[9]
    totals: dict[tuple[date, str], Decimal] = defaultdict(D)
    for (_, day, symbol), r in acc.items():
        if r[4] is not None:
            totals[(day, symbol)] += r[4]
    return {
        k: (*r, div(r[4], totals.get((k[1], k[2]))) if r[4] is not None else None) for k, r in acc.items()
    }


# --- reading gold back ------------------------------------------------------------------------


def _read(spark: SparkSession, lake: Lake, name: str) -> list:
    return spark.read.format("delta").load(lake.path(name)).collect()


def stored_bars(spark: SparkSession, lake: Lake) -> dict[tuple[str, str, datetime], tuple]:
    cols = [
        c
        for c in GOLD_OHLCV_1M.columns
        if c not in ("exchange", "symbol", "minute", "bar_date", "updated_ts")
    ]
    rows = _read(spark, lake, GOLD_OHLCV_1M.name)
    assert all(r.bar_date == r.minute.date() for r in rows)
    return {(r.exchange, r.symbol, r.minute): tuple(r[c] for c in cols) for r in rows}


def stored_composite(spark: SparkSession, lake: Lake) -> dict[tuple[str, datetime], tuple]:
    cols = [
        c for c in GOLD_OHLCV_1M_COMPOSITE.columns if c not in ("base", "minute", "bar_date", "updated_ts")
    ]
    return {
        (r.base, r.minute): tuple(r[c] for c in cols)
        for r in _read(spark, lake, GOLD_OHLCV_1M_COMPOSITE.name)
    }


def stored_daily(spark: SparkSession, lake: Lake) -> dict[tuple[str, date, str], tuple]:
    cols = [
        c
        for c in GOLD_EXCHANGE_VOLUME_DAILY.columns
        if c not in ("exchange", "trade_date", "symbol", "updated_ts")
    ]
    return {
        (r.exchange, r.trade_date, r.symbol): tuple(r[c] for c in cols)
        for r in _read(spark, lake, GOLD_EXCHANGE_VOLUME_DAILY.name)
    }


def assert_gold_equals_reference(spark: SparkSession, lake: Lake, silver: Sequence[Trade]) -> None:
    bars = reference_bars(silver)
    assert stored_bars(spark, lake) == bars
    assert stored_composite(spark, lake) == reference_composite(bars)
    assert stored_daily(spark, lake) == reference_daily(bars)


def write_silver(spark: SparkSession, lake: Lake, trades: Sequence[Trade]) -> DataFrame:
    """Append the trades to silver.trades as the silver jobs do; returns the batch's DataFrame."""
    df = spark.createDataFrame([t.row() for t in trades], SILVER_TRADES.schema)
    append(df, lake=lake, name=SILVER_TRADES.name)
    return df


def _ms(minute: int, second: float) -> datetime:
    return T0 + timedelta(minutes=minute, seconds=second)


def _last_operation_metrics(spark: SparkSession, lake: Lake, name: str) -> dict[str, str]:
    row = DeltaTable.forPath(spark, lake.path(name)).history(1).collect()[0]
    return dict(row["operationMetrics"] or {})


def _versions(spark: SparkSession, lake: Lake) -> list[int]:
    return [
        DeltaTable.forPath(spark, lake.path(n)).history(1).collect()[0]["version"]
        for n in (GOLD_OHLCV_1M.name, GOLD_OHLCV_1M_COMPOSITE.name, GOLD_EXCHANGE_VOLUME_DAILY.name)
    ]


def _updated_ts(spark: SparkSession, lake: Lake) -> set[datetime]:
    return {r.updated_ts for r in _read(spark, lake, GOLD_OHLCV_1M.name)}


# --- the tests --------------------------------------------------------------------------------


def test_gold_bars_equal_the_reference_under_late_duplicate_replayed_and_repriced_trades(
    spark: SparkSession, lake: Lake
) -> None:
    btc = "BTC-USDT"
    first = [
        # Two trades share an event time: trade id order decides, numerically ("9" before "10").
        Trade("binance", btc, "10", D("100.5"), D("0.25"), _ms(0, 1)),
        Trade("binance", btc, "9", D("100.1"), D("0.5"), _ms(0, 1)),
        Trade("binance", btc, "11", D("101.123456789"), D("0.000001"), _ms(0, 30)),
        Trade("binance", btc, "12", D("99.9"), D("3"), _ms(0, 59.999)),
        Trade("binance", btc, "13", D("100"), D("1"), _ms(1, 5)),
        Trade("kucoin", btc, "a-1", D("100.2"), D("0.3333"), _ms(0, 0.5)),
        Trade("kucoin", btc, "a-2", D("100.3"), D("0.1"), _ms(0, 59.999)),
        # Coinbase BTC-USD: priced through a USD rate; its second minute has no rate yet.
        Trade("coinbase", "BTC-USD", "501", D("100.01"), D("2"), _ms(0, 10), rate=D("0.999")),
        Trade("coinbase", "BTC-USD", "502", D("100.02"), D("1"), _ms(1, 10), rate=None),
        Trade("binance", "ETH-BTC", "7", D("0.0312345"), D("12.5"), _ms(1, 20), rate=D("100")),
    ]
    writer = gold.GoldWriter(lake)  # what a long-running caller keeps across batches
    batch = write_silver(spark, lake, first)
    result = gold.update_gold(spark, lake, trades=batch, writer=writer)
    assert (result.bars, result.composites) == (6, 3)
    assert_gold_equals_reference(spark, lake, first)

    # A late trade of minute 0 arrives after minute 1 closed: it becomes minute 0's close.
    late = [Trade("binance", btc, "14", D("98.7"), D("0.7"), _ms(0, 59.9995))]
    gold.update_gold(spark, lake, trades=write_silver(spark, lake, late), writer=writer)
    silver = first + late
    assert_gold_equals_reference(spark, lake, silver)
    assert stored_bars(spark, lake)[("binance", btc, T0)][5] == D("98.7")

    # A duplicate (REST gap-fill twin): silver keeps the first copy; gold is told about the minute
    # again and nothing is written (no new table version), by a warm or a fresh writer.
    before = _updated_ts(spark, lake), _versions(spark, lake)
    dup = spark.createDataFrame([replace(late[0], size=D("0.7")).row()], SILVER_TRADES.schema)
    assert gold.update_gold(spark, lake, trades=dup, writer=writer).bars == 0
    assert gold.update_gold(spark, lake, trades=dup).bars == 0
    assert_gold_equals_reference(spark, lake, silver)
    assert (_updated_ts(spark, lake), _versions(spark, lake)) == before

    # A replayed batch (same rows, whole minutes as the live pipeline passes them): no change.
    whole = [gold._epoch(T0), gold._epoch(T0) + 60]
    assert gold.update_gold(spark, lake, trades=batch, minutes=whole, writer=writer).bars == 0
    assert_gold_equals_reference(spark, lake, silver)
    assert (_updated_ts(spark, lake), _versions(spark, lake)) == before

    # The USD rate of minute 1 arrives late; silver re-prices with an update-only MERGE and the
    # pipeline passes the finished minute: the USDT columns follow.
    DeltaTable.forPath(spark, lake.path(SILVER_TRADES.name)).update(
        "trade_id = '502'",
        {
            "usdt_rate": "CAST(0.998 AS DECIMAL(38,18))",
            "price_usdt": "CAST(99.81996 AS DECIMAL(38,18))",
            "notional_usdt": "CAST(99.81996 AS DECIMAL(38,18))",
            "usdt_method": "'direct'",
        },
    )
    silver = [replace(t, rate=D("0.998")) if t.trade_id == "502" else t for t in silver]
    gold.update_gold(spark, lake, repriced=[gold._epoch(T0) + 60], carry_minutes=0, writer=writer)
    assert_gold_equals_reference(spark, lake, silver)
    assert stored_composite(spark, lake)[("BTC", T0 + timedelta(minutes=1))][10] == "binance,coinbase"


def test_gold_job_follows_silver_appends_and_repricing_commits(spark: SparkSession, lake: Lake) -> None:
    """``python -m spark_jobs.gold``'s streams: appends through the Delta stream, a re-pricing MERGE
    (which the stream skips) through the Delta log, in both the bars and the L1 tables."""
    trades = [
        Trade("binance", "SOL-USDT", "1", D("20.5"), D("3"), _ms(5, 1)),
        Trade("kucoin", "SOL-USDT", "2", D("20.7"), D("1.5"), _ms(5, 2), rate=None),
    ]
    write_silver(spark, lake, trades)
    quotes = [
        _quote("binance", "SOL-USDT", _ms(5, 1.2), seq=10, bid="20.4", ask="20.6"),
        _quote("binance", "SOL-USDT", _ms(5, 1.7), seq=11, bid="20.5", ask="20.6", rate=None),
    ]
    append(spark.createDataFrame(quotes, SILVER_L1_QUOTES.schema), lake=lake, name=SILVER_L1_QUOTES.name)
    settings = gold.GoldSettings(trigger="availableNow", catch_up_minutes=0)
    job = gold.GoldJob(spark, lake, settings)
    job.trade_log.ranges(spark)  # the logs start from the current versions
    job.quote_log.ranges(spark)
    for query in job.start():
        query.awaitTermination()
        assert query.exception() is None
    assert_gold_equals_reference(spark, lake, trades)

    # Silver re-prices (update-only MERGEs, skipped by the streams): the job learns it from the log.
    repriced = [replace(trades[1], rate=D("1"))]
    merge(
        spark.createDataFrame([t.row() for t in repriced], SILVER_TRADES.schema),
        lake=lake,
        name=SILVER_TRADES.name,
        mode="update_only",
        update_columns=("usdt_rate", "price_usdt", "notional_usdt", "usdt_method"),
    )
    fixed_quote = {**quotes[1], "usdt_rate": D(1), "mid_usdt": D("20.55"), "usdt_method": "direct"}
    merge(
        spark.createDataFrame([fixed_quote], SILVER_L1_QUOTES.schema),
        lake=lake,
        name=SILVER_L1_QUOTES.name,
        mode="update_only",
        update_columns=("usdt_rate", "mid_usdt", "usdt_method"),
    )
    job.finish()
    assert_gold_equals_reference(spark, lake, [trades[0], *repriced])
    latest = _read(spark, lake, GOLD_L1_LATEST.name)
    assert [(r.event_ts, r.sequence, r.mid_usdt) for r in latest] == [(_ms(5, 1.7), 11, D("20.55"))]


def _quote(
    exchange: str, symbol: str, at: datetime, *, seq: int | None, bid: str, ask: str, rate: str | None = "1"
) -> dict[str, object]:
    mid = (D(bid) + D(ask)) / 2
    return {
        "exchange": exchange,
        "symbol": symbol,
        "base": symbol.split("-")[0],
        "quote": symbol.split("-")[1],
        "bid_price": D(bid),
        "bid_size": D("1.5"),
        "ask_price": D(ask),
        "ask_size": D("2"),
        "sequence": seq,
        "event_ts": at,
        "recv_ts": at + timedelta(milliseconds=3),
        "source_channel": "l1",
        "usdt_rate": None if rate is None else D(rate),
        "mid_usdt": None if rate is None else q(mid * D(rate)),
        "spread_bps": q((D(ask) - D(bid)) * 10000 / mid),
        "usdt_method": None if rate is None else "direct",
    }


def test_l1_latest_and_1s_hold_the_newest_quote_per_key_whatever_the_batch_order(
    spark: SparkSession, lake: Lake
) -> None:
    quotes = [
        _quote("binance", "BTC-USDT", _ms(0, 0.1), seq=1, bid="100", ask="101"),
        _quote("binance", "BTC-USDT", _ms(0, 0.9), seq=3, bid="100.5", ask="101"),
        # Same event time, higher sequence: newer.
        _quote("binance", "BTC-USDT", _ms(0, 0.9), seq=4, bid="100.6", ask="101"),
        _quote("binance", "BTC-USDT", _ms(0, 1.2), seq=5, bid="100.7", ask="101"),
        _quote("coinbase", "BTC-USD", _ms(0, 0.5), seq=None, bid="99", ask="99.5"),
        _quote("coinbase", "BTC-USD", _ms(0, 2.5), seq=None, bid="99.1", ask="99.5"),
    ]
    schema = SILVER_L1_QUOTES.schema
    # Newest first, then older (late) quotes; then a replay of the first batch.
    gold.update_l1(spark, lake, quotes=spark.createDataFrame([quotes[3], quotes[5], quotes[1]], schema))
    gold.update_l1(spark, lake, quotes=spark.createDataFrame([quotes[0], quotes[2], quotes[4]], schema))
    gold.update_l1(spark, lake, quotes=spark.createDataFrame([quotes[3], quotes[5], quotes[1]], schema))

    def key(r: dict[str, object]) -> tuple:
        return (r["exchange"], r["symbol"], r["event_ts"], r["sequence"])

    def newest(rows: Iterable[dict[str, object]], grain: str) -> dict[tuple, dict[str, object]]:
        best: dict[tuple, dict[str, object]] = {}
        for r in rows:
            at: datetime = r["event_ts"]  # type: ignore[assignment]
            k = (r["exchange"], r["symbol"]) + ((at.replace(microsecond=0),) if grain == "1s" else ())
            order = (at, -1 if r["sequence"] is None else r["sequence"])
            old = best.get(k)
            if old is None or order > (old["event_ts"], -1 if old["sequence"] is None else old["sequence"]):
                best[k] = r
        return best

    latest = {(r.exchange, r.symbol): r.asDict() for r in _read(spark, lake, GOLD_L1_LATEST.name)}
    assert {k: key(v) for k, v in latest.items()} == {k: key(v) for k, v in newest(quotes, "latest").items()}
    assert all(latest[k] == v for k, v in newest(quotes, "latest").items())
    per_second = {(r.exchange, r.symbol, r.second): r.asDict() for r in _read(spark, lake, GOLD_L1_1S.name)}
    expected = newest(quotes, "1s")
    assert {k: key(v) for k, v in per_second.items()} == {k: key(v) for k, v in expected.items()}
    assert all(
        {c: v for c, v in per_second[k].items() if c not in ("second", "quote_date")} == v
        for k, v in expected.items()
    )
    assert _last_operation_metrics(spark, lake, GOLD_L1_1S.name).get("numTargetRowsUpdated") == "0"
