"""``python -m lake.serve.bench``: latency of the landing-zone feed, extractor receive -> client.

Starts the exchange simulator, one extractor process writing a local landing zone, and
``python -m lake.serve --feed landing`` on it, then a WebSocket client subscribed to everything.
For every market state the client receives, latency = the client's wall clock at receipt minus
the state's ``recv_ts_ns`` (the extractor's wall clock when the frame arrived; same machine).
Prints the count, p50, p90, p99 and max, and the load average. ``--batch-age`` sets the
extractor's ``batch_max_age_s`` (the largest part of this path's latency).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


async def _collect(url: str, seconds: float, warmup_s: float) -> list[float]:
    from websockets.asyncio.client import connect

    latencies: list[float] = []
    async with connect(url, max_size=None) as ws:
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < warmup_s + seconds:
            try:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
            except TimeoutError:
                continue
            now = time.time_ns()
            if msg.get("type") != "quotes" or elapsed < warmup_s:
                continue
            latencies += [(now - s["recv_ts_ns"]) / 1e9 for s in msg["data"] if s.get("recv_ts_ns")]
    return latencies


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    from infra.demo import EXCHANGES, extractor_env
    from infra.exchange_sim import SimulatorThread

    parser = argparse.ArgumentParser(prog="python -m lake.serve.bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time after the warm-up")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds ignored after connecting")
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--rate", type=float, default=50.0, help="simulated trades/s per exchange")
    parser.add_argument("--batch-age", type=float, default=1.0, help="extractors.batch_max_age_s")
    parser.add_argument("--poll", type=float, default=0.2, help="serve.poll_s")
    args = parser.parse_args(argv)

    with (
        tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp,
        SimulatorThread(EXCHANGES, symbols=args.symbols, rate=args.rate, seed=7) as sim,
    ):
        work = Path(tmp)
        urls = {ex: (sim.urls[ex].rest, sim.urls[ex].ws) for ex in EXCHANGES}
        env = extractor_env(urls, landing=work / "landing", spool=work / "spool")
        env["CRYPTOLAKE_EXTRACTORS_BATCH_MAX_AGE_S"] = str(args.batch_age)
        env["CRYPTOLAKE_EXTRACTORS_STATE_DIR"] = str(work / "state")
        env["CRYPTOLAKE_LANDING_ROLL_SECONDS"] = "300"
        env["CRYPTOLAKE_LANDING_FSYNC"] = "false"
        port = _free_port()
        serve_env = {
            **env,
            "CRYPTOLAKE_LAKE_ROOT": str(work / "lake"),
            "CRYPTOLAKE_SERVE_POLL_S": str(args.poll),
            "CRYPTOLAKE_SERVE_MIN_INTERVAL_S": "0",
        }
        extractor = subprocess.Popen(
            [sys.executable, "-m", "extractors", "run", "--sink", "landing"], env=env
        )
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lake.serve",
                "--feed",
                "landing",
                "--port",
                str(port),
                "--log-level",
                "WARNING",
            ],
            env=serve_env,
        )
        try:
            _wait_http(f"http://127.0.0.1:{port}/api/health", 60)
            lat = asyncio.run(_collect(f"ws://127.0.0.1:{port}/ws/stream", args.seconds, args.warmup))
        finally:
            for proc in (server, extractor):
                proc.send_signal(signal.SIGTERM)
            for proc in (server, extractor):
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    if not lat:
        print("no states received", file=sys.stderr)
        return 1
    load = os.getloadavg()
    print(
        f"landing feed, extractor receive -> WebSocket client: {len(lat)} states over {args.seconds:.0f} s; "
        f"p50 {_pct(lat, 0.5) * 1000:.0f} ms, p90 {_pct(lat, 0.9) * 1000:.0f} ms, "
        f"p99 {_pct(lat, 0.99) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms, mean "
        f"{statistics.fmean(lat) * 1000:.0f} ms (batch_max_age_s {args.batch_age}, poll_s {args.poll}, "
        f"{args.symbols} symbols x 3 exchanges, load average {load[0]:.1f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
