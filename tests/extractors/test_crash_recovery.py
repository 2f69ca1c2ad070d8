"""``kill -9`` of ``python -m extractors run``, restarts, and the landing zone against the truth by time.

One extractor process after another extracts one simulated exchange into the same landing
folder, spool and resume-state folder. The first is killed with SIGKILL while streaming (up to
``batch_max_age_s`` of frames only in memory); the next start waits until every market traded
for longer than KuCoin's REST history holds (so KuCoin must record gaps), and is killed during
a REST gap fill that the exchange throttles; the third runs to the end, when trading is halted,
the resume state shows every trade durable, and SIGTERM stops it.

Then every trade the simulator emitted from the first start to the halt must be in the landed
files (websocket frames or REST gap-fill pages, parsed here), with its exact price and size,
except exactly the trades inside recorded ``gaps`` windows, and no landed trade lies inside one.
Binance and Coinbase serve their whole history: they must record no gap at all.

A second test kills the extractor during a sink outage (the landing sink fails, batches go to
the disk spool and count as durable there): the next start replays the spool into the landing
zone, and the same check holds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.exchange_sim import SimulatorThread
from infra.services.process import free_port
from tests.conftest import seconds
from tests.extractors.test_end_to_end import Trade, read_landing, rest_trades, ws_trades

ROOT = Path(__file__).resolve().parents[2]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not reached in {timeout:.0f}s: {what}"
        time.sleep(0.05)


class ExtractorProcess:
    """One ``python -m extractors run`` with its metrics endpoint and stderr in a file.

    ``module``/``launcher_args``: run that module instead, with these arguments before ``run``
    (the outage launcher).
    """

    def __init__(
        self,
        env: dict[str, str],
        exchange: str,
        log: Path,
        *,
        module: str = "extractors",
        launcher_args: tuple[str, ...] = (),
    ) -> None:
        self.port = free_port()
        self.exchange = exchange
        self._log: IO[str] = log.open("a")
        args = ["run", "--exchanges", exchange, "--metrics-port", str(self.port)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *launcher_args, *args],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` with these labels (0 before the endpoint is up).

        ``exchange`` is this process's unless a ``sink`` label is asked for.
        """
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return 0.0
        wanted = labels if "sink" in labels else {"exchange": self.exchange, **labels}
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted.items())
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=seconds(10))
        self._log.close()

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=seconds(20))
        self._log.close()
        return code


def resume_points(state_dir: Path, exchange: str) -> dict[str, int]:
    path = state_dir / f"{exchange}-shard-0-of-1.json"
    try:
        markets: dict[str, int] = json.loads(path.read_text())["markets"]
        return markets
    except (OSError, ValueError, KeyError):
        return {}


def extractor_env(sim: SimulatorThread, exchange: str, tmp_path: Path) -> dict[str, str]:
    prefix = f"CRYPTOLAKE_EXTRACTORS_{exchange.upper()}_"
    return {
        **os.environ,
        prefix + "REST_URL": sim.urls[exchange].rest,
        prefix + "WS_URL": "" if exchange == "kucoin" else sim.urls[exchange].ws,
        prefix + "MARKETS_PER_CONNECTION": "2",
        "CRYPTOLAKE_EXTRACTORS_BATCH_MAX_AGE_S": "1.0",
        "CRYPTOLAKE_EXTRACTORS_STATE_DIR": str(tmp_path / "state"),
        "CRYPTOLAKE_EXTRACTORS_STATE_INTERVAL_S": "0.2",
        "CRYPTOLAKE_EXTRACTORS_STALE_AFTER_S": "3",
        "CRYPTOLAKE_EXTRACTORS_BACKOFF_INITIAL_S": "0.05",
        "CRYPTOLAKE_EXTRACTORS_BACKOFF_MAX_S": "0.5",
        "CRYPTOLAKE_EXTRACTORS_L1_POLL_INTERVAL_S": "0",
        "CRYPTOLAKE_EXTRACTORS_LOG_LEVEL": "WARNING",
        "CRYPTOLAKE_LANDING_ROOT": str(tmp_path / "landing"),
        "CRYPTOLAKE_LANDING_FSYNC": "false",
        "CRYPTOLAKE_LANDING_ROLL_SECONDS": "1",
        "CRYPTOLAKE_SPOOL_DIR": str(tmp_path / "spool"),
        "CRYPTOLAKE_SPOOL_FSYNC": "false",
        "CRYPTOLAKE_SPOOL_BACKOFF_INITIAL_S": "0.1",
        "CRYPTOLAKE_SPOOL_BACKOFF_MAX_S": "0.5",
    }


def streaming(proc: ExtractorProcess, state_dir: Path, markets: list[str]) -> Callable[[], bool]:
    """Trades stream on the socket and every market has a persisted resume point."""
    return lambda: (
        proc.metric("cryptolake_extractor_envelopes_total", channel="trades", source="ws") >= 60
        and len(resume_points(state_dir, proc.exchange)) == len(markets)
    )


def run_to_the_end(proc: ExtractorProcess, sim: SimulatorThread, state_dir: Path, log: Path) -> None:
    """Halt trading; wait until the resume state has every trade and the spool is empty; SIGTERM."""
    exchange = proc.exchange
    markets = sim.markets(exchange)
    wait_until(
        lambda: proc.metric("cryptolake_extractor_gaps_filled_total") >= len(markets),
        seconds(20),
        "the last run resumed every market",
    )
    for market in markets:
        sim.halt(exchange, market)
    last_ids: dict[str, int] = {}
    for record in sim.truth.records(exchange):
        last_ids[record.native_symbol] = max(last_ids.get(record.native_symbol, 0), int(record.trade_id))

    def all_durable() -> bool:
        points = resume_points(state_dir, exchange)
        return all(points.get(m, -1) >= last for m, last in last_ids.items()) and (
            proc.metric("cryptolake_extractor_spool_depth", sink="landing") == 0
        )

    wait_until(all_durable, seconds(20), "every trade durable in the resume state, spool empty")
    assert proc.terminate() == 0, log.read_text()[-3000:]


def trades_since(sim: SimulatorThread, exchange: str, since_ms: int) -> set[Trade]:
    return {
        (r.native_symbol, int(r.trade_id), r.price, r.size)
        for r in sim.truth.records(exchange)
        if r.ts_ms >= since_ms
    }


def check_landed(
    exchange: str, root: Path, truth: set[Trade], every: set[Trade]
) -> list[tuple[str, int, float]]:
    """``truth`` landed except exactly the trades in recorded gaps; returns the gaps."""
    landed: set[Trade] = set()
    gaps: list[tuple[str, int, float]] = []
    for envelope in read_landing(root):
        if envelope.channel == "trades":
            if envelope.source == "ws":
                landed.update(ws_trades(exchange, envelope.payload))
            else:
                landed.update(rest_trades(exchange, envelope))
        elif envelope.channel == "gaps":
            g = json.loads(envelope.payload)
            gaps.append((g["native_symbol"], g["after_id"], g["before_id"] or float("inf")))

    def in_gap(t: Trade) -> bool:
        return any(s == t[0] and lo < t[1] < hi for s, lo, hi in gaps)

    lost = {t for t in truth if in_gap(t)}
    missing = truth - lost - landed
    assert not missing, (
        f"{len(missing)} of {len(truth)} trades neither landed nor in a gap: {sorted(missing)[:5]}"
    )
    assert not (landed & lost), f"landed trades inside recorded gaps {gaps}: {sorted(landed & lost)[:5]}"
    # Everything landed is a real trade with its exact price and size.
    assert landed <= every, sorted(landed - every)[:5]
    return gaps


@pytest.mark.parametrize("exchange", ["binance", "kucoin", "coinbase"])
def test_kill_9_while_streaming_and_during_a_gap_fill_loses_no_trade_outside_recorded_gaps(
    exchange: str, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    log = tmp_path / "extractor.log"
    with SimulatorThread((exchange,), symbols=3, rate=60, seed=23) as sim:
        env = extractor_env(sim, exchange, tmp_path)
        markets = sim.markets(exchange)
        first_start_ms = time.time_ns() // 1_000_000

        # 1. Kill while streaming: frames of the last batch_max_age_s are only in memory.
        first = ExtractorProcess(env, exchange, log)
        wait_until(streaming(first, state_dir, markets), seconds(20), "first run streaming")
        killed_ms = time.time_ns() // 1_000_000
        first.kill()

        # Stay down until every market traded more than KuCoin's REST history (100) holds.
        def traded_since_kill() -> int:
            counts = dict.fromkeys(markets, 0)
            for record in sim.truth.records(exchange):
                if record.ts_ms > killed_ms:
                    counts[record.native_symbol] += 1
            return min(counts.values())

        wait_until(lambda: traded_since_kill() > 110, seconds(30), "trading while the extractor is down")

        # 2. Restart; kill during a gap fill the exchange keeps answering with 429.
        second = ExtractorProcess(env, exchange, log)
        wait_until(
            lambda: second.metric("cryptolake_extractor_gaps_filled_total") >= len(markets),
            seconds(20),
            "second run resumed every market",
        )
        sim.inject(exchange, "rest_error", status=429, count=10_000, retry_after=1)
        sim.inject(exchange, "malformed", count=1, replace=True)
        wait_until(
            lambda: (
                second.metric("cryptolake_extractor_gaps_detected_total", reason="bad_frame") >= 1
                and second.metric("cryptolake_extractor_rest_throttled_total") >= 1
            ),
            seconds(20),
            "second run inside a throttled gap fill",
        )
        second.kill()
        sim.clear_faults(exchange)

        # 3. Restart and run to the end.
        third = ExtractorProcess(env, exchange, log)
        run_to_the_end(third, sim, state_dir, log)
        truth = trades_since(sim, exchange, first_start_ms)
        every = trades_since(sim, exchange, 0)

    gaps = check_landed(exchange, tmp_path / "landing", truth, every)
    if exchange == "kucoin":
        # Down for more than the 100 trades KuCoin serves: part of that window is lost, recorded.
        assert gaps
    else:
        assert not gaps, gaps


def test_kill_9_during_a_sink_outage_replays_the_spool_and_loses_no_trade(tmp_path: Path) -> None:
    exchange = "binance"
    state_dir = tmp_path / "state"
    log = tmp_path / "extractor.log"
    outage = tmp_path / "landing-outage"
    launch = {"module": "tests.extractors.outage_launcher", "launcher_args": (str(outage),)}
    with SimulatorThread((exchange,), symbols=3, rate=60, seed=29) as sim:
        env = extractor_env(sim, exchange, tmp_path)
        markets = sim.markets(exchange)
        first_start_ms = time.time_ns() // 1_000_000
        first = ExtractorProcess(env, exchange, log, **launch)  # type: ignore[arg-type]
        wait_until(streaming(first, state_dir, markets), seconds(20), "first run streaming")
        # The landing sink fails from now on: batches go to the disk spool, durable there.
        outage.touch()
        before = resume_points(state_dir, exchange)
        wait_until(
            lambda: (
                first.metric("cryptolake_extractor_spool_depth", sink="landing") >= 5
                and all(resume_points(state_dir, exchange).get(m, -1) > before[m] for m in markets)
            ),
            seconds(20),
            "resume points advancing on spooled batches",
        )
        first.kill()
        outage.unlink()
        second = ExtractorProcess(env, exchange, log, **launch)  # type: ignore[arg-type]
        run_to_the_end(second, sim, state_dir, log)
        truth = trades_since(sim, exchange, first_start_ms)
        every = trades_since(sim, exchange, 0)
    assert not check_landed(exchange, tmp_path / "landing", truth, every)
