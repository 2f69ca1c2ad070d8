"""Bybit spot v5 websocket and REST: acks, 10-arg limit, pings, topic pushes, the 60-trade history."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets

from extractors.exchanges import bybit
from infra.exchange_sim import ExchangeSimulator
from tests.conftest import seconds
from tests.exchange_sim.helpers import http, recv_json

TRADE_KEYS = {"T", "s", "S", "v", "p", "i", "BT"}


def test_ws_acks_rejects_pings_and_pushes_trades_tickers_and_level1_books() -> None:
    async def main() -> None:
        s = ExchangeSimulator(("bybit",), symbols=3, rate=200, seed=7)
        async with s, websockets.connect(s.urls["bybit"].ws + "/v5/public/spot") as ws:
            eleven = [f"publicTrade.A{i}USDT" for i in range(11)]
            await ws.send(json.dumps({"req_id": "0", "op": "subscribe", "args": eleven}))
            assert (await recv_json(ws))["success"] is False
            await ws.send(json.dumps({"req_id": "1", "op": "subscribe", "args": ["publicTrade.NOPEUSDT"]}))
            nope = await recv_json(ws)
            assert nope["success"] is False and nope["ret_msg"] == "Invalid symbol :[publicTrade.NOPEUSDT]"
            for message in bybit.subscribe_messages(["BTCUSDT"], ("trades", "ticker", "l1"), firehose=False):
                await ws.send(message)
            ack = await recv_json(ws)
            assert ack["success"] is True and ack["op"] == "subscribe" and ack["req_id"] == "1"
            await ws.send(bybit.ping_message(1) or "")
            first: dict[str, Any] = {}
            async with asyncio.timeout(seconds(5)):
                while len(first) < 4:
                    m = json.loads(await ws.recv())
                    first.setdefault(m.get("topic", "").partition(".")[0] or m.get("ret_msg"), m)
        assert first["pong"]["op"] == "ping" and first["pong"]["req_id"] == "p1"
        for d in first["publicTrade"]["data"]:
            assert set(d) == TRADE_KEYS and d["s"] == "BTCUSDT"
            rec = s.truth.find("bybit", "BTCUSDT", d["i"])
            assert rec is not None and (rec.price, rec.size) == (d["p"], d["v"])
            assert rec.side == d["S"].lower()
        assert {"lastPrice", "prevPrice24h", "volume24h", "turnover24h"} <= set(first["tickers"]["data"])
        book = first["orderbook"]
        assert book["topic"] == "orderbook.1.BTCUSDT" and "cts" in book
        assert float(book["data"]["b"][0][0]) < float(book["data"]["a"][0][0])

    asyncio.run(main())


def test_rest_instruments_recent_trades_serve_only_the_last_60_and_klines() -> None:
    async def main() -> None:
        async with ExchangeSimulator(("bybit",), symbols=2, rate=0, seed=7) as s:
            rest = s.urls["bybit"].rest
            market = s.server("bybit").market("BTCUSDT")
            async with asyncio.timeout(seconds(20)):
                while len(market.history) < 200:
                    await asyncio.sleep(0.05)
            _, _, info = await http("GET", rest + "/v5/market/instruments-info?category=spot")
            assert [(m.native_symbol, m.base, m.quote) for m in bybit.parse_markets(json.dumps(info))] == [
                ("BTCUSDT", "BTC", "USDT"),
                ("ETHUSDT", "ETH", "USDT"),
            ]
            first = market.history[0].trade_id
            request = bybit.gap_fill_request("BTCUSDT", after_id=first, until_id=None)
            _, _, body = await http("GET", rest + request.target)
            newest = market.history[-1].trade_id
            page = bybit.parse_trades_page(
                json.dumps(body), request=request, headers={}, after_id=first, until_id=None
            )
            assert len(page.ids) == 60 and page.ids[-1] <= newest and page.gap == (first, page.ids[0])
            start = market.history[0].ts_us // 60_000_000 * 60_000
            klines = bybit.klines_request("BTCUSDT", start_ms=start, end_ms=start + 60_000)
            _, _, candles = await http("GET", rest + klines.target)
            assert bybit.parse_klines(json.dumps(candles))[0].start_ms == start

    asyncio.run(main())
