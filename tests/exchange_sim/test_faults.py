"""Each fault does what it says; the ground truth records what was delivered and what was not."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest
import websockets

from infra.exchange_sim import ExchangeSimulator, Fault, read_truth_file
from tests.conftest import seconds
from tests.exchange_sim.helpers import http, kucoin_connect, recv_json


def binance(**kw: object) -> ExchangeSimulator:
    return ExchangeSimulator(("binance",), symbols=2, rate=kw.pop("rate", 200), seed=7, **kw)  # type: ignore[arg-type]


async def faulted(s: ExchangeSimulator, fault: str, **params: object) -> websockets.ClientConnection:
    """A raw connection with ``fault`` armed before it subscribes to btcusdt@trade (no race)."""
    ws = await websockets.connect(s.urls["binance"].ws + "/ws")
    await asyncio.sleep(seconds(0.05))  # the server has registered the connection
    s.inject("binance", fault, **params)
    await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}))
    assert await recv_json(ws) == {"result": None, "id": 1}
    return ws


async def drain(ws: websockets.ClientConnection, n: int) -> list[str]:
    return [await asyncio.wait_for(ws.recv(), seconds(5)) for _ in range(n)]  # type: ignore[misc]


def test_close_after_n_frames_closes_and_later_trades_are_not_delivered() -> None:
    async def main() -> None:
        async with binance() as s:
            async with await faulted(s, "close_after", frames=3) as ws:
                frames = []
                try:
                    async with asyncio.timeout(seconds(5)):
                        while True:
                            frames.append(json.loads(await ws.recv()))
                except websockets.ConnectionClosed as closed:
                    assert closed.rcvd is not None and closed.rcvd.code == 1001
            assert len(frames) == 3
            await asyncio.sleep(seconds(0.3))
            later = [r for r in s.truth.records("binance", "BTCUSDT") if int(r.trade_id) > frames[-1]["t"]]
            assert later and not any(r.delivered for r in later)

    asyncio.run(main())


def test_stall_stops_sending_without_closing() -> None:
    async def main() -> None:
        async with binance() as s:
            async with await faulted(s, "stall", after=2) as ws:
                got = await drain(ws, 2)
                last = json.loads(got[-1])["t"]
                try:
                    await asyncio.wait_for(ws.recv(), seconds(0.6))
                    raise AssertionError("a stalled connection sent a frame")
                except TimeoutError:
                    pass
                assert ws.state is websockets.State.OPEN
            later = [r for r in s.truth.records("binance", "BTCUSDT") if int(r.trade_id) > last]
            assert later and not any(r.delivered for r in later)

    asyncio.run(main())


def test_malformed_duplicate_and_reorder_faults() -> None:
    async def main() -> None:
        async with binance() as s:
            async with await faulted(s, "malformed") as ws:
                bad, good = await drain(ws, 2)
                try:
                    json.loads(bad)
                    raise AssertionError("malformed frame parsed")
                except ValueError:
                    pass
                assert good.startswith(bad) and json.loads(good)["e"] == "trade"
            async with await faulted(s, "duplicate") as ws:
                first, second, third = await drain(ws, 3)
                assert first == second and json.loads(third)["t"] == json.loads(first)["t"] + 1
            async with await faulted(s, "reorder") as ws:
                a, b, c = (json.loads(x)["t"] for x in await drain(ws, 3))
                assert (b, c) == (a - 1, a + 1)
            async with await faulted(s, "malformed", replace=True) as ws:
                cut, after = await drain(ws, 2)
                lost = json.loads(after)["t"] - 1
                rec = s.truth.find("binance", "BTCUSDT", str(lost))
                assert rec is not None and not rec.delivered and not after.startswith(cut)

    asyncio.run(main())


def test_rest_errors_and_rejected_subscribe_via_control_endpoint() -> None:
    async def main() -> None:
        async with ExchangeSimulator(("kucoin", "coinbase"), symbols=2, rate=50, seed=7) as s:
            k, c = s.urls["kucoin"].rest, s.urls["coinbase"].rest
            status, _, body = await http(
                "POST", k + "/_sim/faults", {"fault": "rest_error", "status": 503, "count": 2}
            )
            assert status == 200 and body["ok"]
            results = [(await http("GET", k + "/api/v2/symbols"))[0] for _ in range(3)]
            assert results == [503, 503, 200]
            s.inject("kucoin", "rest_error", status=429, retry_after=3)
            status, headers, body = await http("GET", k + "/api/v2/symbols")
            assert (status, body["code"], headers["retry-after"]) == (429, "429000", "3")
            s.inject("coinbase", "rest_error", status=429)
            status, _, body = await http("GET", c + "/products")
            assert status == 429 and set(body) == {"message"}
            status, _, body = await http("POST", c + "/_sim/faults", {"fault": "explode"})
            assert status == 400 and "explode" in body["error"]
            await http("POST", c + "/_sim/faults", {"fault": "reject_subscribe"})
            async with websockets.connect(s.urls["coinbase"].ws) as ws:
                msg = {"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["matches"]}
                await ws.send(json.dumps(msg))
                err = await recv_json(ws)
                assert err["type"] == "error" and err["message"] == "Failed to subscribe"
                await ws.send(json.dumps(msg))
                assert (await recv_json(ws))["type"] == "subscriptions"

    asyncio.run(main())


def test_no_pong_ignores_client_pings() -> None:
    async def main() -> None:
        async with (
            ExchangeSimulator(("kucoin",), symbols=2, rate=20, seed=7) as s,
            await kucoin_connect(s.urls["kucoin"].rest) as ws,
        ):
            await ws.send(json.dumps({"id": "a", "type": "ping"}))
            assert await recv_json(ws) == {"id": "a", "type": "pong"}
            s.inject("kucoin", "no_pong")
            await ws.send(json.dumps({"id": "b", "type": "ping"}))
            try:
                await asyncio.wait_for(ws.recv(), seconds(0.6))
                raise AssertionError("pong sent despite no_pong")
            except TimeoutError:
                pass
            pong_waiter = await ws.ping()
            try:
                await asyncio.wait_for(pong_waiter, seconds(0.5))
                raise AssertionError("websocket pong sent despite no_pong")
            except TimeoutError:
                pass

    asyncio.run(main())


def test_truth_file_equals_memory_and_initial_faults_hit_the_first_connection(tmp_path: object) -> None:
    path = f"{tmp_path}/truth.jsonl"

    async def main() -> list[dict[str, object]]:
        faults = {"binance": [{"fault": "close_after", "frames": 2}]}
        async with binance(truth_path=path, faults=faults) as s:
            async with websockets.connect(s.urls["binance"].ws + "/ws/btcusdt@trade") as ws:
                assert len(await drain(ws, 2)) == 2
                try:
                    await asyncio.wait_for(ws.recv(), seconds(3))
                    raise AssertionError("frame after close_after")
                except websockets.ConnectionClosed:
                    pass
            async with websockets.connect(s.urls["binance"].ws + "/ws/btcusdt@trade") as ws2:
                assert len(await drain(ws2, 3)) == 3  # the second connection is healthy
            memory = [r.to_dict() for r in s.truth.records()]
        return memory

    memory = asyncio.run(main())
    assert read_truth_file(path) == memory and len(memory) > 5
    assert all(
        set(r)
        >= {
            "exchange",
            "native_symbol",
            "symbol",
            "base",
            "quote",
            "trade_id",
            "price",
            "size",
            "side",
            "ts_ms",
            "delivered",
        }
        for r in memory
    )


def test_data_faults_spoil_the_next_trades_and_cross_the_book_top() -> None:
    async def main() -> None:
        async with binance(rate=50) as s:
            streams = [
                f"{m.lower()}@{kind}" for m in s.markets("binance") for kind in ("trade", "bookTicker")
            ]
            async with websockets.connect(s.urls["binance"].ws + "/ws") as ws:
                await ws.send(json.dumps({"method": "SUBSCRIBE", "params": streams, "id": 1}))
                assert await recv_json(ws) == {"result": None, "id": 1}
                for kind in ("negative_price", "zero_size", "future_ts"):
                    s.inject("binance", "bad_trade", kind=kind)
                s.inject("binance", "crossed_book")
                frames = [json.loads(f) for f in await drain(ws, 60)]
            spoiled = [r for r in s.truth.records("binance") if r.fault is not None]
            crossed = s.server("binance").crossed_quotes
        assert [r.fault for r in spoiled] == ["negative_price", "zero_size", "future_ts"]
        sent = {(f["s"], str(f["t"])): f for f in frames if f.get("e") == "trade"}
        negative, zero, future = (sent[(r.native_symbol, r.trade_id)] for r in spoiled)
        assert negative["p"] == spoiled[0].price and Decimal(negative["p"]) < 0
        assert zero["q"] == spoiled[1].size and Decimal(zero["q"]) == 0
        assert future["T"] == spoiled[2].ts_ms and future["T"] - future["E"] > 3_500_000  # an hour ahead
        # The truth file keeps the fault; clean trades are unchanged and carry none.
        assert spoiled[0].to_dict()["fault"] == "negative_price"
        assert all(
            Decimal(f["p"]) > 0 and Decimal(f["q"]) > 0
            for k, f in sent.items()
            if f is not negative and f is not zero
        )
        # The book was crossed while the trade's frames went out and again for the quote after it
        # (Binance publishes only the second); every other book top has bid < ask.
        books = [(f["s"], f["b"], f["a"]) for f in frames if "u" in f]
        crossed_sent = [q for q in books if Decimal(q[1]) >= Decimal(q[2])]
        assert len(crossed) == 2 and crossed_sent == [crossed[1]]
        assert all(Decimal(bid) > Decimal(ask) for _, bid, ask in crossed)

    asyncio.run(main())


def test_bad_trade_needs_a_known_kind() -> None:
    with pytest.raises(ValueError, match="bad_trade needs kind"):
        Fault.build("bad_trade", kind="negative_size")
