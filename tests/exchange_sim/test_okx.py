"""OKX v5 websocket and REST: per-arg acks and errors, string numbers, text ping, history-trades by id."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets

from extractors.exchanges import okx
from extractors.exchanges.base import RestRequest
from infra.exchange_sim import ExchangeSimulator
from tests.conftest import seconds
from tests.exchange_sim.helpers import http, recv_json

TRADE_KEYS = {"instId", "tradeId", "px", "sz", "side", "ts", "count"}


def test_ws_acks_per_arg_errors_for_unknown_instruments_trades_tickers_bbo_and_text_pong() -> None:
    async def main() -> None:
        async with (
            ExchangeSimulator(("okx",), symbols=3, rate=200, seed=7) as s,
            websockets.connect(s.urls["okx"].ws + "/ws/v5/public") as ws,
        ):
            args = [
                {"channel": "trades", "instId": "BTC-USDT"},
                {"channel": "trades", "instId": "NOPE-USDT"},
            ]
            await ws.send(json.dumps({"op": "subscribe", "args": args}))
            ack, nope = await recv_json(ws), await recv_json(ws)
            assert ack["event"] == "subscribe" and ack["arg"] == args[0] and "connId" in ack
            assert nope["event"] == "error" and nope["code"] == "60018"
            more = [
                {"channel": "tickers", "instId": "ETH-USDT"},
                {"channel": "bbo-tbt", "instId": "ETH-USDT"},
            ]
            await ws.send(json.dumps({"op": "subscribe", "args": more}))
            await ws.send("ping")
            first: dict[str, Any] = {}
            async with asyncio.timeout(seconds(5)):
                while len(first) < 4:
                    m = await ws.recv()
                    if m == "pong":
                        first["pong"] = m
                        continue
                    doc = json.loads(m)
                    if "data" in doc:
                        first.setdefault(doc["arg"]["channel"], doc)
        trade = first["trades"]["data"][0]
        assert set(trade) == TRADE_KEYS and trade["instId"] == "BTC-USDT" and trade["count"] == "1"
        rec = s.truth.find("okx", "BTC-USDT", trade["tradeId"])
        assert rec is not None
        assert (rec.price, rec.size, rec.side, rec.ts_event) == (
            trade["px"],
            trade["sz"],
            trade["side"],
            trade["ts"],
        )
        tick = first["tickers"]["data"][0]
        assert tick["instId"] == "ETH-USDT" and float(tick["bidPx"]) < float(tick["askPx"])
        assert {"last", "open24h", "high24h", "low24h", "vol24h", "volCcy24h", "bidSz", "askSz", "ts"} <= set(
            tick
        )
        bbo = first["bbo-tbt"]
        assert bbo["arg"] == more[1] and len(bbo["data"][0]["asks"][0]) == 4 and bbo["data"][0]["seqId"] >= 1

    asyncio.run(main())


def test_rest_instruments_and_the_connector_walk_back_by_trade_id_fills_a_gap() -> None:
    async def main() -> None:
        async with ExchangeSimulator(("okx",), symbols=2, rate=0, seed=7) as s:
            rest = s.urls["okx"].rest
            market = s.server("okx").market("BTC-USDT")
            async with asyncio.timeout(seconds(20)):
                while len(market.history) < 600:
                    await asyncio.sleep(0.05)
            _, _, instruments = await http("GET", rest + "/api/v5/public/instruments?instType=SPOT")
            assert [m.native_symbol for m in okx.parse_markets(json.dumps(instruments))] == [
                "BTC-USDT",
                "ETH-USDT",
            ]
            _, _, unknown = await http("GET", rest + "/api/v5/market/trades?instId=NOPE-USDT")
            assert unknown["code"] == "51001" and unknown["data"] == []

            first = market.history[0].trade_id
            after, until = first + 100, first + 450
            seen: set[int] = set()
            request: RestRequest | None = okx.gap_fill_request("BTC-USDT", after_id=after, until_id=until)
            pages = 0
            while request is not None:
                _, _, body = await http("GET", rest + request.target)
                page = okx.parse_trades_page(
                    json.dumps(body), request=request, headers={}, after_id=after, until_id=until
                )
                assert page.gap is None
                seen.update(page.ids)
                request = page.next_request
                pages += 1
            _, _, candles = await http(
                "GET", rest + okx.klines_request("BTC-USDT", start_ms=0, end_ms=2**62).target
            )
        assert set(range(after + 1, until)) <= seen and max(seen) == until - 1
        assert pages == 4  # 100 a page back from `until`, the last one reaching `after`
        volume = sum(c.volume and float(c.volume) for c in okx.parse_klines(json.dumps(candles)))
        assert volume > 0

    asyncio.run(main())
