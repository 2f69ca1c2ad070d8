"""The ground-truth log: every trade the simulator emitted, in memory and as JSON lines.

A record is created when a trade is generated. Its ``delivered`` flag becomes true when a
websocket trade frame carrying it (Binance ``@trade``/``@aggTrade``, KuCoin ``/market/match``,
Coinbase ``matches``) has been written intact to at least one subscriber. Frames dropped by a
fault (close, stall, replaced by a malformed frame) or never subscribed leave it false. A record
is written to the JSON-lines file once its delivery is settled (no connection still holds the
frame in its send queue), so the file never needs rewriting; ``close()`` writes the rest.

JSON line fields: exchange, native_symbol, symbol, base, quote, trade_id (string), price,
size (strings exactly as sent), side (taker side, ``buy``/``sell``), ts_ms (event time in ms),
ts_event (the event time exactly as the trade frame carries it), delivered.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any


@dataclass(slots=True, eq=False)
class TruthRecord:
    exchange: str
    native_symbol: str
    symbol: str
    base: str
    quote: str
    trade_id: str
    price: str
    size: str
    side: str
    ts_ms: int
    ts_event: str
    delivered: bool = False
    pending: int = field(default=0, repr=False)
    #: The ``bad_trade`` fault that spoiled this trade (``negative_price``, ...), else ``None``.
    fault: str | None = None

    def to_dict(self) -> dict[str, Any]:
        fault = {"fault": self.fault} if self.fault is not None else {}
        return {
            "exchange": self.exchange,
            "native_symbol": self.native_symbol,
            "symbol": self.symbol,
            "base": self.base,
            "quote": self.quote,
            "trade_id": self.trade_id,
            "price": self.price,
            "size": self.size,
            "side": self.side,
            "ts_ms": self.ts_ms,
            "ts_event": self.ts_event,
            "delivered": self.delivered,
        } | fault


class GroundTruth:
    """Thread-safe list of :class:`TruthRecord` with filters, optionally mirrored to a file."""

    def __init__(self, path: str | Path | None = None) -> None:
        self._records: list[TruthRecord] = []
        self._unwritten: deque[TruthRecord] = deque()
        self._lock = threading.Lock()
        self.path = Path(path) if path is not None else None
        self._file: IO[str] | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", encoding="utf-8")

    def append(self, record: TruthRecord) -> None:
        with self._lock:
            self._records.append(record)
            if self._file is not None:
                self._unwritten.append(record)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[TruthRecord]:
        return iter(self.records())

    def records(
        self,
        exchange: str | None = None,
        native_symbol: str | None = None,
        *,
        delivered: bool | None = None,
    ) -> list[TruthRecord]:
        """A snapshot of the records, filtered by exchange, native symbol and delivery."""
        with self._lock:
            snapshot = list(self._records)
        return [
            r
            for r in snapshot
            if (exchange is None or r.exchange == exchange)
            and (native_symbol is None or r.native_symbol == native_symbol)
            and (delivered is None or r.delivered == delivered)
        ]

    def find(self, exchange: str, native_symbol: str, trade_id: str) -> TruthRecord | None:
        for r in reversed(self.records(exchange, native_symbol)):
            if r.trade_id == trade_id:
                return r
        return None

    def flush(self, *, force: bool = False) -> int:
        """Write settled records (all of them when ``force``) in emission order; return count."""
        if self._file is None:
            return 0
        lines: list[str] = []
        with self._lock:
            while self._unwritten and (force or self._unwritten[0].pending <= 0):
                lines.append(json.dumps(self._unwritten.popleft().to_dict(), separators=(",", ":")))
        if lines:
            self._file.write("\n".join(lines) + "\n")
            self._file.flush()
        return len(lines)

    def close(self) -> None:
        self.flush(force=True)
        if self._file is not None:
            self._file.close()
            self._file = None


def read_truth_file(path: str | Path) -> list[dict[str, Any]]:
    """Load a ground-truth JSON-lines file written by :class:`GroundTruth`."""
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
