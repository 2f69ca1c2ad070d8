"""Coinbase Exchange: subscriptions reply, last_match/match/ticker/heartbeat, errors, trade paging."""

from __future__ import annotations

import asyncio
import json

import websockets

from infra.exchange_sim import ExchangeSimulator
from tests.conftest import seconds
from tests.exchange_sim.helpers import http, recv_json, recv_until

MATCH_KEYS = {
    "type",
    "trade_id",
    "maker_order_id",
    "taker_order_id",
    "side",
    "size",
    "price",
    "product_id",
    "sequence",
    "time",
}


def test_subscribe_reply_last_match_matches_and_heartbeat() -> None:
    async def main() -> None:
        async with ExchangeSimulator(("coinbase",), symbols=3, rate=200, seed=7, ticker_interval_s=0.2) as s:
            await asyncio.sleep(seconds(0.3))
            async with websockets.connect(s.urls["coinbase"].ws) as ws:
                sub = {
                    "type": "subscribe",
                    "product_ids": ["BTC-USD"],
                    "channels": ["matches", "heartbeat", {"name": "ticker", "product_ids": ["ETH-USD"]}],
                }
                await ws.send(json.dumps(sub))
                assert await recv_json(ws) == {
                    "type": "subscriptions",
                    "channels": [
                        {"name": "heartbeat", "product_ids": ["BTC-USD"]},
                        {"name": "matches", "product_ids": ["BTC-USD"]},
                        {"name": "ticker", "product_ids": ["ETH-USD"]},
                    ],
                }
                first_match = await recv_until(ws, lambda m: m["type"] in ("match", "last_match"))
                matches = [await recv_until(ws, lambda m: m["type"] == "match") for _ in range(5)]
                beat = await recv_until(ws, lambda m: m["type"] == "heartbeat")
                tick = await recv_until(ws, lambda m: m["type"] == "ticker")
        assert first_match["type"] == "last_match"
        for m in [first_match, *matches]:
            assert set(m) == MATCH_KEYS and m["product_id"] == "BTC-USD"
            rec = s.truth.find("coinbase", "BTC-USD", str(m["trade_id"]))
            assert rec is not None and rec.delivered
            assert (rec.price, rec.size, rec.ts_event) == (m["price"], m["size"], m["time"])
            assert rec.side == ("sell" if m["side"] == "buy" else "buy")  # match side is the maker's
        ids = [m["trade_id"] for m in matches]
        assert ids == list(range(ids[0], ids[0] + 5))
        assert (
            set(beat) == {"type", "sequence", "last_trade_id", "product_id", "time"}
            and beat["last_trade_id"] >= ids[0]
        )
        assert tick["product_id"] == "ETH-USD" and float(tick["best_bid"]) < float(tick["best_ask"])
        assert {
            "open_24h",
            "volume_24h",
            "low_24h",
            "high_24h",
            "volume_30d",
            "side",
            "trade_id",
            "last_size",
        } <= set(tick)

    asyncio.run(main())


def test_subscribe_errors_and_the_five_second_deadline() -> None:
    async def main() -> None:
        async with (
            ExchangeSimulator(
                ("coinbase",), symbols=2, rate=50, seed=7, subscribe_deadline_s=seconds(0.3)
            ) as s,
            websockets.connect(s.urls["coinbase"].ws) as ws,
        ):
            await ws.send(
                json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["level2"]})
            )
            err = await recv_json(ws)
            assert (
                err["type"] == "error"
                and err["message"] == "Failed to subscribe"
                and "authentication" in err["reason"]
            )
            await ws.send(
                json.dumps({"type": "subscribe", "product_ids": ["NOPE-USD"], "channels": ["matches"]})
            )
            assert "NOPE-USD" in (await recv_json(ws))["reason"]
            with_deadline = asyncio.timeout(seconds(3))
            async with with_deadline:
                try:
                    while True:
                        await ws.recv()
                except websockets.ConnectionClosed as closed:
                    assert closed.rcvd is not None and closed.rcvd.code == 1008

    asyncio.run(main())


def test_trades_cursor_pagination_walks_back_and_forward_over_the_whole_history() -> None:
    async def main() -> None:
        async with ExchangeSimulator(("coinbase",), symbols=2, rate=300, seed=7) as s:
            await asyncio.sleep(seconds(0.6))
            s.halt("coinbase", "BTC-USD")  # freeze the history so pages are stable
            truth = s.truth.records("coinbase", "BTC-USD")
            rest = s.urls["coinbase"].rest + "/products/BTC-USD/trades"
            status, headers, page = await http("GET", rest + "?limit=20")
            got = list(page)
            assert (
                status == 200
                and headers["cb-before"] == str(page[0]["trade_id"])
                and headers["cb-after"] == str(page[-1]["trade_id"])
            )
            while True:
                _, headers, page = await http("GET", f"{rest}?limit=20&after={headers['cb-after']}")
                if not page:
                    break
                got += page
            assert [str(r["trade_id"]) for r in reversed(got)] == [t.trade_id for t in truth]
            assert [(r["price"], r["size"]) for r in reversed(got)] == [(t.price, t.size) for t in truth]
            _, _, newer = await http("GET", f"{rest}?limit=3&before={truth[0].trade_id}")
            assert [str(r["trade_id"]) for r in newer] == [t.trade_id for t in truth[1:4]][::-1]
            _, _, products = await http("GET", s.urls["coinbase"].rest + "/products")
            btc = next(p for p in products if p["id"] == "BTC-USD")
            assert (btc["base_currency"], btc["quote_currency"], btc["trading_disabled"]) == (
                "BTC",
                "USD",
                True,
            )
            _, _, book = await http("GET", s.urls["coinbase"].rest + "/products/ETH-USD/book?level=1")
            assert float(book["bids"][0][0]) < float(book["asks"][0][0]) and len(book["bids"][0]) == 3

    asyncio.run(main())
