"""The Bybit module against documented-shape frames (tests/fixtures/bybit/) and its short REST history."""

from __future__ import annotations

import json

import pytest

from extractors.exchanges import bybit
from extractors.exchanges.base import Candle, Frame, Market, RestRequest, TradesPage, UnknownFrame
from tests.extractors.test_connectors import lines, outcome

BTC = "publicTrade.BTCUSDT"
RECENT = RestRequest(
    "GET", "/v5/market/recent-trade", (("category", "spot"), ("symbol", "BTCUSDT"), ("limit", "60"))
)


def test_bybit_trades_give_the_topic_symbol_and_every_trade_id_including_duplicates() -> None:
    assert [outcome(bybit, t) for t in lines("bybit", "trades")] == [
        Frame("data", "trades", BTC, "BTCUSDT", trade_ids=(2290000000061666325, 2290000000061666326)),
        Frame("data", "trades", BTC, "BTCUSDT", trade_ids=(2290000000061666327,)),
        Frame("data", "trades", BTC, "BTCUSDT", trade_ids=(2290000000061666327,)),  # the tracker's job
        Frame("data", "trades", "publicTrade.ETHUSDT", "ETHUSDT", trade_ids=(2280000000011223344,)),
        "UnknownFrame",  # no id
        "UnknownFrame",  # empty data
    ]


def test_bybit_tickers_and_level1_books_are_data_of_their_channels() -> None:
    assert [outcome(bybit, t) for t in lines("bybit", "ticker")] == [
        Frame("data", "ticker", "tickers.BTCUSDT", "BTCUSDT"),
        Frame("data", "ticker", "tickers.ETHUSDT", "ETHUSDT"),
        Frame("data", "ticker", "tickers.BTCUSDT", "BTCUSDT"),  # a bad price is Spark's to quarantine
        "UnknownFrame",
    ]
    assert [outcome(bybit, t) for t in lines("bybit", "l1")] == [
        Frame("data", "l1", "orderbook.1.BTCUSDT", "BTCUSDT"),
        Frame("data", "l1", "orderbook.1.ETHUSDT", "ETHUSDT"),
        Frame("data", "l1", "orderbook.1.BTCUSDT", "BTCUSDT"),
    ]


def test_bybit_control_frames_acks_errors_and_garbage() -> None:
    assert [outcome(bybit, t) for t in lines("bybit", "control")] == [
        Frame("ack", detail="subscribe"),
        Frame("error", detail="subscribe: Invalid symbol :[publicTrade.NOPEUSDT]"),
        Frame("control", detail="ping"),
        Frame("control", detail="unsubscribe"),
        Frame("data", "l1", "orderbook.50.BTCUSDT", "BTCUSDT"),  # any depth is a book; we ask for 1
        "UnknownFrame",  # kline: not subscribed by this connector
        "ValueError",
        "UnknownFrame",
    ]


def test_bybit_discovery_splits_by_base_and_quote_coin_and_needs_status_trading() -> None:
    body, error = lines("bybit", "markets")
    assert bybit.discovery_request() == RestRequest(
        "GET", "/v5/market/instruments-info", (("category", "spot"),)
    )
    assert bybit.parse_markets(body) == [
        Market("BTCUSDT", "BTC", "USDT", True),
        Market("ETHUSDT", "ETH", "USDT", True),
        Market("ETHBTC", "ETH", "BTC", False),
        Market("1000SATSUSDC", "1000SATS", "USDC", True),
    ]
    with pytest.raises(UnknownFrame):
        bybit.parse_markets(error)


def test_bybit_subscriptions_carry_at_most_ten_args_and_pings_are_json() -> None:
    symbols = [f"A{i}USDT" for i in range(4)]
    messages = [
        json.loads(m) for m in bybit.subscribe_messages(symbols, ("trades", "ticker", "l1"), firehose=True)
    ]
    assert [len(m["args"]) for m in messages] == [10, 2]
    assert messages[0] == {
        "req_id": "1",
        "op": "subscribe",
        "args": [
            "publicTrade.A0USDT", "tickers.A0USDT", "orderbook.1.A0USDT", "publicTrade.A1USDT",
            "tickers.A1USDT", "orderbook.1.A1USDT", "publicTrade.A2USDT", "tickers.A2USDT",
            "orderbook.1.A2USDT", "publicTrade.A3USDT",
        ],
    }  # fmt: skip
    assert bybit.subscribe_messages([], ("trades",), firehose=True) == []
    unsub = json.loads(bybit.unsubscribe_messages(["BTCUSDT"], ("l1",))[0])
    assert unsub == {"req_id": "1000000", "op": "unsubscribe", "args": ["orderbook.1.BTCUSDT"]}
    assert json.loads(bybit.ping_message(3) or "") == {"req_id": "p3", "op": "ping"}
    assert bybit.session(ws_url=bybit.WS_URL, bootstrap_body=None, conn_id="c").ping_interval_s == 20.0


def test_bybit_gap_fill_is_the_last_60_trades_and_what_they_do_not_reach_is_a_gap() -> None:
    assert bybit.recent_trades_request("BTCUSDT") == RECENT
    assert bybit.gap_fill_request("BTCUSDT", after_id=5, until_id=None) == RECENT
    body, empty, error = lines("bybit", "rest_trades")
    ids = (2290000000061666323, 2290000000061666324)
    reached = bybit.parse_trades_page(body, request=RECENT, headers={}, after_id=ids[0], until_id=None)
    assert reached == TradesPage(ids, None)
    lost = bybit.parse_trades_page(
        body, request=RECENT, headers={}, after_id=2290000000061666300, until_id=None
    )
    assert lost == TradesPage(ids, None, (2290000000061666300, ids[0]))
    assert bybit.parse_trades_page(empty, request=RECENT, headers={}, after_id=1, until_id=9) == TradesPage(
        (), None
    )
    with pytest.raises(UnknownFrame):
        bybit.parse_trades_page(error, request=RECENT, headers={}, after_id=1, until_id=None)


def test_bybit_klines_request_and_candles_oldest_first() -> None:
    assert bybit.l1_poll_request("BTCUSDT") is None
    assert bybit.klines_request("BTCUSDT", start_ms=1767225600000, end_ms=1767225660000) == RestRequest(
        "GET",
        "/v5/market/kline",
        (("category", "spot"), ("symbol", "BTCUSDT"), ("interval", "1"), ("start", "1767225600000"),
         ("end", "1767225660000"), ("limit", "2")),
    )  # fmt: skip
    assert bybit.parse_klines(lines("bybit", "klines")[0]) == [
        Candle(1767225600000, "12.4051"),
        Candle(1767225660000, "3.2"),
    ]
