"""The runner against the in-process simulator: back-pressure, rejected subscriptions, shutdown's budget.

Each test injects one fault, lets the extractor land into real files, and checks the landed
trades against the simulator's truth (``check_against_truth``: every trade made while the
extractor ran is there, except exactly those inside recorded gaps).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from extractors.envelope import Batch, Envelope
from extractors.runner import Extractor
from extractors.settings import load_settings
from extractors.sinks.base import Sink
from extractors.sinks.landing import LandingSettings, LandingSink
from infra.exchange_sim import ExchangeSimulator
from tests.conftest import seconds
from tests.extractors.test_end_to_end import (
    Run,
    Truth,
    check_against_truth,
    extract_with_faults,
    now_ms,
    read_landing,
    run_extractor_timed,
    wait_for,
)


class GatedSink:
    """A sink whose writes wait while ``gate`` is clear (a sink that is slow for a while)."""

    def __init__(self, inner: Sink) -> None:
        self.name = inner.name
        self._inner = inner
        self.gate = asyncio.Event()
        self.gate.set()

    async def write(self, batch: Batch) -> None:
        await self.gate.wait()
        await self._inner.write(batch)

    async def close(self) -> None:
        await self._inner.close()


def test_a_reader_paused_by_back_pressure_is_not_taken_for_a_stale_feed(tmp_path: Path) -> None:
    stale_after = seconds(1.5)  # run_extractor's stale_after_s
    gated: list[GatedSink] = []
    held: list[bool] = []

    def wrap(sink: Sink) -> Sink:
        gated.append(GatedSink(sink))
        return gated[0]

    async def hold_the_sink(sim: ExchangeSimulator, extractor: Extractor) -> None:
        gated[0].gate.clear()
        await wait_for(lambda: not extractor.writer.room.is_set(), seconds(10))
        # The readers stay paused for well over stale_after_s (the watchdog ticks meanwhile):
        # the length of the pause is the scenario, not a wait for something to happen.
        await asyncio.sleep(3 * stale_after)
        assert not extractor.writer.room.is_set()
        held.append(True)
        gated[0].gate.set()

    async def scenario() -> tuple[Truth, Extractor]:
        async with ExchangeSimulator(exchanges=("binance",), symbols=4, rate=60, seed=11) as sim:
            run = await run_extractor_timed(
                sim,
                ("binance",),
                tmp_path,
                hold_the_sink,
                wrap_sink=wrap,
                batch_max_envelopes=5,
                max_pending_batches=2,
            )
            return run.truth(sim, "binance"), run.extractor

    truth, extractor = asyncio.run(scenario())
    assert held  # the readers were held paused for 3 x stale_after_s
    m = extractor.metrics
    assert m.value("cryptolake_extractor_reconnects_total", exchange="binance", reason="stale") == 0
    check_against_truth("binance", read_landing(tmp_path), truth)


def test_a_rejected_subscription_is_retried_with_backoff_and_counted(tmp_path: Path) -> None:
    async def reject_the_resubscription(sim: ExchangeSimulator, extractor: Extractor) -> None:
        runner = extractor.runners["binance"]
        sim.inject("binance", "reject_subscribe", count=1)
        sim.inject("binance", "close_after", frames=0)
        await wait_for(
            lambda: (
                extractor.metrics.value(
                    "cryptolake_extractor_subscriptions_rejected_total", exchange="binance"
                )
                >= 1
            ),
            seconds(10),
        )
        # Every market streams again on the socket.
        since = {s: runner.last_ids.get(s, 0) for s in runner.markets}
        await wait_for(lambda: all(runner.last_ids.get(s, 0) > since[s] + 2 for s in since), seconds(10))

    envelopes, truth, extractor = asyncio.run(
        extract_with_faults("binance", tmp_path, reject_the_resubscription, symbols=6, rate=120)
    )
    check_against_truth("binance", envelopes, truth)
    m = extractor.metrics
    assert m.value("cryptolake_extractor_subscriptions_rejected_total", exchange="binance") >= 1
    # The retry, not the staleness watchdog, brought the rejected connection back.
    assert m.value("cryptolake_extractor_reconnects_total", exchange="binance", reason="stale") == 0


def test_fills_still_queued_when_the_shutdown_budget_runs_out_are_landed_as_gaps(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[Envelope], Truth]:
        async with ExchangeSimulator(exchanges=("binance",), symbols=4, rate=80, seed=3) as sim:
            settings = load_settings(
                {
                    "extractors": {
                        "exchanges": ["binance"],
                        "stale_after_s": seconds(1),
                        "backoff_initial_s": 0.05,
                        "backoff_max_s": 0.2,
                        "batch_max_age_s": 0.2,
                        "shutdown_timeout_s": 0.2,
                        "state_dir": str(tmp_path / "_state"),
                        "binance": {
                            "rest_url": sim.urls["binance"].rest,
                            "ws_url": sim.urls["binance"].ws,
                            "markets_per_connection": 2,
                        },
                    }
                },
                environ={},
            )
            sink = LandingSink(LandingSettings(root=str(tmp_path), fsync=False, roll_seconds=1.0))
            extractor = Extractor(settings, [sink])
            stop = asyncio.Event()
            started_ms = now_ms()
            task = asyncio.create_task(extractor.run(stop))
            await wait_for(lambda: "binance" in extractor.runners, seconds(5))
            runner = extractor.runners["binance"]
            await wait_for(lambda: len(runner.last_ids) == 4 and runner.idle, seconds(10))
            # REST answers only 500 from now on; a stall drops both connections: their fills hang.
            sim.inject("binance", "rest_error", status=500, count=100_000)
            sim.inject("binance", "stall", after=0)
            detected = "cryptolake_extractor_gaps_detected_total"
            await wait_for(
                lambda: (
                    extractor.metrics.value(detected, exchange="binance", reason="reconnect") >= 4
                    and not runner.idle
                ),
                seconds(10),
            )
            since = {s: runner.last_ids[s] for s in runner.markets}
            await wait_for(lambda: all(runner.last_ids[s] > since[s] for s in since), seconds(10))
            stopped_ms = now_ms()
            stop.set()
            await asyncio.wait_for(task, seconds(10))
            await sink.close()
            return read_landing(tmp_path), Run(extractor, started_ms, stopped_ms).truth(sim, "binance")

    envelopes, truth = asyncio.run(scenario())
    gaps = [json.loads(e.payload) for e in envelopes if e.channel == "gaps"]
    assert gaps and all(g["reason"].startswith("shutdown: ") for g in gaps), gaps
    assert all(g["before_id"] is not None for g in gaps), gaps
    # The recorded windows are exact: nothing else is missing, nothing inside them landed.
    figures = check_against_truth("binance", envelopes, truth)
    assert figures["lost"] > 0
