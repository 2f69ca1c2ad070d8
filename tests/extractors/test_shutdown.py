"""Shutdown as ``python -m extractors run`` does it: one deadline from the signal, every error logged."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import extractors.__main__ as cli
from extractors.envelope import Batch
from extractors.metrics import Metrics
from extractors.runner import ShutdownBudget
from extractors.settings import load_settings
from extractors.sinks.landing import LandingSettings, LandingSink
from infra.exchange_sim import ExchangeSimulator
from tests.conftest import seconds
from tests.extractors.test_end_to_end import wait_for


class StuckAfterStop:
    """A landing sink whose writes never return once ``stuck`` is set (a wedged disk or S3).

    Records when each write started and the deadline its ``close`` was given.
    """

    def __init__(self, inner: LandingSink) -> None:
        self.name = inner.name
        self.inner = inner
        self.stuck = False
        self.written = 0
        self.stuck_writes: list[float] = []
        self.close_deadline: float | None = None

    async def write(self, batch: Batch) -> None:
        if self.stuck:
            self.stuck_writes.append(time.monotonic())
            await asyncio.Event().wait()
        await self.inner.write(batch)
        self.written += 1

    async def close(self, *, deadline: float | None = None) -> None:
        self.close_deadline = deadline
        await self.inner.close(deadline=deadline)


def test_the_whole_shutdown_keeps_one_deadline_from_the_signal_even_when_a_sink_write_hangs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The final writes used to be awaited without a bound, and the sinks' close got a fresh
    ``shutdown_timeout_s`` after them: a wedged sink hung the process, and a slow one doubled
    the budget."""
    budget_s = seconds(1)
    sink = StuckAfterStop(LandingSink(LandingSettings(root=str(tmp_path / "landing"), fsync=False)))
    moments: dict[str, float] = {}

    async def scenario() -> None:
        async with ExchangeSimulator(exchanges=("binance",), symbols=3, rate=60, seed=5) as sim:
            settings = load_settings(
                {
                    "extractors": {
                        "exchanges": ["binance"],
                        "batch_max_age_s": 0.2,
                        "shutdown_timeout_s": budget_s,
                        "state_dir": str(tmp_path / "state"),
                        "binance": {"rest_url": sim.urls["binance"].rest, "ws_url": sim.urls["binance"].ws},
                    }
                },
                environ={},
            )
            task = asyncio.create_task(cli.run(settings, [sink], Metrics()))
            await wait_for(lambda: sink.written >= 3, seconds(10))
            sink.stuck = True
            await wait_for(lambda: bool(sink.stuck_writes), seconds(10))  # the writer hangs now
            moments["signal"] = time.monotonic()
            signal.raise_signal(signal.SIGTERM)  # run() has installed its handler by now
            await asyncio.wait_for(task, seconds(30))  # a hang guard, not a timing check
            moments["returned"] = time.monotonic()

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    assert sink.close_deadline is not None
    # One deadline, fixed at the signal: the close got it, and the stuck final writes were
    # given up at their point inside it (the run waited that long, and then went on).
    started = sink.close_deadline - budget_s
    assert moments["signal"] <= started
    assert started + budget_s * ShutdownBudget.WRITE_SHARE <= moments["returned"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("not yet durable" in m and "next start" in m for m in messages), messages


def test_the_budget_gives_fills_half_writes_until_four_fifths_and_the_sinks_the_rest() -> None:
    budget = ShutdownBudget.start(10.0, now=100.0)
    assert (budget.fills_until, budget.writes_until, budget.deadline) == (105.0, 108.0, 110.0)
    assert budget.left(50.0) == 0.0


def test_a_failed_run_logs_every_error_of_an_exception_group(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the first leaf used to be logged: the second sink's failure was invisible."""
    group = ExceptionGroup(
        "extractor",
        [
            RuntimeError("landing: disk full"),
            ExceptionGroup("sinks", [ValueError("kafka: record too large")]),
        ],
    )

    async def failing_run(*args: Any, **kwargs: Any) -> None:
        raise group

    monkeypatch.setattr(cli, "run", failing_run)
    monkeypatch.setattr(cli, "build_sinks", lambda settings, config: [])
    monkeypatch.setattr(cli, "setup_logging", lambda level, fmt: None)  # keep caplog's handler
    monkeypatch.setattr(cli, "Metrics", lambda registry: Metrics())  # not the global registry
    with caplog.at_level(logging.ERROR, logger="extractors"):
        assert cli.main(["run", "--exchanges", "binance"]) == 1
    failures = [r for r in caplog.records if r.name == "extractors"]
    assert [r.getMessage() for r in failures] == [
        "extractor failed (1 of 2): landing: disk full",
        "extractor failed (2 of 2): kafka: record too large",
    ]
    assert [r.exc_info[1] for r in failures if r.exc_info] == list(cli.leaf_errors(group))
