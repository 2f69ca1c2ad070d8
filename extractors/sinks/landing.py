"""Landing-zone sink: gzip JSON-lines files in a local folder or on S3/MinIO.

Key layout (STYLE.md), under the landing root::

    raw/exchange=<ex>/channel=<ch>/dt=YYYY-MM-DD/hour=HH/<uuid>.jsonl.gz

``dt``/``hour`` come from the batch's first ``recv_ts_ns`` in UTC; exchange and channel go through
:func:`extractors.envelope.path_safe`. The root is a local folder or ``s3://bucket/prefix``
(``s3a://`` accepted too, so the same string works for Spark).

Durability and visibility
-------------------------
One file holds one or more batches of the same exchange, channel and hour. ``write`` appends the
batch as one complete gzip *member* to an open part file in a local staging folder, flushes and
fsyncs it, and only then returns: a returned write survives a crash of the process. A file of
concatenated gzip members is a valid gzip file (RFC 1952 §2.2) that Python, ``zcat`` and
Spark/Hadoop's gzip codec read whole, so nothing is ever re-compressed.

A part is *finished* (made visible to readers) when it reaches ``roll_bytes`` compressed, when it
is ``roll_seconds`` old, and on ``close``: readers see a landing file at roll time, never before,
and never a partial one.

- Local root: parts are staged in ``<root>/_staging/`` (same filesystem; ``_``-prefixed names are
  ignored by Spark and Hadoop) and renamed into place with ``os.replace``; the directory is fsynced.
- S3 root: parts are staged in ``staging_dir`` and uploaded with boto3 ``upload_file`` (one PUT, or
  a multipart upload above ``multipart_threshold_bytes``); the object appears atomically when the
  PUT or CompleteMultipartUpload succeeds, then the staged part is deleted.

If finishing fails (S3 down) the part stays staged and is retried in the background with capped,
jittered backoff; while more than ``staging_max_bytes`` wait, ``write`` raises a retryable
:class:`SinkError` so the spool takes over. A non-retryable S3 error (no such bucket, access
denied) makes the next ``write`` raise a non-retryable error. Parts left by a crash are found on
construction, their torn trailing member (a write that never returned) is cut off, and they are
finished like any other part.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import logging
import os
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

from extractors import metrics
from extractors.backoff import Backoff
from extractors.envelope import Batch, path_safe
from extractors.files import fsync_dir
from extractors.sinks.base import SinkError
from lake.config import Secret, reveal

logger = logging.getLogger(__name__)

T = TypeVar("T")

_KEY_SEP = "~"  # stands for "/" in flat staging file names; never produced by path_safe
_STAGING_DIRNAME = "_staging"


@dataclass(frozen=True, slots=True, kw_only=True)
class LandingSettings:
    """Where and how the landing sink writes (config section ``landing:``).

    ``root``: local folder, or ``s3://bucket/prefix`` / ``s3a://bucket/prefix``.
    ``roll_bytes``: finish a file once it holds this many compressed bytes.
    ``roll_seconds``: finish a file this many seconds after it was opened.
    ``staging_dir``: local folder for open parts of an S3 root (a local root always stages in
    ``<root>/_staging`` so the final rename is atomic). One staging folder per sink.
    ``staging_max_bytes``: finished parts waiting for upload beyond this make ``write`` fail
    (retryable), so a long S3 outage moves to the bounded spool instead of filling the disk.
    ``compress_level``: gzip level 1-9. ``fsync``: fsync every write (turn off only in tests).
    ``s3_*``: S3/MinIO client; keys come from ``CRYPTOLAKE_LANDING_S3_ACCESS_KEY`` /
    ``..._SECRET_KEY`` or, when unset, from the standard AWS credential chain. Never put them in YAML.
    ``close_timeout_s``: how long ``close`` tries to finish parts; what is left stays staged and is
    finished at the next start.
    """

    root: str = "landing"
    roll_bytes: int = 64 * 1024 * 1024
    roll_seconds: float = 300.0
    staging_dir: str = "landing-staging"
    staging_max_bytes: int = 1024 * 1024 * 1024
    compress_level: int = 6
    fsync: bool = True
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_path_style: bool = True
    s3_access_key: Secret | None = None
    s3_secret_key: Secret | None = None
    multipart_threshold_bytes: int = 16 * 1024 * 1024
    close_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.roll_bytes <= 0 or self.roll_seconds <= 0:
            raise ValueError("landing.roll_bytes and landing.roll_seconds must be positive")
        if not 1 <= self.compress_level <= 9:
            raise ValueError(f"landing.compress_level must be 1..9, got {self.compress_level}")


def split_s3_root(root: str) -> tuple[str, str] | None:
    """``s3://bucket/a/b`` (or ``s3a://``) -> ``("bucket", "a/b")``; ``None`` for a local root."""
    for scheme in ("s3://", "s3a://"):
        if root.startswith(scheme):
            bucket, _, prefix = root[len(scheme) :].partition("/")
            if not bucket:
                raise ValueError(f"landing root {root!r} names no bucket")
            return bucket, prefix.strip("/")
    return None


def landing_partition(batch: Batch) -> str:
    """``raw/exchange=<ex>/channel=<ch>/dt=YYYY-MM-DD/hour=HH`` of ``batch`` (no trailing slash)."""
    ts = datetime.fromtimestamp(batch.first_recv_ts_ns // 1_000_000_000, tz=UTC)
    return (
        f"raw/exchange={path_safe(batch.exchange)}/channel={path_safe(batch.channel)}"
        f"/dt={ts:%Y-%m-%d}/hour={ts:%H}"
    )


def landing_key(batch: Batch, *, file_id: str) -> str:
    """The key of a landing file holding ``batch``, relative to the landing root."""
    return f"{landing_partition(batch)}/{file_id}.jsonl.gz"


#: Compressed bytes fed to the decompressor at a time while checking a part. Small, so the copy
#: zlib makes of the input left over after each member's end (``unused_data``) stays small.
_SCAN_CHUNK = 16 * 1024


def complete_gzip_prefix(data: bytes | memoryview) -> int:
    """Length of the longest prefix of ``data`` made of complete gzip members (a torn tail ends it)."""
    view = memoryview(data)
    return _complete_prefix(view[i : i + _SCAN_CHUNK] for i in range(0, len(view), _SCAN_CHUNK))


def _complete_prefix(chunks: Iterable[bytes | memoryview]) -> int:
    """:func:`complete_gzip_prefix` of the concatenated ``chunks``, in one linear pass.

    Each chunk is inflated once (the output is dropped); at a member's end the input it did not
    use starts the next member. Feeding a decompressor the whole rest of a part for every member,
    as this once did, copies the tail per member: quadratic, minutes for a 64 MiB part.
    """
    good = 0  # end of the last complete member
    offset = 0  # stream offset of ``pending``
    decomp: Any = None
    for chunk in chunks:
        pending: bytes | memoryview = chunk
        while pending:
            if decomp is None:
                decomp = zlib.decompressobj(wbits=31)
            try:
                decomp.decompress(pending)
            except zlib.error:
                return good
            if not decomp.eof:
                offset += len(pending)
                break
            rest = decomp.unused_data
            offset += len(pending) - len(rest)
            good = offset
            pending = rest
            decomp = None
    return good


@dataclass(slots=True)
class _Part:
    key: str  # relative to the landing root
    path: Path  # staged file
    fh: IO[bytes] | None
    size: int
    opened_at: float


class LandingSink:
    """The landing-zone :class:`~extractors.sinks.base.Sink` (see the module docstring).

    ``clock`` (monotonic seconds) is injectable for tests of time-based rolling; ``s3_client``
    lets a caller pass a ready boto3 client (otherwise one is built from the settings).
    """

    name: str

    def __init__(
        self,
        settings: LandingSettings,
        *,
        name: str = "landing",
        clock: Callable[[], float] = time.monotonic,
        s3_client: Any | None = None,
    ) -> None:
        self.name = name
        self._settings = settings
        self._clock = clock
        s3 = split_s3_root(settings.root)
        self._bucket, self._prefix = s3 if s3 else ("", "")
        self._is_s3 = s3 is not None
        self._root = Path(settings.root) if not self._is_s3 else None
        self._staging = Path(settings.staging_dir) if self._is_s3 else Path(settings.root) / _STAGING_DIRNAME
        self._staging.mkdir(parents=True, exist_ok=True)
        self._s3 = s3_client
        self._open: dict[str, _Part] = {}  # by landing partition
        self._pending: list[_Part] = []  # closed parts waiting to be finished
        self._lock = asyncio.Lock()  # open parts and the pending list
        self._finish_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._roller: asyncio.Task[None] | None = None
        self._retry_at = 0.0
        self._backoff = Backoff(initial=0.5, cap=30.0)  # retries of failed finishes (S3 down)
        self._fatal: str | None = None
        self._closed = False
        # Built now: importing boto3's transfer module in the first upload took seconds on a
        # loaded machine, at shutdown past the deadline.
        self._transfer: Any = self._transfer_config() if self._is_s3 else None
        self._recover()

    # --- the Sink protocol ----------------------------------------------------------------

    async def write(self, batch: Batch) -> None:
        """Append ``batch`` to its open part and fsync; returns once it is on local disk."""
        await self.write_many([batch])

    async def write_many(self, batches: Sequence[Batch]) -> None:
        """Append every batch (one gzip member each, in order) to its open part with one fsync
        per part touched (a group commit), in one thread hop; returns once all are on local
        disk. If it raises, some of the batches may be on disk already (at-least-once)."""
        if self._closed:
            raise SinkError(f"{self.name}: sink is closed", retryable=False)
        if self._fatal:
            raise SinkError(f"{self.name}: {self._fatal}", retryable=False)
        items = [(batch, batch.to_jsonl()) for batch in batches if batch.envelopes]
        if not items:
            return
        self._ensure_roller()
        async with self._lock:
            backlog = sum(p.size for p in self._pending)
            if backlog > self._settings.staging_max_bytes:
                metrics.WRITE_ERRORS.labels(self.name, "true").inc()
                raise SinkError(
                    f"{self.name}: {backlog} bytes of finished parts are waiting in {self._staging} "
                    f"(limit landing.staging_max_bytes={self._settings.staging_max_bytes})",
                    retryable=True,
                )
            try:
                parts = await _uncancellable_thread(self._append_many, items)
            except OSError as exc:
                metrics.WRITE_ERRORS.labels(self.name, "true").inc()
                raise SinkError(f"{self.name}: staging write failed: {exc}", retryable=True) from exc
            for part in parts:
                if part.size >= self._settings.roll_bytes and part.fh is not None:
                    self._detach(part)
                    self._wake.set()
        for _, raw in items:
            metrics.BATCH_BYTES.labels(self.name).observe(len(raw))

    async def close(self, *, deadline: float | None = None) -> None:
        """Finish every part (rename/upload) within ``close_timeout_s`` and by ``deadline``
        (``time.monotonic()`` seconds); the rest stays staged (every write is already fsynced
        there) and is finished at the next start. No finish is started after the deadline."""
        if self._closed:
            return
        self._closed = True
        own = time.monotonic() + self._settings.close_timeout_s
        deadline = own if deadline is None else min(own, deadline)
        self._stop.set()
        self._wake.set()
        if self._roller is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._roller), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                self._roller.cancel()  # a finish in its thread completes on its own
        async with self._lock:
            for part in list(self._open.values()):
                self._detach(part)
        while self._pending and time.monotonic() < deadline:
            if not await self._finish_pending():
                await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        if self._pending:
            logger.error(
                "%s: %d landing part(s) could not be finished before close; they stay in %s and are "
                "finished at the next start",
                self.name,
                len(self._pending),
                self._staging,
            )

    # --- rolling ---------------------------------------------------------------------------

    async def maintain(self) -> None:
        """Roll parts that are due by age and finish closed parts; the background task calls this.

        Finishing failures are logged and retried later with capped, jittered backoff.
        """
        now = self._clock()
        async with self._lock:
            for part in list(self._open.values()):
                if now - part.opened_at >= self._settings.roll_seconds:
                    self._detach(part)
        if self._pending and time.monotonic() >= self._retry_at:
            await self._finish_pending()

    def _ensure_roller(self) -> None:
        if self._roller is None:
            self._roller = asyncio.get_running_loop().create_task(
                self._roll_loop(), name=f"{self.name}-roller"
            )

    async def _roll_loop(self) -> None:
        tick = min(1.0, self._settings.roll_seconds / 4)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=tick)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                await self.maintain()
            except Exception:  # never let the roller die silently; parts stay staged
                logger.exception("%s: landing roller failed; retrying", self.name)

    def _detach(self, part: _Part) -> None:
        """Close an open part's file and queue it for finishing (caller holds ``_lock``)."""
        for group, open_part in list(self._open.items()):
            if open_part is part:
                del self._open[group]
        if part.fh is not None:
            part.fh.close()
            part.fh = None
        self._pending.append(part)

    async def _finish_pending(self) -> bool:
        """Finish the pending parts; ``False`` if any failed (they stay pending)."""
        async with self._finish_lock:
            async with self._lock:
                todo = list(self._pending)
            for part in todo:
                try:
                    await _uncancellable_thread(self._finish, part)
                except Exception as exc:
                    metrics.LANDING_FINISH_ERRORS.labels(self.name).inc()
                    delay = next(self._backoff)
                    self._retry_at = time.monotonic() + delay
                    if _is_fatal_s3_error(exc):
                        self._fatal = f"landing files cannot be finished: {exc}"
                    logger.error(
                        "%s: finishing landing file %s failed (%s); %d part(s) stay staged, retry in %.1fs",
                        self.name,
                        part.key,
                        exc,
                        len(self._pending),
                        delay,
                    )
                    return False
                async with self._lock:
                    self._pending.remove(part)
                metrics.LANDING_FILES.labels(self.name).inc()
                self._backoff.reset()
                self._fatal = None
            return True

    # --- blocking file and S3 work (run in threads) ---------------------------------------

    def _append_many(self, items: Sequence[tuple[Batch, bytes]]) -> list[_Part]:
        """Write each batch as a gzip member to its part, then fsync every part touched once."""
        touched: list[_Part] = []
        for batch, raw in items:
            part = self._append(batch, raw)
            if part not in touched:
                touched.append(part)
        if self._settings.fsync:
            for part in touched:
                if part.fh is None:
                    continue
                try:
                    os.fsync(part.fh.fileno())
                except OSError:
                    # What reached the disk is unknown: finish the part as it is (complete
                    # members only); the caller retries the whole group (at-least-once).
                    part.fh.close()
                    part.fh = None
                    for group, open_part in list(self._open.items()):
                        if open_part is part:
                            del self._open[group]
                    with contextlib.suppress(OSError):
                        part.size = _truncate_to_complete(part.path)
                    if part.path.exists() and part.size > 0:
                        self._pending.append(part)
                    raise
        return touched

    def _append(self, batch: Batch, raw: bytes) -> _Part:
        """Write ``batch``'s gzip member to its open part (flushed, not yet fsynced)."""
        member = gzip.compress(raw, compresslevel=self._settings.compress_level, mtime=0)
        group = landing_partition(batch)
        part = self._open.get(group)
        if part is None:
            key = f"{group}/{uuid.uuid4().hex}.jsonl.gz"
            path = self._staging / key.replace("/", _KEY_SEP)
            fh = open(path, "xb")  # noqa: SIM115 - kept open across writes, closed in _detach
            part = _Part(key=key, path=path, fh=fh, size=0, opened_at=self._clock())
            if self._settings.fsync:
                fsync_dir(self._staging)
            self._open[group] = part
        assert part.fh is not None
        try:
            part.fh.write(member)
            part.fh.flush()
        except OSError:
            # Cut the torn member off so the file stays valid; the part is finished as is.
            part.fh.close()
            part.fh = None
            del self._open[group]
            with contextlib.suppress(OSError):
                _truncate_to_complete(part.path)
            if part.path.exists() and part.path.stat().st_size > 0:
                part.size = part.path.stat().st_size
                self._pending.append(part)
            raise
        part.size += len(member)
        return part

    def _finish(self, part: _Part) -> None:
        if not part.path.exists():  # finished before a crash, between rename and bookkeeping
            return
        if self._is_s3:
            key = f"{self._prefix}/{part.key}" if self._prefix else part.key
            self._client().upload_file(
                str(part.path),
                self._bucket,
                key,
                ExtraArgs={"ContentType": "application/gzip"},
                Config=self._transfer,
            )
            part.path.unlink()
        else:
            assert self._root is not None
            final = self._root / part.key
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part.path, final)
            if self._settings.fsync:
                fsync_dir(final.parent)
        logger.debug("%s: landed %s (%d bytes)", self.name, part.key, part.size)

    def _recover(self) -> None:
        """Queue parts left staged by an earlier run, cutting off torn trailing members."""
        for path in sorted(self._staging.iterdir()):
            if not path.is_file() or not path.name.endswith(".jsonl.gz"):
                continue
            size = _truncate_to_complete(path)
            if size == 0:
                path.unlink()
                continue
            key = path.name.replace(_KEY_SEP, "/")
            self._pending.append(_Part(key=key, path=path, fh=None, size=size, opened_at=0.0))
        if self._pending:
            logger.warning(
                "%s: found %d staged landing part(s) from an earlier run in %s; finishing them",
                self.name,
                len(self._pending),
                self._staging,
            )

    def _client(self) -> Any:
        if self._s3 is None:
            import boto3
            from botocore.config import Config

            s = self._settings
            self._s3 = boto3.client(
                "s3",
                endpoint_url=s.s3_endpoint,
                region_name=s.s3_region or "us-east-1",
                aws_access_key_id=reveal(s.s3_access_key),
                aws_secret_access_key=reveal(s.s3_secret_key),
                config=Config(
                    s3={"addressing_style": "path" if s.s3_path_style else "auto"},
                    retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=30,
                ),
            )
        return self._s3

    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        threshold = self._settings.multipart_threshold_bytes
        return TransferConfig(multipart_threshold=threshold, multipart_chunksize=max(threshold, 5 << 20))


async def _uncancellable_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking ``fn`` in a thread; if the caller is cancelled, wait for it before re-raising,
    so the lock the caller holds is never released while the thread still mutates state."""
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


def _truncate_to_complete(path: Path) -> int:
    """Cut a staged part back to its complete gzip members; returns the new size.

    Reads the part once, in chunks (linear time, constant memory)."""
    with open(path, "r+b") as fh:
        size = os.fstat(fh.fileno()).st_size
        good = _complete_prefix(iter(functools.partial(fh.read, _SCAN_CHUNK), b""))
        if good < size:
            logger.warning("cutting %d torn byte(s) off staged landing part %s", size - good, path)
            fh.truncate(good)
            fh.flush()
            os.fsync(fh.fileno())
    return good


def _is_fatal_s3_error(exc: BaseException) -> bool:
    """S3 errors that retrying cannot fix: a missing bucket, refused credentials."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        cause = exc.__cause__ or exc.__context__
        return _is_fatal_s3_error(cause) if cause is not None else False
    code = str(response.get("Error", {}).get("Code", ""))
    return code in {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
