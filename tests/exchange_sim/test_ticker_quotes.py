"""Coinbase and KuCoin tickers carry the inside quote with its sizes, in the documented shape.

Silver derives L1 rows from them (Coinbase has no websocket L1), so the simulator must send what
the real feeds send (exchanges.md 3.3 and 4A.2), and the connectors must land them as ``ticker``.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import websockets

from extractors.exchanges import coinbase, kucoin
from extractors.exchanges.base import Frame
from infra.exchange_sim import ExchangeSimulator
from tests.conftest import seconds
from tests.exchange_sim.helpers import kucoin_connect

#: exchanges.md 4A.2, the ticker channel.
COINBASE_TICKER_KEYS = {
    "type",
    "sequence",
    "product_id",
    "price",
    "open_24h",
    "volume_24h",
    "low_24h",
    "high_24h",
    "volume_30d",
    "best_bid",
    "best_bid_size",
    "best_ask",
    "best_ask_size",
    "side",
    "time",
    "trade_id",
    "last_size",
}
#: exchanges.md 3.3, ``/market/ticker:{sym}`` and ``/market/ticker:all``.
KUCOIN_TICKER_KEYS = {"sequence", "price", "size", "bestAsk", "bestAskSize", "bestBid", "bestBidSize", "time"}


def assert_quote(bid: str, bid_size: str, ask: str, ask_size: str) -> None:
    assert Decimal(bid) < Decimal(ask)
    assert Decimal(bid_size) > 0 and Decimal(ask_size) > 0


def test_coinbase_tickers_carry_best_bid_ask_with_sizes_and_land_as_ticker() -> None:
    async def main() -> list[str]:
        async with (
            ExchangeSimulator(("coinbase",), symbols=2, rate=200, seed=5) as s,
            websockets.connect(s.urls["coinbase"].ws) as ws,
        ):
            await ws.send(
                json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["ticker"]})
            )
            frames: list[str] = []
            async with asyncio.timeout(seconds(5)):
                while len(frames) < 5:
                    text = str(await ws.recv())
                    if json.loads(text)["type"] == "ticker":
                        frames.append(text)
        return frames

    for text in asyncio.run(main()):
        doc: dict[str, Any] = json.loads(text)
        assert set(doc) == COINBASE_TICKER_KEYS
        assert_quote(doc["best_bid"], doc["best_bid_size"], doc["best_ask"], doc["best_ask_size"])
        assert coinbase.classify(text) == Frame("data", "ticker", "ticker", "BTC-USD")


def test_kucoin_tickers_carry_best_bid_ask_with_sizes_and_land_as_ticker() -> None:
    async def main() -> list[str]:
        async with (
            ExchangeSimulator(("kucoin",), symbols=2, rate=200, seed=5) as s,
            await kucoin_connect(s.urls["kucoin"].rest) as ws,
        ):
            for i, topic in enumerate(["/market/ticker:all", "/market/ticker:BTC-USDT"]):
                await ws.send(json.dumps({"id": i, "type": "subscribe", "topic": topic, "response": True}))
            frames: list[str] = []
            async with asyncio.timeout(seconds(5)):
                while len({json.loads(f)["topic"] for f in frames}) < 2 or len(frames) < 6:
                    text = str(await ws.recv())
                    if json.loads(text)["type"] == "message":
                        frames.append(text)
        return frames

    for text in asyncio.run(main()):
        doc: dict[str, Any] = json.loads(text)
        data = doc["data"]
        assert set(data) == KUCOIN_TICKER_KEYS
        assert_quote(data["bestBid"], data["bestBidSize"], data["bestAsk"], data["bestAskSize"])
        symbol = doc["subject"] if doc["topic"] == "/market/ticker:all" else "BTC-USDT"
        assert kucoin.classify(text) == Frame("data", "ticker", doc["topic"], symbol)
