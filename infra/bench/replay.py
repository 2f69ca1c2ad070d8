"""Replay benchmark: one extractor process fed Binance frames as fast as it reads them.

:mod:`infra.bench.extractor` feeds the extractor from the simulator, whose trade generation (Python,
ground truth kept) runs out of CPU before the extractor does on a 2-core machine; this one
measures the extractor's own ceiling, the method of issue 18:

- a **replay server** (``python -m infra.bench.replay serve``, its own process) speaks
  Binance's combined-stream protocol (SUBSCRIBE acks, ``{"stream":..,"data":..}`` frames, no
  compression, like the real endpoint): for every subscribed market it sends ``@trade`` frames
  (consecutive ids, so trade tracking sees no gap) interleaved with ``@bookTicker`` frames, either
  as fast as the client reads (``--rate 0``: each send waits for the socket to drain) or paced at
  ``--rate`` trades/s in total, stamped with the send time (``T``), for the latency figure;
- the simulator (in this process, trading slowly) serves only the REST side (discovery, the
  start-up trades page);
- the extractor is a real ``python -m extractors run`` with the landing sink (spool, fsync) on
  a temporary folder, every safeguard on (dead letters, trade tracking, gap fill, age flush,
  metrics, resume state).

Figures: websocket frames per CPU-second of the extractor process (user + system, from /proc),
frames/s wall, RSS at the end, and at a paced feed the receive latency of every landed trade
frame (receive time minus ``T``; the frame is durable at most ``batch_max_age_s`` plus one write
later). Run ``python -m infra.bench.replay [--quick] [--rate 2000] [--symbols 50]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from infra.bench.extractor import _percentile, start_extractor, trade_latencies_ms
from infra.bench.procstat import cpu_seconds, free_port, rss_bytes, terminate

_FIRST_ID = 10**12  # above any id the simulator's REST serves: no false duplicates


def frames_total(port: int) -> float:
    """Websocket frames the extractor counted (every kind)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("cryptolake_extractor_frames_total{")
    )


# --- the replay server --------------------------------------------------------------------------


async def _serve(port: int, rate: float) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    next_id: dict[str, int] = {}
    #: Trades sent per connection and second, when paced: rate shared by the connections.
    connections: set[ServerConnection] = set()

    async def stream(ws: ServerConnection, symbols: list[str]) -> None:
        n = 0
        started = time.monotonic()
        while True:
            for symbol in symbols:
                lower = symbol.lower()
                trade_id = next_id.get(symbol, _FIRST_ID)
                next_id[symbol] = trade_id + 1
                now_ms = time.time_ns() // 1_000_000
                await ws.send(
                    f'{{"stream":"{lower}@trade","data":{{"e":"trade","E":{now_ms},"s":"{symbol}",'
                    f'"t":{trade_id},"p":"94210.02","q":"0.00150","T":{now_ms},"m":false,"M":true}}}}'
                )
                await ws.send(
                    f'{{"stream":"{lower}@bookTicker","data":{{"u":{trade_id},"s":"{symbol}",'
                    f'"b":"94210.01","B":"1.20400","a":"94210.02","A":"0.03110"}}}}'
                )
                n += 1
                if rate > 0:
                    share = rate / max(1, len(connections))
                    ahead = n / share - (time.monotonic() - started)
                    if ahead > 0.002:
                        await asyncio.sleep(ahead)

    async def handler(ws: ServerConnection) -> None:
        connections.add(ws)
        symbols: list[str] = []
        sender: asyncio.Task[None] | None = None
        try:
            async for message in ws:
                doc = json.loads(message)
                if doc.get("method") == "SUBSCRIBE":
                    for name in doc.get("params", []):
                        market, _, kind = str(name).partition("@")
                        if kind == "trade" and not market.startswith("!"):
                            symbols.append(market.upper())
                    await ws.send(json.dumps({"result": None, "id": doc.get("id")}))
                    if sender is None and symbols:
                        sender = asyncio.create_task(stream(ws, symbols))
        finally:
            connections.discard(ws)
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(BaseException):
                    await sender

    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None):
        print("ready", flush=True)
        await asyncio.Future()


def start_server(rate: float) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.bench.replay", "serve", "--port", str(port), "--rate", str(rate)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        terminate(proc)
        raise RuntimeError("replay server did not start")
    return proc, f"ws://127.0.0.1:{port}"


# --- the measurement ----------------------------------------------------------------------------


def _phase(symbols: int, rate: float, *, warmup_s: float, measure_s: float) -> dict[str, Any]:
    from infra.exchange_sim import SimulatorThread

    server, ws_url = start_server(rate)
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            SimulatorThread(("binance",), symbols=symbols, rate=1, seed=7) as sim,
        ):
            rest = sim.urls["binance"]
            urls = {"binance": type(rest)(rest=rest.rest, ws=ws_url)}
            port = free_port()
            proc = start_extractor(urls, Path(tmp), metrics_port=port)
            try:
                time.sleep(warmup_s)
                cpu0, f0, t0, w0 = cpu_seconds(proc.pid), frames_total(port), time.monotonic(), time.time_ns()
                time.sleep(measure_s)
                cpu1, f1, t1, w1 = cpu_seconds(proc.pid), frames_total(port), time.monotonic(), time.time_ns()
                rss = rss_bytes(proc.pid)
            finally:
                code, stop_s = terminate(proc)
            latencies = trade_latencies_ms(Path(tmp) / "landing", "binance", since_ns=w0, until_ns=w1)
    finally:
        terminate(server)
    frames = f1 - f0
    cpu = max(cpu1 - cpu0, 1e-9)
    return {
        # Other work on the machine starves the extractor (wall, latency): say how much there was.
        "load_avg_1m_after": round(os.getloadavg()[0], 1),
        "feed_trades_per_s": rate or "as fast as read",
        "frames": int(frames),
        "frames_per_cpu_s": round(frames / cpu),
        "frames_per_s_wall": round(frames / (t1 - t0)),
        "cpu_cores_used": round(cpu / (t1 - t0), 2),
        "rss_mb": round(rss / 2**20, 1),
        "sigterm_exit_code": code,
        "sigterm_exit_s": round(stop_s, 2),
        "trade_frames_landed": len(latencies),
        "trade_latency_ms_p50": round(_percentile(latencies, 0.50), 2),
        "trade_latency_ms_p99": round(_percentile(latencies, 0.99), 2),
    }


def run(
    *,
    quick: bool = False,
    symbols: int = 50,
    latency_rate: float = 2000,
    phases: tuple[str, ...] = ("full_speed", "paced"),
) -> dict[str, Any]:
    """Full speed, then a feed paced at ``latency_rate`` trades/s (plus as many book tickers)."""
    warmup_s, measure_s = (3.0, 5.0) if quick else (5.0, 15.0)
    rates = {"full_speed": 0.0, "paced": latency_rate}
    figures: dict[str, Any] = {"exchange": "binance", "symbols": symbols, "cpus": os.cpu_count()}
    for phase in phases:
        figures[phase] = _phase(symbols, rates[phase], warmup_s=warmup_s, measure_s=measure_s)
    return figures


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m infra.bench.replay", description=__doc__)
    p.add_argument("command", nargs="?", default="bench", choices=("bench", "serve"))
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--rate", type=float, default=2000.0, help="serve: trades/s (0: as fast as read)")
    p.add_argument("--symbols", type=int, default=50)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--phase", choices=("full_speed", "paced"), help="bench: only this phase")
    args = p.parse_args(argv)
    if args.command == "serve":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(args.port, args.rate))
        return
    phases = (args.phase,) if args.phase else ("full_speed", "paced")
    print(json.dumps(run(quick=args.quick, symbols=args.symbols, latency_rate=args.rate, phases=phases)))


if __name__ == "__main__":
    main()
