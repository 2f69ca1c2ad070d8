"""Exchange modules against documented-shape frames from tests/fixtures/<exchange>/<channel>.jsonl.

Every line of a fixture is one frame exactly as it would arrive (some deliberately ugly: ids as
strings, missing fields, new fields, duplicates, out of order, broken JSON); each test asserts the
exact classification of every line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from extractors.exchanges import CONNECTORS, binance, coinbase, kucoin
from extractors.exchanges.base import Connector, Frame, Market, RestRequest, TradesPage, UnknownFrame

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def lines(exchange: str, name: str) -> list[str]:
    return (FIXTURES / exchange / f"{name}.jsonl").read_text().splitlines()


def outcome(connector: Connector, text: str) -> Frame | str:
    """The frame, or the name of the error class for frames that must become dead letters."""
    try:
        return connector.classify(text)
    except UnknownFrame:
        return "UnknownFrame"
    except ValueError:
        return "ValueError"


# --- Binance -------------------------------------------------------------------------------------


def test_binance_trades_give_symbol_and_trade_id_including_string_ids_and_duplicates() -> None:
    assert [outcome(binance, t) for t in lines("binance", "trades")] == [
        Frame("data", "trades", "btcusdt@trade", "BTCUSDT", trade_ids=(5400012345,)),
        Frame("data", "trades", "btcusdt@trade", "BTCUSDT", trade_ids=(5400012346,)),
        Frame("data", "trades", "btcusdt@trade", "BTCUSDT", trade_ids=(5400012345,)),
        Frame("data", "trades", "ethusdt@trade", "ETHUSDT", trade_ids=(901,)),
        "UnknownFrame",
    ]


def test_binance_book_ticker_is_l1_and_incomplete_one_is_rejected() -> None:
    assert [outcome(binance, t) for t in lines("binance", "l1")] == [
        Frame("data", "l1", "btcusdt@bookTicker", "BTCUSDT"),
        Frame("data", "l1", "ethusdt@bookTicker", "ETHUSDT"),
        "UnknownFrame",
    ]


def test_binance_mini_ticker_array_has_no_single_symbol() -> None:
    assert [outcome(binance, t) for t in lines("binance", "ticker")] == [
        Frame("data", "ticker", "!miniTicker@arr"),
        Frame("data", "ticker", "btcusdt@miniTicker", "BTCUSDT"),
        "UnknownFrame",
    ]


def test_binance_control_frames_acks_errors_shutdown_and_garbage() -> None:
    assert [outcome(binance, t) for t in lines("binance", "control")] == [
        Frame("ack", detail="result"),
        Frame("control", detail="result"),
        Frame("error", detail="code 2: Invalid request: unknown variant"),
        Frame("reconnect", stream="!serverShutdown", detail="serverShutdown"),
        Frame("reconnect", detail="serverShutdown"),
        "UnknownFrame",
        "UnknownFrame",
        "ValueError",
    ]


def test_binance_discovery_keeps_status_and_spot_permission() -> None:
    assert binance.parse_markets(lines("binance", "markets")[0]) == [
        Market("BTCUSDT", "BTC", "USDT", True),
        Market("ETHBTC", "ETH", "BTC", True),
        Market("LUNAUSDT", "LUNA", "USDT", False),
        Market("XYZUSDT", "XYZ", "USDT", False),
        Market("1000SATSUSDC", "1000SATS", "USDC", False),
    ]


def test_binance_subscriptions_are_chunked_and_lower_case() -> None:
    symbols = [f"S{i}USDT" for i in range(150)]
    messages = [
        json.loads(m) for m in binance.subscribe_messages(symbols, ("ticker", "trades", "l1"), firehose=True)
    ]
    assert [m["method"] for m in messages] == ["SUBSCRIBE", "SUBSCRIBE"]
    assert [m["id"] for m in messages] == [1, 2]
    params = messages[0]["params"] + messages[1]["params"]
    assert len(messages[0]["params"]) == binance.STREAMS_PER_REQUEST
    assert params[:3] == ["!miniTicker@arr", "s0usdt@trade", "s0usdt@bookTicker"]
    assert params[-1] == "s149usdt@bookTicker"
    assert len(params) == 301
    unsub = json.loads(binance.unsubscribe_messages(["BTCUSDT"], ("trades",))[0])
    assert unsub["method"] == "UNSUBSCRIBE" and unsub["params"] == ["btcusdt@trade"]
    assert binance.MARKETS_PER_CONNECTION * 2 + 1 <= binance.MAX_STREAMS_PER_CONNECTION


def test_binance_gap_fill_pages_by_from_id_and_records_what_rest_skipped() -> None:
    first, second, empty, _ = lines("binance", "historical_trades")
    request = binance.gap_fill_request("BTCUSDT", after_id=100, until_id=None)
    assert request.target == "/api/v3/historicalTrades?symbol=BTCUSDT&fromId=101&limit=1000"
    assert binance.parse_trades_page(first, request=request, headers={}, after_id=100, until_id=None) == (
        TradesPage((101, 102), None)
    )
    request = binance.gap_fill_request("BTCUSDT", after_id=102, until_id=106)
    assert binance.parse_trades_page(second, request=request, headers={}, after_id=102, until_id=106) == (
        TradesPage((105,), None, gap=(102, 105))
    )
    request = binance.gap_fill_request("BTCUSDT", after_id=105, until_id=110)
    assert binance.parse_trades_page(empty, request=request, headers={}, after_id=105, until_id=110) == (
        TradesPage((), None, gap=(105, 110))
    )


def test_binance_gap_fill_continues_after_a_full_page() -> None:
    body = json.dumps([{"id": i, "price": "1", "qty": "1"} for i in range(1, 1001)])
    request = binance.gap_fill_request("ETHBTC", after_id=0, until_id=5000)
    page = binance.parse_trades_page(body, request=request, headers={}, after_id=0, until_id=5000)
    assert page.ids == tuple(range(1, 1001)) and page.gap is None
    assert page.next_request == RestRequest(
        "GET", "/api/v3/historicalTrades", (("symbol", "ETHBTC"), ("fromId", "1001"), ("limit", "1000")), 25
    )
    done = binance.parse_trades_page(body, request=request, headers={}, after_id=0, until_id=1001)
    assert done.next_request is None


def test_binance_rest_error_body_is_not_a_page() -> None:
    request = binance.gap_fill_request("NOPE", after_id=1, until_id=None)
    with pytest.raises(UnknownFrame):
        binance.parse_trades_page(
            lines("binance", "historical_trades")[3], request=request, headers={}, after_id=1, until_id=None
        )


# --- KuCoin --------------------------------------------------------------------------------------


def test_kucoin_matches_give_symbol_and_sequence() -> None:
    assert [outcome(kucoin, t) for t in lines("kucoin", "trades")] == [
        Frame("data", "trades", "/market/match:BTC-USDT", "BTC-USDT", trade_ids=(12840019911847401,)),
        Frame(
            "data", "trades", "/market/match:BTC-USDT,ETH-USDT", "ETH-USDT", trade_ids=(12840019911847404,)
        ),
        "UnknownFrame",
        "UnknownFrame",
    ]


def test_kucoin_ticker_all_takes_symbol_from_subject() -> None:
    assert [outcome(kucoin, t) for t in lines("kucoin", "ticker")] == [
        Frame("data", "ticker", "/market/ticker:all", "ETH-USDT"),
        Frame("data", "ticker", "/market/ticker:BTC-USDT", "BTC-USDT"),
        "UnknownFrame",
    ]


def test_kucoin_level1_takes_symbol_from_topic() -> None:
    assert [outcome(kucoin, t) for t in lines("kucoin", "l1")] == [
        Frame("data", "l1", "/spotMarket/level1:BTC-USDT", "BTC-USDT"),
        Frame("data", "l1", "/spotMarket/level1:ETH-USDT", "ETH-USDT"),
        "UnknownFrame",
    ]


def test_kucoin_control_frames() -> None:
    assert [outcome(kucoin, t) for t in lines("kucoin", "control")] == [
        Frame("control", detail="welcome"),
        Frame("control", detail="pong"),
        Frame("ack", detail="1767225600002"),
        Frame("error", detail="code 404: topic /market/nope:BTC-USDT is not found"),
        "UnknownFrame",
        "UnknownFrame",
        "UnknownFrame",
    ]


def test_kucoin_discovery_and_error_envelope() -> None:
    good, bad = lines("kucoin", "markets")
    assert kucoin.parse_markets(good) == [
        Market("BTC-USDT", "BTC", "USDT", True),
        Market("OLD-BTC", "OLD", "BTC", False),
        Market("ETH-USDC", "ETH", "USDC", True),
    ]
    with pytest.raises(UnknownFrame, match="400100"):
        kucoin.parse_markets(bad)


def test_kucoin_session_uses_token_endpoint_connect_id_and_ping_interval() -> None:
    body = lines("kucoin", "bullet")[0]
    session = kucoin.session(ws_url="", bootstrap_body=body, conn_id="kucoin-3")
    assert session.url == "wss://ws-api-spot.kucoin.com/?token=tok%2Fen%2B1&connectId=kucoin-3"
    assert session.ping_interval_s == 18.0 and session.await_welcome
    override = kucoin.session(ws_url="ws://127.0.0.1:9/ws", bootstrap_body=body, conn_id="k")
    assert override.url == "ws://127.0.0.1:9/ws?token=tok%2Fen%2B1&connectId=k"
    assert json.loads(kucoin.ping_message(7) or "") == {"id": "ping-7", "type": "ping"}


def test_kucoin_topics_respect_symbols_per_topic_and_one_topic_per_request() -> None:
    symbols = [f"S{i}-USDT" for i in range(150)]
    messages = [
        json.loads(m) for m in kucoin.subscribe_messages(symbols, ("ticker", "trades", "l1"), firehose=True)
    ]
    assert [m["topic"].split(":")[0] for m in messages] == [
        "/market/ticker",
        "/market/match",
        "/market/match",
        "/spotMarket/level1",
        "/spotMarket/level1",
    ]
    assert messages[0]["topic"] == "/market/ticker:all"
    assert messages[1]["topic"] == "/market/match:" + ",".join(symbols[:100])
    assert messages[2]["topic"] == "/market/match:" + ",".join(symbols[100:])
    assert all(m["type"] == "subscribe" and m["response"] is True for m in messages)
    assert len({m["id"] for m in messages}) == len(messages)
    assert kucoin.MARKETS_PER_CONNECTION * 2 + 1 <= kucoin.TOPICS_PER_CONNECTION


def test_kucoin_histories_record_a_gap_only_when_the_last_seen_trade_is_older_than_the_page() -> None:
    body, limited = lines("kucoin", "histories")
    request = kucoin.gap_fill_request("BTC-USDT", after_id=1545896668571, until_id=None)
    assert request.target == "/api/v1/market/histories?symbol=BTC-USDT"
    covered = kucoin.parse_trades_page(
        body, request=request, headers={}, after_id=1545896668571, until_id=None
    )
    assert covered == TradesPage((1545896668571, 1545896668578), None)
    lost = kucoin.parse_trades_page(body, request=request, headers={}, after_id=1545896668500, until_id=None)
    assert lost == TradesPage((1545896668571, 1545896668578), None, gap=(1545896668500, 1545896668571))
    with pytest.raises(UnknownFrame, match="429000"):
        kucoin.parse_trades_page(limited, request=request, headers={}, after_id=1, until_id=None)


# --- Coinbase ------------------------------------------------------------------------------------


def test_coinbase_matches_and_last_match_carry_trade_ids() -> None:
    assert [outcome(coinbase, t) for t in lines("coinbase", "trades")] == [
        Frame("data", "trades", "matches", "BTC-USD", trade_ids=(801234566,)),
        Frame("data", "trades", "matches", "BTC-USD", trade_ids=(801234567,)),
        "UnknownFrame",
    ]


def test_coinbase_ticker_including_the_sparse_first_one() -> None:
    assert [outcome(coinbase, t) for t in lines("coinbase", "ticker")] == [
        Frame("data", "ticker", "ticker", "BTC-USD"),
        Frame("data", "ticker", "ticker", "ETH-USD"),
        "UnknownFrame",
    ]


def test_coinbase_heartbeat_reports_last_trade_id_and_unknown_types_are_rejected() -> None:
    assert [outcome(coinbase, t) for t in lines("coinbase", "control")] == [
        Frame("ack", detail="subscriptions"),
        Frame("control", stream="heartbeat", native_symbol="BTC-USD", last_trade_id=20, detail="heartbeat"),
        Frame("control", stream="heartbeat", native_symbol="ETH-USD", detail="heartbeat"),
        Frame("error", detail="Failed to subscribe: ZZZ-USD is not a valid product"),
        Frame("control", detail="status"),
        "UnknownFrame",
        "UnknownFrame",
    ]


def test_coinbase_discovery_requires_online_and_enabled() -> None:
    assert coinbase.parse_markets(lines("coinbase", "markets")[0]) == [
        Market("BTC-USD", "BTC", "USD", True),
        Market("OLD-USD", "OLD", "USD", False),
        Market("ETH-EUR", "ETH", "EUR", False),
        Market("SOL-USDT", "SOL", "USDT", True),
    ]


def test_coinbase_subscribe_always_includes_heartbeat() -> None:
    assert [
        json.loads(m) for m in coinbase.subscribe_messages(["BTC-USD"], ("trades", "l1"), firehose=True)
    ] == [{"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["heartbeat", "ticker", "matches"]}]
    assert coinbase.subscribe_messages([], ("trades",), firehose=True) == []


def test_coinbase_gap_fill_walks_back_with_the_after_cursor() -> None:
    page, empty = lines("coinbase", "product_trades")
    request = coinbase.gap_fill_request("BTC-USD", after_id=1998, until_id=2001)
    assert request.target == "/products/BTC-USD/trades?limit=1000&after=2001"
    assert coinbase.parse_trades_page(page, request=request, headers={}, after_id=1998, until_id=2001) == (
        TradesPage((1999, 2000), None)
    )
    short = coinbase.parse_trades_page(page, request=request, headers={}, after_id=1990, until_id=2001)
    assert short == TradesPage((1999, 2000), None, gap=(1990, 1999))
    request = coinbase.gap_fill_request("BTC-USD", after_id=10, until_id=50)
    assert coinbase.parse_trades_page(empty, request=request, headers={}, after_id=10, until_id=50) == (
        TradesPage((), None, gap=(10, 50))
    )
    full = json.dumps([{"trade_id": i, "price": "1", "size": "1"} for i in range(3000, 2000, -1)])
    request = coinbase.gap_fill_request("BTC-USD", after_id=100, until_id=None)
    nxt = coinbase.parse_trades_page(
        full, request=request, headers={"CB-AFTER": "2001"}, after_id=100, until_id=None
    )
    assert nxt.gap is None and nxt.next_request is not None
    assert nxt.next_request.target == "/products/BTC-USD/trades?limit=1000&after=2001"


def test_coinbase_polls_book_level_1() -> None:
    assert coinbase.l1_poll_request("BTC-USD") == RestRequest(
        "GET", "/products/BTC-USD/book", (("level", "1"),)
    )


@pytest.mark.parametrize("name", sorted(CONNECTORS))
def test_every_connector_builds_discovery_and_gap_requests(name: str) -> None:
    connector = CONNECTORS[name]
    assert name == connector.NAME
    assert connector.discovery_request().method == "GET"
    assert connector.gap_fill_request("X", after_id=1, until_id=None).path.startswith("/")
    assert connector.recent_trades_request("X").method == "GET"
    assert connector.MARKETS_PER_CONNECTION > 0 and connector.REST_WEIGHT_PER_S > 0
