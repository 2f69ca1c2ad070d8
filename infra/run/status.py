"""The run's status: read from what the children already expose, no Spark in this process.

- per exchange: the extractor's Prometheus ``/metrics`` (frames/s of data frames, open
  connections, reconnects, gap fills done and gaps recorded), summed over restarts;
- per table: the Delta log through delta-rs (rows, version, age of the last commit, and how far
  the newest row's ``event_ts`` is behind now, from the files' statistics);
- the Spark driver's micro-batch durations, from its log lines (``live batch N: ... in S s``);
- the data-quality pass rate: rows that passed over rows validated, from ``gold.dq_results``.

:func:`format_status_line` (one ``key=value`` line, for logs and pipes) and :func:`render`
(a ``rich`` table, for a terminal) show a :class:`Snapshot`.
"""

from __future__ import annotations

import logging
import re
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Tables shown, with the column whose newest value says how far behind the table is.
TABLES: tuple[tuple[str, str | None], ...] = (
    ("bronze.raw_events", "ingest_ts"),
    ("silver.trades", "event_ts"),
    ("silver.tickers", "event_ts"),
    ("silver.l1_quotes", "event_ts"),
    ("silver.quarantine", None),
    ("gold.ohlcv_1m", None),
    ("gold.dq_results", None),
)

_PREFIX = "cryptolake_extractor_"
#: What the status shows per exchange, from which counter (labels other than exchange are summed).
_COUNTERS = {
    "frames": "frames_total",
    "reconnects": "reconnects_total",
    "gaps_filled": "gaps_filled_total",
    "gaps_recorded": "gaps_unrecoverable_total",
}


@dataclass
class ExchangeStatus:
    exchange: str
    connections: int = 0
    frames_per_s: float = 0.0
    frames: int = 0
    reconnects: int = 0
    gaps_filled: int = 0
    gaps_recorded: int = 0


@dataclass
class TableStatus:
    name: str
    rows: int = 0
    version: int = -1
    last_commit_age_s: float | None = None
    behind_s: float | None = None


@dataclass
class ChildStatus:
    name: str
    state: str
    pid: int | None = None
    restarts: int = 0
    uptime_s: float = 0.0
    note: str = ""


@dataclass
class Snapshot:
    uptime_s: float
    source: str
    bus: str
    lake_root: str
    serve_url: str
    children: list[ChildStatus] = field(default_factory=list)
    exchanges: list[ExchangeStatus] = field(default_factory=list)
    tables: list[TableStatus] = field(default_factory=list)
    batches: int = 0
    batch_last_s: float | None = None
    batch_p50_s: float | None = None
    dq_pass_rate: float | None = None


def parse_metrics(text: str) -> dict[str, dict[str, float]]:
    """Prometheus text -> per exchange ``{frames, reconnects, gaps_filled, gaps_recorded, connections}``.

    ``frames`` counts data frames only (``kind="data"``).
    """
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {_PREFIX + name: key for key, name in _COUNTERS.items()}
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            exchange = sample.labels.get("exchange")
            if not exchange:
                continue
            if sample.name == _PREFIX + "connections":
                out.setdefault(exchange, {})["connections"] = sample.value
                continue
            key = wanted.get(sample.name)
            if key is None or (key == "frames" and sample.labels.get("kind") != "data"):
                continue
            values = out.setdefault(exchange, {})
            values[key] = values.get(key, 0.0) + sample.value
    return out


class ExtractorWatch:
    """Scrapes ``/metrics``; keeps totals across extractor restarts (a counter that fell restarted)."""

    def __init__(self, url: str, exchanges: Sequence[str]) -> None:
        self.url = url
        self.exchanges = tuple(exchanges)
        self._base: dict[tuple[str, str], float] = {}
        self._last: dict[tuple[str, str], float] = {}
        self._rate_from: tuple[float, dict[str, int]] | None = None  # (time, frames per exchange)
        self._status = {ex: ExchangeStatus(ex) for ex in self.exchanges}

    def update(self, *, now: float, text: str | None = None) -> list[ExchangeStatus]:
        """Scrape (or take ``text``); an extractor that does not answer shows 0 connections."""
        if text is None:
            try:
                with urllib.request.urlopen(self.url, timeout=1.0) as response:
                    text = response.read().decode()
            except OSError:
                for status in self._status.values():
                    status.connections = 0
                    status.frames_per_s = 0.0
                return list(self._status.values())
        parsed = parse_metrics(text)
        for exchange in self.exchanges:
            values = parsed.get(exchange, {})
            status = self._status[exchange]
            status.connections = int(values.get("connections", 0))
            for key in _COUNTERS:
                value = values.get(key, 0.0)
                if value < self._last.get((exchange, key), 0.0):  # the process restarted
                    self._base[(exchange, key)] = (
                        self._base.get((exchange, key), 0.0) + self._last[(exchange, key)]
                    )
                self._last[(exchange, key)] = value
                setattr(status, key, int(self._base.get((exchange, key), 0.0) + value))
        frames = {ex: s.frames for ex, s in self._status.items()}
        if self._rate_from is not None and now > self._rate_from[0]:
            since, before = self._rate_from
            for ex, s in self._status.items():
                s.frames_per_s = max(0.0, (frames[ex] - before.get(ex, 0)) / (now - since))
        self._rate_from = (now, frames)
        return list(self._status.values())


class TableWatch:
    """One Delta table through delta-rs, re-read only when its version moved."""

    def __init__(
        self, name: str, uri: str, time_column: str | None, storage_options: Mapping[str, str] | None
    ):
        self.name = name
        self.uri = uri
        self.time_column = time_column
        self.storage_options = dict(storage_options) if storage_options else None
        self._table: Any = None
        self._newest: datetime | None = None
        self._commit_ms: int | None = None
        self.status = TableStatus(name)

    def _open(self) -> Any:
        from deltalake import DeltaTable

        if self._table is None:
            if "://" not in self.uri and not (Path(self.uri) / "_delta_log").is_dir():
                return None
            if not DeltaTable.is_deltatable(self.uri, storage_options=self.storage_options):
                return None
            self._table = DeltaTable(self.uri, storage_options=self.storage_options)
            return self._table
        self._table.update_incremental()
        return self._table

    def update(self, *, now: float) -> TableStatus:
        try:
            table = self._open()
        except Exception as exc:  # a commit being written, a store that blinks: try again next time
            logger.debug("reading %s: %s", self.uri, exc)
            table = self._table
        if table is not None and table.version() != self.status.version:
            self.status.version = table.version()
            adds = table.get_add_actions(flatten=True)
            self.status.rows = int(sum(n or 0 for n in adds.column("num_records").to_pylist()))
            column = f"max.{self.time_column}" if self.time_column else None
            if column and column in adds.column_names:
                values = [v for v in adds.column(column).to_pylist() if v is not None]
                self._newest = max(values) if values else None
            history = table.history(1)
            self._commit_ms = int(history[0]["timestamp"]) if history else None
        wall = time.time()
        self.status.last_commit_age_s = (
            None if self._commit_ms is None else max(0.0, wall - self._commit_ms / 1000)
        )
        if self._newest is not None:
            newest = self._newest if self._newest.tzinfo else self._newest.replace(tzinfo=UTC)
            self.status.behind_s = max(0.0, wall - newest.timestamp())
        return self.status

    def dq_pass_rate(self) -> float | None:
        """Rows that passed over rows validated, over every ``gold.dq_results`` row."""
        if self._table is None:
            return None
        data = self._table.to_pyarrow_table(columns=["evaluated", "failed"])
        evaluated = sum(v or 0 for v in data.column("evaluated").to_pylist())
        failed = sum(v or 0 for v in data.column("failed").to_pylist())
        return None if evaluated == 0 else 1.0 - failed / evaluated


_BATCH_LINE = re.compile(r"live batch (\d+): (\d+) envelopes in ([\d.]+) s")


class BatchLog:
    """Micro-batch durations from the Spark driver's log file, read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self.durations: list[float] = []

    def update(self) -> list[float]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except OSError:
            return self.durations
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        for match in _BATCH_LINE.finditer(chunk[:end].decode(errors="replace")):
            self.durations.append(float(match.group(3)))
        del self.durations[:-1000]
        return self.durations


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_status_line(snap: Snapshot) -> str:
    """One ``key=value`` line: ``status uptime_s=.. <child>=<state>[/restarts] <exchange>.fps=.. ...``."""
    parts = [f"status uptime_s={snap.uptime_s:.0f}", f"source={snap.source}"]
    for child in snap.children:
        parts.append(
            f"{child.name}={child.state}" + (f"/restarts:{child.restarts}" if child.restarts else "")
        )
    for ex in snap.exchanges:
        parts += [
            f"{ex.exchange}.conns={ex.connections}",
            f"{ex.exchange}.fps={ex.frames_per_s:.1f}",
            f"{ex.exchange}.reconnects={ex.reconnects}",
            f"{ex.exchange}.gaps_filled={ex.gaps_filled}",
            f"{ex.exchange}.gaps_recorded={ex.gaps_recorded}",
        ]
    for table in snap.tables:
        if table.version < 0:
            continue
        parts += [
            f"{table.name}.rows={table.rows}",
            f"{table.name}.commit_age_s={_num(table.last_commit_age_s)}",
        ]
        if table.behind_s is not None:
            parts.append(f"{table.name}.behind_s={table.behind_s:.1f}")
    parts += [
        f"batches={snap.batches}",
        f"batch_last_s={_num(snap.batch_last_s)}",
        f"batch_p50_s={_num(snap.batch_p50_s)}",
        f"dq_pass={'-' if snap.dq_pass_rate is None else f'{100 * snap.dq_pass_rate:.2f}%'}",
    ]
    return " ".join(parts)


def render(snap: Snapshot) -> Any:
    """A ``rich`` renderable of the snapshot (children, exchanges, tables, batches and quality)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    head = Text.assemble(
        ("cryptolake ", "bold"),
        f"source {snap.source} · bus {snap.bus} · lake {snap.lake_root} · up {snap.uptime_s:.0f} s · ",
        (snap.serve_url, "bold cyan"),
        "  (Ctrl-C stops)",
    )
    children = Table(title="processes", title_justify="left", expand=False)
    for column in ("child", "state", "pid", "up s", "restarts", "note"):
        children.add_column(column)
    colors = {"running": "green", "restarting": "yellow", "failed": "bold red", "starting": "cyan"}
    for c in snap.children:
        children.add_row(
            c.name,
            Text(c.state, style=colors.get(c.state, "")),
            str(c.pid or "-"),
            f"{c.uptime_s:.0f}",
            str(c.restarts),
            c.note,
        )
    exchanges = Table(title="exchanges (extractor /metrics)", title_justify="left")
    for column in ("exchange", "conns", "frames/s", "frames", "reconnects", "gaps filled", "gaps recorded"):
        exchanges.add_column(column, justify="right" if column != "exchange" else "left")
    for e in snap.exchanges:
        exchanges.add_row(
            e.exchange,
            str(e.connections),
            f"{e.frames_per_s:.1f}",
            str(e.frames),
            str(e.reconnects),
            str(e.gaps_filled),
            str(e.gaps_recorded),
        )
    tables = Table(title="tables (Delta log)", title_justify="left")
    for column in ("table", "rows", "version", "last commit s ago", "behind s"):
        tables.add_column(column, justify="right" if column != "table" else "left")
    for t in snap.tables:
        if t.version < 0:
            tables.add_row(t.name, "-", "-", "not yet", "-")
            continue
        tables.add_row(t.name, f"{t.rows:,}", str(t.version), _num(t.last_commit_age_s), _num(t.behind_s))
    foot = Text(
        f"micro-batches {snap.batches} · last {_num(snap.batch_last_s)} s · p50 {_num(snap.batch_p50_s)} s · "
        f"data quality {'-' if snap.dq_pass_rate is None else f'{100 * snap.dq_pass_rate:.2f} % rows passed'}"
    )
    return Group(head, children, exchanges, tables, foot)
