"""Pure parts of the live path: frames of the documented shapes -> ticks (exact), the market
book's USDT prices, the landing tail's reading of gzip members, and conflation per client."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
from pathlib import Path

from lake.serve.decode import MarketBook, MarketInfo, Tick, decode_envelope, markets_from_discovery
from lake.serve.feeds import LandingTail
from lake.serve.hub import Filter, Hub

FIXTURES = Path(__file__).parents[1] / "fixtures"


def frames(exchange: str, channel: str) -> list[str]:
    return (FIXTURES / exchange / f"{channel}.jsonl").read_text().splitlines()


def env(exchange: str, channel: str, payload: str, symbol: str | None = None, source: str = "ws") -> dict:
    return {
        "exchange": exchange,
        "channel": channel,
        "payload": payload,
        "native_symbol": symbol,
        "recv_ts_ns": 5,
        "source": source,
    }


def test_binance_ticker_array_l1_and_trade_frames_give_exact_ticks():
    ticker = frames("binance", "ticker")
    assert decode_envelope(env("binance", "ticker", ticker[0])) == [
        Tick("binance", "ETHUSDT", "ticker", last="3120.55", event_ts_ms=1767225600123),
        Tick("binance", "BTCUSDT", "ticker", last="94210.02", event_ts_ms=1767225600123),
    ]
    assert decode_envelope(env("binance", "ticker", ticker[2])) == []  # "data":"oops"
    l1 = frames("binance", "l1")
    assert decode_envelope(env("binance", "l1", l1[0], "BTCUSDT")) == [
        Tick(
            "binance", "BTCUSDT", "l1", bid="94210.01", bid_size="1.20400", ask="94210.02", ask_size="0.03110"
        )
    ]
    trade = json.loads(frames("binance", "trades")[0])
    got = decode_envelope(env("binance", "trades", json.dumps(trade), trade["data"]["s"]))
    assert got == [
        Tick("binance", trade["data"]["s"], "trades", last=trade["data"]["p"], event_ts_ms=trade["data"]["T"])
    ]


def test_kucoin_ticker_level1_and_match_frames_give_exact_ticks():
    ticker = frames("kucoin", "ticker")
    assert decode_envelope(env("kucoin", "ticker", ticker[0], "ETH-USDT")) == [
        Tick("kucoin", "ETH-USDT", "ticker", "3120.55", "3120.55", "0.72", "3120.56", "4.1", 1767225600789)
    ]
    l1 = frames("kucoin", "l1")
    assert decode_envelope(env("kucoin", "l1", l1[1], "ETH-USDT")) == [
        Tick("kucoin", "ETH-USDT", "l1", bid="3120.55", bid_size="0.72", ask="3120.56", ask_size="4.1",
             event_ts_ms=1767225600803)
    ]  # fmt: skip
    match = json.loads(frames("kucoin", "trades")[0])["data"]
    got = decode_envelope(env("kucoin", "trades", frames("kucoin", "trades")[0], match["symbol"]))
    assert got == [
        Tick(
            "kucoin", match["symbol"], "trades", last=match["price"], event_ts_ms=int(match["time"]) // 10**6
        )
    ]


def test_coinbase_ticker_and_rest_book_give_exact_ticks_and_rest_trade_pages_none():
    ticker = frames("coinbase", "ticker")
    assert decode_envelope(env("coinbase", "ticker", ticker[0], "BTC-USD")) == [
        Tick("coinbase", "BTC-USD", "ticker", "94210.01", "94210.00", "0.41000000", "94210.01", "0.02500000",
             1767225600412)
    ]  # fmt: skip
    book = json.dumps(
        {
            "bids": [["94210.00", "0.41", 3]],
            "asks": [["94210.01", "0.025", 1]],
            "time": "2026-01-01T00:00:01.000123Z",
        }
    )
    assert decode_envelope(env("coinbase", "l1", book, "BTC-USD", source="rest")) == [
        Tick("coinbase", "BTC-USD", "l1", bid="94210.00", bid_size="0.41", ask="94210.01", ask_size="0.025",
             event_ts_ms=1767225601000)
    ]  # fmt: skip
    page = frames("coinbase", "product_trades")[0]
    assert decode_envelope(env("coinbase", "trades", page, "BTC-USD", source="rest")) == []
    assert decode_envelope({**env("coinbase", "ticker", ticker[0]), "error": "unknown_shape"}) == []


def test_kraken_ticker_and_trades_give_ticks_and_discovery_renames_xbt():
    ticker = frames("kraken", "ticker")
    assert decode_envelope(env("kraken", "ticker", ticker[0], "BTC/USD")) == [
        Tick("kraken", "BTC/USD", "ticker", "94210.1", "94210.0", "0.5", "94210.1", "1.25", 1767225600123)
    ]
    trades = decode_envelope(env("kraken", "trades", frames("kraken", "trades")[0], "BTC/USD"))
    assert [(t.native_symbol, t.last, t.event_ts_ms) for t in trades] == [
        ("BTC/USD", "94209.9", 1767225600401),
        ("BTC/USD", "94210.0", 1767225600402),
    ]
    page = frames("kraken", "rest_trades")[0]
    assert decode_envelope(env("kraken", "trades", page, "BTC/USD", source="rest")) == []
    markets = markets_from_discovery(env("kraken", "markets", frames("kraken", "markets")[0], source="rest"))
    assert markets[("kraken", "BTC/USD")] == MarketInfo("BTC-USD", "BTC", "USD")
    assert markets[("kraken", "DOGE/USD")] == MarketInfo("DOGE-USD", "DOGE", "USD")


def test_okx_tickers_trades_and_bbo_tbt_give_exact_ticks_and_discovery_keeps_inst_ids():
    ticker = frames("okx", "ticker")[0]
    assert decode_envelope(env("okx", "ticker", ticker, "BTC-USDT")) == [
        Tick("okx", "BTC-USDT", "ticker", "94210.1", "94210", "0.5", "94210.1", "1.25", 1767225600123)
    ]
    assert decode_envelope(env("okx", "trades", frames("okx", "trades")[0], "BTC-USDT")) == [
        Tick("okx", "BTC-USDT", "trades", last="94209.9", event_ts_ms=1767225600401),
        Tick("okx", "BTC-USDT", "trades", last="94210", event_ts_ms=1767225600402),
    ]
    assert decode_envelope(env("okx", "l1", frames("okx", "l1")[0], "BTC-USDT")) == [
        Tick("okx", "BTC-USDT", "l1", bid="94210", bid_size="0.5", ask="94210.1", ask_size="1.25",
             event_ts_ms=1767225600124)
    ]  # fmt: skip
    page = frames("okx", "rest_trades")[0]
    assert decode_envelope(env("okx", "trades", page, "BTC-USDT", source="rest")) == []
    markets = markets_from_discovery(env("okx", "markets", frames("okx", "markets")[0], source="rest"))
    assert markets[("okx", "BTC-USDT")] == MarketInfo("BTC-USDT", "BTC", "USDT")


def test_bybit_trades_tickers_and_level1_books_give_ticks_and_discovery_splits_by_coin():
    assert decode_envelope(env("bybit", "trades", frames("bybit", "trades")[0], "BTCUSDT")) == [
        Tick("bybit", "BTCUSDT", "trades", last="94209.90", event_ts_ms=1767225600401),
        Tick("bybit", "BTCUSDT", "trades", last="94210.00", event_ts_ms=1767225600402),
    ]
    assert decode_envelope(env("bybit", "ticker", frames("bybit", "ticker")[0], "BTCUSDT")) == [
        Tick("bybit", "BTCUSDT", "ticker", last="94210.02", event_ts_ms=1767225600123)
    ]
    assert decode_envelope(env("bybit", "l1", frames("bybit", "l1")[0], "BTCUSDT")) == [
        Tick("bybit", "BTCUSDT", "l1", None, "94210.01", "0.812", "94210.02", "0.044", 1767225600199)
    ]
    page = frames("bybit", "rest_trades")[0]
    assert decode_envelope(env("bybit", "trades", page, "BTCUSDT", source="rest")) == []
    markets = markets_from_discovery(env("bybit", "markets", frames("bybit", "markets")[0], source="rest"))
    assert markets[("bybit", "1000SATSUSDC")] == MarketInfo("1000SATS-USDC", "1000SATS", "USDC")


def test_market_book_merges_fields_and_prices_in_usdt_direct_inverse_and_across_btc():
    book = MarketBook(
        {
            ("binance", "BTCUSDT"): MarketInfo("BTC-USDT", "BTC", "USDT"),
            ("coinbase", "BTC-EUR"): MarketInfo("BTC-EUR", "BTC", "EUR"),
            ("coinbase", "USDT-USD"): MarketInfo("USDT-USD", "USDT", "USD"),
            ("coinbase", "BTC-USD"): MarketInfo("BTC-USD", "BTC", "USD"),
        }
    )
    s = book.apply(Tick("binance", "BTCUSDT", "l1", bid="100", ask="102"), recv_ts_ns=1)
    assert (s["symbol"], s["mid_usdt"], s["last_usdt"], s["usdt_method"]) == (
        "BTC-USDT",
        "101",
        None,
        "identity",
    )
    s = book.apply(Tick("binance", "BTCUSDT", "trades", last="101.5"), recv_ts_ns=2)
    assert (s["bid"], s["ask"], s["last"], s["last_usdt"]) == ("100", "102", "101.5", "101.5")  # merged
    eur = book.apply(Tick("coinbase", "BTC-EUR", "ticker", last="87"), recv_ts_ns=3)
    assert (eur["usdt_method"], eur["last_usdt"]) == ("cross_btc", "101.5")  # 87 * (101.5 / 87)
    book.apply(Tick("coinbase", "USDT-USD", "ticker", last="0.5"), recv_ts_ns=4)
    usd = book.apply(Tick("coinbase", "BTC-USD", "ticker", last="50"), recv_ts_ns=5)
    assert (usd["usdt_method"], usd["last_usdt"]) == ("inverse", "100")  # 50 / 0.5
    unknown = book.apply(Tick("kucoin", "XYZ-ABC", "ticker", last="1"), recv_ts_ns=6)
    assert (unknown["symbol"], unknown["last_usdt"]) == (None, None)


def test_discovery_snapshot_names_markets_with_the_exchange_modules_parser():
    body = frames("kucoin", "markets")[0]
    got = markets_from_discovery(env("kucoin", "markets", body, source="rest"))
    assert got[("kucoin", "BTC-USDT")] == MarketInfo("BTC-USDT", "BTC", "USDT")
    assert got[("kucoin", "ETH-USDC")] == MarketInfo("ETH-USDC", "ETH", "USDC")


def _line(symbol: str, price: str) -> bytes:
    payload = json.dumps({"stream": "x", "data": {"e": "trade", "s": symbol, "t": 1, "p": price, "T": 1}})
    return json.dumps(env("binance", "trades", payload, symbol)).encode() + b"\n"


def test_landing_tail_skips_what_was_there_reads_whole_members_and_follows_a_renamed_part(tmp_path):
    staging = tmp_path / "_staging"
    staging.mkdir()
    part = staging / "raw~exchange=binance~channel=trades~dt=2026-12-01~hour=12~a.jsonl.gz"
    part.write_bytes(gzip.compress(_line("OLD", "1")))
    tail = LandingTail(staging)
    assert tail.poll() == []  # content present at start is skipped
    member = gzip.compress(_line("BTCUSDT", "2") + _line("BTCUSDT", "3"))
    with part.open("ab") as fh:
        fh.write(member[:10])  # half a member: not yet
    assert tail.poll() == []
    with part.open("ab") as fh:
        fh.write(member[10:])
        fh.write(gzip.compress(_line("ETHUSDT", "4")))
    got = tail.poll()
    assert [json.loads(json.loads(x)["payload"])["data"]["p"] for x in got] == ["2", "3", "4"]
    # the sink appends a last member and renames the part into raw/: read to its end, then let go
    with part.open("ab") as fh:
        fh.write(gzip.compress(_line("BTCUSDT", "5")))
    os.replace(part, tmp_path / "finished.jsonl.gz")
    assert [json.loads(json.loads(x)["payload"])["data"]["p"] for x in tail.poll()] == ["5"]
    assert tail.poll() == []
    new = staging / "raw~exchange=binance~channel=trades~dt=2026-12-01~hour=13~b.jsonl.gz"
    new.write_bytes(gzip.compress(_line("BTCUSDT", "6")))  # a part created later: read from its start
    assert [json.loads(json.loads(x)["payload"])["data"]["p"] for x in tail.poll()] == ["6"]
    tail.close()


def test_a_slow_client_gets_the_latest_state_per_market_and_an_overfull_one_is_dropped():
    async def scenario() -> None:
        hub = Hub(max_pending=2)
        slow = hub.subscribe(Filter.of(exchanges=["binance"]))
        for price in ("1", "2", "3"):
            hub.publish(
                [{"exchange": "binance", "native_symbol": "BTCUSDT", "symbol": "BTC-USDT", "last": price}]
            )
        hub.publish([{"exchange": "kucoin", "native_symbol": "BTC-USDT", "symbol": "BTC-USDT", "last": "9"}])
        hub.publish([{"exchange": "binance", "native_symbol": "ETHUSDT", "symbol": "ETH-USDT", "last": "7"}])
        batch = await slow.next_batch(timeout=1)
        assert [(p.state["native_symbol"], p.state["last"]) for p in batch] == [
            ("BTCUSDT", "3"),
            ("ETHUSDT", "7"),
        ]
        assert [json.loads(p.json) for p in batch] == [p.state for p in batch]
        assert slow.conflated == 2 and not slow.closed
        for symbol in ("A", "B", "C"):  # a third market pending beyond max_pending=2
            hub.publish([{"exchange": "binance", "native_symbol": symbol, "symbol": None, "last": "1"}])
        assert slow.closed and slow.pending == {}
        late = hub.subscribe(Filter.of(symbols=["btc-usdt"]))  # primed with the latest matching states
        assert [(p.state["exchange"], p.state["last"]) for p in await late.next_batch(timeout=1)] == [
            ("binance", "3"),
            ("kucoin", "9"),
        ]

    asyncio.run(scenario())


def test_the_feed_retries_a_source_that_cannot_start_and_then_publishes(tmp_path):
    from extractors.backoff import Backoff
    from lake.serve.feeds import FeedStats, run_feed

    staging = tmp_path / "_staging"
    staging.mkdir()
    attempts = []

    def factory() -> LandingTail:
        attempts.append(1)
        if len(attempts) < 3:
            raise OSError("broker down")  # as KafkaConsumer does when no broker answers
        return LandingTail(staging)

    async def scenario() -> tuple[FeedStats, Hub]:
        hub, stats = Hub(), FeedStats()
        book = MarketBook({("binance", "BTCUSDT"): MarketInfo("BTC-USDT", "BTC", "USDT")})
        task = asyncio.create_task(
            run_feed(factory, book, hub, stats, interval_s=0.01, backoff=Backoff(initial=0.01, cap=0.02))
        )
        while len(attempts) < 3 or stats.last_poll_s is None:
            await asyncio.sleep(0.01)
        part = staging / "raw~exchange=binance~channel=trades~dt=2026-12-01~hour=12~c.jsonl.gz"
        part.write_bytes(gzip.compress(_line("BTCUSDT", "42")))
        while not hub.latest:
            await asyncio.sleep(0.01)
        task.cancel()
        return stats, hub

    stats, hub = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert (stats.errors, stats.last_error) == (2, "OSError: broker down")
    assert hub.latest[("binance", "BTCUSDT")].state["last"] == "42"
