"""The OKX module against documented-shape frames (tests/fixtures/okx/) and its walk back by trade id."""

from __future__ import annotations

import json

import pytest

from extractors.exchanges import okx
from extractors.exchanges.base import Candle, Frame, Market, RestRequest, TradesPage, UnknownFrame
from tests.extractors.test_connectors import lines, outcome

HISTORY = "/api/v5/market/history-trades"


def test_okx_trades_give_symbol_and_every_trade_id_including_duplicates_and_aggregates() -> None:
    assert [outcome(okx, t) for t in lines("okx", "trades")] == [
        Frame("data", "trades", "trades", "BTC-USDT", trade_ids=(130639474, 130639476)),  # count 2: a jump
        Frame("data", "trades", "trades", "BTC-USDT", trade_ids=(130639477,)),
        Frame("data", "trades", "trades", "BTC-USDT", trade_ids=(130639477,)),  # duplicate: the tracker's job
        Frame("data", "trades", "trades", "ETH-USDT", trade_ids=(4400021,)),
        "UnknownFrame",  # no tradeId
        "UnknownFrame",  # empty data
    ]
    assert okx.CONSECUTIVE_IDS is False  # aggregated fills skip ids


def test_okx_tickers_land_as_ticker_and_bbo_tbt_as_l1() -> None:
    assert [outcome(okx, t) for t in lines("okx", "ticker")] == [
        Frame("data", "ticker", "tickers", "BTC-USDT"),
        Frame("data", "ticker", "tickers", "ETH-USDT"),
        Frame("data", "ticker", "tickers", "BTC-USDT"),  # the arg names the symbol
    ]
    assert [outcome(okx, t) for t in lines("okx", "l1")] == [
        Frame("data", "l1", "bbo-tbt", "BTC-USDT"),
        Frame("data", "l1", "bbo-tbt", "ETH-USDT"),
        Frame("data", "l1", "bbo-tbt", "BTC-USDT"),
    ]


def test_okx_control_frames_text_pong_acks_errors_restart_notice_and_garbage() -> None:
    assert [outcome(okx, t) for t in lines("okx", "control")] == [
        Frame("control", stream="pong", detail="pong"),
        Frame("ack", detail='{"channel":"trades","instId":"BTC-USDT"}'),
        Frame("error", detail=okx.classify(lines("okx", "control")[2]).detail),
        Frame("control", stream="unsubscribe", detail="unsubscribe"),
        Frame("control", stream="channel-conn-count", detail="channel-conn-count"),
        Frame(
            "reconnect", detail="The connection will soon be closed for a service upgrade. Please reconnect."
        ),
        "UnknownFrame",  # books: not subscribed by this connector
        "ValueError",  # a text ping from the server is not JSON
        "UnknownFrame",  # not an object
    ]
    assert okx.classify(lines("okx", "control")[2]).detail.startswith("60012: Invalid request")


def test_okx_discovery_keeps_inst_ids_and_needs_state_live() -> None:
    assert okx.discovery_request() == RestRequest(
        "GET", "/api/v5/public/instruments", (("instType", "SPOT"),)
    )
    assert okx.parse_markets(lines("okx", "markets")[0]) == [
        Market("BTC-USDT", "BTC", "USDT", True),
        Market("ETH-USDT", "ETH", "USDT", True),
        Market("ETH-BTC", "ETH", "BTC", False),
        Market("NEW-USDT", "NEW", "USDT", False),
    ]
    with pytest.raises(UnknownFrame):
        okx.parse_markets('{"code":"50011","msg":"Too Many Requests","data":[]}')


def test_okx_subscriptions_are_one_arg_per_channel_and_symbol_chunked_by_100_with_a_text_ping() -> None:
    markets = [f"C{i}-USDT" for i in range(60)]
    messages = [
        json.loads(m) for m in okx.subscribe_messages(markets, ["trades", "ticker", "l1"], firehose=False)
    ]
    assert [m["op"] for m in messages] == ["subscribe"] * 2
    args = [a for m in messages for a in m["args"]]
    assert [len(m["args"]) for m in messages] == [100, 80]
    assert args[0] == {"channel": "trades", "instId": "C0-USDT"}
    assert {a["channel"] for a in args} == {"trades", "tickers", "bbo-tbt"} and len(args) == 180
    (unsub,) = okx.unsubscribe_messages(["BTC-USDT"], ["ticker"])
    assert json.loads(unsub) == {"op": "unsubscribe", "args": [{"channel": "tickers", "instId": "BTC-USDT"}]}
    assert okx.ping_message(1) == "ping"
    assert okx.session(ws_url=okx.WS_URL, bootstrap_body=None, conn_id="c").ping_interval_s == 20.0


def page(ids: range | list[int]) -> str:
    rows = [
        {"instId": "BTC-USDT", "side": "buy", "sz": "1", "px": "1", "tradeId": str(i), "ts": "1767225600000"}
        for i in sorted(ids, reverse=True)
    ]
    return json.dumps({"code": "0", "msg": "", "data": rows})


def history(after: int | None) -> RestRequest:
    cursor = () if after is None else (("after", str(after)),)
    return RestRequest("GET", HISTORY, (("instId", "BTC-USDT"), ("type", "1"), *cursor, ("limit", "100")))


def parse(body: str, request: RestRequest, *, after_id: int, until_id: int | None) -> TradesPage:
    return okx.parse_trades_page(body, request=request, headers={}, after_id=after_id, until_id=until_id)


def test_okx_gap_fill_walks_back_by_trade_id_until_the_last_trade_seen() -> None:
    first = okx.gap_fill_request("BTC-USDT", after_id=1000, until_id=1251)
    assert first == history(1251)
    p1 = parse(page(range(1151, 1251)), first, after_id=1000, until_id=1251)
    assert p1 == TradesPage(tuple(range(1151, 1251)), history(1151))
    p2 = parse(page(range(1051, 1151)), history(1151), after_id=1000, until_id=1251)
    assert p2 == TradesPage(tuple(range(1051, 1151)), history(1051))
    p3 = parse(page(range(951, 1051)), history(1051), after_id=1000, until_id=1251)
    assert p3 == TradesPage(tuple(range(951, 1051)), None)
    # Without an end: the newest page first.
    assert okx.gap_fill_request("BTC-USDT", after_id=1000, until_id=None) == history(None)
    assert parse(page(range(990, 1090)), history(None), after_id=1000, until_id=None).next_request is None


def test_okx_gap_fill_records_what_is_older_than_the_oldest_history() -> None:
    short = parse(page(range(1200, 1251)), history(1251), after_id=1000, until_id=1251)
    assert short == TradesPage(tuple(range(1200, 1251)), None, (1000, 1200))
    empty = parse(page([]), history(1151), after_id=1000, until_id=1251)
    assert empty == TradesPage((), None, (1000, 1151))
    with pytest.raises(UnknownFrame):
        parse(
            '{"code":"50011","msg":"Too Many Requests","data":[]}', history(None), after_id=1, until_id=None
        )


def test_okx_baseline_and_klines_requests() -> None:
    baseline = okx.recent_trades_request("BTC-USDT")
    assert baseline == RestRequest("GET", "/api/v5/market/trades", (("instId", "BTC-USDT"), ("limit", "500")))
    assert parse(page([5, 6]), baseline, after_id=1, until_id=None) == TradesPage((5, 6), None)
    assert okx.l1_poll_request("BTC-USDT") is None
    k = okx.klines_request("BTC-USDT", start_ms=1767225600000, end_ms=1767225660000)
    assert k.params == (
        ("instId", "BTC-USDT"),
        ("bar", "1m"),
        ("after", "1767225660001"),
        ("before", "1767225599999"),
        ("limit", "2"),
    )
    body = json.dumps(
        {
            "code": "0",
            "msg": "",
            "data": [
                ["1767225660000", "2", "2", "2", "2", "0.5", "1", "1", "0"],
                ["1767225600000", "1", "1", "1", "1", "12.4051", "12.4", "12.4", "1"],
            ],
        }
    )
    assert okx.parse_klines(body) == [Candle(1767225600000, "12.4051"), Candle(1767225660000, "0.5")]
