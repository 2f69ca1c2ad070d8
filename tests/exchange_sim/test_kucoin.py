"""KuCoin spot: token/welcome/ack/pong, topic frames, limits, truth equality, last-100 history."""

from __future__ import annotations

import asyncio
import json

import websockets

from infra.exchange_sim import ExchangeSimulator
from tests.conftest import seconds
from tests.exchange_sim.helpers import http, kucoin_connect, recv_json, recv_until


def test_bullet_welcome_ack_pong_and_invalid_token() -> None:
    async def main() -> None:
        async with ExchangeSimulator(("kucoin",), symbols=3, rate=50, seed=7) as s:
            rest = s.urls["kucoin"].rest
            _, _, bullet = await http("POST", rest + "/api/v1/bullet-public")
            server = bullet["data"]["instanceServers"][0]
            assert server["endpoint"] == s.urls["kucoin"].ws and server["pingInterval"] == 18000
            assert set(server) == {"endpoint", "encrypt", "protocol", "pingInterval", "pingTimeout"}
            ws = await kucoin_connect(rest, "c-7f")
            async with ws:
                await ws.send(
                    json.dumps(
                        {"id": "1", "type": "subscribe", "topic": "/market/match:BTC-USDT", "response": False}
                    )
                )
                await ws.send(json.dumps({"id": "p1", "type": "ping"}))
                # no ack without response:true; the pong is the next control frame
                assert await recv_until(ws, lambda m: m["type"] != "message") == {"id": "p1", "type": "pong"}
                await ws.send(
                    json.dumps(
                        {
                            "id": 42,
                            "type": "subscribe",
                            "topic": "/spotMarket/level1:BTC-USDT",
                            "response": True,
                        }
                    )
                )
                assert await recv_until(ws, lambda m: m["type"] != "message") == {"id": "42", "type": "ack"}
                await ws.send(
                    json.dumps(
                        {"id": 43, "type": "subscribe", "topic": "/market/nope:BTC-USDT", "response": True}
                    )
                )
                err = await recv_until(ws, lambda m: m["type"] == "error")
                assert (err["id"], err["code"]) == ("43", 404)
                many = ",".join(f"S{i}-USDT" for i in range(101))
                await ws.send(
                    json.dumps(
                        {"id": 44, "type": "subscribe", "topic": f"/market/match:{many}", "response": True}
                    )
                )
                err = await recv_until(ws, lambda m: m["type"] == "error")
                assert err["code"] == 509 and "100" in err["data"]
            async with websockets.connect(s.urls["kucoin"].ws + "?token=bad&connectId=x") as bad:
                err = await recv_json(bad)
                assert err["type"] == "error" and err["code"] == 401 and err["id"] == "x"

    asyncio.run(main())


def test_topic_frames_have_documented_shapes_and_matches_equal_truth() -> None:
    async def main() -> None:
        async with (
            ExchangeSimulator(("kucoin",), symbols=3, rate=200, seed=7) as s,
            await kucoin_connect(s.urls["kucoin"].rest) as ws,
        ):
            for i, topic in enumerate(
                [
                    "/market/match:BTC-USDT,ETH-USDT",
                    "/market/ticker:all",
                    "/spotMarket/level1:ETH-USDT",
                    "/market/ticker:BTC-USDT",
                ]
            ):
                await ws.send(json.dumps({"id": i, "type": "subscribe", "topic": topic, "response": True}))
            seen: dict[str, list[dict[str, object]]] = {}
            async with asyncio.timeout(seconds(5)):
                while (
                    min(
                        (len(seen.get(k, [])) for k in ("trade.l3match", "level1", "trade.ticker", "all")),
                        default=0,
                    )
                    < 3
                    or len(seen) < 4
                ):
                    m = await recv_json(ws)
                    if m["type"] == "message":
                        key = "all" if m["topic"] == "/market/ticker:all" else m["subject"]
                        seen.setdefault(key, []).append(m)
        for m in seen["trade.l3match"]:
            d = m["data"]
            assert m["topic"] == f"/market/match:{d['symbol']}"
            assert set(d) == {
                "symbol",
                "sequence",
                "tradeId",
                "side",
                "price",
                "size",
                "type",
                "makerOrderId",
                "takerOrderId",
                "time",
            }
            rec = s.truth.find("kucoin", d["symbol"], d["tradeId"])
            assert rec is not None and rec.delivered
            assert (rec.price, rec.size, rec.side, rec.ts_event) == (
                d["price"],
                d["size"],
                d["side"],
                d["time"],
            )
            assert rec.ts_ms == int(d["time"]) // 1_000_000
        for m in seen["all"]:
            assert m["subject"] in ("BTC-USDT", "ETH-USDT", "ETH-BTC")
            assert set(m["data"]) == {
                "bestAsk",
                "bestAskSize",
                "bestBid",
                "bestBidSize",
                "price",
                "size",
                "sequence",
                "time",
            }
        assert all(m["topic"] == "/market/ticker:BTC-USDT" for m in seen["trade.ticker"])
        for m in seen["level1"]:
            d = m["data"]
            assert set(d) == {"asks", "bids", "timestamp"} and float(d["bids"][0]) < float(d["asks"][0])

    asyncio.run(main())


def test_histories_serve_only_the_last_100_trades() -> None:
    async def main() -> None:
        async with ExchangeSimulator(("kucoin",), symbols=2, rate=600, seed=7) as s:
            rest = s.urls["kucoin"].rest
            async with asyncio.timeout(seconds(10)):
                while len(s.truth.records("kucoin", "BTC-USDT")) < 150:
                    await asyncio.sleep(0.05)
            status, headers, body = await http("GET", rest + "/api/v1/market/histories?symbol=BTC-USDT")
            truth = s.truth.records("kucoin", "BTC-USDT")
            rows = body["data"]
            assert status == 200 and body["code"] == "200000" and "gw-ratelimit-remaining" in headers
            assert len(rows) == 100
            by_id = {r.trade_id: r for r in truth}
            assert [r["sequence"] for r in rows] == [
                r.trade_id for r in truth if r.trade_id in {x["sequence"] for x in rows}
            ]
            assert rows[0]["sequence"] != truth[0].trade_id and all(x["sequence"] in by_id for x in rows)
            for x in rows:
                assert (x["price"], x["size"], x["side"], str(x["time"])) == (
                    by_id[x["sequence"]].price,
                    by_id[x["sequence"]].size,
                    by_id[x["sequence"]].side,
                    by_id[x["sequence"]].ts_event,
                )
            _, _, syms = await http("GET", rest + "/api/v2/symbols")
            assert {x["symbol"]: (x["baseCurrency"], x["quoteCurrency"]) for x in syms["data"]} == {
                "BTC-USDT": ("BTC", "USDT"),
                "ETH-USDT": ("ETH", "USDT"),
            }
            _, _, l1 = await http("GET", rest + "/api/v1/market/orderbook/level1?symbol=ETH-USDT")
            assert float(l1["data"]["bestBid"]) < float(l1["data"]["bestAsk"])

    asyncio.run(main())
