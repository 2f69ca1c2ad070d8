"""Closing the sinks at shutdown: all of them, within one deadline, every error logged."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from extractors.envelope import Batch
from extractors.sinks import close_all
from extractors.sinks.landing import LandingSettings, LandingSink
from extractors.sinks.spool import SpooledSink, SpoolSettings
from tests.conftest import seconds
from tests.sinks.helpers import FlakySink, batches, landed_files

#: Far longer than any test waits: a close that honours it would hang the test.
LONG_S = 600.0


class FailingClose(FlakySink):
    """Closes by raising ``error`` (after marking itself closed)."""

    def __init__(self, name: str, error: BaseException) -> None:
        super().__init__(name)
        self.error = error

    async def close(self) -> None:
        self.closed = True
        raise self.error


class HangingClose(FlakySink):
    """A third-party sink whose close takes no deadline and never returns."""

    async def close(self) -> None:
        await asyncio.Event().wait()


def test_close_all_closes_every_sink_when_some_fail_and_logs_every_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    group = ExceptionGroup("flush failed", [OSError("disk gone"), ValueError("bad part")])
    sinks = [
        FailingClose("first", RuntimeError("producer wedged")),
        FlakySink("second"),
        FailingClose("third", group),
        FlakySink("fourth"),
    ]

    async def run() -> list[BaseException]:
        return await close_all(sinks, deadline=time.monotonic() + seconds(5))

    with caplog.at_level(logging.ERROR, logger="extractors.sinks"):
        errors = asyncio.run(run())
    assert all(s.closed for s in sinks)
    assert [str(e) for e in errors] == ["producer wedged", "disk gone", "bad part"]
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert logged == [
        "closing sink first failed: producer wedged",
        "closing sink third failed: disk gone",
        "closing sink third failed: bad part",
    ]


def test_close_all_gives_up_on_a_sink_that_hangs_at_the_deadline_and_still_closes_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hanging, fine = HangingClose("stuck"), FlakySink("fine")

    async def run() -> list[BaseException]:
        return await asyncio.wait_for(
            close_all([hanging, fine], deadline=time.monotonic() + 0.2), seconds(10)
        )

    with caplog.at_level(logging.ERROR, logger="extractors.sinks"):
        errors = asyncio.run(run())
    assert fine.closed
    assert len(errors) == 1 and isinstance(errors[0], TimeoutError) and "stuck" in str(errors[0])


def test_a_spool_that_cannot_drain_stops_at_the_deadline_not_after_its_drain_timeout(tmp_path: Path) -> None:
    """``drain_timeout_s`` alone used to decide: SIGTERM's budget was exceeded by the drain."""
    written = batches(5)
    inner = FlakySink()
    inner.down = True
    settings = SpoolSettings(
        dir=str(tmp_path / "spool"),
        backoff_initial_s=0.02,
        backoff_max_s=0.05,
        drain_timeout_s=LONG_S,
        fsync=False,
    )

    async def first_run() -> None:
        sink = SpooledSink(inner, settings)
        for b in written:
            await sink.write(b)
        errors = await asyncio.wait_for(close_all([sink], deadline=time.monotonic() + 0.3), seconds(10))
        assert errors == [] and inner.closed

    asyncio.run(first_run())
    assert inner.delivered == []
    up = FlakySink()

    async def second_run() -> None:  # nothing was lost: the next start replays all of it
        sink = SpooledSink(up, settings)
        assert sink.depth == 5
        await close_all([sink], deadline=time.monotonic() + seconds(5))

    asyncio.run(second_run())
    assert up.delivered == written


class BrokenS3:
    """An S3 client whose uploads always fail with a retryable error."""

    def upload_file(self, *args: object, **kwargs: object) -> None:
        raise ConnectionError("S3 is down")


def _landing(tmp_path: Path, *, close_timeout_s: float, s3: object | None = None) -> LandingSink:
    root = "s3://bucket/prefix" if s3 is not None else str(tmp_path / "landing")
    settings = LandingSettings(
        root=root, staging_dir=str(tmp_path / "staging"), fsync=False, close_timeout_s=close_timeout_s
    )
    return LandingSink(settings, s3_client=s3)


def test_landing_close_stops_finishing_at_the_deadline_and_keeps_the_parts_staged(tmp_path: Path) -> None:
    sink = _landing(tmp_path, close_timeout_s=LONG_S, s3=BrokenS3())
    written: list[Batch] = batches(3)

    async def run() -> list[BaseException]:
        for b in written:
            await sink.write(b)
        return await asyncio.wait_for(close_all([sink], deadline=time.monotonic() + 0.3), seconds(10))

    assert asyncio.run(run()) == []
    (staged,) = landed_files(tmp_path / "staging")  # durable, finished at the next start
    assert staged.stat().st_size > 0


def test_landing_close_with_time_left_lands_every_part(tmp_path: Path) -> None:
    sink = _landing(tmp_path, close_timeout_s=LONG_S)

    async def run() -> list[BaseException]:
        for b in batches(3):
            await sink.write(b)
        return await close_all([sink], deadline=time.monotonic() + seconds(5))

    assert asyncio.run(run()) == []
    assert [p.parent.name for p in landed_files(tmp_path / "landing")] == ["hour=23"]
