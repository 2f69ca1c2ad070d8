"""``python -m lake.serve.bench``: latency of a live feed, extractor receive -> WebSocket client.

Starts the exchange simulator, one extractor process writing a local landing zone (``--feed
landing``) or a private local Kafka broker (``--feed kafka``), and ``python -m lake.serve`` on it,
then one measuring WebSocket client subscribed to everything (plus ``--clients`` more that only
read). For every market state the measuring client receives, latency = its wall clock at receipt
minus the state's ``recv_ts_ns`` (the extractor's wall clock when the frame arrived; same
machine). Prints the count, p50, p90, p99 and max, the load average, and with ``--clients`` the
server's RSS and the fewest/median messages one extra client got. ``--batch-age`` sets the
extractor's ``batch_max_age_s`` (the largest part of this latency).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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


async def _reader(url: str, stop: asyncio.Event, counts: list[int], i: int) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, max_size=None) as ws:
        while not stop.is_set():
            try:
                await asyncio.wait_for(ws.recv(), 1)
            except TimeoutError:
                continue
            counts[i] += 1


async def _collect(url: str, seconds: float, warmup_s: float, clients: int) -> tuple[list[float], list[int]]:
    from websockets.asyncio.client import connect

    latencies: list[float] = []
    stop = asyncio.Event()
    counts = [0] * clients
    readers = [asyncio.create_task(_reader(url, stop, counts, i)) for i in range(clients)]
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
    stop.set()
    await asyncio.gather(*readers, return_exceptions=True)
    return latencies, counts


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


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
    parser.add_argument("--feed", choices=["landing", "kafka"], default="landing")
    parser.add_argument("--clients", type=int, default=0, help="extra WebSocket clients that only read")
    args = parser.parse_args(argv)

    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="serve-bench-")))
        sim = stack.enter_context(SimulatorThread(EXCHANGES, symbols=args.symbols, rate=args.rate, seed=7))
        urls = {ex: (sim.urls[ex].rest, sim.urls[ex].ws) for ex in EXCHANGES}
        env = extractor_env(urls, landing=work / "landing", spool=work / "spool")
        env["CRYPTOLAKE_EXTRACTORS_BATCH_MAX_AGE_S"] = str(args.batch_age)
        env["CRYPTOLAKE_EXTRACTORS_STATE_DIR"] = str(work / "state")
        env["CRYPTOLAKE_LANDING_ROLL_SECONDS"] = "300"
        env["CRYPTOLAKE_LANDING_FSYNC"] = "false"
        if args.feed == "kafka":
            from infra.services import KafkaService

            kafka = KafkaService(state_dir=work / "kafka", die_with_parent=True)
            kafka.start(timeout=120)
            stack.callback(kafka.stop, hard=True)
            env["CRYPTOLAKE_KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap
        port = _free_port()
        serve_env = {
            **env,
            "CRYPTOLAKE_LAKE_ROOT": str(work / "lake"),
            "CRYPTOLAKE_SERVE_POLL_S": str(args.poll),
            "CRYPTOLAKE_SERVE_MIN_INTERVAL_S": "0",
        }
        sink = "kafka" if args.feed == "kafka" else "landing"
        extractor = subprocess.Popen([sys.executable, "-m", "extractors", "run", "--sink", sink], env=env)
        serve_cmd = ["-m", "lake.serve", "--feed", args.feed, "--port", str(port), "--log-level", "WARNING"]
        server = subprocess.Popen([sys.executable, *serve_cmd], env=serve_env)
        try:
            _wait_http(f"http://127.0.0.1:{port}/api/health", 60)
            url = f"ws://127.0.0.1:{port}/ws/stream"
            lat, counts = asyncio.run(_collect(url, args.seconds, args.warmup, args.clients))
            rss = _rss_mib(server.pid)
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
        f"{args.feed} feed, extractor receive -> WebSocket client: {len(lat)} states in {args.seconds:.0f} s;"
        " "
        f"p50 {_pct(lat, 0.5) * 1000:.0f} ms, p90 {_pct(lat, 0.9) * 1000:.0f} ms, "
        f"p99 {_pct(lat, 0.99) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms, mean "
        f"{statistics.fmean(lat) * 1000:.0f} ms (batch_max_age_s {args.batch_age}, poll_s {args.poll}, "
        f"{args.symbols} symbols x 3 exchanges, load average {load[0]:.1f})"
    )
    if counts:
        print(
            f"{args.clients} more clients: server RSS {rss:.0f} MiB; messages per client: fewest "
            f"{min(counts)}, median {statistics.median(counts):.0f}, most {max(counts)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
