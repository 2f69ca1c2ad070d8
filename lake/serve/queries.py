"""The REST API's reads: SQL over the lake's Delta tables with DuckDB (no JVM), cached per version.

:class:`LakeReader` keeps one delta-rs handle per table and checks its version at most every
``check_s`` seconds (an incremental read of ``_delta_log``). A query names its tables; its
result is cached under (statement, parameters, versions of those tables), so repeated requests
between two commits cost a dictionary look-up, and a commit to one table leaves the cached
results of the others alone. When a version moves, a new DuckDB connection is built over the
tables' newest snapshots (``lake.sql.duckdb_connect``). A table that does not exist yet makes the
query raise :class:`MissingTable`.

Values come back JSON-ready: decimals as exact strings, timestamps as ISO 8601 UTC (``Z``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from lake.sql import _delta_uri, duckdb_connect
from lake.tables import Lake


class MissingTable(LookupError):
    """A table the query needs is not in the lake (yet); ``table`` names it."""

    def __init__(self, table: str, root: str) -> None:
        super().__init__(f"table {table} is not in the lake at {root} yet")
        self.table = table


def json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _decimal_text(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(timespec="microseconds") + "Z"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    return value


def _decimal_text(value: Decimal) -> str:
    """Exact, without exponent and without the trailing zeros of the column's scale."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


class LakeReader:
    """Cached DuckDB reads of the lake (see the module docstring). Thread-safe."""

    def __init__(self, lake: Lake, *, check_s: float = 0.5, max_entries: int = 512) -> None:
        self.lake = lake
        self.check_s = check_s
        self.max_entries = max_entries
        self._handles: dict[str, Any] = {}
        self._versions: dict[str, tuple[int, float]] = {}  # table -> (version, checked at)
        self._cache: OrderedDict[tuple[Any, ...], list[dict[str, Any]]] = OrderedDict()
        self._con: Any = None
        self._con_versions: dict[str, int] = {}
        self._lock = threading.Lock()  # handles, versions, cache, the current connection
        self._run_lock = threading.Lock()  # queries on a connection
        self.hits = 0
        self.misses = 0

    def version(self, table: str) -> int:
        """The table's current version (re-read at most every ``check_s``)."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        now = time.monotonic()
        seen = self._versions.get(table)
        if seen is not None and now - seen[1] < self.check_s:
            return seen[0]
        handle = self._handles.get(table)
        try:
            if handle is None:
                handle = DeltaTable(_delta_uri(self.lake.path(table)))
                self._handles[table] = handle
            else:
                handle.update_incremental()
        except TableNotFoundError:
            raise MissingTable(table, self.lake.root) from None
        version = int(handle.version())
        self._versions[table] = (version, now)
        return version

    def query(
        self, statement: str, params: Sequence[Any] = (), *, tables: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Rows of ``statement`` (DuckDB SQL, ``?`` parameters) as dicts of JSON-ready values."""
        with self._lock:
            versions = tuple((t, self.version(t)) for t in tables)
            key = (statement, tuple(params), versions)
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self.hits += 1
                return cached
            self.misses += 1
            con = self._connection(dict(versions))
        # On the connection itself, one query at a time: a table read through a pyarrow dataset
        # (one with reader features, or with no files yet) is registered on this connection
        # only, and a cursor (a second connection) would not see it.
        with self._run_lock:
            cursor = con.execute(statement, list(params))
            columns = [d[0] for d in cursor.description or ()]
            fetched = cursor.fetchall()
        rows = [dict(zip(columns, (json_value(v) for v in row), strict=True)) for row in fetched]
        with self._lock:
            self._cache[key] = rows
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return rows

    def _connection(self, versions: dict[str, int]) -> Any:
        """A DuckDB connection whose views are at least at ``versions`` (caller holds the lock)."""
        stale = any(self._con_versions.get(t, -1) < v for t, v in versions.items())
        if self._con is None or stale:
            known = {**self._con_versions, **versions}
            self._con = duckdb_connect(self.lake, tables=sorted(known))
            self._con_versions = known
        return self._con
