"""Extractor benchmark: envelopes per second per CPU core of one extractor process, its RSS, and
trade latency at a steady feed.

The simulator runs in this process (its own thread and event loop); the extractor runs as a
separate ``python -m extractors run`` process with the landing sink (and its spool) on a temporary
folder, exactly as in production. Two phases:

- **Throughput**, simulator at full speed (``rate=0``): the growth of the extractor's
  ``cryptolake_extractor_envelopes_total`` (scraped from its metrics port) divided by the CPU
  seconds (user + system) the extractor process used in the same window, so it does not depend on
  how much CPU the simulator took; RSS from ``/proc`` at the end (Linux); the time SIGTERM takes.
  The feed outruns the extractor here, so its readers pause (``max_pending_batches``) and the
  figure is what one core sustains end to end, batches written included.
- **Latency**, simulator at a steady ``latency_rate`` trades/s the extractor keeps up with: for
  every websocket trade frame landed in the window, receive time minus the trade's own exchange
  time (Binance ``T`` ms, KuCoin ``time`` ns, Coinbase ``time`` ISO), as p50/p99 in milliseconds.
  A received frame is durable when its batch is written: at most ``batch_max_age_s`` later
  (1 s by default) plus the sink's write time; landing files become visible when they roll.

Then the same two phases against a replay feed instead of the simulator (``replay_*`` figures,
:mod:`infra.bench.replay`): the extractor's own ceiling, frames per CPU-second, when the
feed is not what runs out of CPU first.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from infra.bench.procstat import cpu_seconds, free_port, rss_bytes, terminate


def _event_ns(exchange: str, payload: str) -> int:
    """The exchange's own time of a websocket trade frame, in ns since the epoch."""
    doc = json.loads(payload)
    data = doc.get("data", doc) if exchange != "coinbase" else doc
    if exchange == "binance":
        return int(data["T"]) * 1_000_000
    if exchange == "kucoin":
        return int(data["time"])
    at = datetime.fromisoformat(str(data["time"]).replace("Z", "+00:00"))
    return int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1000


def trade_latencies_ms(landing: Path, exchange: str, *, since_ns: int, until_ns: int) -> list[float]:
    """Receive time minus exchange time of the ws trade envelopes landed under ``landing``."""
    out: list[float] = []
    for path in (landing / "raw").glob("exchange=*/channel=trades/**/*.jsonl.gz"):
        for line in gzip.decompress(path.read_bytes()).decode().splitlines():
            env = json.loads(line)
            if env["source"] == "ws" and since_ns <= env["recv_ts_ns"] <= until_ns:
                out.append((env["recv_ts_ns"] - _event_ns(exchange, env["payload"])) / 1e6)
    return out


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def envelopes_total(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("cryptolake_extractor_envelopes_total{")
    )


def start_extractor(urls: Mapping[str, Any], tmp: Path, *, metrics_port: int) -> subprocess.Popen[bytes]:
    """One ``python -m extractors run`` process on the simulator's ``urls``, landing under ``tmp``;
    returns once its metrics port answers."""
    env = {
        **os.environ,
        "CRYPTOLAKE_EXTRACTORS_EXCHANGES": ",".join(urls),
        "CRYPTOLAKE_EXTRACTORS_METRICS_PORT": str(metrics_port),
        "CRYPTOLAKE_EXTRACTORS_METRICS_HOST": "127.0.0.1",
        "CRYPTOLAKE_EXTRACTORS_LOG_LEVEL": "WARNING",
        "CRYPTOLAKE_LANDING_ROOT": str(tmp / "landing"),
        "CRYPTOLAKE_SPOOL_DIR": str(tmp / "spool"),
        # A fresh simulator restarts its ids: never resume from another run's state.
        "CRYPTOLAKE_EXTRACTORS_STATE_DIR": str(tmp / "state"),
    }
    for exchange, url in urls.items():
        env[f"CRYPTOLAKE_EXTRACTORS_{exchange.upper()}_REST_URL"] = url.rest
        # KuCoin's websocket address comes from bullet-public, as on the real exchange.
        env[f"CRYPTOLAKE_EXTRACTORS_{exchange.upper()}_WS_URL"] = "" if exchange == "kucoin" else url.ws
    proc = subprocess.Popen([sys.executable, "-m", "extractors", "run", "--sink", "landing"], env=env)
    deadline = time.monotonic() + 30
    while True:
        try:
            envelopes_total(metrics_port)
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                terminate(proc)
                raise RuntimeError("extractor did not start") from None
            time.sleep(0.2)


def _measure(
    sim: Any, exchange: str, tmp: Path, *, warmup_s: float, measure_s: float
) -> tuple[dict[str, Any], tuple[int, int]]:
    """Run one extractor process against ``sim``; its counters and CPU over the measured window."""
    metrics_port = free_port()
    proc = start_extractor({exchange: sim.urls[exchange]}, tmp, metrics_port=metrics_port)
    try:
        time.sleep(warmup_s)
        cpu0, env0, t0 = cpu_seconds(proc.pid), envelopes_total(metrics_port), time.monotonic()
        wall0 = time.time_ns()
        time.sleep(measure_s)
        cpu1, env1, t1 = cpu_seconds(proc.pid), envelopes_total(metrics_port), time.monotonic()
        wall1 = time.time_ns()
        rss = rss_bytes(proc.pid)
    finally:
        code, stop_seconds = terminate(proc)
    envelopes = env1 - env0
    cpu = max(cpu1 - cpu0, 1e-9)
    figures = {
        # Other work on the machine starves the extractor (wall figures): say how much there was.
        "load_avg_1m_after": round(os.getloadavg()[0], 1),
        "envelopes": int(envelopes),
        "envelopes_per_s_wall": round(envelopes / (t1 - t0)),
        "extractor_cpu_cores_used": round(cpu / (t1 - t0), 2),
        "envelopes_per_s_per_core": round(envelopes / cpu),
        "extractor_rss_mb": round(rss / 2**20, 1),
        "sigterm_exit_code": code,
        "sigterm_exit_seconds": round(stop_seconds, 2),
    }
    return figures, (wall0, wall1)


def _phase(
    exchange: str, symbols: int, rate: float, *, warmup_s: float, measure_s: float
) -> tuple[dict[str, Any], list[float]]:
    from infra.exchange_sim import SimulatorThread

    with tempfile.TemporaryDirectory() as tmp:
        # The simulator stops before the landed files are read: at rate=0 it generates (and
        # remembers as ground truth) events as fast as it can, so left running it would starve
        # the reading of the GIL and grow without bound.
        with SimulatorThread((exchange,), symbols=symbols, rate=rate, seed=7) as sim:
            figures, (since_ns, until_ns) = _measure(
                sim, exchange, Path(tmp), warmup_s=warmup_s, measure_s=measure_s
            )
        latencies = trade_latencies_ms(Path(tmp) / "landing", exchange, since_ns=since_ns, until_ns=until_ns)
    return figures, latencies


def run(
    *, quick: bool = False, exchange: str = "binance", symbols: int = 50, latency_rate: float = 2000
) -> dict[str, Any]:
    """Throughput at full speed, then latency at ``latency_rate`` trades/s; one extractor process."""
    warmup_s, measure_s = (3.0, 5.0) if quick else (5.0, 20.0)
    from infra.bench import replay as bench_replay  # imports this module

    full, _ = _phase(exchange, symbols, 0, warmup_s=warmup_s, measure_s=measure_s)
    steady, latencies = _phase(exchange, symbols, latency_rate, warmup_s=warmup_s, measure_s=measure_s)
    replay = bench_replay.run(quick=quick, symbols=symbols, latency_rate=latency_rate)
    replayed = {
        f"replay_{phase}_{key}": value
        for phase in ("full_speed", "paced")
        for key, value in replay[phase].items()
        if key not in ("feed_trades_per_s", "sigterm_exit_code")
    }
    return {
        "exchange": exchange,
        "symbols": symbols,
        **full,
        "latency_feed_load_avg_1m_after": steady["load_avg_1m_after"],
        "latency_feed_trades_per_s": latency_rate,
        "latency_feed_cpu_cores_used": steady["extractor_cpu_cores_used"],
        "latency_feed_rss_mb": steady["extractor_rss_mb"],
        "ws_trade_frames_measured": len(latencies),
        "trade_event_to_recv_ms_p50": round(_percentile(latencies, 0.50), 2),
        "trade_event_to_recv_ms_p99": round(_percentile(latencies, 0.99), 2),
        **replayed,
    }


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
