"""A bounded on-disk spool in front of a sink: a sink outage never stops collection.

:class:`SpooledSink` wraps any :class:`~extractors.sinks.base.Sink`. While its spool is empty it
writes through. When the inner sink raises a retryable :class:`SinkError` or takes longer than
``write_timeout_s``, the batch is appended to a :class:`DiskQueue` (fsynced) and ``write`` returns:
the batch is durable on local disk. From then on every new batch goes to the spool too, so order is
kept, and a background replayer retries the head of the queue with capped, jittered backoff and
drains it in order; once it is empty, writes go through again.

Delivery is at-least-once: a write that timed out may still have landed, and a batch replayed
just before a crash is replayed again at the next start. Batches keep their ``batch_id`` so
downstream can recognise replays (bronze dedupes on the envelope's conn_id/conn_seq anyway).

Nothing is dropped silently:

- spool full (``max_bytes``): ``write`` logs ERROR, counts ``cryptolake_spool_rejected_total``
  and raises a non-retryable :class:`SinkError`; the batch was *not* accepted.
- a non-retryable error from the inner sink: on write-through it is raised to the caller; during
  replay it stops the replayer (the batch stays at the head of the spool) and every later
  ``write`` raises it, non-retryable.
- ``close`` tries to drain for ``drain_timeout_s`` (or less when the caller's ``deadline`` is
  nearer); what is left stays on disk and is replayed by the next :class:`SpooledSink` built on
  the same folder (the spool is reloaded on construction).
- a corrupt record (bad checksum, or a payload that does not decode as a batch): the replayer
  moves its bytes to ``<spool>/corrupt/``, logs ERROR, counts ``cryptolake_spool_corrupt_total``
  and goes on with the next record, so one bad record never stalls the spool.

On-disk format (:class:`DiskQueue`): numbered segment files ``<n>.seg`` of records
``[u32 length][u32 crc32][payload]`` (big-endian), appended and fsynced, plus a ``head`` file with
the position of the first undelivered record (replaced atomically after each delivery; not
fsynced, so after a power loss a few delivered batches may be replayed again). A torn record at the
end of the last segment (a crash during an append that never returned) is cut off on load. A bad
record anywhere else is corruption: on load the rest of its segment (whose record boundaries can no
longer be trusted) is copied to ``corrupt/`` and the queue resumes at the next segment; the paths
are in :attr:`DiskQueue.set_aside`. Nothing is deleted that was not delivered or moved aside.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from extractors import metrics
from extractors.backoff import Backoff
from extractors.envelope import Batch, path_safe
from extractors.files import fsync_dir
from extractors.sinks.base import Sink, SinkError, close_within, write_all

logger = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")  # payload length, crc32 of the payload
_SEGMENT_SUFFIX = ".seg"
_HEAD_FILE = "head"
#: Subfolder of a spool where corrupt records are moved (never read back by the spool).
CORRUPT_DIRNAME = "corrupt"


@dataclass(frozen=True, slots=True, kw_only=True)
class SpoolSettings:
    """The disk spool in front of each sink (config section ``spool:``).

    ``dir``: folder of the spools; each sink gets ``<dir>/<sink name>``. Keep it on a persistent
    local disk: after a restart the extractor replays what is left there.
    ``max_bytes``: per sink; beyond it ``write`` raises a non-retryable error (never drops).
    ``segment_bytes``: size at which a new segment file is started (delivered segments are deleted).
    ``write_timeout_s``: an inner write slower than this counts as failed and the batch is spooled.
    ``backoff_initial_s`` / ``backoff_max_s``: replay retry delays (:class:`extractors.backoff.Backoff`:
    random start, doubling, hard cap, jittered).
    ``drain_timeout_s``: how long ``close`` keeps replaying before leaving the rest on disk.
    ``fsync``: fsync every spooled batch (turn off only in tests).
    """

    dir: str = "spool"
    max_bytes: int = 1024 * 1024 * 1024
    segment_bytes: int = 16 * 1024 * 1024
    write_timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    drain_timeout_s: float = 3.0
    fsync: bool = True

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.segment_bytes <= 0:
            raise ValueError("spool.max_bytes and spool.segment_bytes must be positive")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("spool backoff needs 0 < backoff_initial_s <= backoff_max_s")


class SpoolFullError(Exception):
    """Appending would take the spool past ``max_bytes``."""


class SpoolCorruptError(Exception):
    """A spool segment holds a bad record that is not a torn tail; needs an operator."""


def encode_batch(batch: Batch) -> bytes:
    """A batch as one spool record: a JSON header line, then its JSON lines exactly."""
    header = {"exchange": batch.exchange, "channel": batch.channel, "key": batch.key, "id": batch.batch_id}
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + batch.to_jsonl()


def decode_batch(record: bytes) -> Batch:
    header_line, _, body = record.partition(b"\n")
    header = json.loads(header_line)
    return Batch(
        exchange=header["exchange"],
        channel=header["channel"],
        key=header["key"],
        batch_id=header["id"],
        envelopes=tuple(Batch.envelopes_from_jsonl(body)),
    )


@dataclass(frozen=True, slots=True)
class _Entry:
    segment: int
    offset: int
    length: int  # header + payload


class DiskQueue:
    """A FIFO of byte records in append-only, fsynced segment files (see the module docstring).

    Not thread-safe: one owner, calls serialised by the caller.
    """

    def __init__(
        self, directory: Path, *, max_bytes: int, segment_bytes: int = 16 << 20, fsync: bool = True
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._fsync = fsync
        self._entries: collections.deque[_Entry] = collections.deque()
        self._nbytes = 0
        self._readers: dict[int, int] = {}  # segment -> read fd
        self._writer: int | None = None  # fd of the tail segment
        self._tail = 0
        self._tail_size = 0
        #: Files under ``corrupt/`` written for bad records (on load and by :meth:`set_aside_head`).
        self.set_aside: list[Path] = []
        directory.mkdir(parents=True, exist_ok=True)
        self._load()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes of undelivered records, headers included."""
        return self._nbytes

    def append(self, payload: bytes) -> None:
        """Append one record durably; raises :class:`SpoolFullError` past ``max_bytes``."""
        size = _HEADER.size + len(payload)
        if self._nbytes + size > self.max_bytes:
            raise SpoolFullError(
                f"spool {self.directory} holds {self._nbytes} bytes; {size} more would pass max_bytes="
                f"{self.max_bytes}"
            )
        if self._writer is None:
            self._open_segment(self._tail)
        elif self._tail_size >= self.segment_bytes:
            self._open_segment(self._tail + 1)
        assert self._writer is not None
        record = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        try:
            written = os.write(self._writer, record)
            if written != len(record):
                raise OSError(f"short write to spool segment ({written} of {len(record)} bytes)")
            if self._fsync:
                os.fsync(self._writer)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._writer, self._tail_size)
            raise
        self._entries.append(_Entry(self._tail, self._tail_size, size))
        self._tail_size += size
        self._nbytes += size

    def peek(self) -> bytes | None:
        """The first undelivered record, or ``None`` when the queue is empty."""
        if not self._entries:
            return None
        entry = self._entries[0]
        fd = self._readers.get(entry.segment)
        if fd is None:
            fd = self._readers[entry.segment] = os.open(self._segment_path(entry.segment), os.O_RDONLY)
        data = os.pread(fd, entry.length, entry.offset)
        length, crc = _HEADER.unpack_from(data)
        payload = data[_HEADER.size :]
        if len(payload) != length or zlib.crc32(payload) != crc:
            raise SpoolCorruptError(f"spool record at {entry} in {self.directory} changed on disk")
        return payload

    def set_aside_head(self) -> Path:
        """Move the first record's bytes (header included, as far as they can be read) to
        ``corrupt/`` and drop it from the queue; returns the file written.

        For a record that :meth:`peek` rejected or whose payload does not decode. Raises
        ``OSError`` if ``corrupt/`` cannot be written (the record then stays at the head).
        """
        entry = self._entries[0]
        try:
            with open(self._segment_path(entry.segment), "rb") as fh:
                fh.seek(entry.offset)
                data = fh.read(entry.length)
        except OSError:
            data = b""  # unreadable: the (empty) file still records where the record was
        path = self._write_corrupt(f"{entry.segment:020d}-{entry.offset:012d}.rec", data)
        self.pop()
        return path

    def pop(self) -> None:
        """Mark the first record delivered (after its sink confirmed it)."""
        entry = self._entries.popleft()
        self._nbytes -= entry.length
        if not self._entries:
            self._reset()
            return
        nxt = self._entries[0]
        for segment in range(entry.segment, nxt.segment):
            self._delete_segment(segment)
        head = self.directory / _HEAD_FILE
        tmp = self.directory / (_HEAD_FILE + ".tmp")
        tmp.write_text(json.dumps({"segment": nxt.segment, "offset": nxt.offset}))
        os.replace(tmp, head)

    def close(self) -> None:
        for fd in self._readers.values():
            os.close(fd)
        self._readers.clear()
        if self._writer is not None:
            os.close(self._writer)
            self._writer = None

    # --- internals ---------------------------------------------------------------------------

    def _segment_path(self, segment: int) -> Path:
        return self.directory / f"{segment:020d}{_SEGMENT_SUFFIX}"

    def _open_segment(self, segment: int) -> None:
        if self._writer is not None:
            os.close(self._writer)
        path = self._segment_path(segment)
        self._writer = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._tail = segment
        self._tail_size = os.fstat(self._writer).st_size
        if self._fsync:
            fsync_dir(self.directory)

    def _write_corrupt(self, name: str, data: bytes, *, counted: bool = True) -> Path:
        folder = self.directory / CORRUPT_DIRNAME
        folder.mkdir(exist_ok=True)
        path = folder / name
        tmp = folder / (name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            if self._fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if self._fsync:
            fsync_dir(folder)
        if counted:
            self.set_aside.append(path)
        return path

    def _delete_segment(self, segment: int) -> None:
        fd = self._readers.pop(segment, None)
        if fd is not None:
            os.close(fd)
        if segment == self._tail and self._writer is not None:
            os.close(self._writer)
            self._writer = None
        with contextlib.suppress(FileNotFoundError):
            self._segment_path(segment).unlink()

    def _reset(self) -> None:
        """Everything delivered: drop all segments and the head; numbering continues."""
        for segment in sorted({*self._readers, self._tail}):
            self._delete_segment(segment)
        for path in self.directory.glob(f"*{_SEGMENT_SUFFIX}"):
            path.unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.directory / _HEAD_FILE).unlink()
        self._tail += 1
        self._tail_size = 0

    def _load(self) -> None:
        segments = sorted(int(p.stem) for p in self.directory.glob(f"*{_SEGMENT_SUFFIX}") if p.stem.isdigit())
        head_segment, head_offset = (segments[0], 0) if segments else (0, 0)
        head_path = self.directory / _HEAD_FILE
        if head_path.exists():
            head = json.loads(head_path.read_text())
            head_segment, head_offset = int(head["segment"]), int(head["offset"])
        for segment in segments:
            if segment < head_segment:
                self._segment_path(segment).unlink()
                continue
            start = head_offset if segment == head_segment else 0
            self._scan(segment, start, last=segment == segments[-1])
        if segments:
            self._tail = segments[-1]
            if self._entries:
                self._open_segment(self._tail)
            else:
                self._reset()

    def _scan(self, segment: int, start: int, *, last: bool) -> None:
        path = self._segment_path(segment)
        data = path.read_bytes()
        pos = start
        while pos < len(data):
            end, good = _check_record(data, pos)
            if good:
                self._entries.append(_Entry(segment, pos, end - pos))
                self._nbytes += end - pos
                pos = end
                continue
            if last and end >= len(data):
                # The final record of the last segment: an append that never returned (never
                # acknowledged); its bytes are kept aside all the same, not counted as corruption.
                kept = self._write_corrupt(f"{segment:020d}-{pos:012d}.torn", data[pos:], counted=False)
                logger.warning(
                    "spool %s: cut a torn record (%d bytes) off %s; its bytes are in %s",
                    self.directory,
                    len(data) - pos,
                    path,
                    kept,
                )
                _truncate(path, pos)
                return
            if end == len(data) or (end < len(data) and _check_record(data, end)[1]):
                # Only the payload is damaged (the next record starts where the length says):
                # move this one record aside and go on.
                aside = self._write_corrupt(f"{segment:020d}-{pos:012d}.rec", data[pos:end])
                logger.error(
                    "spool %s: corrupt record at byte %d of %s moved to %s", self.directory, pos, path, aside
                )
                pos = end
                continue
            # The length is damaged too: no later record boundary of this segment can be trusted.
            aside = self._write_corrupt(f"{segment:020d}-{pos:012d}.rest", data[pos:])
            logger.error(
                "spool %s: bad record at byte %d of %s; moved the rest of the segment (%d bytes) to %s",
                self.directory,
                pos,
                path,
                len(data) - pos,
                aside,
            )
            if last:
                _truncate(path, pos)
            return


def _check_record(data: bytes, pos: int) -> tuple[int, bool]:
    """``(end, good)`` of the record at ``pos``: where its length says it ends (past the data when
    even the header is incomplete) and whether it is complete with a matching checksum."""
    if pos + _HEADER.size > len(data):
        return len(data) + 1, False
    length, crc = _HEADER.unpack_from(data, pos)
    end = pos + _HEADER.size + length
    return end, end <= len(data) and zlib.crc32(data[pos + _HEADER.size : end]) == crc


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(size)
        os.fsync(fh.fileno())


class SpooledSink:
    """Wraps ``inner`` with a disk spool in ``<settings.dir>/<inner.name>`` (or ``directory``).

    Implements the :class:`~extractors.sinks.base.Sink` protocol with the same ``name`` as the
    inner sink. ``write`` returns once the batch is durable in the inner sink *or* in the spool.
    """

    name: str

    def __init__(self, inner: Sink, settings: SpoolSettings, *, directory: Path | None = None) -> None:
        self.name = inner.name
        self.inner = inner
        self._settings = settings
        self.directory = directory or Path(settings.dir) / path_safe(inner.name)
        self._queue = DiskQueue(
            self.directory,
            max_bytes=settings.max_bytes,
            segment_bytes=settings.segment_bytes,
            fsync=settings.fsync,
        )
        self._lock = asyncio.Lock()
        self._kick = asyncio.Event()
        self._replayer: asyncio.Task[None] | None = None
        self._failure: SinkError | None = None
        self._closed = False
        if self._queue.set_aside:
            metrics.SPOOL_CORRUPT.labels(self.name).inc(len(self._queue.set_aside))
        self._update_gauges()
        if len(self._queue):
            logger.warning(
                "%s: %d batch(es) (%d bytes) left in spool %s by an earlier run; replaying them first",
                self.name,
                len(self._queue),
                self._queue.nbytes,
                self.directory,
            )

    @property
    def depth(self) -> int:
        """Batches waiting in the spool."""
        return len(self._queue)

    async def write(self, batch: Batch) -> None:
        await self.write_many([batch])

    async def write_many(self, batches: Sequence[Batch]) -> None:
        """Write ``batches`` through in one call of the inner sink's ``write_many`` (a group
        commit; one by one if it has none), or spool them all, in order."""
        if self._closed:
            raise SinkError(f"{self.name}: sink is closed", retryable=False)
        if self._failure is not None:
            raise SinkError(
                f"{self.name}: replaying the spool failed permanently ({self._failure}); "
                f"{len(self._queue)} batch(es) wait in {self.directory}",
                retryable=False,
            ) from self._failure
        if not batches:
            return
        async with self._lock:
            if not self._queue:
                try:
                    await self._inner_write(batches)
                    return
                except SinkError as exc:
                    if not exc.retryable:
                        raise
                    logger.warning("%s: write failed (%s); spooling to %s", self.name, exc, self.directory)
                    for batch in batches:
                        await self._spool(batch)
                    self._ensure_replayer(delay_first=True)
                    return
            for batch in batches:
                await self._spool(batch)
            self._ensure_replayer(delay_first=False)

    async def close(self, *, deadline: float | None = None) -> None:
        """Drain the spool for up to ``drain_timeout_s`` (never past ``deadline``, in
        ``time.monotonic()`` seconds), then close the inner sink with the same deadline. What is
        not drained stays on disk; the queue's files are closed even if the inner close fails."""
        if self._closed:
            return
        self._closed = True
        drain_s = self._settings.drain_timeout_s
        if deadline is not None:
            drain_s = max(0.0, min(drain_s, deadline - time.monotonic()))
        if self._queue and self._failure is None:
            self._ensure_replayer(delay_first=False)
            self._kick.set()
            replayer = self._replayer
            assert replayer is not None
            try:
                await asyncio.wait_for(asyncio.shield(replayer), drain_s)
            except TimeoutError:
                replayer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await replayer
        elif self._replayer is not None:
            await self._replayer
        if self._queue:
            logger.warning(
                "%s: %d batch(es) (%d bytes) stay in spool %s; they are replayed at the next start",
                self.name,
                len(self._queue),
                self._queue.nbytes,
                self.directory,
            )
        try:
            await close_within(self.inner, deadline)
        finally:
            self._queue.close()

    # --- internals ---------------------------------------------------------------------------

    async def _inner_write(self, batches: Sequence[Batch]) -> None:
        try:
            await asyncio.wait_for(write_all(self.inner, batches), self._settings.write_timeout_s)
        except TimeoutError:
            metrics.WRITE_ERRORS.labels(self.name, "true").inc()
            raise SinkError(
                f"{self.name}: write took longer than spool.write_timeout_s={self._settings.write_timeout_s}"
            ) from None

    async def _spool(self, batch: Batch) -> None:
        record = encode_batch(batch)
        try:
            await asyncio.to_thread(self._queue.append, record)
        except SpoolFullError as exc:
            metrics.SPOOL_REJECTED.labels(self.name, "full").inc()
            logger.error("%s: SPOOL FULL, batch %s refused: %s", self.name, batch.batch_id, exc)
            raise SinkError(f"{self.name}: {exc}", retryable=False) from exc
        except OSError as exc:
            metrics.SPOOL_REJECTED.labels(self.name, "io").inc()
            logger.error(
                "%s: cannot spool batch %s to %s: %s", self.name, batch.batch_id, self.directory, exc
            )
            raise SinkError(f"{self.name}: cannot spool: {exc}", retryable=False) from exc
        metrics.SPOOLED.labels(self.name).inc()
        self._update_gauges()

    def _ensure_replayer(self, *, delay_first: bool) -> None:
        if self._replayer is None or self._replayer.done():
            self._replayer = asyncio.get_running_loop().create_task(
                self._replay(delay_first=delay_first), name=f"{self.name}-spool-replayer"
            )

    async def _replay(self, *, delay_first: bool) -> None:
        delays = Backoff(initial=self._settings.backoff_initial_s, cap=self._settings.backoff_max_s)
        failed = delay_first
        attempt_started = 0.0
        while True:
            if failed:
                delay = next(delays)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), delay)  # close() cuts the wait short
                self._kick.clear()
            async with self._lock:
                try:
                    record = self._queue.peek()
                    batch = None if record is None else decode_batch(record)
                except Exception as exc:  # a checksum mismatch, or bytes that are no batch
                    if not self._set_aside_head(exc):
                        return
                    continue
            if batch is None:
                return
            attempt_started = time.monotonic()
            try:
                await self._inner_write([batch])
            except SinkError as exc:
                if not exc.retryable:
                    self._failure = exc
                    metrics.SPOOL_REJECTED.labels(self.name, "fatal").inc()
                    logger.error(
                        "%s: replaying batch %s failed permanently: %s; %d batch(es) stay in %s",
                        self.name,
                        batch.batch_id,
                        exc,
                        len(self._queue),
                        self.directory,
                    )
                    return
                failed = True
                logger.warning(
                    "%s: replay of batch %s failed after %.2fs (%s); %d batch(es) spooled",
                    self.name,
                    batch.batch_id,
                    time.monotonic() - attempt_started,
                    exc,
                    len(self._queue),
                )
                continue
            except Exception as exc:
                self._failure = SinkError(f"unexpected error: {exc!r}", retryable=False)
                logger.exception("%s: replaying batch %s failed unexpectedly", self.name, batch.batch_id)
                return
            async with self._lock:
                self._queue.pop()
                empty = not self._queue
            metrics.REPLAYED.labels(self.name).inc()
            self._update_gauges()
            if failed:
                logger.info(
                    "%s: sink is back; replaying %d spooled batch(es)", self.name, len(self._queue) + 1
                )
                delays.reset()
                failed = False
            if empty:
                logger.info("%s: spool drained", self.name)
                return

    def _set_aside_head(self, error: Exception) -> bool:
        """Move the corrupt head record to ``corrupt/`` (caller holds ``_lock``); ``False`` when
        even that failed, which stops the replayer and makes every later ``write`` raise."""
        try:
            path = self._queue.set_aside_head()
        except OSError as exc:
            self._failure = SinkError(f"corrupt spool record cannot be moved aside: {exc}", retryable=False)
            metrics.SPOOL_REJECTED.labels(self.name, "corrupt").inc()
            logger.error(
                "%s: spool record at the head of %s is corrupt (%s) and cannot be moved aside (%s); "
                "replay stopped",
                self.name,
                self.directory,
                error,
                exc,
            )
            return False
        metrics.SPOOL_CORRUPT.labels(self.name).inc()
        self._update_gauges()
        logger.error(
            "%s: corrupt spool record (%s: %s) moved to %s; replaying the next one",
            self.name,
            type(error).__name__,
            error,
            path,
        )
        return True

    def _update_gauges(self) -> None:
        metrics.SPOOL_BYTES.labels(self.name).set(self._queue.nbytes)
