"""The crash-safe file of an exchange runner's resume points: per market, the last durable trade id."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from extractors.files import fsync_dir

logger = logging.getLogger(__name__)

_STATE_VERSION = 1


class ResumeFile:
    """The crash-safe file of one exchange runner's resume points (per extractor and shard).

    JSON ``{"version": 1, "exchange": ..., "shard": "i/n", "markets": {native_symbol: id}}``,
    replaced atomically: written to a temporary file, fsynced, renamed over the old one, and the
    folder fsynced. A missing file means a first start; an unreadable one is logged and ignored
    (the markets then start like new ones: a baseline fill, no resume).
    """

    def __init__(self, directory: str | Path, *, exchange: str, shard: tuple[int, int]) -> None:
        index, count = shard
        self.path = Path(directory) / f"{exchange}-shard-{index}-of-{count}.json"
        self.exchange = exchange
        self.shard = f"{index}/{count}"
        self._lock = threading.Lock()

    def load(self) -> dict[str, int]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            markets = doc["markets"]
            return {str(symbol): int(point) for symbol, point in markets.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.error("resume state %s unreadable (%s); starting without it", self.path, exc)
            return {}

    def save(self, points: Mapping[str, int]) -> None:
        """Replace the file with ``points`` (blocking; one writer at a time)."""
        with self._lock:
            self._save(points)

    def _save(self, points: Mapping[str, int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"version": _STATE_VERSION, "exchange": self.exchange, "shard": self.shard}
        text = json.dumps({**doc, "markets": dict(sorted(points.items()))}, separators=(",", ":"))
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with temp.open("w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, self.path)
        fsync_dir(self.path.parent)
