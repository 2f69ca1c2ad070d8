"""Simulator benchmark: how long ``python -m infra.exchange_sim`` takes to serve, and the CPU it
uses at its default rates (Binance, KuCoin and Coinbase, 50 markets each, 200 trades/s each) while
one extractor process subscribes to everything it offers.

Start time runs from launching the process to the line of URLs it prints once every listener is
up (interpreter start-up and imports included). CPU is the simulator process's user + system
seconds over the window divided by its length, from ``/proc`` (Linux), first with no client, then
with the extractor connected.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from infra.bench.extractor import envelopes_total, start_extractor
from infra.bench.procstat import cpu_seconds, free_port, rss_bytes, terminate


def _cores(pid: int, seconds: float) -> float:
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - started)


def run(*, quick: bool = False) -> dict[str, Any]:
    """Start the simulator with its CLI defaults; measure start time, then CPU idle and serving."""
    warmup_s, measure_s = (3.0, 5.0) if quick else (5.0, 15.0)
    started = time.monotonic()
    sim = subprocess.Popen([sys.executable, "-m", "infra.exchange_sim"], stdout=subprocess.PIPE, text=True)
    try:
        assert sim.stdout is not None
        urls: dict[str, Any] = {}
        for line in sim.stdout:
            if line.startswith("{"):
                urls = {name: SimpleNamespace(**u) for name, u in json.loads(line).items()}
                break
        if not urls:
            raise RuntimeError(f"simulator exited with {sim.wait()} before printing its URLs")
        start_seconds = time.monotonic() - started
        idle_cores = _cores(sim.pid, measure_s / 3)
        with tempfile.TemporaryDirectory() as tmp:
            metrics_port = free_port()
            extractor = start_extractor(urls, Path(tmp), metrics_port=metrics_port)
            try:
                time.sleep(warmup_s)
                envelopes0 = envelopes_total(metrics_port)
                serving_cores = _cores(sim.pid, measure_s)
                envelopes = envelopes_total(metrics_port) - envelopes0
                rss = rss_bytes(sim.pid)
            finally:
                terminate(extractor)
    finally:
        terminate(sim)
    return {
        "exchanges": ",".join(urls),
        "start_seconds": round(start_seconds, 2),
        "cpu_cores_no_client": round(idle_cores, 3),
        "cpu_cores_serving_one_extractor": round(serving_cores, 3),
        "envelopes_per_s_delivered": round(envelopes / measure_s),
        "rss_mb": round(rss / 2**20, 1),
    }


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
