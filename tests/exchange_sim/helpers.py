"""Plain clients for the simulator tests: urllib (in a worker thread) and websockets."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import websockets

from tests.conftest import seconds


def _http(method: str, url: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    req = urllib.request.Request(url, method=method, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=seconds(10)) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, json.loads(err.read())


async def http(method: str, url: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
    """(status, lower-cased headers, parsed JSON body), without blocking the simulator's loop."""
    return await asyncio.to_thread(_http, method, url, body)


async def recv_json(ws: websockets.ClientConnection, timeout: float = 5.0) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), seconds(timeout)))


async def recv_until(ws: websockets.ClientConnection, pred: Any, timeout: float = 5.0) -> Any:
    """The first parsed frame for which ``pred`` is true."""
    async with asyncio.timeout(seconds(timeout)):
        while True:
            msg = json.loads(await ws.recv())
            if pred(msg):
                return msg


async def kucoin_connect(rest: str, connect_id: str = "c-1") -> websockets.ClientConnection:
    status, _, body = await http("POST", rest + "/api/v1/bullet-public")
    assert status == 200 and body["code"] == "200000"
    server = body["data"]["instanceServers"][0]
    ws = await websockets.connect(
        f"{server['endpoint']}?token={body['data']['token']}&connectId={connect_id}"
    )
    assert await recv_json(ws) == {"id": connect_id, "type": "welcome"}
    return ws
