"""The Kraken module against documented-shape frames (tests/fixtures/kraken/) and its time-cursor walk."""

from __future__ import annotations

import json

import pytest

from extractors.exchanges import kraken
from extractors.exchanges.base import Candle, Frame, Market, RestRequest, TradesPage, UnknownFrame
from tests.extractors.test_connectors import lines, outcome

PAIR = (("pair", "XBTUSD"),)
COUNT = (("count", "1000"),)


def test_kraken_trades_give_symbol_and_every_trade_id_including_snapshots_duplicates_and_string_ids() -> None:
    assert [outcome(kraken, t) for t in lines("kraken", "trades")] == [
        Frame("data", "trades", "trade", "BTC/USD", trade_ids=(81234565, 81234566)),
        Frame("data", "trades", "trade", "BTC/USD", trade_ids=(81234567,)),
        Frame("data", "trades", "trade", "BTC/USD", trade_ids=(81234567,)),  # duplicate: the tracker's job
        Frame("data", "trades", "trade", "ETH/USD", trade_ids=(4400021,)),
        Frame("data", "trades", "trade", "BTC/USD", trade_ids=(81234564,)),  # out of order
        "UnknownFrame",  # no trade_id
        "UnknownFrame",  # empty data
    ]


def test_kraken_ticker_is_the_ticker_channel_with_or_without_a_timestamp() -> None:
    assert [outcome(kraken, t) for t in lines("kraken", "ticker")] == [
        Frame("data", "ticker", "ticker", "BTC/USD"),
        Frame("data", "ticker", "ticker", "ETH/USD"),
        Frame("data", "ticker", "ticker", "BTC/USD"),
        "UnknownFrame",
    ]


def test_kraken_control_frames_acks_errors_and_garbage() -> None:
    assert [outcome(kraken, t) for t in lines("kraken", "control")] == [
        Frame("control", stream="status", detail="status"),
        Frame("control", stream="heartbeat", detail="heartbeat"),
        Frame("ack", detail="subscribe"),
        Frame("error", detail="subscribe: Currency pair not supported NOPE/USD"),
        Frame("control", detail="pong"),
        Frame("control", detail="unsubscribe"),
        Frame("error", detail="Exceeded msg rate"),
        "UnknownFrame",  # book: not subscribed by this connector
        "ValueError",
        "UnknownFrame",
    ]


def test_kraken_discovery_maps_xbt_and_xdg_skips_dark_pools_and_needs_status_online() -> None:
    body, error = lines("kraken", "markets")
    assert kraken.parse_markets(body) == [
        Market("BTC/USD", "BTC", "USD", True),
        Market("DOGE/USD", "DOGE", "USD", True),
        Market("ETH/USD", "ETH", "USD", True),
        Market("ETH/BTC", "ETH", "BTC", False),
        Market("SOL/USDT", "SOL", "USDT", True),
    ]
    with pytest.raises(UnknownFrame):
        kraken.parse_markets(error)


def test_kraken_symbols_map_between_v2_and_rest_names() -> None:
    assert kraken.modern_symbol("XBT/USD") == "BTC/USD"
    assert kraken.modern_symbol("XDG/XBT") == "DOGE/BTC"
    assert kraken.rest_pair("BTC/USD") == "XBTUSD"
    assert kraken.rest_pair("DOGE/USDT") == "XDGUSDT"
    assert kraken.rest_pair("XXBTZUSD") == "XXBTZUSD"


def test_kraken_subscriptions_are_per_channel_and_chunked_with_bbo_ticker_for_l1() -> None:
    symbols = [f"A{i}/USD" for i in range(kraken.SYMBOLS_PER_REQUEST + 1)]
    messages = [json.loads(m) for m in kraken.subscribe_messages(symbols, ("trades", "l1"), firehose=True)]
    assert [(m["params"]["channel"], len(m["params"]["symbol"])) for m in messages] == [
        ("trade", 50),
        ("ticker", 50),
        ("trade", 1),
        ("ticker", 1),
    ]
    assert messages[1]["params"]["event_trigger"] == "bbo" and messages[0]["method"] == "subscribe"
    assert [m["req_id"] for m in messages] == [1, 2, 3, 4]
    ticker_only = json.loads(kraken.subscribe_messages(["BTC/USD"], ("ticker",), firehose=False)[0])
    assert ticker_only == {
        "method": "subscribe",
        "params": {"channel": "ticker", "symbol": ["BTC/USD"]},
        "req_id": 1,
    }
    assert kraken.subscribe_messages([], ("trades",), firehose=True) == []
    unsub = json.loads(kraken.unsubscribe_messages(["BTC/USD"], ("l1",))[0])
    assert unsub["method"] == "unsubscribe" and "event_trigger" not in unsub["params"]


def page(ids: range | list[int], *, t0: float = 1767225600.0) -> str:
    """A Trades page of ``ids`` one second apart from ``t0`` (REST: strings for price and volume)."""
    rows = [["100.0", "0.5", t0 + (i - ids[0]), "b", "m", "", i] for i in ids]
    last = str(int((t0 + len(ids) - 1) * 1e9)) if ids else "0"
    return json.dumps({"error": [], "result": {"XXBTZUSD": rows, "last": last}})


def trades_request(since: int | None, walk: str) -> RestRequest:
    params = PAIR + ((("since", str(since)),) if since is not None else ()) + COUNT
    return RestRequest("GET", "/0/public/Trades", params, walk=walk)


def test_kraken_gap_fill_ends_on_the_newest_page_when_it_reaches_the_last_seen_trade() -> None:
    request = kraken.gap_fill_request("BTC/USD", after_id=1998, until_id=2001)
    assert request == trades_request(None, "back")
    body = lines("kraken", "rest_trades")[0]
    assert kraken.parse_trades_page(body, request=request, headers={}, after_id=1998, until_id=2001) == (
        TradesPage((1999, 2000), None)
    )
    # A short newest page that starts after the gap: the history is all there is.
    short = kraken.parse_trades_page(body, request=request, headers={}, after_id=1990, until_id=2001)
    assert short == TradesPage((1999, 2000), None, (1990, 1999))
    empty = lines("kraken", "rest_trades")[1]
    assert kraken.parse_trades_page(empty, request=request, headers={}, after_id=10, until_id=50) == (
        TradesPage((), None, (10, 50))
    )
    with pytest.raises(UnknownFrame):
        kraken.parse_trades_page(
            lines("kraken", "rest_trades")[2], request=request, headers={}, after_id=1, until_id=None
        )


def test_kraken_gap_fill_walks_back_in_time_then_forward_with_last() -> None:
    newest = kraken.parse_trades_page(
        page(range(5001, 6001), t0=1767230000.0),
        request=trades_request(None, "back"),
        headers={},
        after_id=2500,
        until_id=None,
    )
    # 1000 trades over 999 s: step back four spans from the oldest.
    assert newest.next_request == trades_request(int(1767230000e9) - 4 * 999 * 10**9, "back:5001")
    assert newest.gap is None
    # Still after the gap: further back.
    still = kraken.parse_trades_page(
        page(range(3001, 4001), t0=1767226000.0),
        request=newest.next_request,
        headers={},
        after_id=2500,
        until_id=None,
    )
    assert still.next_request is not None and still.next_request.walk == "back:5001"
    # This page holds after_id + 1: forward from its `last` until the newest page's oldest id.
    found = kraken.parse_trades_page(
        page(range(2001, 3001), t0=1767222000.0),
        request=still.next_request,
        headers={},
        after_id=2500,
        until_id=None,
    )
    assert found.next_request == trades_request(int((1767222000.0 + 999) * 1e9), "fwd:5001")
    fwd = kraken.parse_trades_page(
        page(range(3001, 4001)), request=found.next_request, headers={}, after_id=2500, until_id=None
    )
    assert fwd.next_request is not None and fwd.next_request.walk == "fwd:5001"
    done = kraken.parse_trades_page(
        page(range(4001, 5001)), request=fwd.next_request, headers={}, after_id=2500, until_id=None
    )
    assert done == TradesPage(tuple(range(4001, 5001)), None)


def test_kraken_gap_fill_records_what_is_older_than_the_oldest_history() -> None:
    oldest = kraken.parse_trades_page(
        page(range(100, 1100)), request=trades_request(0, "back:5000"), headers={}, after_id=10, until_id=5001
    )
    assert oldest.gap == (10, 100)
    assert oldest.next_request is not None and oldest.next_request.walk == "fwd:5000"


def test_kraken_baseline_and_klines_requests() -> None:
    assert kraken.recent_trades_request("DOGE/USD") == RestRequest(
        "GET", "/0/public/Trades", (("pair", "XDGUSD"), *COUNT)
    )
    assert kraken.l1_poll_request("BTC/USD") is None
    assert kraken.klines_request("BTC/USD", start_ms=1767225600000, end_ms=1767225660000) == RestRequest(
        "GET", "/0/public/OHLC", (("pair", "XBTUSD"), ("interval", "1"), ("since", "1767225599"))
    )
    body = json.dumps(
        {
            "error": [],
            "result": {
                "XXBTZUSD": [[1767225600, "1", "2", "0.5", "1.5", "1.2", "12.40510000", 18]],
                "last": 1767225600,
            },
        }
    )
    assert kraken.parse_klines(body) == [Candle(1767225600000, "12.40510000", 18)]
