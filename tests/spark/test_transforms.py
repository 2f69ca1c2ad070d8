"""Pure transforms on inline DataFrames built from documented payload shapes; exact decimals."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import IntegerType, LongType, StringType, StructField, StructType

from lake.tables import SILVER_MARKETS
from spark_jobs.bronze_ingest import envelopes_to_bronze
from spark_jobs.silver_l1 import JOB as L1_JOB
from spark_jobs.silver_markets import latest_markets
from spark_jobs.silver_tickers import JOB as TICKERS_JOB
from spark_jobs.silver_trades import JOB as TRADES_JOB
from tests.spark.envelopes import T0_NS, bronze_df, discovery_envelopes, envelope, ts

pytestmark = pytest.mark.spark

MS = 1_000_000
T0_MS = T0_NS // MS


def _markets(spark: SparkSession) -> DataFrame:
    return latest_markets(bronze_df(spark, discovery_envelopes()))


def test_markets_take_base_and_quote_from_discovery_with_aliases(spark: SparkSession) -> None:
    t = ts(T0_NS - 5_000_000_000)
    expected = spark.createDataFrame(
        [
            ("binance", "BTCUSDT", "BTC-USDT", "BTC", "USDT", "TRADING", t),
            ("binance", "ETHBTC", "ETH-BTC", "ETH", "BTC", "TRADING", t),
            ("binance", "ETHUSDT", "ETH-USDT", "ETH", "USDT", "TRADING", t),
            ("binance", "SOLETH", "SOL-ETH", "SOL", "ETH", "BREAK", t),
            ("binance", "XBTEUR", "BTC-EUR", "BTC", "EUR", "TRADING", t),  # XBT -> BTC alias
            ("coinbase", "BTC-USD", "BTC-USD", "BTC", "USD", "online", t),
            ("coinbase", "ETH-USD", "ETH-USD", "ETH", "USD", "disabled", t),
            ("kucoin", "BTC-USDT", "BTC-USDT", "BTC", "USDT", "trading", t),
            ("kucoin", "USDT-IRT", "USDT-IRT", "USDT", "IRT", "trading", t),
        ],
        SILVER_MARKETS.schema,
    )
    got = _markets(spark).orderBy("exchange", "native_symbol")
    assert_df_equality(got, expected, ignore_nullable=True)


def _trade_envelopes() -> list[dict]:
    r = T0_NS + 461_203_112
    return [
        # Binance combined-stream trade: buyer is not maker => taker bought.
        envelope("binance", "trades", {"stream": "btcusdt@trade", "data": {
            "e": "trade", "E": T0_MS + 456, "s": "BTCUSDT", "t": 5400012345, "p": "94210.02",
            "q": "0.00150", "T": T0_MS + 455, "m": False, "M": True}}, recv_ns=r, stream="btcusdt@trade"),
        # Raw stream, an extra unknown field, buyer is maker => taker sold.
        envelope("binance", "trades", {"e": "trade", "E": T0_MS + 501, "s": "BTCUSDT", "t": 5400012346,
            "p": "94210.01", "q": "1.5", "T": T0_MS + 500, "m": True, "M": True, "X": "extra"},
            recv_ns=r + 1, stream="btcusdt@trade"),
        # REST gap-fill page (historicalTrades): symbol from the request's query string.
        envelope("binance", "trades", [{"id": 5400012347, "price": "94210.00", "qty": "0.25",
            "quoteQty": "23552.5", "time": T0_MS + 900, "isBuyerMaker": True, "isBestMatch": True}],
            recv_ns=r + 2, source="rest", stream="/api/v3/historicalTrades?symbol=BTCUSDT&fromId=5400012347"),
        # Aggregate trade: its own id space.
        envelope("binance", "trades", {"e": "aggTrade", "E": T0_MS + 10, "s": "ETHUSDT", "a": 777,
            "p": "3120.55", "q": "2", "f": 1, "l": 2, "T": T0_MS + 9, "m": False, "M": True}, recv_ns=r + 3),
        # Missing price -> quarantine.
        envelope("binance", "trades", {"e": "trade", "s": "BTCUSDT", "t": 1, "q": "1", "T": T0_MS,
            "m": False},
            recv_ns=r + 4),
        # Unknown market -> quarantine.
        envelope("binance", "trades", {"e": "trade", "s": "FOOUSDT", "t": 2, "p": "1", "q": "1", "T": T0_MS,
            "m": False}, recv_ns=r + 5),
        # KuCoin match: ns time string, taker side.
        envelope("kucoin", "trades", {"type": "message", "topic": "/market/match:BTC-USDT",
            "subject": "trade.l3match", "data": {"symbol": "BTC-USDT", "sequence": "12840019911847401",
            "tradeId": "12840019911847401", "side": "sell", "price": "94209.9", "size": "0.0021",
            "type": "match", "makerOrderId": "a", "takerOrderId": "b", "time": "1767225600801000000"}},
            recv_ns=r + 6, stream="/market/match:BTC-USDT"),
        # KuCoin REST histories (code/data envelope), time as a JSON number.
        envelope("kucoin", "trades", {"code": "200000", "data": [{"sequence": "12840019911847404",
            "price": "94211", "size": "0.01", "side": "buy", "time": 1767225600901000000}]},
            recv_ns=r + 7, source="rest", stream="/api/v1/market/histories?symbol=BTC-USDT"),
        # Coinbase match: side is the maker's => taker is the opposite.
        envelope("coinbase", "trades", {"type": "match", "trade_id": 801234567, "maker_order_id": "m",
            "taker_order_id": "t", "side": "buy", "size": "0.00120000", "price": "94210.01",
            "product_id": "BTC-USD", "sequence": 112233445566, "time": "2026-01-01T00:00:00.412345Z"},
            recv_ns=r + 8),
        # Coinbase REST trades page: product from the path.
        envelope("coinbase", "trades", [{"trade_id": 801234568, "side": "sell", "size": "0.5",
            "price": "94200.5", "time": "2026-01-01T00:00:01.000001Z"}], recv_ns=r + 9, source="rest",
            stream="/products/BTC-USD/trades?before=801234567"),
        envelope("coinbase", "trades", "not json{", recv_ns=r + 10),
        envelope("coinbase", "trades", {"type": "match", "trade_id": 5, "side": "buy", "size": "-1",
            "price": "1", "product_id": "BTC-USD", "time": "2026-01-01T00:00:00Z"}, recv_ns=r + 11),
        envelope("kraken", "trades", {"channel": "trade"}, recv_ns=r + 12),
    ]  # fmt: skip


def test_trades_parse_every_exchange_and_reject_bad_rows(spark: SparkSession) -> None:
    rows = bronze_df(spark, _trade_envelopes()).transform(TRADES_JOB.normalize(_markets(spark)))
    got = rows.where("_error IS NULL").select(
        "exchange", "symbol", "native_symbol", "base", "quote", "trade_id", "price", "size", "side",
        "event_ts", "recv_ts", "source", "trade_date",
    ).orderBy("exchange", "trade_id").collect()  # fmt: skip
    r = T0_NS + 461_203_112
    day = ts(T0_NS).date()
    expected = [
        ("binance", "BTC-USDT", "BTCUSDT", "BTC", "USDT", "5400012345", D("94210.02"), D("0.0015"), "buy",
         ts(T0_NS + 455 * MS), ts(r), "ws", day),
        ("binance", "BTC-USDT", "BTCUSDT", "BTC", "USDT", "5400012346", D("94210.01"), D("1.5"), "sell",
         ts(T0_NS + 500 * MS), ts(r + 1), "ws", day),
        ("binance", "BTC-USDT", "BTCUSDT", "BTC", "USDT", "5400012347", D("94210"), D("0.25"), "sell",
         ts(T0_NS + 900 * MS), ts(r + 2), "rest", day),
        ("binance", "ETH-USDT", "ETHUSDT", "ETH", "USDT", "agg-777", D("3120.55"), D("2"), "buy",
         ts(T0_NS + 9 * MS), ts(r + 3), "ws", day),
        ("coinbase", "BTC-USD", "BTC-USD", "BTC", "USD", "801234567", D("94210.01"), D("0.0012"), "sell",
         ts(T0_NS + 412_345_000), ts(r + 8), "ws", day),
        ("coinbase", "BTC-USD", "BTC-USD", "BTC", "USD", "801234568", D("94200.5"), D("0.5"), "buy",
         ts(T0_NS + 1_000_001_000), ts(r + 9), "rest", day),
        ("kucoin", "BTC-USDT", "BTC-USDT", "BTC", "USDT", "12840019911847401", D("94209.9"), D("0.0021"),
         "sell", ts(T0_NS + 801 * MS), ts(r + 6), "ws", day),
        ("kucoin", "BTC-USDT", "BTC-USDT", "BTC", "USDT", "12840019911847404", D("94211"), D("0.01"), "buy",
         ts(T0_NS + 901 * MS), ts(r + 7), "rest", day),
    ]  # fmt: skip
    assert [tuple(x) for x in got] == expected
    # Decimals are exact to the digit (no float on the way): compare their text too.
    assert str(got[0]["price"]) == "94210.020000000000000000"
    errors = sorted(
        (x["exchange"], x["_error"])
        for x in rows.where("_error IS NOT NULL").select("exchange", "_error").collect()
    )
    assert errors == [
        ("binance", "bad_price"),
        ("binance", "unknown_market"),
        ("coinbase", "non_positive_size"),
        ("coinbase", "unparseable_payload"),
        ("kraken", "unsupported_exchange"),
    ]


def test_tickers_and_l1_parse_documented_shapes(spark: SparkSession) -> None:
    r = T0_NS + 7_000_000
    envs = [
        envelope("binance", "ticker", {"stream": "!miniTicker@arr", "data": [
            {"e": "24hrMiniTicker", "E": T0_MS + 123, "s": "ETHUSDT", "c": "3120.55", "o": "3050.00",
             "h": "3140.10", "l": "3021.00", "v": "184203.118", "q": "572331882.44"},
            {"e": "24hrMiniTicker", "E": T0_MS + 123, "s": "BTCUSDT", "c": "94210.02", "o": "93000",
             "h": "95000", "l": "92000", "v": "1000", "q": "94000000"}]}, recv_ns=r),
        envelope("kucoin", "ticker", {"type": "message", "topic": "/market/ticker:all", "subject": "BTC-USDT",
            "data": {"bestAsk": "94210", "bestAskSize": "0.51", "bestBid": "94209.9", "bestBidSize": "1.07",
                     "price": "94209.9", "size": "0.0131", "sequence": "21874411923", "time": T0_MS + 789}},
            recv_ns=r + 1),
        envelope("coinbase", "ticker", {"type": "ticker", "sequence": 112233445566, "product_id": "BTC-USD",
            "price": "94210.01", "open_24h": "92001.00", "volume_24h": "8123.5521", "low_24h": "91500.00",
            "high_24h": "94800.00", "volume_30d": "301233.88", "best_bid": "94210.00",
            "best_bid_size": "0.41000000", "best_ask": "94210.01", "best_ask_size": "0.02500000",
            "side": "buy", "trade_id": 801234567, "last_size": "0.00120000"}, recv_ns=r + 2),  # no `time`
        envelope("binance", "ticker", [{"e": "24hrMiniTicker", "E": T0_MS, "s": "NOPEUSDT", "c": "1"}],
            recv_ns=r + 3),
    ]  # fmt: skip
    tickers = bronze_df(spark, envs).transform(TICKERS_JOB.normalize(_markets(spark)))
    got = [
        tuple(x)
        for x in tickers.select(
            "exchange", "symbol", "last", "open_24h", "high_24h", "low_24h", "base_volume_24h",
            "quote_volume_24h", "best_bid", "best_ask", "event_ts", "_error",
        ).orderBy("exchange", "symbol").collect()
    ]  # fmt: skip
    assert got == [
        ("binance", None, D("1"), None, None, None, None, None, None, None, ts(T0_NS), "unknown_market"),
        ("binance", "BTC-USDT", D("94210.02"), D("93000"), D("95000"), D("92000"), D("1000"), D("94000000"),
         None, None, ts(T0_NS + 123 * MS), None),
        ("binance", "ETH-USDT", D("3120.55"), D("3050"), D("3140.1"), D("3021"), D("184203.118"),
         D("572331882.44"), None, None, ts(T0_NS + 123 * MS), None),
        ("coinbase", "BTC-USD", D("94210.01"), D("92001"), D("94800"), D("91500"), D("8123.5521"), None,
         D("94210"), D("94210.01"), ts(r + 2), None),
        ("kucoin", "BTC-USDT", D("94209.9"), None, None, None, None, None, D("94209.9"), D("94210"),
         ts(T0_NS + 789 * MS), None),
    ]  # fmt: skip

    l1_envs = [
        envelope("binance", "l1", {"stream": "btcusdt@bookTicker", "data": {"u": 5120938471, "s": "BTCUSDT",
            "b": "94210.01", "B": "1.20400", "a": "94210.02", "A": "0.03110"}}, recv_ns=r),
        envelope("kucoin", "l1", {"type": "message", "topic": "/spotMarket/level1:BTC-USDT",
            "subject": "level1",
            "data": {"asks": ["94210", "0.51"], "bids": ["94209.9", "1.07"], "timestamp": T0_MS + 803}},
            recv_ns=r + 1),
        envelope("coinbase", "l1", {"bids": [["94210.00", "0.41000000", 3]],
            "asks": [["94210.01", "0.025", 1]],
            "sequence": 112233445601, "auction_mode": False, "auction": None,
            "time": "2026-01-01T00:00:01.000123Z"}, recv_ns=r + 2, source="rest",
            stream="/products/BTC-USD/book?level=1"),
        envelope("binance", "l1", {"u": 9, "s": "ETHUSDT", "b": "3121", "B": "1", "a": "3120", "A": "1"},
            recv_ns=r + 3),
    ]  # fmt: skip
    quotes = bronze_df(spark, l1_envs).transform(L1_JOB.normalize(_markets(spark)))
    got_l1 = [
        tuple(x)
        for x in quotes.select(
            "exchange", "symbol", "bid_price", "bid_size", "ask_price", "ask_size", "sequence", "event_ts",
            "spread_bps", "_error",
        ).orderBy("exchange", "symbol").collect()
    ]  # fmt: skip

    def bps(bid: str, ask: str) -> D:
        mid = ((D(bid) + D(ask)) / 2).quantize(D("1e-18"))
        return ((D(ask) - D(bid)) * 10000 / mid).quantize(D("1e-6"))

    assert got_l1 == [
        ("binance", "BTC-USDT", D("94210.01"), D("1.204"), D("94210.02"), D("0.0311"), 5120938471, ts(r),
         bps("94210.01", "94210.02"), None),
        ("binance", "ETH-USDT", D("3121"), D("1"), D("3120"), D("1"), 9, ts(r + 3), bps("3121", "3120"),
         "crossed_book"),
        ("coinbase", "BTC-USD", D("94210"), D("0.41"), D("94210.01"), D("0.025"), 112233445601,
         ts(T0_NS + 1_000_123_000), bps("94210.00", "94210.01"), None),
        ("kucoin", "BTC-USDT", D("94209.9"), D("1.07"), D("94210"), D("0.51"), None, ts(T0_NS + 803 * MS),
         bps("94209.9", "94210"), None),
    ]  # fmt: skip


def test_bronze_lines_split_batches_and_reject_malformed(spark: SparkSession) -> None:
    import json

    good = envelope("binance", "trades", {"e": "trade"}, recv_ns=T0_NS + 1, conn_seq=7)
    value = json.dumps(good) + "\n" + '{"exchange":"binance"}\n\n' + "garbage\n"
    schema = StructType(
        [
            StructField("value", StringType()),
            StructField("kafka_topic", StringType()),
            StructField("kafka_partition", IntegerType()),
            StructField("kafka_offset", LongType()),
            StructField("source_file", StringType()),
        ]
    )
    lines = spark.createDataFrame([(value, "raw.binance.trades", 0, 41, None)], schema)
    got = envelopes_to_bronze(lines).select(
        "exchange", "channel", "payload", "recv_ts_ns", "conn_seq", "recv_date", "kafka_offset", "_error"
    )
    assert [tuple(x) for x in got.collect()] == [
        ("binance", "trades", good["payload"], T0_NS + 1, 7, ts(T0_NS).date(), 41, None),
        ("binance", None, None, None, None, None, 41, "malformed_envelope"),
        (None, None, None, None, None, None, 41, "malformed_envelope"),
    ]
