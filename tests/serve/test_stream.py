"""Live streams end to end on loopback: envelopes landed by the real landing sink (staged gzip
parts, as the extractor leaves them) are tailed by a real server, and WebSocket and SSE clients
get the states of the markets they subscribed to and none of the others."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import connect

from extractors.envelope import Batch, Envelope
from extractors.sinks.landing import LandingSettings, LandingSink
from lake.serve.app import create_app
from lake.serve.feeds import LandingTail
from lake.serve.settings import ServeSettings
from lake.tables import Lake, LakeSettings
from tests.conftest import seconds
from tests.serve.helpers import LoopThread, running_server

BINANCE_MARKETS = json.dumps(
    {
        "symbols": [
            {"symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT"},
            {"symbol": "ETHUSDT", "status": "TRADING", "baseAsset": "ETH", "quoteAsset": "USDT"},
        ]
    }
)
KUCOIN_MARKETS = json.dumps(
    {
        "code": "200000",
        "data": [
            {"symbol": "BTC-USDT", "baseCurrency": "BTC", "quoteCurrency": "USDT", "enableTrading": True}
        ],
    }
)


def book_ticker(symbol: str, bid: str, ask: str) -> str:
    data = {"u": 1, "s": symbol, "b": bid, "B": "1.5", "a": ask, "A": "0.5"}
    return json.dumps({"stream": f"{symbol.lower()}@bookTicker", "data": data})


def trade(symbol: str, trade_id: int, price: str) -> str:
    data = {"e": "trade", "E": 1, "s": symbol, "t": trade_id, "p": price, "q": "0.1", "T": 1767225600455}
    return json.dumps({"stream": f"{symbol.lower()}@trade", "data": data})


def kucoin_level1(symbol: str, bid: str, ask: str) -> str:
    data = {"asks": [ask, "2"], "bids": [bid, "3"], "timestamp": 1767225600803}
    return json.dumps(
        {"type": "message", "topic": f"/spotMarket/level1:{symbol}", "subject": "level1", "data": data}
    )


class SinkWriter:
    """A real extractor sink (landing or Kafka) on its own loop, writing one batch per call."""

    def __init__(self, make_sink: Any) -> None:
        self.loop = LoopThread()
        self.sink = self.loop.run(lambda: _build(make_sink))
        self.seq = 0

    def write(
        self, exchange: str, channel: Any, frames: list[tuple[str | None, str]], *, source: Any = "ws"
    ) -> None:
        envelopes = []
        for symbol, payload in frames:
            self.seq += 1
            envelopes.append(
                Envelope(
                    exchange=exchange,
                    channel=channel,
                    stream="s",
                    payload=payload,
                    recv_ts_ns=time.time_ns(),
                    conn_id="c1",
                    conn_seq=self.seq,
                    source=source,
                    native_symbol=symbol,
                )
            )
        batch = Batch(exchange, channel, channel, f"b{self.seq}", tuple(envelopes))
        self.loop.run(lambda: self.sink.write(batch))

    def close(self) -> None:
        self.loop.run(lambda: self.sink.close())
        self.loop.close()


async def _build(make_sink: Any) -> Any:
    return make_sink()  # inside the loop: sinks may start tasks


def landing_writer(root: Path) -> SinkWriter:
    return SinkWriter(lambda: LandingSink(LandingSettings(root=str(root), fsync=False, roll_seconds=3600)))


def start_feed(host: str, writer: SinkWriter) -> None:
    """Land the discovery snapshots and wait until the server has read them."""
    writer.write("binance", "markets", [(None, BINANCE_MARKETS)], source="rest")
    writer.write("kucoin", "markets", [(None, KUCOIN_MARKETS)], source="rest")
    wait_for_envelopes(host, 2)


@pytest.fixture()
def live(tmp_path: Path) -> Iterator[tuple[str, SinkWriter]]:
    landing = landing_writer(tmp_path / "landing")
    staging = tmp_path / "landing" / "_staging"
    settings = ServeSettings(poll_s=0.05, min_interval_s=0.0, heartbeat_s=seconds(5))
    lake = Lake(LakeSettings(root=str(tmp_path / "lake")))
    app = create_app(settings, lake, source_factory=lambda: LandingTail(staging), source_name="landing")
    try:
        with running_server(app) as host:
            start_feed(host, landing)
            yield host, landing
    finally:
        landing.close()


def wait_for_envelopes(host: str, n: int) -> None:
    import urllib.request

    deadline = time.monotonic() + seconds(10)
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://{host}/api/health", timeout=10) as r:
            if json.loads(r.read())["feed"]["envelopes"] >= n:
                return
        time.sleep(0.05)
    raise AssertionError(f"the feed did not read {n} envelopes")


def wait_for_no_clients(host: str) -> None:
    import urllib.request

    deadline = time.monotonic() + seconds(10)
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://{host}/api/health", timeout=10) as r:
            if json.loads(r.read())["streams"]["clients"] == 0:
                return
        time.sleep(0.05)
    raise AssertionError("stream clients are still subscribed after closing")


def land_mixed_updates(landing: SinkWriter) -> None:
    """Updates for three markets; the last one is binance BTCUSDT's trade at 100.5 (the marker)."""
    landing.write(
        "binance",
        "l1",
        [
            ("BTCUSDT", book_ticker("BTCUSDT", "100", "101")),
            ("ETHUSDT", book_ticker("ETHUSDT", "3000", "3001")),
        ],
    )
    landing.write("kucoin", "l1", [("BTC-USDT", kucoin_level1("BTC-USDT", "99", "102"))])
    landing.write("binance", "trades", [("ETHUSDT", trade("ETHUSDT", 7, "3000.5"))])
    landing.write("binance", "trades", [("BTCUSDT", trade("BTCUSDT", 8, "100.5"))])


def _until_marker(states: list[dict[str, Any]]) -> bool:
    return any(s["native_symbol"] == "BTCUSDT" and s.get("last") == "100.5" for s in states)


async def ws_collect(host: str, query: str, until: Any) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with connect(f"ws://{host}/ws/stream{query}") as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), seconds(10)))
        assert hello["type"] == "subscribed"
        await until.ready(ws)
        while not until(got):
            msg = json.loads(await asyncio.wait_for(ws.recv(), seconds(10)))
            if msg["type"] == "quotes":
                got += msg["data"]
    return got


class Marker:
    """Stop when the marker state arrived; ``ready`` runs once the client is subscribed."""

    def __init__(self, on_ready: Any, done: Any = _until_marker) -> None:
        self.on_ready = on_ready
        self.done = done

    async def ready(self, _ws: Any) -> None:
        await asyncio.to_thread(self.on_ready)

    def __call__(self, states: list[dict[str, Any]]) -> bool:
        return self.done(states)


def test_websocket_client_gets_its_symbol_and_nothing_else(live):
    host, landing = live

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        everything = asyncio.create_task(
            ws_collect(host, "", Marker(lambda: None, done=lambda s: _until_marker(s) and _has_eth(s)))
        )
        await asyncio.sleep(0.2)  # the unfiltered client is subscribed before anything lands
        one = await ws_collect(
            host, "?exchange=binance&symbol=BTC-USDT", Marker(lambda: land_mixed_updates(landing))
        )
        return one, await asyncio.wait_for(everything, seconds(10))

    one, everything = asyncio.run(scenario())
    assert {(s["exchange"], s["native_symbol"], s["symbol"]) for s in one} == {
        ("binance", "BTCUSDT", "BTC-USDT")
    }
    final = one[-1]
    assert (final["bid"], final["ask"], final["bid_size"], final["ask_size"]) == ("100", "101", "1.5", "0.5")
    assert (final["last"], final["last_usdt"], final["mid_usdt"], final["usdt_method"]) == (
        "100.5",
        "100.5",
        "100.5",
        "identity",
    )
    # the other markets were on the feed: the unfiltered client saw them
    seen = {(s["exchange"], s["native_symbol"]) for s in everything}
    assert seen == {("binance", "BTCUSDT"), ("binance", "ETHUSDT"), ("kucoin", "BTC-USDT")}
    wait_for_no_clients(host)  # both closed connections were unsubscribed


def _has_eth(states: list[dict[str, Any]]) -> bool:
    return any(s["native_symbol"] == "ETHUSDT" and s.get("last") == "3000.5" for s in states)


def test_websocket_subscribe_message_replaces_the_filter_and_sends_the_snapshot(live):
    host, landing = live
    land_mixed_updates(landing)
    wait_for_envelopes(host, 2 + 5)

    async def scenario() -> list[dict[str, Any]]:
        async with connect(f"ws://{host}/ws/stream?symbol=BTC-USDT") as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), seconds(10)))
            assert (first["type"], first["symbols"]) == ("subscribed", ["BTC-USDT"])
            await ws.send(json.dumps({"op": "subscribe", "exchanges": ["binance"], "symbols": ["ETH-USDT"]}))
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), seconds(10)))
                if msg["type"] == "subscribed" and msg["symbols"] == ["ETH-USDT"]:
                    break
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), seconds(10)))
                if msg["type"] == "quotes":
                    return list(msg["data"])

    snapshot = asyncio.run(scenario())
    assert [(s["exchange"], s["symbol"], s["bid"], s["last"]) for s in snapshot] == [
        ("binance", "ETH-USDT", "3000", "3000.5")
    ]


async def _sse_collect(host: str, query: str, on_ready: Any) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    timeout = aiohttp.ClientTimeout(total=seconds(20))
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"http://{host}/sse/stream{query}") as r,
    ):
        assert r.status == 200 and r.headers["content-type"].startswith("text/event-stream")
        event = None
        async for raw in r.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: ") and event == "subscribed":
                assert json.loads(line[6:]) == {"exchanges": ["binance"], "symbols": ["BTC-USDT"]}
                await asyncio.to_thread(on_ready)
            elif line.startswith("data: ") and event == "quotes":
                got += json.loads(line[6:])
                if _until_marker(got):
                    return got
    raise AssertionError("the event stream ended before the marker")


def test_sse_client_gets_its_symbol_and_nothing_else(live):
    host, landing = live
    got = asyncio.run(
        _sse_collect(host, "?exchange=binance&symbol=btc-usdt", lambda: land_mixed_updates(landing))
    )
    assert {(s["exchange"], s["native_symbol"]) for s in got} == {("binance", "BTCUSDT")}
    assert (got[-1]["bid"], got[-1]["last"]) == ("100", "100.5")
    wait_for_no_clients(host)  # the closed stream was unsubscribed
