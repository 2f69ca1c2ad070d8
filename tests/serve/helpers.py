"""Test helpers: a small Delta lake written with delta-rs (no JVM), a real server on loopback,
a landing sink on its own event loop, and headless Chromium driven over the DevTools protocol."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from infra.bench.serve import write_rows
from tests.conftest import seconds

#: Rows -> a lake table with delta-rs (no JVM), as the REST benchmark writes its lake.
write_table = write_rows


@contextmanager
def running_server(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", ws="websockets-sansio", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + seconds(20)
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(seconds(10))
        sock.close()


class LoopThread:
    """An event loop on a thread, for driving async code (the landing sink) from a sync test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, make: Callable[[], Any], timeout: float | None = None) -> Any:
        async def call() -> Any:
            return await make()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout or seconds(20))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(seconds(5))
        self.loop.close()


class Chromium:
    """Headless Chromium with a DevTools websocket; one page."""

    def __init__(self, profile: Path) -> None:
        exe = shutil.which("chromium")
        assert exe, "Debian's chromium package is needed (make setup installs it)"
        flags = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--window-size=1500,900",
        ]
        flags += ["--remote-debugging-port=0", f"--user-data-dir={profile}"]
        self.proc = subprocess.Popen([exe, *flags, "about:blank"], stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + seconds(30)
        assert self.proc.stderr is not None
        while True:
            line = self.proc.stderr.readline()
            found = re.search(r"DevTools listening on ws://([^/]+)/", line)
            if found:
                self.http = found.group(1)
                break
            assert line and time.monotonic() < deadline, "chromium did not open its DevTools port"
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # keep the pipe drained
        with urllib.request.urlopen(f"http://{self.http}/json/list", timeout=10) as r:
            pages = [t for t in json.loads(r.read()) if t["type"] == "page"]
        self.page_ws = pages[0]["webSocketDebuggerUrl"]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(seconds(10))
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Page:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.n = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.n += 1
        await self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), seconds(30)))
            if msg.get("id") == self.n:
                assert "error" not in msg, msg
                return dict(msg["result"])

    async def js(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")
