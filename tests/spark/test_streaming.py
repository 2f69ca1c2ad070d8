"""Landing files -> bronze -> silver with availableNow queries: exact rows, dedupe, late rates, replays."""

from __future__ import annotations

import shutil
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from lake.tables import Lake, LakeSettings
from spark_jobs import pipeline, silver_trades
from spark_jobs import silver as silver_module
from spark_jobs.runtime import BronzeSettings, SilverSettings
from tests.spark.envelopes import T0_NS, discovery_envelopes, envelope, land, q, ts

pytestmark = pytest.mark.spark

S = 1_000_000_000
MS = 1_000_000
T0_MS = T0_NS // MS
M7 = 7 * 60 * S


def _bn(t: int, price: str, qty: str, at_ns: int, maker: bool, recv_ns: int, conn: str = "c1") -> dict:
    data = {
        "e": "trade",
        "E": at_ns // MS + 1,
        "s": "BTCUSDT",
        "t": t,
        "p": price,
        "q": qty,
        "T": at_ns // MS,
        "m": maker,
        "M": True,
    }
    return envelope(
        "binance",
        "trades",
        {"stream": "btcusdt@trade", "data": data},
        recv_ns=recv_ns,
        stream="btcusdt@trade",
        conn_id=conn,
        conn_seq=t,
    )


def _cb(tid: int, product: str, price: str, size: str, maker_side: str, at: str, recv_ns: int) -> dict:
    body = {
        "type": "match",
        "trade_id": tid,
        "maker_order_id": "m",
        "taker_order_id": "t",
        "side": maker_side,
        "size": size,
        "price": price,
        "product_id": product,
        "sequence": tid * 10,
        "time": at,
    }
    return envelope("coinbase", "trades", body, recv_ns=recv_ns, conn_seq=tid)


def _first_landing(root: Path) -> None:
    r = T0_NS + 20 * S  # receive times: after every event of minute 0
    land(root, discovery_envelopes()[:1], name="disc-binance")
    land(root, discovery_envelopes()[1:2], name="disc-kucoin")
    land(root, discovery_envelopes()[2:], name="disc-coinbase")
    b101 = _bn(101, "94001.00", "0.25", T0_NS + 2 * S, True, r + 2)
    eth = envelope(
        "binance",
        "trades",
        {
            "e": "trade",
            "E": T0_MS + 4001,
            "s": "ETHBTC",
            "t": 200,
            "p": "0.0330",
            "q": "2",
            "T": T0_MS + 4000,
            "m": False,
        },
        recv_ns=r + 4,
        conn_seq=200,
    )
    rest = envelope(
        "binance",
        "trades",
        [
            {
                "id": 101,
                "price": "94001.00",
                "qty": "0.25",
                "quoteQty": "23500.25",
                "time": T0_MS + 2000,
                "isBuyerMaker": True,
                "isBestMatch": True,
            },
            {
                "id": 102,
                "price": "94002.5",
                "qty": "1",
                "quoteQty": "94002.5",
                "time": T0_MS + 3000,
                "isBuyerMaker": False,
                "isBestMatch": True,
            },
        ],
        recv_ns=r + 10,
        source="rest",
        stream="/api/v3/historicalTrades?symbol=BTCUSDT&fromId=101",
        conn_id="gap-1",
        conn_seq=0,
    )
    land(root, [_bn(100, "94000.10", "0.5", T0_NS + S, False, r + 1), b101, eth, rest], name="b-trades-1")
    # The same ws frame re-delivered on a second connection (overlap after a reconnect).
    land(root, [_bn(100, "94000.10", "0.5", T0_NS + S, False, r + 3, conn="c2")], name="b-trades-2")
    k_ws = envelope(
        "kucoin",
        "trades",
        {
            "type": "message",
            "topic": "/market/match:BTC-USDT",
            "subject": "trade.l3match",
            "data": {
                "symbol": "BTC-USDT",
                "sequence": "5000",
                "tradeId": "5000",
                "side": "buy",
                "price": "94003",
                "size": "0.1",
                "type": "match",
                "makerOrderId": "x",
                "takerOrderId": "y",
                "time": str(T0_NS + 5 * S),
            },
        },
        recv_ns=r + 5,
        conn_seq=1,
    )
    k_rest = envelope(
        "kucoin",
        "trades",
        {
            "code": "200000",
            "data": [
                {"sequence": "5000", "price": "94003", "size": "0.1", "side": "buy", "time": T0_NS + 5 * S},
                {"sequence": "5003", "price": "94004", "size": "0.3", "side": "sell", "time": T0_NS + 6 * S},
            ],
        },
        recv_ns=r + 11,
        source="rest",
        stream="/api/v1/market/histories?symbol=BTC-USDT",
        conn_id="gap-k",
    )
    land(root, [k_ws, k_rest], name="k-trades")
    land(
        root,
        [
            _cb(7001, "BTC-USD", "94100.5", "0.01", "sell", "2026-01-01T00:00:07.000000Z", r + 7),
            _cb(7002, "BTC-USD", "94200", "0.02", "buy", "2026-01-01T00:07:01.000000Z", T0_NS + M7 + 2 * S),
            _cb(7003, "DOGE-USD", "0.2", "10", "buy", "2026-01-01T00:00:08.000000Z", r + 8),
        ],
        name="c-trades",
    )
    land(
        root,
        [
            envelope(
                "binance",
                "ticker",
                {
                    "stream": "!miniTicker@arr",
                    "data": [
                        {
                            "e": "24hrMiniTicker",
                            "E": T0_MS + 8000,
                            "s": "BTCUSDT",
                            "c": "94004",
                            "o": "93000",
                            "h": "95000",
                            "l": "92000",
                            "v": "12.5",
                            "q": "1000000.5",
                        }
                    ],
                },
                recv_ns=r + 12,
            )
        ],
        name="b-ticker",
    )
    land(
        root,
        [
            envelope(
                "kucoin",
                "l1",
                {
                    "type": "message",
                    "topic": "/spotMarket/level1:BTC-USDT",
                    "subject": "level1",
                    "data": {"asks": ["94004.1", "1"], "bids": ["94003.9", "2"], "timestamp": T0_MS + 9000},
                },
                recv_ns=r + 13,
            )
        ],
        name="k-l1",
    )


def _trades(spark: SparkSession, lake: Lake) -> list[tuple]:
    df = spark.read.format("delta").load(lake.path("silver.trades"))
    cols = (
        "exchange",
        "symbol",
        "base",
        "quote",
        "trade_id",
        "price",
        "size",
        "side",
        "event_ts",
        "source",
        "usdt_rate",
        "usdt_method",
        "price_usdt",
        "notional_usdt",
    )
    return [tuple(r) for r in df.select(*cols).orderBy("exchange", "symbol", "trade_id").collect()]


def _row(
    ex: str,
    sym: str,
    tid: str,
    price: str,
    size: str,
    side: str,
    at_ns: int,
    source: str,
    rate: D | None,
    method: str | None,
) -> tuple:
    base, quote = sym.split("-")
    pu = q(D(price) * rate) if rate is not None else None
    notional = q(pu * D(size), 15) if pu is not None else None
    return (ex, sym, base, quote, tid, D(price), D(size), side, ts(at_ns), source, rate, method, pu, notional)


def test_landed_envelopes_become_exact_priced_silver_rows_and_replays_change_nothing(
    spark: SparkSession, lake: Lake, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    _first_landing(landing)
    bronze = BronzeSettings(source="landing", landing_root=str(landing))
    silver = SilverSettings(rate_carry_minutes=5)
    pipeline.run(spark, lake=lake, bronze=bronze, silver=silver, timeout_s=600)

    btc0 = D("94004")  # last BTC-USDT trade of minute 0 (KuCoin 5003 at 00:00:06), pooled over exchanges
    usd0 = q(btc0 * q(1 / D("94100.5")))
    one = D(1)
    expected = [
        _row("binance", "BTC-USDT", "100", "94000.10", "0.5", "buy", T0_NS + S, "ws", one, "identity"),
        _row("binance", "BTC-USDT", "101", "94001.00", "0.25", "sell", T0_NS + 2 * S, "ws", one, "identity"),
        _row("binance", "BTC-USDT", "102", "94002.5", "1", "buy", T0_NS + 3 * S, "rest", one, "identity"),
        _row("binance", "ETH-BTC", "200", "0.0330", "2", "buy", T0_NS + 4 * S, "ws", btc0, "direct"),
        _row("coinbase", "BTC-USD", "7001", "94100.5", "0.01", "buy", T0_NS + 7 * S, "ws", usd0, "cross_btc"),
        # Minute 7 has no BTC-USDT trade yet and minute 0 is beyond the 5-minute carry: no rate yet.
        _row("coinbase", "BTC-USD", "7002", "94200", "0.02", "sell", T0_NS + M7 + S, "ws", None, None),
        _row("kucoin", "BTC-USDT", "5000", "94003", "0.1", "buy", T0_NS + 5 * S, "ws", one, "identity"),
        _row("kucoin", "BTC-USDT", "5003", "94004", "0.3", "sell", T0_NS + 6 * S, "rest", one, "identity"),
    ]
    assert _trades(spark, lake) == expected

    quarantine = spark.read.format("delta").load(lake.path("silver.quarantine"))
    assert [(r.source_table, r.exchange, r.reason) for r in quarantine.collect()] == [
        ("silver.trades", "coinbase", "unknown_market")
    ]
    tickers = spark.read.format("delta").load(lake.path("silver.tickers")).collect()
    assert [
        (t.symbol, t.last, t.usdt_rate, t.price_usdt, t.notional_usdt, t.usdt_method) for t in tickers
    ] == [("BTC-USDT", D("94004"), one, D("94004"), q(D("1000000.5"), 14), "identity")]
    l1 = spark.read.format("delta").load(lake.path("silver.l1_quotes")).collect()
    mid = D("94004.0")
    assert [(x.symbol, x.bid_price, x.ask_price, x.mid_usdt, x.spread_bps, x.usdt_method) for x in l1] == [
        ("BTC-USDT", D("94003.9"), D("94004.1"), mid, q(D("0.2") * 10000 / mid, 6), "identity")
    ]

    # New input after the queries stopped: a BTC-USDT trade in minute 7 gives USD its rate there,
    # and the Coinbase row left without a rate is re-priced.
    land(
        landing,
        [_bn(103, "94500", "0.1", T0_NS + M7 + 30 * S, False, T0_NS + M7 + 31 * S)],
        name="b-trades-3",
    )
    pipeline.run(spark, lake=lake, bronze=bronze, silver=silver, timeout_s=600, jobs=("silver_trades",))
    usd7 = q(D("94500") * q(1 / D("94200")))
    expected[5] = _row(
        "coinbase", "BTC-USD", "7002", "94200", "0.02", "sell", T0_NS + M7 + S, "ws", usd7, "cross_btc"
    )
    expected.insert(
        3,
        _row("binance", "BTC-USDT", "103", "94500", "0.1", "buy", T0_NS + M7 + 30 * S, "ws", one, "identity"),
    )
    assert _trades(spark, lake) == expected

    # A crash after the MERGE committed but before the checkpoint did: Spark replays the batch
    # with the same id (Delta skips it), or the input arrives again in a later batch (MERGE dedupes).
    bronze_rows = spark.read.format("delta").load(lake.path("bronze.raw_events")).where("channel = 'trades'")
    commits = Path(lake.checkpoint(silver_trades.JOB.query)) / "commits"
    last = max(int(p.name) for p in commits.iterdir() if p.name.isdigit())
    process = silver_trades.JOB.batch_writer(lake=lake, settings=silver)
    process(bronze_rows, last)
    process(bronze_rows, last + 1)
    assert _trades(spark, lake) == expected


def _table_rows(spark: SparkSession, lake: Lake, name: str, *, drop: tuple[str, ...] = ()) -> list[tuple]:
    df = spark.read.format("delta").load(lake.path(name)).drop(*drop)
    return sorted(tuple(r) for r in df.collect())


def test_a_silver_query_killed_mid_batch_restarts_with_no_duplicates_and_no_gaps(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landing = tmp_path / "landing"
    _first_landing(landing)
    bronze = BronzeSettings(source="landing", landing_root=str(landing))
    # Bronze and the markets once, copied: both lakes start from the same bronze files.
    reference = Lake(LakeSettings(root=str(tmp_path / "reference")))
    pipeline.run(
        spark, lake=reference, bronze=bronze, silver=SilverSettings(), timeout_s=600, jobs=("silver_markets",)
    )
    shutil.copytree(tmp_path / "reference", tmp_path / "crashed")
    crashed = Lake(LakeSettings(root=str(tmp_path / "crashed")))
    # The reference takes every bronze file in one batch; the crashed run a few files per batch,
    # so its input spans several batches and the crash is mid-stream.
    pipeline.run(
        spark,
        lake=reference,
        bronze=None,
        silver=SilverSettings(rate_carry_minutes=5),
        timeout_s=600,
        jobs=("silver_trades",),
    )
    silver = SilverSettings(rate_carry_minutes=5, max_files_per_trigger=3)
    real_merge = silver_module.merge
    merges: list[int | None] = []

    def crash_on_second_batch(*args: Any, **kwargs: Any) -> None:
        # The second batch dies after its quarantine rows and USDT rates were committed and
        # before its trades were: the partial state a killed driver leaves behind. (The rates'
        # upsert goes through `merge` too: only the batch's re-pricing MERGE counts.)
        if kwargs["mode"] != "update_only":
            real_merge(*args, **kwargs)
            return
        merges.append(kwargs["version"])
        if len(merges) == 2:
            raise RuntimeError("driver killed")
        real_merge(*args, **kwargs)

    monkeypatch.setattr(silver_module, "merge", crash_on_second_batch)
    with pytest.raises(RuntimeError, match=r"(?s)query silver_trades failed.*driver killed"):
        pipeline.run(spark, lake=crashed, bronze=None, silver=silver, timeout_s=600, jobs=("silver_trades",))
    monkeypatch.undo()
    assert len(merges) == 2
    pipeline.run(spark, lake=crashed, bronze=None, silver=silver, timeout_s=600, jobs=("silver_trades",))

    assert _trades(spark, crashed) == _trades(spark, reference)
    assert len(_trades(spark, crashed)) == 8
    assert _table_rows(spark, crashed, "silver.usdt_rates") == _table_rows(
        spark, reference, "silver.usdt_rates"
    )
    drop = ("quarantined_ts", "batch_id")
    assert _table_rows(spark, crashed, "silver.quarantine", drop=drop) == _table_rows(
        spark, reference, "silver.quarantine", drop=drop
    )
