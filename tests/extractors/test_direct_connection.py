"""DirectConnection hands on exactly what ``recv()`` gave, in order, and nothing while held.

A local websockets server sends the recorded feed (``data/recorded_feed.jsonl.gz``: 2,100 frames
of the three exchanges) plus a fragmented text message, a binary message and a large frame;
the messages a plain ``ClientConnection`` reads with ``recv()`` (the reader before
DirectConnection) are the reference.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import websockets
from websockets.asyncio.server import ServerConnection, serve

from extractors.connection import DirectConnection
from tests.conftest import seconds

FEED = Path(__file__).with_name("data") / "recorded_feed.jsonl.gz"
END = "end-of-feed"


def messages() -> list[str | bytes]:
    with gzip.open(FEED, "rt", encoding="utf-8") as fh:
        frames: list[str | bytes] = [json.loads(line)["frame"] for line in fh]
    return [*frames[:700], b"\x00binary\xff", "x" * 300_000, *frames[700:], END]


@asynccontextmanager
async def feed_server() -> AsyncIterator[str]:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()  # the client is ready
        for i, message in enumerate(messages()):
            await ws.send(message)
            if i == 100:
                await ws.send(["frag", "mented ", "é"])  # one text message in three frames
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}"


async def read_with_recv(url: str) -> list[str | bytes]:
    got: list[str | bytes] = []
    async with websockets.connect(url, max_size=2**22, compression=None) as ws:
        await ws.send("go")
        while not got or got[-1] != END:
            got.append(await ws.recv())
    return got


async def read_direct(
    url: str, on_each: Callable[[DirectConnection, list[str | bytes]], None]
) -> list[str | bytes]:
    got: list[str | bytes] = []
    done = asyncio.Event()
    async with websockets.connect(
        url, max_size=2**22, compression=None, create_connection=DirectConnection
    ) as ws:
        assert isinstance(ws, DirectConnection)

        def on_data(message: str | bytes) -> None:
            got.append(message)
            on_each(ws, got)
            if message == END:
                done.set()

        ws.attach(on_data)
        await ws.send("go")
        await asyncio.wait_for(done.wait(), seconds(10))
    return got


def test_direct_delivery_hands_on_every_message_as_recv_did_in_order() -> None:
    async def scenario() -> tuple[list[str | bytes], list[str | bytes]]:
        async with feed_server() as url:
            return await read_with_recv(url), await read_direct(url, lambda ws, got: None)

    before, after = asyncio.run(scenario())
    assert "fragmented é" in before and b"\x00binary\xff" in before
    assert after == before


def test_a_held_connection_hands_on_nothing_until_released_then_everything_in_order() -> None:
    holds: list[int] = []

    def hold_every_500(ws: DirectConnection, got: list[str | bytes]) -> None:
        if len(got) % 500 == 0:
            ws.hold()
            holds.append(len(got))

            def release() -> None:
                assert len(got) == holds[-1]  # nothing handed on while held
                ws.release()

            asyncio.get_running_loop().call_later(0.01, release)

    async def scenario() -> tuple[list[str | bytes], list[str | bytes]]:
        async with feed_server() as url:
            return await read_with_recv(url), await read_direct(url, hold_every_500)

    before, after = asyncio.run(scenario())
    assert holds == [500, 1000, 1500, 2000]
    assert after == before
