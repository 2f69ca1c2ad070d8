"""The REST API's questions, as SQL over gold (and silver.markets), with their answers shaped.

Each function takes a :class:`lake.serve.queries.LakeReader` and plain arguments and returns a
JSON-ready value; the HTTP layer (``lake.serve.app``) only parses parameters. Filters are
DuckDB parameters (``?``), never spliced into the SQL. Ratios computed here (spreads, shares) use
:class:`decimal.Decimal` on the exact values the tables hold.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from lake.serve.queries import LakeReader, MissingTable
from lake.sql import rollup_views

Interval = Literal["1m", "5m", "1h", "1d"]
INTERVALS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}
MAX_BARS = 5000


def _where(filters: dict[str, Any]) -> tuple[str, list[Any]]:
    given = {col: value for col, value in filters.items() if value is not None}
    if not given:
        return "", []
    return " WHERE " + " AND ".join(f"{col} = ?" for col in given), list(given.values())


def _bps(num: Decimal, den: Decimal) -> str:
    return format((num * 10000 / den).quantize(Decimal("1e-6")), "f")


def latest(
    reader: LakeReader, *, exchange: str | None = None, symbol: str | None = None
) -> list[dict[str, Any]]:
    """Per exchange and symbol: the last trade price (the newest 1m bar's close, native and USDT)
    and the newest L1 quote (``gold.l1_latest``). ``last_usdt`` is the newest bar's ``close_usdt``,
    so NULL while that bar is unpriced (DuckDB's ``max_by`` skips NULL values: it would give an
    older bar's, hence the struct)."""
    where, params = _where({"exchange": exchange, "symbol": symbol})
    sql = f"""
WITH bars AS (
  SELECT exchange, symbol, max_by(close, minute) AS last_price,
         max_by(struct_pack(v := close_usdt), minute).v AS last_usdt, max(last_trade_ts) AS last_trade_ts
  FROM gold.ohlcv_1m{where} GROUP BY exchange, symbol),
quotes AS (SELECT * FROM gold.l1_latest{where})
SELECT coalesce(q.exchange, b.exchange) AS exchange, coalesce(q.symbol, b.symbol) AS symbol,
       q.base, q.quote, b.last_price, b.last_usdt, b.last_trade_ts,
       q.bid_price, q.bid_size, q.ask_price, q.ask_size, q.mid_usdt, q.spread_bps,
       q.event_ts AS quote_ts, q.usdt_method
FROM quotes q FULL OUTER JOIN bars b ON q.exchange = b.exchange AND q.symbol = b.symbol
ORDER BY symbol, exchange"""
    return reader.query(sql, params * 2, tables=("gold.ohlcv_1m", "gold.l1_latest"))


def _floor(ts: datetime, interval: str) -> datetime:
    step = int(INTERVALS[interval].total_seconds())
    epoch = int(ts.replace(tzinfo=UTC).timestamp())
    return datetime.fromtimestamp(epoch - epoch % step, tz=UTC).replace(tzinfo=None)


def bars(
    reader: LakeReader,
    *,
    exchange: str,
    symbol: str,
    interval: str = "1m",
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    """Bars of one market, oldest first: ``[start, end)`` (UTC; ``start`` rounded down to the
    interval so the first bucket is whole), at most ``limit`` (the newest ones when more match).
    5m/1h/1d buckets are the rollups of ``lake.sql`` (``gold.ohlcv_5m`` ...) over the 1m bars."""
    limit = max(1, min(limit, MAX_BARS))
    conditions = ["exchange = ?", "symbol = ?"]
    params: list[Any] = [exchange, symbol]
    if start is not None:
        conditions.append("minute >= ?")
        params.append(_floor(start, interval))
    if end is not None:
        conditions.append("minute < ?")
        params.append(end.astimezone(UTC).replace(tzinfo=None) if end.tzinfo else end)
    source = f"(SELECT * FROM gold.ohlcv_1m WHERE {' AND '.join(conditions)}) AS m"
    usdt = "open_usdt, high_usdt, low_usdt, close_usdt, volume_usdt"
    if interval == "1m":
        select = (
            f"SELECT minute AS bucket_ts, open, high, low, close, volume, quote_volume, vwap, trade_count, "
            f"{usdt}, 1 AS minutes FROM {source}"
        )
    else:
        rollup = rollup_views("duckdb")[f"gold.ohlcv_{interval}"]
        inner = rollup.replace("FROM gold.ohlcv_1m", f"FROM {source}")
        select = (
            f"SELECT bucket_ts, open, high, low, close, volume, quote_volume, vwap, trade_count, {usdt}, "
            f"minutes FROM ({inner})"
        )
    sql = f"SELECT * FROM ({select} ORDER BY bucket_ts DESC LIMIT {limit}) ORDER BY bucket_ts"
    rows = [dict(r) for r in reader.query(sql, params, tables=("gold.ohlcv_1m",))]
    for row in rows:
        ts = datetime.fromisoformat(row["bucket_ts"].replace("Z", "+00:00"))
        row["time"] = int(ts.replace(tzinfo=ts.tzinfo or UTC).timestamp())
    return rows


def spread(reader: LakeReader, *, base: str | None = None, symbol: str | None = None) -> dict[str, Any]:
    """The cross-exchange spread of an asset (``base``: every quote, compared in USDT) or of one
    ``symbol`` (compared in its quote), from the newest quote of each venue (``gold.l1_latest``).

    ``mid_spread_bps``: (highest mid - lowest mid) / lowest mid. ``cross_bps``: (best bid - best
    ask) / best ask across venues; positive means the venues' books cross (buy on one, sell on the
    other). Venues without a USDT rate are listed but left out of a ``base`` comparison.
    """
    if (base is None) == (symbol is None):
        raise ValueError("give exactly one of base or symbol")
    where, params = _where({"base": base, "symbol": symbol})
    sql = f"""
SELECT exchange, symbol, quote, bid_price, ask_price, usdt_rate, mid_usdt, spread_bps, event_ts
FROM gold.l1_latest{where} ORDER BY exchange, symbol"""
    rows = reader.query(sql, params, tables=("gold.l1_latest",))
    venues = []
    for row in rows:
        bid, ask = Decimal(row["bid_price"] or "0"), Decimal(row["ask_price"] or "0")
        rate = Decimal(row["usdt_rate"]) if row["usdt_rate"] is not None else None
        if base is not None:
            if rate is None:
                venues.append({**row, "bid": None, "ask": None, "mid": None})
                continue
            bid, ask = bid * rate, ask * rate
        mid = (bid + ask) / 2 if bid > 0 and ask > 0 else None
        venues.append({**row, "bid": bid if bid > 0 else None, "ask": ask if ask > 0 else None, "mid": mid})
    priced = [v for v in venues if v["mid"] is not None]
    summary: dict[str, Any] = {"venues": len(priced), "unit": "USDT" if base is not None else "quote"}
    if priced:
        low = min(priced, key=lambda v: v["mid"])
        high = max(priced, key=lambda v: v["mid"])
        best_bid = max(priced, key=lambda v: v["bid"])
        best_ask = min(priced, key=lambda v: v["ask"])
        summary |= {
            "low_mid": _text(low["mid"]),
            "low_mid_exchange": f"{low['exchange']}:{low['symbol']}",
            "high_mid": _text(high["mid"]),
            "high_mid_exchange": f"{high['exchange']}:{high['symbol']}",
            "mid_spread_bps": _bps(high["mid"] - low["mid"], low["mid"]),
            "best_bid": _text(best_bid["bid"]),
            "best_bid_exchange": f"{best_bid['exchange']}:{best_bid['symbol']}",
            "best_ask": _text(best_ask["ask"]),
            "best_ask_exchange": f"{best_ask['exchange']}:{best_ask['symbol']}",
            "cross_bps": _bps(best_bid["bid"] - best_ask["ask"], best_ask["ask"]),
        }
    for v in venues:
        for k in ("bid", "ask", "mid"):
            v[k] = _text(v[k])
    return {"base": base, "symbol": symbol, **summary, "quotes": venues}


def _text(value: Decimal | None) -> str | None:
    """At most 18 fraction digits (the lake's scale), exact, no exponent."""
    if value is None:
        return None
    text = format(value.quantize(Decimal("1e-18")), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def volume_share(reader: LakeReader, *, day: date | None = None, symbol: str | None = None) -> dict[str, Any]:
    """Each exchange's share of the USDT volume of one UTC day (the newest day by default), over
    every symbol or one; from ``gold.exchange_volume_daily``. ``share`` = the venue's priced USDT
    volume / all venues' (exact decimals, 18 digits)."""
    conditions: list[str] = []
    params: list[Any] = []
    if symbol is not None:
        conditions.append("symbol = ?")
        params.append(symbol)
    if day is not None:
        conditions.append("trade_date = ?")
        params.append(day)
    else:
        sub = " AND ".join(["1 = 1", *conditions])
        conditions.append(
            f"trade_date = (SELECT max(trade_date) FROM gold.exchange_volume_daily WHERE {sub})"
        )
        params = params * 2
    sql = f"""
SELECT trade_date, exchange, sum(volume_usdt) AS volume_usdt, sum(trade_count) AS trade_count,
       sum(unpriced_trade_count) AS unpriced_trade_count, count(*) AS symbols
FROM gold.exchange_volume_daily WHERE {" AND ".join(conditions)}
GROUP BY trade_date, exchange ORDER BY exchange"""
    rows = reader.query(sql, params, tables=("gold.exchange_volume_daily",))
    total = sum((Decimal(r["volume_usdt"]) for r in rows if r["volume_usdt"] is not None), Decimal(0))
    out = []
    for r in rows:
        vol = Decimal(r["volume_usdt"]) if r["volume_usdt"] is not None else None
        share = _text(vol / total) if vol is not None and total > 0 else None
        out.append({**r, "share": share})
    found = rows[0]["trade_date"] if rows else (day.isoformat() if day else None)
    return {"trade_date": found, "symbol": symbol, "volume_usdt": _text(total), "exchanges": out}


def markets(reader: LakeReader) -> list[dict[str, Any]]:
    """Every market from the newest discovery snapshots (``silver.markets``)."""
    sql = """
SELECT exchange, native_symbol, symbol, base, quote, status FROM silver.markets ORDER BY symbol, exchange"""
    return reader.query(sql, tables=("silver.markets",))


def quality(reader: LakeReader, *, now: datetime | None = None) -> dict[str, Any]:
    """Data quality per suite and table (``gold.dq_results``: batches, rows evaluated, failed,
    quarantined, the newest batch's result) and freshness per exchange (newest quote and trade
    times, and their age in seconds at ``now``). A table not in the lake yet gives ``null`` and
    its name under ``missing``."""
    now = now or datetime.now(UTC)
    out: dict[str, Any] = {"checked_at": now.isoformat().replace("+00:00", "Z"), "missing": []}
    dq_sql = """
SELECT suite, "table", count(*) AS batches, count(*) FILTER (WHERE NOT success) AS failed_batches,
       sum(evaluated) AS evaluated, sum(failed) AS failed, sum(quarantined) AS quarantined,
       max_by(success, checked_ts) AS last_success, max(checked_ts) AS last_checked_ts
FROM gold.dq_results GROUP BY suite, "table" ORDER BY "table", suite"""
    fresh_sql = """
WITH q AS (SELECT exchange, max(event_ts) AS newest_quote_ts, count(*) AS markets_quoted
           FROM gold.l1_latest GROUP BY exchange),
     b AS (SELECT exchange, max(last_trade_ts) AS newest_trade_ts, max(minute) AS newest_bar_minute
           FROM gold.ohlcv_1m GROUP BY exchange)
SELECT coalesce(q.exchange, b.exchange) AS exchange, q.newest_quote_ts, q.markets_quoted,
       b.newest_trade_ts, b.newest_bar_minute
FROM q FULL OUTER JOIN b ON q.exchange = b.exchange ORDER BY exchange"""
    try:
        out["quality"] = reader.query(dq_sql, tables=("gold.dq_results",))
    except MissingTable:
        out["quality"] = None
        out["missing"].append("gold.dq_results")
    try:
        fresh = reader.query(fresh_sql, tables=("gold.l1_latest", "gold.ohlcv_1m"))
    except MissingTable as exc:
        fresh = None
        out["missing"].append(exc.table)
    if fresh is not None:
        fresh = [dict(r) for r in fresh]
        for r in fresh:
            for col, age in (("newest_quote_ts", "quote_age_s"), ("newest_trade_ts", "trade_age_s")):
                ts = r[col]
                r[age] = (
                    round((now - datetime.fromisoformat(ts.replace("Z", "+00:00"))).total_seconds(), 3)
                    if ts
                    else None
                )
    out["freshness"] = fresh
    return out
