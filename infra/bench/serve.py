"""``python -m infra.bench.serve``: latency of a live feed, extractor receive -> WebSocket client.

Starts the exchange simulator, one extractor process writing a local landing zone (``--feed
landing``) or a private local Kafka broker (``--feed kafka``), and ``python -m lake.serve`` on it,
then one measuring WebSocket client subscribed to everything, plus a crowd in a process of its
own: ``--clients`` more that read everything and ``--stalled`` that never read. For every market
state the measuring client receives, latency = its wall clock at receipt minus the state's
``recv_ts_ns`` (the extractor's wall clock when the frame arrived; same machine). Prints the
count, p50, p90, p99 and max, the load average, and with a crowd the server's RSS before it
connected and at peak, and the fewest/median/most messages a reader got in the window.
``--batch-age`` sets the extractor's ``batch_max_age_s`` (the largest part of this latency).

``--rest``: instead, REST latency over HTTP on loopback against a lake written with delta-rs (one
day of 1-minute bars for 3 exchanges x ``--symbols`` markets, and their L1 quotes): ``/api/latest``
and a day of ``/api/bars``, each the first time (uncached: a DuckDB query) and repeated (cached for
the table version).

``make bench`` (``python -m infra.bench --only serve [--quick]``) runs the feed alone, again with
1,000 + 50 clients (quick 200 + 10), then REST.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import uvicorn

from lake.tables import Lake, LakeSettings, table


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


async def _reader(url: str, window: tuple[float, float], counts: list[int], i: int) -> None:
    """Read everything until the window ends; count the messages received inside it (wall clock)."""
    from websockets.asyncio.client import connect

    async with connect(url, max_size=None) as ws:
        while (now := time.time()) < window[1]:
            try:
                await asyncio.wait_for(ws.recv(), window[1] - now)
            except TimeoutError:
                break
            if time.time() >= window[0]:
                counts[i] += 1


async def _crowd(url: str, *, readers: int, stalled: int, window: tuple[float, float]) -> list[int]:
    """``readers`` clients that read all and ``stalled`` that never read (their connections stay
    open, so the server's buffers for them fill); messages per reader inside ``window``."""
    from websockets.asyncio.client import connect

    async with contextlib.AsyncExitStack() as stack:
        for _ in range(stalled):
            await stack.enter_async_context(connect(url, max_size=None, max_queue=1))
        counts = [0] * readers
        await asyncio.gather(*(_reader(url, window, counts, i) for i in range(readers)))
    return counts


def _crowd_main(url: str, readers: int, stalled: int, start: float, end: float) -> int:
    """The crowd's own process (``--crowd``): the counts as one JSON line on stdout."""
    print(json.dumps(asyncio.run(_crowd(url, readers=readers, stalled=stalled, window=(start, end)))))
    return 0


async def _measure(url: str, window: tuple[float, float], server_pid: int) -> tuple[list[float], float]:
    """Latencies (s) of the states one client got inside ``window``, and the server's largest RSS
    (MiB) sampled meanwhile."""
    from websockets.asyncio.client import connect

    latencies: list[float] = []
    peak = 0.0
    async with connect(url, max_size=None) as ws:
        while (now := time.time()) < window[1]:
            peak = max(peak, _rss_mib(server_pid))
            try:
                msg = json.loads(await asyncio.wait_for(ws.recv(), min(5, window[1] - now)))
            except TimeoutError:
                continue
            now_ns = time.time_ns()
            if msg.get("type") != "quotes" or now_ns / 1e9 < window[0]:
                continue
            latencies += [(now_ns - s["recv_ts_ns"]) / 1e9 for s in msg["data"] if s.get("recv_ts_ns")]
    return latencies, peak


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def arrow_type(dtype: Any) -> Any:
    """The pyarrow type delta-rs writes for a column of the lake registry's Spark schema."""
    import pyarrow as pa
    from pyspark.sql import types as T

    if isinstance(dtype, T.DecimalType):
        return pa.decimal128(dtype.precision, dtype.scale)
    if isinstance(dtype, T.TimestampType):
        return pa.timestamp("us", tz="UTC")
    if isinstance(dtype, T.ArrayType):
        return pa.list_(arrow_type(dtype.elementType))
    if isinstance(dtype, T.StructType):
        return pa.struct([pa.field(f.name, arrow_type(f.dataType), True) for f in dtype.fields])
    simple = {T.StringType: pa.string(), T.LongType: pa.int64(), T.IntegerType: pa.int32(),
              T.DateType: pa.date32(), T.BooleanType: pa.bool_()}  # fmt: skip
    return simple[type(dtype)]


def write_rows(lake: Lake, name: str, rows: Sequence[dict[str, Any]]) -> None:
    """Append ``rows`` (absent columns are null) to the lake table ``name`` with delta-rs, no JVM."""
    import pyarrow as pa
    from deltalake import write_deltalake

    spec = table(name)
    schema = pa.schema([pa.field(f.name, arrow_type(f.dataType), True) for f in spec.schema.fields])
    data = pa.Table.from_pylist([{c: r.get(c) for c in spec.columns} for r in rows], schema=schema)
    write_deltalake(lake.path(name), data, mode="append", partition_by=list(spec.partition_by) or None)


def _day_lake(root: Path, symbols: int) -> list[tuple[str, str]]:
    """One day of 1-minute bars and a quote per market; the (exchange, symbol) pairs."""
    start = datetime(2026, 12, 1, tzinfo=UTC)
    bars, quotes, markets = [], [], []
    one = Decimal(1)
    for ex in ("binance", "kucoin", "coinbase"):
        for i in range(symbols):
            names = {"exchange": ex, "symbol": f"S{i}-USDT", "base": f"S{i}", "quote": "USDT"}
            markets.append((ex, names["symbol"]))
            prices = {"bid_price": one, "ask_price": one, "usdt_rate": one}
            quotes.append({**names, **prices, "event_ts": start, "recv_ts": start})
            times = {
                "first_trade_ts": start,
                "last_trade_ts": start,
                "bar_date": start.date(),
                "updated_ts": start,
            }
            for m in range(1440):
                p = Decimal(100 + (m % 17))
                ohlc = {"open": p, "high": p, "low": p, "close": p, "quote_volume": p, "vwap": p}
                bars.append({**names, **ohlc, **times, "minute": start + timedelta(minutes=m), "volume": one,
                             "trade_count": 1})  # fmt: skip
    lake = Lake(LakeSettings(root=str(root)))
    write_rows(lake, "gold.ohlcv_1m", bars)
    write_rows(lake, "gold.l1_latest", quotes)
    return markets


def rest_latencies(symbols: int) -> dict[str, list[float]]:
    """ms of each REST request kind (see the module doc) against a day lake of ``symbols`` x 3 markets."""
    from lake.serve.app import create_app
    from lake.serve.settings import ServeSettings

    with tempfile.TemporaryDirectory(prefix="serve-rest-") as tmp:
        markets = _day_lake(Path(tmp) / "lake", symbols)
        port = _free_port()
        config = uvicorn.Config(create_app(ServeSettings(), Lake(LakeSettings(root=str(Path(tmp) / "lake")))),
                                host="127.0.0.1", port=port, log_level="warning")  # fmt: skip
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        _wait_http(f"http://127.0.0.1:{port}/api/health", 30)

        def timed(path: str) -> float:
            started = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as r:
                r.read()
            return (time.perf_counter() - started) * 1000

        day = "start=2026-12-01T00:00:00Z&end=2026-12-02T00:00:00Z&limit=1440"
        figures = {
            "latest, first (connection + query)": [timed("/api/latest")],
            "latest, cached": [timed("/api/latest") for _ in range(20)],
            "latest of one market, uncached": [
                timed(f"/api/latest?exchange={e}&symbol={s}") for e, s in markets
            ],
            "a day of 1m bars, uncached": [
                timed(f"/api/bars?exchange={e}&symbol={s}&{day}") for e, s in markets
            ],
            "a day of 1m bars, cached": [
                timed(f"/api/bars?exchange=binance&symbol=S0-USDT&{day}") for _ in range(20)
            ],
            "a day of 1h bars, uncached": [
                timed(f"/api/bars?exchange={e}&symbol={s}&interval=1h&{day}") for e, s in markets
            ],
        }
        server.should_exit = True
        thread.join(10)
    return figures


def _rest(symbols: int) -> int:
    figures = rest_latencies(symbols)
    load = os.getloadavg()[0]
    print(f"REST on loopback, {3 * symbols} markets x 1,440 bars, load average {load:.1f}:")
    for name, ms in figures.items():
        print(f"  {name:38} n={len(ms):3}  median {statistics.median(ms):7.1f} ms  max {max(ms):7.1f} ms")
    return 0


@dataclass(frozen=True)
class FeedRun:
    """What one feed run measured: the measuring client's latencies (s) inside the window, the
    messages each crowd reader got in it, the server's RSS (MiB) before the crowd connected and the
    largest sampled while it was connected, and the 1-minute load average at the end."""

    latencies: list[float]
    counts: list[int]
    rss_before_mib: float
    rss_peak_mib: float
    load: float


def feed_latencies(
    *,
    seconds: float,
    warmup: float,
    symbols: int,
    rate: float,
    batch_age: float,
    poll: float,
    feed: str,
    clients: int,
    stalled: int = 0,
) -> FeedRun:
    """One run (see :class:`FeedRun`); ``clients`` readers and ``stalled`` never-reading clients
    connect from a process of their own (the crowd) before the warm-up."""
    from infra.demo import EXCHANGES, extractor_env
    from infra.exchange_sim import SimulatorThread

    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="serve-bench-")))
        sim = stack.enter_context(SimulatorThread(EXCHANGES, symbols=symbols, rate=rate, seed=7))
        urls = {ex: (sim.urls[ex].rest, sim.urls[ex].ws) for ex in EXCHANGES}
        env = extractor_env(urls, landing=work / "landing", spool=work / "spool")
        env["CRYPTOLAKE_EXTRACTORS_BATCH_MAX_AGE_S"] = str(batch_age)
        env["CRYPTOLAKE_EXTRACTORS_STATE_DIR"] = str(work / "state")
        env["CRYPTOLAKE_LANDING_ROLL_SECONDS"] = "300"
        env["CRYPTOLAKE_LANDING_FSYNC"] = "false"
        if feed == "kafka":
            from infra.services import KafkaService

            kafka = KafkaService(state_dir=work / "kafka", die_with_parent=True)
            kafka.start(timeout=120)
            stack.callback(kafka.stop, hard=True)
            env["CRYPTOLAKE_KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap
        port = _free_port()
        serve_env = {
            **env,
            "CRYPTOLAKE_LAKE_ROOT": str(work / "lake"),
            "CRYPTOLAKE_SERVE_POLL_S": str(poll),
            "CRYPTOLAKE_SERVE_MIN_INTERVAL_S": "0",
        }
        sink = "kafka" if feed == "kafka" else "landing"
        extractor = subprocess.Popen([sys.executable, "-m", "extractors", "run", "--sink", sink], env=env)
        serve_cmd = ["-m", "lake.serve", "--feed", feed, "--port", str(port), "--log-level", "WARNING"]
        server = subprocess.Popen([sys.executable, *serve_cmd], env=serve_env)
        try:
            _wait_http(f"http://127.0.0.1:{port}/api/health", 60)
            url = f"ws://127.0.0.1:{port}/ws/stream"
            rss_before = _rss_mib(server.pid)
            counts: list[int] = []
            crowd = None
            if clients or stalled:
                # The window starts once the crowd has had time to connect (a few s per 1,000).
                start = time.time() + warmup + clients / 200
                window = (start, start + seconds)
                crowd_args = ["--crowd", url, str(clients), str(stalled), repr(window[0]), repr(window[1])]
                crowd = subprocess.Popen([sys.executable, "-m", "infra.bench.serve", *crowd_args],
                                         stdout=subprocess.PIPE, text=True)  # fmt: skip
            else:
                start = time.time() + warmup
                window = (start, start + seconds)
            lat, peak = asyncio.run(_measure(url, window, server.pid))
            rss_end = _rss_mib(server.pid)
            if crowd is not None:
                out, _ = crowd.communicate(timeout=60 + seconds)
                counts = json.loads(out.strip().splitlines()[-1])
        finally:
            for proc in (server, extractor):
                proc.send_signal(signal.SIGTERM)
            for proc in (server, extractor):
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return FeedRun(lat, counts, rss_before, max(peak, rss_end), load=os.getloadavg()[0])


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _latency_figures(prefix: str, lat: list[float]) -> dict[str, Any]:
    return {
        f"{prefix}_ms_{name}": round(_pct(lat, q) * 1000)
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
    } if lat else {}  # fmt: skip


def run(*, quick: bool = False) -> dict[str, Any]:
    """``make bench``'s figures: the landing feed for 30 s (quick 10 s) after a 10 s (5 s) warm-up at
    the CLI's defaults (3 exchanges x 10 symbols x 50 trades/s) with one client, again with 1,000
    (quick 200) more reading clients and 50 (10) that never read, then REST on a 10-symbol (3) day lake."""
    seconds, warmup, rest_symbols = (10.0, 5.0, 3) if quick else (30.0, 10.0, 10)
    clients, stalled = (200, 10) if quick else (1000, 50)
    common: dict[str, Any] = dict(seconds=seconds, warmup=warmup, symbols=10, rate=50.0, batch_age=1.0,
                                  poll=0.2, feed="landing")  # fmt: skip
    alone = feed_latencies(**common, clients=0)
    figures: dict[str, Any] = {
        "feed": "landing; 3 exchanges x 10 symbols x 50 trades/s; batch_max_age_s 1, poll_s 0.2",
        "ws_states": len(alone.latencies),
        "load_avg_1m_after_feed": round(alone.load, 1),
        "server_rss_mib": round(alone.rss_peak_mib),
        **_latency_figures("ws_recv_to_client", alone.latencies),
    }
    crowd = feed_latencies(**common, clients=clients, stalled=stalled)
    counts = crowd.counts
    figures |= {
        "crowd": f"{clients} reading + {stalled} never-reading WebSocket clients, own process, all markets",
        "crowd_load_avg_1m": round(crowd.load, 1),
        "crowd_server_rss_mib_before": round(crowd.rss_before_mib),
        "crowd_server_rss_mib_peak": round(crowd.rss_peak_mib),
        "crowd_ws_states": len(crowd.latencies),
        **_latency_figures("crowd_ws_recv_to_client", crowd.latencies),
    }
    if counts:
        median = statistics.median(counts)
        figures |= {
            "crowd_messages_per_client_min": min(counts),
            "crowd_messages_per_client_median": median,
            "crowd_messages_per_client_max": max(counts),
            "crowd_clients_below_half_median": sum(c < median / 2 for c in counts),
        }
    figures["rest_lake"] = f"{3 * rest_symbols} markets x 1,440 1-minute bars"
    for name, ms in rest_latencies(rest_symbols).items():
        figures[f"rest_{_slug(name)}_ms_median"] = round(statistics.median(ms), 1)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.bench.serve", description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time after the warm-up")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds ignored after connecting")
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--rate", type=float, default=50.0, help="simulated trades/s per exchange")
    parser.add_argument("--batch-age", type=float, default=1.0, help="extractors.batch_max_age_s")
    parser.add_argument("--poll", type=float, default=0.2, help="serve.poll_s")
    parser.add_argument("--feed", choices=["landing", "kafka"], default="landing")
    parser.add_argument("--clients", type=int, default=0, help="extra WebSocket clients that only read")
    parser.add_argument("--stalled", type=int, default=0, help="extra WebSocket clients that never read")
    parser.add_argument("--rest", action="store_true", help="measure REST latency instead (see above)")
    parser.add_argument(
        "--crowd", nargs=5, metavar=("URL", "READERS", "STALLED", "START", "END"), help=argparse.SUPPRESS
    )  # the crowd's own process, started by feed_latencies
    args = parser.parse_args(argv)
    if args.crowd:
        url, readers, stalled, start, end = args.crowd
        return _crowd_main(url, int(readers), int(stalled), float(start), float(end))
    if args.rest:
        return _rest(args.symbols)

    result = feed_latencies(
        seconds=args.seconds,
        warmup=args.warmup,
        symbols=args.symbols,
        rate=args.rate,
        batch_age=args.batch_age,
        poll=args.poll,
        feed=args.feed,
        clients=args.clients,
        stalled=args.stalled,
    )
    lat, counts = result.latencies, result.counts
    if not lat:
        print("no states received", file=sys.stderr)
        return 1
    load = (result.load,)
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
            f"{args.clients} more clients ({args.stalled} never reading): server RSS "
            f"{result.rss_before_mib:.0f} MiB before, {result.rss_peak_mib:.0f} MiB peak; "
            f"messages per client: fewest "
            f"{min(counts)}, median {statistics.median(counts):.0f}, most {max(counts)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
