"""The CLI as operators run it: a real process, settings from the environment, SIGTERM flushes."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from extractors.envelope import Envelope
from infra.exchange_sim import SimulatorThread
from tests.conftest import seconds

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


def test_sigterm_flushes_every_buffer_and_exits_cleanly(tmp_path: Path) -> None:
    with SimulatorThread(("coinbase",), symbols=3, rate=30, seed=5) as sim:
        env = {
            **os.environ,
            "CRYPTOLAKE_EXTRACTORS_COINBASE_REST_URL": sim.urls["coinbase"].rest,
            "CRYPTOLAKE_EXTRACTORS_COINBASE_WS_URL": sim.urls["coinbase"].ws,
            # A batch age far beyond the run: only the shutdown flush can land the data.
            "CRYPTOLAKE_EXTRACTORS_BATCH_MAX_AGE_S": "600",
            "CRYPTOLAKE_EXTRACTORS_BATCH_MAX_ENVELOPES": "100000",
            "CRYPTOLAKE_LANDING_ROOT": str(tmp_path / "landing"),
            "CRYPTOLAKE_SPOOL_DIR": str(tmp_path / "spool"),
            "CRYPTOLAKE_EXTRACTORS_STATE_DIR": str(tmp_path / "state"),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "extractors", "run", "--exchanges", "coinbase", "--sink", "landing"],
            env=env,
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(seconds(4))
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, stderr = proc.communicate(timeout=seconds(15))
        elapsed = time.monotonic() - started
        truth = {(r.native_symbol, r.trade_id) for r in sim.truth.records("coinbase", delivered=True)}
    assert proc.returncode == 0, stderr[-2000:]
    assert elapsed < seconds(8)
    landed = [
        Envelope.from_json(line)
        for path in (tmp_path / "landing" / "raw").rglob("*.jsonl.gz")
        for line in gzip.decompress(path.read_bytes()).decode().splitlines()
    ]
    channels = {e.channel for e in landed}
    assert {"markets", "trades", "ticker"} <= channels
    trades = {
        (json.loads(e.payload)["product_id"], str(json.loads(e.payload)["trade_id"]))
        for e in landed
        if e.channel == "trades" and e.source == "ws"
    }
    assert trades and trades <= truth
    assert '"level": "INFO"' in stderr or '"level":' in stderr
