"""Validate one micro-batch against its table's suite, before the write, on the Spark DataFrame.

:meth:`Validator.validate` (or the module-level :func:`validate`) is called from ``foreachBatch``:

1. the suite's derived columns are added and every expectation becomes a verdict column (NULL:
   not judged, true: failed; :mod:`expectations.predicates`), a row is bad when a critical one
   failed. The flagged batch is persisted (``cache``), so what follows computes the input once.
   Warning-severity expectations are evaluated here only with ``warnings_every_batch``;
2. one aggregation (one small Spark job, one row back to the driver) counts, per expectation, the
   rows evaluated and failed;
3. ``good`` = rows that failed no critical expectation and that the parser did not reject
   (``_error`` NULL), with the input's columns; ``bad`` = the others as ``silver.quarantine`` rows,
   ``reason`` = the parser's reason, or ``expectation:`` and the failed expectations' names (built
   for bad rows only);
4. every ``gx_every_n_batches``-th batch, the real GX validation of the same suite runs on the same
   rows too (its results replace the Spark counts in ``gold.dq_results``; a disagreement between
   the two is logged as a bug in the translation);
5. metrics are updated and, above ``alert_quarantined_ratio``, an alert is logged.

A writer that collects columns of the batch anyway (the silver writer collects its keys) calls
:meth:`Validator.flag`, adds :meth:`Flagged.count_columns` to its own collect and hands that to
:meth:`Validator.complete`: the same results without the counting job of step 2.

Nothing here raises for bad data or a broken suite: if validation itself fails, the batch passes
through unvalidated (``good`` is the input, ``bad`` empty), the error is logged, counted in
``cryptolake_dq_validation_errors_total`` and recorded in ``gold.dq_results`` (``success`` false,
``engine`` ``error``). Call :meth:`Validated.release` once ``good`` and ``bad`` are written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

import great_expectations as gx
import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client import Counter, Gauge, Histogram
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from expectations.predicates import Check, column_alias, compile_expectation
from expectations.suites import DqSettings, TableSuite, expectation_name, parameters, suite_for
from lake.quarantine import to_quarantine
from lake.tables import SILVER_QUARANTINE

logger = logging.getLogger(__name__)

#: Prefix of ``silver.quarantine.reason`` for rows rejected by a suite (replay selects on it).
REASON_PREFIX = "expectation:"

Engine = Literal["spark", "gx", "error"]

ROWS = Counter("cryptolake_dq_rows_total", "Rows validated, by table and outcome", ["table", "outcome"])
FAILURES = Counter(
    "cryptolake_dq_expectation_failures_total", "Rows failing an expectation", ["table", "expectation"]
)
QUARANTINED_RATIO = Gauge(
    "cryptolake_dq_quarantined_ratio", "Share of the last batch sent to quarantine", ["table"]
)
ALERTS = Counter(
    "cryptolake_dq_alerts_total", "Batches whose quarantined share passed the alert threshold", ["table"]
)
ERRORS = Counter(
    "cryptolake_dq_validation_errors_total", "Batches that could not be validated (passed through)", ["table"]
)
MISMATCHES = Counter(
    "cryptolake_dq_engine_mismatches_total",
    "Expectations whose Spark counts differed from GX's on a sampled batch",
    ["table", "expectation"],
)
SECONDS = Histogram(
    "cryptolake_dq_validation_seconds",
    "Time to validate a batch (flag + count; GX runs included)",
    ["table"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)


@dataclass(frozen=True)
class ExpectationResult:
    """One expectation on one batch: rows judged (``evaluated``) and unexpected (``failed``)."""

    name: str
    expectation_type: str
    severity: str
    evaluated: int
    failed: int
    success: bool


@dataclass
class Validated:
    """A validated micro-batch. ``good`` has the input's columns; ``bad`` is ``silver.quarantine``-shaped."""

    table: str
    suite: str
    batch_id: int
    good: DataFrame
    bad: DataFrame
    results: tuple[ExpectationResult, ...]
    rows: int
    #: Rows in ``bad``: failed a critical expectation, or rejected by the parser (``_error``).
    quarantined: int
    engine: Engine
    elapsed_ms: float
    error: str | None = None
    #: Rows the parser had rejected (``_error`` set): in ``bad``, not judged by the suite.
    parse_rejected: int = 0
    gx_result: dict[str, Any] | None = None
    #: The Spark predicates' counts when a GX run replaced ``results`` (they should be equal).
    spark_results: tuple[ExpectationResult, ...] = ()
    checked_ts: datetime = field(default_factory=lambda: datetime.now(UTC))
    _cached: DataFrame | None = None

    @property
    def success(self) -> bool:
        """Every critical expectation passed (warnings do not fail a batch) and validation ran."""
        return self.error is None and all(r.success for r in self.results if r.severity == "critical")

    @property
    def failed(self) -> int:
        """Rows failing at least one critical expectation (parser rejects not included)."""
        return self.quarantined - self.parse_rejected

    @property
    def quarantined_ratio(self) -> float:
        return self.quarantined / self.rows if self.rows else 0.0

    @property
    def cached(self) -> bool:
        """``good`` and ``bad`` read a cached batch (until :meth:`release`): no need to cache them again."""
        return self._cached is not None

    def release(self) -> None:
        """Unpersist the flagged batch (after ``good`` and ``bad`` are written)."""
        if self._cached is not None:
            self._cached.unpersist()
            self._cached = None


@dataclass
class Flagged:
    """A batch with one verdict column per expectation (``NULL``: not judged, true: failed),
    ``_dq_rejected`` (the parser rejected it) and ``_dq_bad``; persisted unless ``cached`` is off."""

    spec: TableSuite
    suite: str
    batch_id: int
    now: datetime
    run_gx: bool
    frame: DataFrame
    #: The input's columns.
    columns: tuple[str, ...]
    checks: tuple[Check, ...]
    #: The verdict columns, one per check, in order.
    verdicts: tuple[str, ...]
    cached: bool

    def count_columns(self) -> list[Column]:
        """What :meth:`Validator.complete` needs from a caller's collect of :attr:`frame`."""
        return [F.col(c) for c in ("_dq_bad", "_dq_rejected", *self.verdicts)]

    def release(self) -> None:
        if self.cached:
            self.frame.unpersist()


def _success(failed: int, evaluated: int, mostly: float | None) -> bool:
    if failed == 0:
        return True
    if mostly is None or evaluated == 0:
        return False
    return (evaluated - failed) / evaluated >= mostly


class Validator:
    """Validates micro-batches with the suites of :mod:`expectations.suites` under one settings object.

    Holds the built suites and, once a full GX run is needed, one ephemeral GX context with a Spark
    dataframe data source, one asset and whole-dataframe batch definition and one
    ``ValidationDefinition`` per table.
    """

    def __init__(
        self, settings: DqSettings | None = None, *, cache: bool = True, rejudged: Iterable[str] = ()
    ) -> None:
        self.settings = settings or DqSettings()
        #: Parser reasons that are value judgments the suites also make (a non-positive price, a
        #: crossed book): rows rejected only for one of them are judged by the suite all the same,
        #: and quarantined with the names of the expectations they failed.
        self.rejudged = frozenset(rejudged)
        #: Persist the flagged batch (its plan is computed once for the count, good and bad); off:
        #: each of them recomputes the input's plan (cheaper when the input is itself cached).
        self.cache = cache
        self._suites: dict[str, gx.ExpectationSuite] = {}
        self._context: Any = None
        self._definitions: dict[str, Any] = {}

    # --- the suites ---------------------------------------------------------------------------

    def suite(self, table: str) -> gx.ExpectationSuite:
        if table not in self._suites:
            self._suites[table] = suite_for(table).build(self.settings)
        return self._suites[table]

    def checks(self, table: str, *, now: datetime) -> list[Check]:
        params = parameters(self.settings, now=now)
        return [compile_expectation(e, params) for e in self.suite(table).expectations]

    # --- one batch -----------------------------------------------------------------------------

    def validate(
        self,
        df: DataFrame,
        *,
        table: str,
        batch_id: int,
        now: datetime | None = None,
        run_gx: bool | None = None,
    ) -> Validated:
        """Validate ``df`` (rows of ``table``, optionally with ``_raw``/``_error``); never raises.

        ``now`` (UTC) anchors the time bounds (default: the wall clock). ``run_gx`` forces the full
        GX run on or off (default: every ``gx_every_n_batches``-th batch id).
        """
        started = time.perf_counter()
        try:
            validated = self._validate(df, table=table, batch_id=batch_id, now=now, run_gx=run_gx)
        except Exception as exc:  # a broken suite or an unexpected schema must not kill the stream
            validated = self._error(df, table, batch_id, exc)
        validated.elapsed_ms = (time.perf_counter() - started) * 1000
        SECONDS.labels(table).observe(validated.elapsed_ms / 1000)
        self._report(validated)
        return validated

    def _error(self, df: DataFrame, table: str, batch_id: int, exc: BaseException) -> Validated:
        """The batch passes unvalidated: logged with the traceback, counted, recorded as ``error``."""
        logger.error(
            "validating %s batch %d failed; the batch passes unvalidated", table, batch_id, exc_info=exc
        )
        ERRORS.labels(table).inc()
        empty = df.sparkSession.createDataFrame([], SILVER_QUARANTINE.schema)
        return Validated(
            table=table,
            suite=table,
            batch_id=batch_id,
            good=df,
            bad=empty,
            results=(),
            rows=0,
            quarantined=0,
            engine="error",
            elapsed_ms=0.0,
            error=f"{type(exc).__name__}: {exc}",
        )

    def flag(
        self,
        df: DataFrame,
        *,
        table: str,
        batch_id: int,
        now: datetime | None = None,
        run_gx: bool | None = None,
    ) -> Flagged:
        """Step 1 alone: ``df`` with a verdict column per expectation and the bad flag, persisted.

        For a writer that collects columns of the batch anyway: it adds :meth:`Flagged.count_columns`
        to its own collect and hands the result to :meth:`complete`, which saves the counting job.
        Building the columns raises for a table without a suite; a broken expectation shows only
        when the columns are computed (see :meth:`passed_through`).
        """
        now = now or datetime.now(UTC)
        spec = suite_for(table)
        if run_gx is None:
            n = self.settings.gx_every_n_batches
            run_gx = n > 0 and batch_id % n == 0
        columns = df.columns
        has_error = "_error" in columns
        checks = self.checks(table, now=now)
        if not self.settings.warnings_every_batch:
            # Warnings (key uniqueness: a window, i.e. a shuffle) are left to the sampled GX runs.
            checks = [c for c in checks if c.severity == "critical"]
        parsed = F.col("_error").isNull() if has_error else F.lit(True)
        if has_error and self.rejudged:
            parsed = parsed | F.col("_error").isin(*sorted(self.rejudged))
        derived = {name: make() for name, make in spec.derived.items()}
        prepared = df.withColumns(derived) if derived else df
        verdicts = {
            column_alias(i, c.name): F.when(parsed & c.applies, c.fails.cast("boolean"))
            for i, c in enumerate(checks)
        }
        any_failed = F.lit(False)
        for a, c in zip(verdicts, checks, strict=True):
            if c.severity == "critical":
                any_failed = any_failed | F.coalesce(F.col(a), F.lit(False))
        erred = F.col("_error").isNotNull() if has_error else F.lit(False)
        frame = (
            prepared.withColumns(verdicts)
            .withColumn("_dq_rejected", ~parsed)
            .withColumn("_dq_bad", erred | any_failed)
        )
        if self.cache:
            frame = frame.persist()
        return Flagged(
            spec=spec,
            suite=self.suite(table).name,
            batch_id=batch_id,
            now=now,
            run_gx=run_gx,
            frame=frame,
            columns=tuple(columns),
            checks=tuple(checks),
            verdicts=tuple(verdicts),
            cached=self.cache,
        )

    def complete(self, flagged: Flagged, collected: pa.Table) -> Validated:
        """The validation of a :meth:`flag`-ged batch from a collect holding its
        :meth:`Flagged.count_columns` (one row per row of the batch); never raises."""
        started = time.perf_counter()
        counts = {"rows": collected.num_rows}
        for name in ("_dq_bad", "_dq_rejected", *flagged.verdicts):
            column = collected.column(name)
            counts[f"{name}:evaluated"] = len(column) - column.null_count
            counts[f"{name}:failed"] = int(pc.sum(pc.cast(column, pa.int64())).as_py() or 0)
        return self._finished(flagged, counts, started=started)

    def passed_through(self, flagged: Flagged, exc: BaseException) -> Validated:
        """A flagged batch whose verdicts could not be computed: it passes unvalidated (logged, counted)."""
        flagged.release()
        validated = self._error(
            flagged.frame.select(*flagged.columns), flagged.spec.table, flagged.batch_id, exc
        )
        self._report(validated)
        return validated

    def _validate(
        self, df: DataFrame, *, table: str, batch_id: int, now: datetime | None, run_gx: bool | None
    ) -> Validated:
        flagged = self.flag(df, table=table, batch_id=batch_id, now=now, run_gx=run_gx)
        try:
            frame = flagged.frame
            aggs = [F.count(F.lit(1)).alias("rows")]
            for name in ("_dq_bad", "_dq_rejected", *flagged.verdicts):
                aggs.append(F.count(F.col(name)).alias(f"{name}:evaluated"))
                aggs.append(F.count(F.when(F.col(name), 1)).alias(f"{name}:failed"))
            counts = frame.agg(*aggs).first()
            assert counts is not None
            return self._finished(flagged, counts.asDict(), started=None)
        except BaseException:
            flagged.release()
            raise

    def _finished(self, flagged: Flagged, counts: Mapping[str, int], *, started: float | None) -> Validated:
        """``good``, ``bad`` and the results of a flagged batch from its counts (from either path)."""
        table = flagged.spec.table
        results = tuple(
            ExpectationResult(
                name=c.name,
                expectation_type=c.expectation_type,
                severity=c.severity,
                evaluated=int(counts[f"{a}:evaluated"]),
                failed=int(counts[f"{a}:failed"]),
                success=_success(int(counts[f"{a}:failed"]), int(counts[f"{a}:evaluated"]), c.mostly),
            )
            for a, c in zip(flagged.verdicts, flagged.checks, strict=True)
        )
        frame = flagged.frame
        names = [
            F.when(F.col(a), F.lit(c.name))
            for a, c in zip(flagged.verdicts, flagged.checks, strict=True)
            if c.severity == "critical"
        ]
        failed_names = F.filter(F.array(*names), lambda x: x.isNotNull()) if names else F.array()
        reason = F.concat(F.lit(REASON_PREFIX), F.array_join(failed_names, ","))
        if "_error" in flagged.columns:  # the parser's reason when the suite did not judge the row
            reason = F.when(F.size(failed_names) > 0, reason).otherwise(
                F.coalesce(F.col("_error").cast(StringType()), reason)
            )
        internal = [*flagged.verdicts, "_dq_bad", "_dq_rejected", *flagged.spec.derived]
        bad = (
            frame.where("_dq_bad")
            .withColumn("_dq_reason", reason)
            .drop(*internal)
            .transform(to_quarantine(source_table=table, batch_id=flagged.batch_id, reason_col="_dq_reason"))
        )
        validated = Validated(
            table=table,
            suite=flagged.suite,
            batch_id=flagged.batch_id,
            good=frame.where(~F.col("_dq_bad")).select(*flagged.columns),
            bad=bad,
            results=results,
            rows=int(counts["rows"]),
            quarantined=int(counts["_dq_bad:failed"]),
            parse_rejected=int(counts["_dq_rejected:failed"]),
            engine="spark",
            elapsed_ms=0.0,
            checked_ts=flagged.now,
            _cached=frame if flagged.cached else None,
        )
        if flagged.run_gx:
            parsed = frame.where(~F.col("_dq_rejected"))
            self._run_gx(validated, parsed.select(*flagged.columns, *flagged.spec.derived), now=flagged.now)
        if started is not None:  # the deferred path: its own time and metrics (validate() does both)
            validated.elapsed_ms = (time.perf_counter() - started) * 1000
            SECONDS.labels(table).observe(validated.elapsed_ms / 1000)
            self._report(validated)
        return validated

    # --- the full GX run -------------------------------------------------------------------------

    def _definition(self, table: str) -> Any:
        if table not in self._definitions:
            if self._context is None:
                self._context = gx.get_context(mode="ephemeral")
                self._context.variables.progress_bars = {"globally": False}
                self._source = self._context.data_sources.add_spark("cryptolake")
            asset = self._source.add_dataframe_asset(table)
            batch = asset.add_batch_definition_whole_dataframe(f"{table} micro-batch")
            suite = self._context.suites.add(self.suite(table))
            self._definitions[table] = self._context.validation_definitions.add(
                gx.ValidationDefinition(name=f"{table} micro-batch", data=batch, suite=suite)
            )
        return self._definitions[table]

    def run_gx(self, df: DataFrame, *, table: str, now: datetime) -> Any:
        """The real GX validation of ``df`` (derived columns already added) against the table's suite."""
        return self._definition(table).run(
            batch_parameters={"dataframe": df},
            expectation_parameters=parameters(self.settings, now=now),
            result_format="BASIC",
        )

    def _run_gx(self, validated: Validated, df: DataFrame, *, now: datetime) -> None:
        try:
            result = self.run_gx(df, table=validated.table, now=now)
        except Exception:
            logger.exception(
                "GX run on %s batch %d failed; Spark counts kept", validated.table, validated.batch_id
            )
            return
        by_name = {r.name: r for r in validated.results}
        gx_results = []
        for r in result.results:
            name = expectation_name_of(r.expectation_config)
            mine = by_name.get(name)
            evaluated, failed = gx_counts(r.result)
            if r.exception_info and r.exception_info.get("raised_exception"):
                logger.warning("GX could not evaluate %s on %s: %s", name, validated.table, r.exception_info)
            elif mine is not None and (mine.evaluated, mine.failed) != (evaluated, failed):
                MISMATCHES.labels(validated.table, name).inc()
                logger.warning(
                    "%s %s: Spark counted %d/%d failed, GX %d/%d (translation bug?)",
                    validated.table,
                    name,
                    mine.failed,
                    mine.evaluated,
                    failed,
                    evaluated,
                )
            gx_results.append(
                ExpectationResult(
                    name=name,
                    expectation_type=r.expectation_config.type,
                    severity=str(
                        getattr(r.expectation_config.severity, "value", r.expectation_config.severity)
                    ),
                    evaluated=evaluated,
                    failed=failed,
                    success=bool(r.success),
                )
            )
        validated.spark_results = validated.results
        validated.results = tuple(gx_results)
        validated.engine = "gx"
        validated.gx_result = result.to_json_dict()

    # --- metrics and alerts ----------------------------------------------------------------------

    def _report(self, v: Validated) -> None:
        ROWS.labels(v.table, "good").inc(v.rows - v.quarantined)
        ROWS.labels(v.table, "quarantined").inc(v.quarantined)
        for r in v.results:
            if r.failed:
                FAILURES.labels(v.table, r.name).inc(r.failed)
        if v.error is not None:
            return
        QUARANTINED_RATIO.labels(v.table).set(v.quarantined_ratio)
        if v.rows and v.quarantined_ratio > self.settings.alert_quarantined_ratio:
            ALERTS.labels(v.table).inc()
            failing = [r for r in v.results if r.failed and r.severity == "critical"]
            top = ", ".join(f"{r.name}={r.failed}" for r in failing)
            logger.warning(
                "data-quality alert: %s batch %d quarantined %d of %d rows (%.1f %% > %.1f %%): %s",
                v.table,
                v.batch_id,
                v.quarantined,
                v.rows,
                100 * v.quarantined_ratio,
                100 * self.settings.alert_quarantined_ratio,
                top or "parser rejects",
                extra={"table": v.table, "batch_id": v.batch_id},
            )


def expectation_name_of(config: Any) -> str:
    """The stable name of a GX result's expectation configuration (see :func:`expectation_name`)."""
    return expectation_name(config.to_domain_obj())


def gx_counts(result: Mapping[str, Any]) -> tuple[int, int]:
    """(evaluated, failed) from a GX map-expectation result: element count minus missing, unexpected."""
    element = int(result.get("element_count") or 0)
    missing = int(result.get("missing_count") or 0)
    return element - missing, int(result.get("unexpected_count") or 0)


@lru_cache(maxsize=8)
def default_validator(settings: DqSettings) -> Validator:
    return Validator(settings)


def validate(
    df: DataFrame,
    *,
    table: str,
    batch_id: int,
    settings: DqSettings | None = None,
    now: datetime | None = None,
) -> Validated:
    """:meth:`Validator.validate` with one shared validator per settings object."""
    return default_validator(settings or DqSettings()).validate(df, table=table, batch_id=batch_id, now=now)
