"""The CLI as operators run it: a real process, settings from the environment, SIGTERM flushes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from infra.exchange_sim import SimulatorThread
from tests.conftest import seconds
from tests.extractors.test_crash_recovery import (
    ExtractorProcess,
    check_landed,
    extractor_env,
    trades_since,
    wait_until,
)
from tests.extractors.test_end_to_end import read_landing

ROOT = Path(__file__).resolve().parents[2]


def test_help_documents_the_settings() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "extractors", "run", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    for word in (
        "--config",
        "--exchanges",
        "--sink",
        "--shard",
        "CRYPTOLAKE_EXTRACTORS_",
        "batch_max_envelopes",
    ):
        assert word in out


def test_bad_setting_exits_2_naming_the_key() -> None:
    env = {**os.environ, "CRYPTOLAKE_EXTRACTORS_SHARD": "3/2"}
    done = subprocess.run(
        [sys.executable, "-m", "extractors", "run"], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert done.returncode == 2 and "3/2" in done.stderr


def test_sigterm_lands_every_trade_emitted_before_the_signal_and_exits_cleanly(tmp_path: Path) -> None:
    """Every trade the simulator emitted between the launch and SIGTERM is in the landed files.

    The batch age is far beyond the run, so only the shutdown flush can land the socket's
    trades; trades made before the subscriptions come from the start-up REST page.
    """
    exchange = "coinbase"
    log = tmp_path / "extractor.log"
    with SimulatorThread((exchange,), symbols=3, rate=30, seed=5) as sim:
        env = {
            **extractor_env(sim, exchange, tmp_path),
            "CRYPTOLAKE_EXTRACTORS_BATCH_MAX_AGE_S": "600",
            "CRYPTOLAKE_EXTRACTORS_BATCH_MAX_ENVELOPES": "100000",
            "CRYPTOLAKE_EXTRACTORS_LOG_LEVEL": "INFO",
        }
        markets = sim.markets(exchange)
        launched_ms = time.time_ns() // 1_000_000
        proc = ExtractorProcess(env, exchange, log)
        wait_until(
            lambda: (
                proc.metric("cryptolake_extractor_gaps_filled_total") >= len(markets)
                and proc.metric("cryptolake_extractor_envelopes_total", channel="trades", source="ws") >= 30
                and proc.metric("cryptolake_extractor_envelopes_total", channel="ticker", source="ws") >= 1
            ),
            seconds(20),
            "every market's start-up page landed and trades stream on the socket",
        )
        signalled_ms = time.time_ns() // 1_000_000
        code = proc.terminate()
        before_signal = {
            (r.native_symbol, int(r.trade_id), r.price, r.size)
            for r in sim.truth.records(exchange)
            if launched_ms <= r.ts_ms <= signalled_ms
        }
        every = trades_since(sim, exchange, 0)
    stderr = log.read_text()
    assert code == 0, stderr[-2000:]
    landed = read_landing(tmp_path / "landing")
    assert {"markets", "trades", "ticker"} <= {e.channel for e in landed}
    assert any(e.channel == "trades" and e.source == "ws" for e in landed)
    assert before_signal
    assert not check_landed(exchange, tmp_path / "landing", before_signal, every)  # no gap either
    assert '"level": "INFO"' in stderr
