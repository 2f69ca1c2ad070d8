"""The raw envelope (one per websocket frame or REST page) and the batch the sinks land.

This is the contract between the extractors and everything downstream; its Spark schema is
``lake.tables.RAW_ENVELOPE_SCHEMA``. One envelope is one JSON object on one line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

#: ``gaps`` holds the runner's records of trades the exchange could not return after a
#: disconnect (payload: JSON with native_symbol, after_id, before_id, reason). ``klines`` holds
#: the exchange's own 1-minute candles (REST pages, ``extractors.klines``).
Channel = Literal["ticker", "trades", "l1", "markets", "deadletter", "gaps", "klines"]
Source = Literal["ws", "rest"]

_UNSAFE_PATH_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def path_safe(text: str) -> str:
    """Make a wire-supplied name (a symbol) safe as one path segment or object key part."""
    cleaned = _UNSAFE_PATH_CHARS.sub("_", text)[:100]
    return cleaned if cleaned.strip("._") else "_"


@dataclass(slots=True, unsafe_hash=True)
class Envelope:
    """One raw frame or REST page, exactly as received. Treat it as immutable: it is not
    ``frozen`` only because a frozen dataclass's ``__init__`` costs 4x a plain one, per frame.

    ``payload`` is the frame text byte-for-byte (decoded as UTF-8); ``recv_ts_ns`` the local
    wall-clock receive time in nanoseconds since the epoch; ``conn_id``/``conn_seq`` identify
    the connection and the frame's position on it (REST pages: the request id and page number).
    ``error`` is set only on dead letters (channel ``deadletter``): why the frame was rejected.
    """

    exchange: str
    channel: Channel
    stream: str
    payload: str
    recv_ts_ns: int
    conn_id: str
    conn_seq: int
    source: Source = "ws"
    native_symbol: str | None = None
    error: str | None = None

    def to_json(self) -> str:
        return self.to_json_bytes().decode()

    def to_json_bytes(self) -> bytes:
        """The envelope as one compact JSON object in UTF-8, keys in field order, non-ASCII
        unescaped: byte for byte what ``json.dumps(asdict(e), separators=(",", ":"),
        ensure_ascii=False).encode()`` gives (tests/extractors/test_serialization.py proves it),
        about 7x faster. A value orjson refuses (a lone surrogate) goes the stdlib way, which
        fails the same way the old path did when encoding."""
        try:
            return orjson.dumps(self._fields())
        except orjson.JSONEncodeError:
            return json.dumps(self._fields(), separators=(",", ":"), ensure_ascii=False).encode()

    def _fields(self) -> dict[str, Any]:
        return {
            "exchange": self.exchange,
            "channel": self.channel,
            "stream": self.stream,
            "payload": self.payload,
            "recv_ts_ns": self.recv_ts_ns,
            "conn_id": self.conn_id,
            "conn_seq": self.conn_seq,
            "source": self.source,
            "native_symbol": self.native_symbol,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, line: str | bytes) -> Envelope:
        return cls(**orjson.loads(line))


@dataclass(frozen=True, slots=True)
class Batch:
    """Envelopes of one (exchange, channel[, symbol]) flushed together; one Kafka record, one file part.

    ``key`` is the Kafka record key: the native symbol for per-symbol batches, else the channel.
    ``batch_id`` is unique per process run and increases, so replays can be recognised.
    """

    exchange: str
    channel: Channel
    key: str
    batch_id: str
    envelopes: tuple[Envelope, ...] = field(default_factory=tuple)
    #: The JSON lines of ``envelopes`` when the batcher already built them (it measures each
    #: line's exact size); not part of equality: always equal to serializing ``envelopes``.
    lines: tuple[bytes, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def topic(self) -> str:
        """Kafka topic ``raw.<exchange>.<channel>``."""
        return f"raw.{self.exchange}.{self.channel}"

    @property
    def first_recv_ts_ns(self) -> int:
        return min(e.recv_ts_ns for e in self.envelopes)

    def to_jsonl(self) -> bytes:
        """The batch as UTF-8 JSON lines (one envelope per line, trailing newline)."""
        lines = self.lines
        if lines is None:
            lines = tuple(e.to_json_bytes() + b"\n" for e in self.envelopes)
        return b"".join(lines)

    @classmethod
    def envelopes_from_jsonl(cls, data: bytes) -> list[Envelope]:
        return [Envelope.from_json(line) for line in data.splitlines() if line.strip()]
