"""Where live envelopes come from: the landing zone's open files, or the Kafka raw topics.

Both sources are blocking readers with one method, ``poll() -> list[bytes]`` (JSON lines, one raw
envelope each), called from a worker thread by :func:`run_feed` (which builds the source and
rebuilds it after a failure, with backoff), which decodes them
(:class:`lake.serve.decode.MarketBook`) in that thread and hands the new market states to the
:class:`lake.serve.hub.Hub` on the event loop.

**Landing zone** (:class:`LandingTail`). The landing sink appends every batch as one complete gzip
member to an open part in ``<landing root>/_staging`` (``landing.staging_dir`` for an S3 root) and
fsyncs it before the extractor moves on; the part is renamed into ``raw/...`` when it rolls
(``landing.roll_seconds``, 300 s by default). Finished files appear only at roll time, so the tail
reads the *staged* parts: each poll lists the staging folder, reads what each part grew by and
yields the lines of every complete gzip member (an incomplete one waits for the next poll). A part
that is renamed away is read to its end through the open file handle (a rename keeps the inode),
then closed. Parts that exist when the tail starts are skipped to their current end (decompressed,
not decoded), except discovery snapshots (channel ``markets``), which are read whole; so are the
newest finished snapshot files. Latency: the extractor's batch age (``extractors.batch_max_age_s``,
1 s) plus the poll interval (docs/serving.md has the measured figures).

**Kafka** (:class:`KafkaTail`): every ``<prefix>raw.<exchange>.<channel>`` topic of a live channel,
all partitions assigned (no consumer group, nothing committed), starting at the end; new topics and
partitions are picked up every ``refresh_s`` and read from their beginning. A record's value is the
batch's JSON lines.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from extractors.backoff import Backoff
from lake.serve.decode import MarketBook
from lake.serve.hub import Hub

logger = logging.getLogger(__name__)

#: Channels the feeds read: the live ones and the discovery snapshots (symbol names).
FEED_CHANNELS = ("ticker", "trades", "l1", "markets")


class Source(Protocol):
    def poll(self) -> list[bytes]: ...

    def close(self) -> None: ...


@dataclass
class FeedStats:
    """What the feed did, for ``/api/health`` (envelopes read, states published, last receive)."""

    source: str = "none"
    envelopes: int = 0
    states: int = 0
    bad_lines: int = 0
    last_recv_ts_ns: int | None = None
    last_poll_s: float | None = None
    errors: int = 0
    last_error: str | None = None


class _Members:
    """Incremental reader of a stream of concatenated gzip members: complete members only.

    While ``keep`` is false, members are decompressed (to find their ends) and dropped; a member
    that started while ``keep`` was false is dropped too, even if it ends later.
    """

    def __init__(self, *, keep: bool) -> None:
        self.keep = keep
        self._decomp: Any = None
        self._member_kept = keep
        self._parts: list[bytes] = []

    def feed(self, data: bytes) -> list[bytes]:
        out = []
        while data:
            if self._decomp is None:
                self._decomp = zlib.decompressobj(wbits=31)
                self._parts = []
                self._member_kept = self.keep
            chunk = self._decomp.decompress(data)
            if self._member_kept:
                self._parts.append(chunk)
            if not self._decomp.eof:
                break
            data = self._decomp.unused_data
            if self._member_kept:
                out.append(b"".join(self._parts))
            self._decomp = None
            self._parts = []
        return out


@dataclass
class _Tailed:
    fh: IO[bytes]
    members: _Members
    skip_until: int = 0  # bytes present at start that are decompressed but not decoded


_MARKETS = "channel=markets"


class LandingTail:
    """Tails the landing sink's staged parts (see the module docstring).

    ``staging``: the staging folder (``<landing root>/_staging`` for a local root). ``landed``: the
    landing root, to read the newest finished discovery snapshot per exchange at start (or
    ``None``). ``from_start``: read parts that exist at start from their beginning (tests).
    """

    def __init__(self, staging: Path, *, landed: Path | None = None, from_start: bool = False) -> None:
        self.staging = staging
        self.landed = landed
        self.from_start = from_start
        self._files: dict[str, _Tailed] = {}
        self._started = False

    def _initial_markets(self) -> list[bytes]:
        if self.landed is None or not (self.landed / "raw").is_dir():
            return []
        lines: list[bytes] = []
        for exchange_dir in sorted((self.landed / "raw").glob("exchange=*")):
            files = list((exchange_dir / _MARKETS).glob("dt=*/hour=*/*.jsonl.gz"))
            if files:
                newest = max(files, key=lambda p: p.stat().st_mtime)
                for member in _Members(keep=True).feed(newest.read_bytes()):
                    lines += member.splitlines()
        return lines

    def poll(self) -> list[bytes]:
        lines: list[bytes] = []
        first = not self._started
        if first:
            self._started = True
            lines += self._initial_markets()
        try:
            names = {n for n in os.listdir(self.staging) if n.endswith(".jsonl.gz")}
        except FileNotFoundError:
            names = set()
        # Discovery snapshots first, so a poll's data is named by the markets it also brought.
        for name in sorted(names - self._files.keys(), key=lambda n: (_MARKETS not in n, n)):
            try:
                fh = open(self.staging / name, "rb")  # noqa: SIM115 - kept open across polls
            except FileNotFoundError:
                continue  # renamed between the listing and the open: its content is in raw/
            skip = 0
            if first and not self.from_start and _MARKETS not in name:
                skip = os.fstat(fh.fileno()).st_size
            self._files[name] = _Tailed(fh, _Members(keep=skip == 0), skip_until=skip)
        for name, tailed in sorted(self._files.items(), key=lambda kv: (_MARKETS not in kv[0], kv[0])):
            lines += self._read(tailed)
            if name not in names:  # finished (renamed) or removed: nothing more will come
                tailed.fh.close()
                del self._files[name]
        return lines

    def _read(self, tailed: _Tailed) -> list[bytes]:
        try:
            if tailed.skip_until:  # what the part held at start: find its member ends, drop it
                tailed.members.feed(tailed.fh.read(tailed.skip_until))
                tailed.skip_until = 0
                tailed.members.keep = True
            data = tailed.fh.read()
            members = tailed.members.feed(data) if data else []
        except zlib.error as exc:
            logger.warning("landing part unreadable (%s); skipping the rest of it", exc)
            tailed.fh.seek(0, os.SEEK_END)
            tailed.members = _Members(keep=False)
            return []
        return [line for member in members for line in member.splitlines()]

    def close(self) -> None:
        for tailed in self._files.values():
            tailed.fh.close()
        self._files.clear()


class KafkaTail:
    """Reads the raw topics of live channels from their end (see the module docstring)."""

    def __init__(
        self,
        *,
        bootstrap_servers: tuple[str, ...],
        topic_prefix: str = "",
        poll_timeout_s: float = 0.2,
        refresh_s: float = 5.0,
        consumer_factory: Callable[..., Any] | None = None,
    ) -> None:
        from kafka import KafkaConsumer

        factory = consumer_factory or KafkaConsumer
        self._consumer = factory(
            bootstrap_servers=list(bootstrap_servers),
            group_id=None,
            enable_auto_commit=False,
            client_id="cryptolake-serve",
        )
        channels = "|".join(FEED_CHANNELS)
        self._pattern = re.compile(rf"^{re.escape(topic_prefix)}raw\.[^.]+\.({channels})$")
        self._poll_ms = int(poll_timeout_s * 1000)
        self._refresh_s = refresh_s
        self._next_refresh = 0.0
        self._assigned: set[Any] = set()
        self._started = False

    def _refresh(self) -> None:
        from kafka import TopicPartition

        topics = sorted(t for t in self._consumer.topics() if self._pattern.match(t))
        wanted = {
            TopicPartition(t, p) for t in topics for p in sorted(self._consumer.partitions_for_topic(t) or ())
        }
        if wanted == self._assigned:
            return
        positions = {tp: self._consumer.position(tp) for tp in self._assigned}
        self._consumer.assign(sorted(wanted))
        new = wanted - self._assigned
        for tp, offset in positions.items():
            if tp in wanted:
                self._consumer.seek(tp, offset)
        if new:
            if self._started:
                self._consumer.seek_to_beginning(*new)  # created after start: read all of it
            else:
                live = [tp for tp in new if not tp.topic.endswith(".markets")]
                if live:
                    self._consumer.seek_to_end(*live)
                markets = [tp for tp in new if tp.topic.endswith(".markets")]
                if markets:
                    self._consumer.seek_to_beginning(*markets)
        self._assigned = wanted
        self._started = True

    def poll(self) -> list[bytes]:
        if time.monotonic() >= self._next_refresh:
            self._refresh()
            self._next_refresh = time.monotonic() + self._refresh_s
        if not self._assigned:
            time.sleep(self._poll_ms / 1000)
            return []
        batches = self._consumer.poll(timeout_ms=self._poll_ms)
        return [line for records in batches.values() for r in records for line in bytes(r.value).splitlines()]

    def close(self) -> None:
        self._consumer.close()


def decode_lines(book: MarketBook, lines: list[bytes], stats: FeedStats) -> list[dict[str, Any]]:
    """JSON lines -> new market states (a line that is not an envelope is counted and skipped)."""
    states: list[dict[str, Any]] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            envelope = orjson.loads(line)
        except orjson.JSONDecodeError:
            stats.bad_lines += 1
            continue
        if not isinstance(envelope, dict):
            stats.bad_lines += 1
            continue
        stats.envelopes += 1
        recv = envelope.get("recv_ts_ns")
        if isinstance(recv, int):
            stats.last_recv_ts_ns = max(recv, stats.last_recv_ts_ns or 0)
        states += book.apply_envelope(envelope)
    stats.states += len(states)
    return states


async def run_feed(
    factory: Callable[[], Source],
    book: MarketBook,
    hub: Hub,
    stats: FeedStats,
    *,
    interval_s: float = 0.2,
    backoff: Backoff | None = None,
    taps: Sequence[Callable[[list[dict[str, Any]]], None]] = (),
) -> None:
    """Build a source with ``factory`` and poll it (in a worker thread, decoding there too),
    publishing to ``hub``, until cancelled. A source that cannot be built (Kafka down) or a poll
    that fails is logged at WARNING with its delay, counted in ``stats`` and retried with capped,
    jittered backoff (a failing poll closes the source and builds a new one); never raised, so the
    server keeps serving REST. Every published batch also goes to each of ``taps`` (the
    live-update stores' :meth:`lake.serve.stores.StoreWriter.offer`, which never blocks). A
    landing tail's poll returns at once: the loop sleeps ``interval_s`` between polls; a Kafka
    poll waits for records itself."""
    backoff = backoff or Backoff(initial=0.5, cap=30.0)

    def step(source: Source) -> list[dict[str, Any]]:
        return decode_lines(book, source.poll(), stats)

    while True:
        try:
            source = await asyncio.to_thread(factory)
            try:
                while True:
                    started = time.monotonic()
                    states = await asyncio.to_thread(step, source)
                    backoff.reset()
                    stats.last_poll_s = time.time()
                    if states:
                        hub.publish(states)
                        for tap in taps:
                            tap(states)
                    elapsed = time.monotonic() - started
                    if isinstance(source, LandingTail) and elapsed < interval_s:
                        await asyncio.sleep(interval_s - elapsed)
            finally:
                await asyncio.to_thread(source.close)
        except Exception as exc:  # a feed must not die: the server keeps serving REST
            delay = next(backoff)
            stats.errors += 1
            stats.last_error = f"{type(exc).__name__}: {exc}"
            logger.warning("live feed failed (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
