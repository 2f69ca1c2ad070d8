"""Binance spot: stream and REST shapes, method replies, limits, truth equality, history depth."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import websockets

from infra.exchange_sim import ExchangeSimulator
from tests.conftest import seconds
from tests.exchange_sim.helpers import http, recv_json, recv_until

TRADE_KEYS = {"e", "E", "s", "t", "p", "q", "T", "m", "M"}


def sim(**kw: object) -> ExchangeSimulator:
    return ExchangeSimulator(
        ("binance",), symbols=kw.pop("symbols", 4), rate=kw.pop("rate", 200), seed=7, **kw
    )  # type: ignore[arg-type]


def test_trade_stream_frames_equal_ground_truth_and_ids_are_consecutive() -> None:
    async def main() -> None:
        async with sim() as s:
            async with websockets.connect(s.urls["binance"].ws + "/ws/btcusdt@trade") as ws:
                frames = [await recv_json(ws) for _ in range(15)]
            for f in frames:
                assert set(f) == TRADE_KEYS and f["e"] == "trade" and f["s"] == "BTCUSDT"
                assert isinstance(f["p"], str) and isinstance(f["q"], str) and f["E"] >= f["T"]
                rec = s.truth.find("binance", "BTCUSDT", str(f["t"]))
                assert rec is not None and rec.delivered
                assert (rec.price, rec.size, rec.ts_ms) == (f["p"], f["q"], f["T"])
                assert rec.side == ("sell" if f["m"] else "buy")
                assert (rec.symbol, rec.base, rec.quote) == ("BTC-USDT", "BTC", "USDT")
            ids = [f["t"] for f in frames]
            assert ids == list(range(ids[0], ids[0] + len(ids)))

    asyncio.run(main())


def test_combined_stream_wraps_frames_and_mini_ticker_array_lists_changed_markets() -> None:
    async def main() -> None:
        async with sim(ticker_interval_s=0.3) as s:
            url = s.urls["binance"].ws + "/stream?streams=!miniTicker@arr/ethusdt@bookTicker/ethusdt@aggTrade"
            async with websockets.connect(url) as ws:
                arr = await recv_until(ws, lambda m: m["stream"] == "!miniTicker@arr")
                book = await recv_until(ws, lambda m: m["stream"] == "ethusdt@bookTicker")
                agg = await recv_until(ws, lambda m: m["stream"] == "ethusdt@aggTrade")
        assert set(arr) == {"stream", "data"} and isinstance(arr["data"], list) and arr["data"]
        for t in arr["data"]:
            assert set(t) == {"e", "E", "s", "c", "o", "h", "l", "v", "q"} and t["e"] == "24hrMiniTicker"
            assert float(t["l"]) <= float(t["c"]) <= float(t["h"])
        assert set(book["data"]) == {"u", "s", "b", "B", "a", "A"}
        assert float(book["data"]["b"]) < float(book["data"]["a"])
        assert set(agg["data"]) == {"e", "E", "s", "a", "p", "q", "f", "l", "T", "m", "M"}

    asyncio.run(main())


def test_method_frames_reply_as_documented_and_stream_cap_is_1024() -> None:
    async def main() -> None:
        async with sim(max_incoming=50) as s, websockets.connect(s.urls["binance"].ws + "/ws") as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 7}))
            assert await recv_json(ws) == {"result": None, "id": 7}
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 9}))
            assert await recv_until(ws, lambda m: m.get("id") == 9) == {
                "result": ["btcusdt@trade"],
                "id": 9,
            }
            await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": 8}))
            assert await recv_until(ws, lambda m: m.get("id") == 8) == {"result": None, "id": 8}
            await ws.send(json.dumps({"method": "GET_PROPERTY", "params": ["combined"], "id": 11}))
            assert await recv_until(ws, lambda m: m.get("id") == 11) == {"result": False, "id": 11}
            await ws.send("{not json")
            bad = await recv_until(ws, lambda m: "code" in m)
            assert bad["code"] == 3 and bad["id"] is None
            many = [f"sym{i}@trade" for i in range(1025)]
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": many, "id": 12}))
            err = await recv_until(ws, lambda m: m.get("id") == 12)
            assert err["code"] == 2 and "1024" in err["msg"]
            s.inject("binance", "reject_subscribe")
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 13}))
            rej = await recv_until(ws, lambda m: m.get("id") == 13)
            assert rej["code"] == 2 and set(rej) == {"code", "msg", "id"}

    asyncio.run(main())


def test_more_than_five_incoming_messages_per_second_close_with_1008() -> None:
    async def main() -> None:
        async with sim() as s, websockets.connect(s.urls["binance"].ws + "/ws") as ws:
            for i in range(6):
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
            async with asyncio.timeout(seconds(5)):
                try:
                    while True:
                        await ws.recv()
                except websockets.ConnectionClosed as closed:
                    assert closed.rcvd is not None and closed.rcvd.code == 1008

    asyncio.run(main())


def test_unanswered_server_pings_disconnect_but_answered_ones_keep_the_link() -> None:
    async def main() -> None:
        async with sim(rate=20, ping_interval_s=0.1, ping_timeout_s=0.5) as s:
            url = s.urls["binance"].ws + "/ws/btcusdt@bookTicker"
            async with aiohttp.ClientSession() as session, session.ws_connect(url, autoping=False) as silent:
                saw_ping = False
                async with asyncio.timeout(seconds(5)):
                    async for msg in silent:
                        saw_ping |= msg.type == aiohttp.WSMsgType.PING
                assert saw_ping and silent.close_code == 1008
            async with websockets.connect(url) as polite:  # answers pings automatically
                await asyncio.sleep(seconds(1.2))
                assert (await recv_json(polite))["s"] == "BTCUSDT"

    asyncio.run(main())


def test_rest_history_pages_back_by_id_to_the_first_trade() -> None:
    async def main() -> None:
        async with sim(symbols=2, rate=400) as s:
            await asyncio.sleep(seconds(0.8))
            truth = s.truth.records("binance", "BTCUSDT")
            rest = s.urls["binance"].rest
            first = int(truth[0].trade_id)
            got: list[dict[str, object]] = []
            from_id = first
            while len(got) < len(truth):
                status, headers, page = await http(
                    "GET", f"{rest}/api/v3/historicalTrades?symbol=BTCUSDT&fromId={from_id}&limit=50"
                )
                assert status == 200 and int(headers["x-mbx-used-weight-1m"]) > 0 and page
                got += page
                from_id = page[-1]["id"] + 1
            assert [(str(r["id"]), r["price"], r["qty"]) for r in got[: len(truth)]] == [
                (t.trade_id, t.price, t.size) for t in truth
            ]
            assert set(got[0]) == {"id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch"}
            _, _, agg0 = await http("GET", f"{rest}/api/v3/aggTrades?symbol=BTCUSDT&limit=1000")
            assert [a["f"] for a in agg0[:3]] == [r["id"] for r in got[:3]]
            assert set(agg0[0]) == {"a", "p", "q", "f", "l", "T", "m", "M"}
            _, _, aggs = await http(
                "GET", f"{rest}/api/v3/aggTrades?symbol=BTCUSDT&fromId={agg0[1]['a']}&limit=3"
            )
            assert aggs == agg0[1:4]
            _, _, recent = await http("GET", f"{rest}/api/v3/trades?symbol=BTCUSDT&limit=5")
            assert len(recent) == 5 and recent == sorted(recent, key=lambda r: r["id"])
            _, _, kl = await http("GET", f"{rest}/api/v3/klines?symbol=BTCUSDT&interval=1m")
            assert sum(k[8] for k in kl) >= len(truth) and len(kl[0]) == 12
            status, _, err = await http("GET", f"{rest}/api/v3/trades?symbol=NOPE")
            assert status == 400 and err == {"code": -1121, "msg": "Invalid symbol."}

    asyncio.run(main())


def test_weight_budget_overrun_answers_429_with_retry_after_and_code_1003() -> None:
    async def main() -> None:
        async with sim(weight_limit=50) as s:
            url = s.urls["binance"].rest + "/api/v3/exchangeInfo"
            results = [await http("GET", url) for _ in range(3)]
            assert [r[0] for r in results] == [200, 200, 429]
            assert [r[1]["x-mbx-used-weight-1m"] for r in results] == ["20", "40", "60"]
            _, headers, body = results[2]
            assert body["code"] == -1003 and int(headers["retry-after"]) >= 1

    asyncio.run(main())


def test_exchange_info_shows_status_changes_and_new_listings() -> None:
    async def main() -> None:
        async with sim() as s:
            s.delist("binance", "ETHBTC")
            s.halt("binance", "ETHUSDT")
            assert s.list_market("binance", "NEWX", "USDT", usd_price=2.0) == "NEWXUSDT"
            _, _, info = await http("GET", s.urls["binance"].rest + "/api/v3/exchangeInfo")
            status = {x["symbol"]: x["status"] for x in info["symbols"]}
            assert (
                status["ETHBTC"] == "BREAK"
                and status["ETHUSDT"] == "HALT"
                and status["NEWXUSDT"] == "TRADING"
            )
            new = next(x for x in info["symbols"] if x["symbol"] == "NEWXUSDT")
            assert (new["baseAsset"], new["quoteAsset"]) == ("NEWX", "USDT")
            assert {f["filterType"] for f in new["filters"]} >= {"PRICE_FILTER", "LOT_SIZE"}
            frozen = len(s.truth.records("binance", "ETHBTC"))
            await asyncio.sleep(seconds(0.5))
            assert len(s.truth.records("binance", "ETHBTC")) == frozen  # delisted: no more trades
            assert s.truth.records("binance", "NEWXUSDT")  # the new listing trades
            _, _, trades = await http("GET", s.urls["binance"].rest + "/api/v3/trades?symbol=NEWXUSDT")
            assert [str(t["id"]) for t in trades] == [
                r.trade_id for r in s.truth.records("binance", "NEWXUSDT")
            ][-500:]

    asyncio.run(main())
