"""One Great Expectations suite per lake table, as code: the single source of truth for data quality.

Each suite is a GX Core 1.x :class:`~great_expectations.ExpectationSuite` named after its table
(``silver.trades``). Every expectation carries a stable name in ``meta["name"]`` (``price_positive``):
the name quarantined rows list in ``silver.quarantine.reason`` and ``gold.dq_results`` reports.

Severity says what a failure does:

* ``critical`` (GX's default): a row-level failure sends the row to quarantine;
* ``warning``: counted and reported, the row is written anyway. The natural key's uniqueness in a
  batch is a warning: delivery is at-least-once (a websocket trade and its REST gap-fill twin land in
  one batch), and the silver writer keeps the first copy.

Bounds that move with time (event time not in the future beyond the clock skew) are GX suite
parameters (``{"$PARAMETER": "max_event_ts"}``), filled per batch by :func:`parameters`. Values
that no column holds (receive - event latency) are *derived columns* (:attr:`TableSuite.derived`),
added to the batch before it is validated and dropped after.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
from great_expectations.expectations.expectation import Expectation
from great_expectations.expectations.metadata_types import FailureSeverity
from great_expectations.expectations.row_conditions import Column as GXColumn
from pyspark.sql import Column
from pyspark.sql import functions as F

#: ``BASE-QUOTE``, upper case letters and digits (``BTC-USDT``, ``1000SATS-USDT``).
CANONICAL_SYMBOL = r"^[A-Z0-9]{1,20}-[A-Z0-9]{1,20}$"
#: Nothing in the lake happened before this (Bitcoin's first exchange trades were in 2010).
EPOCH_FLOOR = datetime(2010, 1, 1, tzinfo=UTC)
#: Channels an envelope may carry (``extractors``; ``klines`` is the completeness work's).
CHANNELS = ("ticker", "trades", "l1", "markets", "deadletter", "gaps", "klines")


@dataclass(frozen=True, kw_only=True)
class DqSettings:
    """Data-quality settings (YAML section ``expectations:``).

    ``clock_skew_s``: how far an exchange's clock (or ours) may run ahead: an event time later than
    now + skew, or a receive time before the event time by more than that, is rejected.
    ``max_latency_s``: receive - event time allowed for websocket rows (REST gap-fill rows are old
    by design and are not held to it). ``max_spread_bps``: widest L1 spread accepted.
    ``alert_quarantined_ratio``: above this share of a batch quarantined, an alert is logged and
    counted. ``gx_every_n_batches``: also run the full GX validation every N-th batch (0 = never),
    see :mod:`expectations.validate` for why not every batch. ``warnings_every_batch``: evaluate
    warning-severity expectations (key uniqueness, which needs a shuffle) in every batch too, not
    only in the GX runs.
    """

    clock_skew_s: float = 5.0
    max_latency_s: float = 300.0
    max_spread_bps: float = 5000.0
    alert_quarantined_ratio: float = 0.05
    gx_every_n_batches: int = 0
    warnings_every_batch: bool = False


def named(expectation: Expectation, name: str) -> Expectation:
    """Give an expectation its stable name (``meta["name"]``)."""
    expectation.meta = {**(expectation.meta or {}), "name": name}
    return expectation


def expectation_name(expectation: Expectation) -> str:
    """The stable name of an expectation: ``meta["name"]``, else ``<type>:<column(s)>``."""
    meta = expectation.meta or {}
    if meta.get("name"):
        return str(meta["name"])
    kwargs = expectation.configuration.kwargs
    cols = (
        kwargs.get("column") or kwargs.get("column_list") or [kwargs.get(k) for k in ("column_A", "column_B")]
    )
    if isinstance(cols, list):
        cols = "+".join(str(c) for c in cols)
    return f"{expectation.expectation_type}:{cols}"


@dataclass(frozen=True)
class TableSuite:
    """A table's suite (built fresh by ``build``, GX suites are mutable) and its derived columns."""

    table: str
    build: Callable[[DqSettings], gx.ExpectationSuite]
    #: Columns added before validation (name -> expression over the table's columns).
    derived: Mapping[str, Callable[[], Column]] = field(default_factory=dict)


def _not_null(column: str) -> Expectation:
    return named(gxe.ExpectColumnValuesToNotBeNull(column=column), f"{column}_present")


def _positive(column: str) -> Expectation:
    return named(
        gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0, strict_min=True), f"{column}_positive"
    )


def _non_negative(column: str) -> Expectation:
    return named(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0), f"{column}_non_negative")


def _at_most(low: str, high: str, name: str) -> Expectation:
    """``low <= high`` where both are present."""
    return named(
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=high, column_B=low, or_equal=True, ignore_row_if="either_value_is_missing"
        ),
        name,
    )


def _symbol() -> Expectation:
    pattern = gxe.ExpectColumnValuesToMatchRegex(column="symbol", regex=CANONICAL_SYMBOL)
    return named(pattern, "symbol_canonical")


def _event_time() -> Expectation:
    return named(
        gxe.ExpectColumnValuesToBeBetween(
            column="event_ts",
            min_value={"$PARAMETER": "min_ts"},
            max_value={"$PARAMETER": "max_event_ts"},
        ),
        "event_ts_not_future",
    )


def _latency(settings: DqSettings) -> Expectation:
    return named(
        gxe.ExpectColumnValuesToBeBetween(
            column="latency_ms",
            min_value=-settings.clock_skew_s * 1000,
            max_value=settings.max_latency_s * 1000,
            row_condition=GXColumn("source") == "ws",
        ),
        "latency_within_bounds",
    )


def _unique(*columns: str) -> Expectation:
    return named(
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=list(columns), ignore_row_if="any_value_is_missing", severity=FailureSeverity.WARNING
        ),
        "key_unique_in_batch",
    )


def _latency_ms() -> Column:
    """Receive - event time in milliseconds (exact: microsecond integers)."""
    return F.floor((F.unix_micros("recv_ts") - F.unix_micros("event_ts")) / 1000).cast("long")


def _suite(name: str, *expectations: Expectation) -> gx.ExpectationSuite:
    return gx.ExpectationSuite(name=name, expectations=list(expectations))


def bronze_raw_events(settings: DqSettings) -> gx.ExpectationSuite:
    return _suite(
        "bronze.raw_events",
        _not_null("exchange"),
        named(gxe.ExpectColumnValuesToBeInSet(column="channel", value_set=list(CHANNELS)), "channel_known"),
        named(gxe.ExpectColumnValuesToNotBeNull(column="payload"), "payload_present"),
        named(gxe.ExpectColumnValueLengthsToBeBetween(column="payload", min_value=2), "payload_not_empty"),
        named(gxe.ExpectColumnValuesToBeInSet(column="source", value_set=["ws", "rest"]), "source_known"),
        _not_null("recv_ts_ns"),
        named(
            gxe.ExpectColumnValuesToBeBetween(
                column="recv_ts_ns",
                min_value={"$PARAMETER": "min_ts_ns"},
                max_value={"$PARAMETER": "max_recv_ts_ns"},
            ),
            "recv_ts_sane",
        ),
    )


def silver_trades(settings: DqSettings) -> gx.ExpectationSuite:
    return _suite(
        "silver.trades",
        _not_null("exchange"),
        _symbol(),
        _not_null("trade_id"),
        _not_null("price"),
        _positive("price"),
        _not_null("size"),
        _positive("size"),
        named(gxe.ExpectColumnValuesToBeInSet(column="side", value_set=["buy", "sell"]), "side_buy_or_sell"),
        _not_null("event_ts"),
        _event_time(),
        _latency(settings),
        _unique("exchange", "symbol", "trade_id"),
    )


def silver_l1_quotes(settings: DqSettings) -> gx.ExpectationSuite:
    return _suite(
        "silver.l1_quotes",
        _not_null("exchange"),
        _symbol(),
        _positive("bid_price"),
        _positive("ask_price"),
        _non_negative("bid_size"),
        _non_negative("ask_size"),
        _at_most("bid_price", "ask_price", "bid_at_most_ask"),
        named(
            gxe.ExpectColumnValuesToBeBetween(
                column="spread_bps", min_value=0, max_value=settings.max_spread_bps
            ),
            "spread_within_bounds",
        ),
        _not_null("event_ts"),
        _event_time(),
        _unique("exchange", "symbol", "event_ts", "sequence"),
    )


def silver_tickers(settings: DqSettings) -> gx.ExpectationSuite:
    return _suite(
        "silver.tickers",
        _not_null("exchange"),
        _symbol(),
        _not_null("last"),
        _positive("last"),
        _non_negative("low_24h"),
        _at_most("low_24h", "high_24h", "low_at_most_high_24h"),
        _non_negative("base_volume_24h"),
        _non_negative("quote_volume_24h"),
        _at_most("best_bid", "best_ask", "bid_at_most_ask"),
        _not_null("event_ts"),
        _event_time(),
        _unique("exchange", "symbol", "event_ts", "sequence"),
    )


def gold_ohlcv_1m(settings: DqSettings) -> gx.ExpectationSuite:
    return _suite(
        "gold.ohlcv_1m",
        _not_null("exchange"),
        _symbol(),
        _positive("low"),
        _at_most("low", "open", "low_at_most_open"),
        _at_most("low", "close", "low_at_most_close"),
        _at_most("open", "high", "open_at_most_high"),
        _at_most("close", "high", "close_at_most_high"),
        _non_negative("volume"),
        _non_negative("quote_volume"),
        named(gxe.ExpectColumnValuesToBeBetween(column="trade_count", min_value=1), "trade_count_at_least_1"),
        _at_most("low", "vwap", "vwap_at_least_low"),
        _at_most("vwap", "high", "vwap_at_most_high"),
        _unique("exchange", "symbol", "minute"),
    )


#: Every suite, by the table it validates.
SUITES: dict[str, TableSuite] = {
    s.table: s
    for s in (
        TableSuite("bronze.raw_events", bronze_raw_events),
        TableSuite("silver.trades", silver_trades, derived={"latency_ms": _latency_ms}),
        TableSuite("silver.l1_quotes", silver_l1_quotes),
        TableSuite("silver.tickers", silver_tickers),
        TableSuite("gold.ohlcv_1m", gold_ohlcv_1m),
    )
}


def suite_for(table: str) -> TableSuite:
    try:
        return SUITES[table]
    except KeyError:
        raise KeyError(f"no expectation suite for {table!r}; suites: {', '.join(sorted(SUITES))}") from None


def parameters(settings: DqSettings, *, now: datetime) -> dict[str, Any]:
    """The suite parameters of a batch validated at ``now`` (UTC)."""
    skew = timedelta(seconds=settings.clock_skew_s)
    return {
        "min_ts": EPOCH_FLOOR,
        "max_event_ts": now + skew,
        "min_ts_ns": int(EPOCH_FLOOR.timestamp()) * 1_000_000_000,
        "max_recv_ts_ns": int((now + skew).timestamp() * 1_000_000) * 1000,
    }
