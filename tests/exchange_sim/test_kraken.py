"""Kraken websocket v2 and REST: status, per-symbol acks, snapshots, numbers, heartbeat, Trades paging."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets

from extractors.exchanges import kraken
from extractors.exchanges.base import RestRequest
from infra.exchange_sim import ExchangeSimulator
from tests.conftest import seconds
from tests.exchange_sim.helpers import http, recv_json

TRADE_KEYS = {"symbol", "side", "price", "qty", "ord_type", "trade_id", "timestamp"}


def exact(text: str | bytes) -> Any:
    """A frame with its JSON numbers kept as their text (as the lake reads them)."""
    return json.loads(text, parse_float=str, parse_int=str)


def test_ws_status_acks_per_symbol_trade_snapshot_updates_bbo_ticker_heartbeat_and_pong() -> None:
    async def main() -> None:
        async with ExchangeSimulator(("kraken",), symbols=3, rate=200, seed=7, ticker_interval_s=0.2) as s:
            await asyncio.sleep(seconds(0.3))
            async with websockets.connect(s.urls["kraken"].ws) as ws:
                status = await recv_json(ws)
                assert status["channel"] == "status" and status["data"][0]["system"] == "online"
                sub = {
                    "method": "subscribe",
                    "params": {"channel": "trade", "symbol": ["BTC/USD", "NOPE/USD"]},
                }
                await ws.send(json.dumps({**sub, "req_id": 1}))
                ack = await recv_json(ws)
                assert ack["success"] is True and ack["req_id"] == 1
                assert ack["result"] == {"channel": "trade", "symbol": "BTC/USD", "snapshot": True}
                assert {"time_in", "time_out"} <= set(ack)
                snapshot = exact(await ws.recv())
                nope = await recv_json(ws)
                assert nope["success"] is False and nope["error"] == "Currency pair not supported NOPE/USD"
                ticker = {"channel": "ticker", "symbol": ["ETH/USD"], "event_trigger": "bbo"}
                await ws.send(json.dumps({"method": "subscribe", "params": ticker, "req_id": 2}))
                await ws.send(json.dumps({"method": "ping", "req_id": 3}))
                first: dict[str, Any] = {}
                async with asyncio.timeout(seconds(5)):
                    while len(first) < 4:
                        m = exact(await ws.recv())
                        kind = m.get("channel") or m.get("method")
                        if kind in ("pong", "heartbeat") or m.get("type") == "update":
                            first.setdefault(kind, m)
        assert first["pong"]["req_id"] == "3" and first["heartbeat"] == {"channel": "heartbeat"}
        assert snapshot["type"] == "snapshot" and 0 < len(snapshot["data"]) <= 50
        items = [*snapshot["data"], *first["trade"]["data"]]
        for d in items:
            assert set(d) == TRADE_KEYS and d["symbol"] == "BTC/USD"
            rec = s.truth.find("kraken", "BTC/USD", d["trade_id"])
            assert rec is not None
            assert (rec.price, rec.size, rec.side, rec.ts_event) == (
                d["price"],
                d["qty"],
                d["side"],
                d["timestamp"],
            )
        ids = [int(d["trade_id"]) for d in snapshot["data"]]
        assert ids == list(range(ids[0], ids[0] + len(ids)))
        tick = first["ticker"]["data"][0]
        assert tick["symbol"] == "ETH/USD" and float(tick["bid"]) < float(tick["ask"])
        assert {"bid_qty", "ask_qty", "last", "volume", "vwap", "low", "high", "change", "change_pct"} <= set(
            tick
        )

    asyncio.run(main())


def test_rest_asset_pairs_use_legacy_names_and_the_connector_walk_fills_a_gap_by_time() -> None:
    async def main() -> None:
        async with ExchangeSimulator(("kraken",), symbols=2, rate=0, seed=7) as s:
            rest = s.urls["kraken"].rest
            market = s.server("kraken").market("BTC/USD")
            async with asyncio.timeout(seconds(20)):
                while len(market.history) < 2500:
                    await asyncio.sleep(0.05)
            status, _, pairs = await http("GET", rest + "/0/public/AssetPairs")
            assert status == 200 and pairs["error"] == []
            assert pairs["result"]["XXBTZUSD"]["wsname"] == "XBT/USD"
            assert pairs["result"]["XXBTZUSD"]["altname"] == "XBTUSD"
            assert [m.native_symbol for m in kraken.parse_markets(json.dumps(pairs))] == [
                "BTC/USD",
                "ETH/USD",
            ]
            _, _, unknown = await http("GET", rest + "/0/public/Trades?pair=NOPEUSD")
            assert unknown == {"error": ["EQuery:Unknown asset pair"]}

            first = market.history[0].trade_id
            after = first + 200
            seen: set[int] = set()
            request: RestRequest | None = kraken.gap_fill_request("BTC/USD", after_id=after, until_id=None)
            pages = 0
            while request is not None:
                _, _, body = await http("GET", rest + request.target)
                page = kraken.parse_trades_page(
                    json.dumps(body), request=request, headers={}, after_id=after, until_id=None
                )
                assert page.gap is None
                seen.update(page.ids)
                request = page.next_request
                pages += 1
        newest_first_page = max(seen) - 999
        assert set(range(after + 1, newest_first_page)) <= seen
        assert pages >= 3  # newest page, at least one step back, forward again

    asyncio.run(main())
