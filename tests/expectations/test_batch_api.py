"""The pipeline-facing API: parser rejects, broken batches pass, alerts, gold.dq_results, replay."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY
from pyspark.sql import functions as F

from expectations import DqSettings, ResultsBuffer, Validator, record
from expectations.validate import Validated
from lake.tables import GOLD_DQ_RESULTS, SILVER_TRADES, Lake, LakeSettings
from spark_jobs.dq_replay import replay
from spark_jobs.runtime import read_table, write_quarantine
from tests.expectations.frames import EVENT, NOW, frame

pytestmark = pytest.mark.spark

TRADES = SILVER_TRADES.name


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_parser_rejects_go_to_bad_with_their_reason_and_are_not_evaluated(spark, caplog) -> None:
    rows = [
        {"trade_id": "1"},
        {"trade_id": "2", "price": None, "_error": "unknown_market"},
        {"trade_id": "3", "price": Decimal("-2")},
    ]
    df = frame(spark, TRADES, rows, internal=True)
    alerts = _metric("cryptolake_dq_alerts_total", table=TRADES)
    with caplog.at_level(logging.WARNING, logger="expectations.validate"):
        v = Validator().validate(df, table=TRADES, batch_id=4, now=NOW, run_gx=False)
    try:
        reasons = {
            r["id"]: r["reason"]
            for r in v.bad.select(F.get_json_object("row_json", "$.trade_id").alias("id"), "reason").collect()
        }
        assert reasons == {"2": "unknown_market", "3": "expectation:price_positive"}
        assert [r["trade_id"] for r in v.good.collect()] == ["1"]
        assert v.good.columns == df.columns  # _raw and _error kept for the silver writer
        price_present = next(r for r in v.results if r.name == "price_present")
        assert (price_present.evaluated, price_present.failed) == (2, 0)  # the reject is not judged
        assert (v.rows, v.quarantined, v.failed, v.parse_rejected) == (3, 2, 1, 1)
        # 2 of 3 quarantined > 5 %: a warning and the alert counter
        assert _metric("cryptolake_dq_alerts_total", table=TRADES) == alerts + 1
        assert _metric("cryptolake_dq_quarantined_ratio", table=TRADES) == pytest.approx(2 / 3)
        assert any(
            "data-quality alert" in r.message and "price_positive=1" in r.message for r in caplog.records
        )
    finally:
        v.release()


def test_counts_from_the_writers_own_collect_equal_the_counting_job(spark) -> None:
    """flag + complete (the silver writer's path: verdicts ride on its key collect) gives exactly
    what validate gives with its own counting job: results, counts, good rows, quarantine rows."""
    rows = [
        {"trade_id": "1"},
        {"trade_id": "2", "price": None, "_error": "unknown_market"},
        {"trade_id": "3", "price": Decimal("-2")},
        {"trade_id": "4", "size": Decimal("0"), "side": "hold"},
        {"trade_id": "5", "event_ts": NOW + timedelta(hours=1)},
    ]
    df = frame(spark, TRADES, rows, internal=True)
    validator = Validator()
    eager = validator.validate(df, table=TRADES, batch_id=4, now=NOW, run_gx=False)
    flagged = validator.flag(df, table=TRADES, batch_id=4, now=NOW, run_gx=False)
    deferred = validator.complete(
        flagged, flagged.frame.select("trade_id", *flagged.count_columns()).toArrow()
    )
    try:
        assert deferred.results == eager.results and deferred.engine == eager.engine == "spark"
        assert (deferred.rows, deferred.quarantined, deferred.parse_rejected) == (5, 4, 1)
        assert (deferred.rows, deferred.quarantined, deferred.parse_rejected) == (
            eager.rows,
            eager.quarantined,
            eager.parse_rejected,
        )
        assert deferred.good.collect() == eager.good.collect()
        quarantine = sorted((r.row_json, r.reason) for r in deferred.bad.collect())
        assert quarantine == sorted((r.row_json, r.reason) for r in eager.bad.collect())
        assert {json.loads(j)["trade_id"]: reason for j, reason in quarantine} == {
            "2": "unknown_market",
            "3": "expectation:price_positive",
            "4": "expectation:size_positive,side_buy_or_sell",
            "5": "expectation:event_ts_not_future,latency_within_bounds",
        }
    finally:
        eager.release()
        deferred.release()


def test_rows_the_parser_rejected_for_a_value_are_judged_by_the_suite_when_asked(spark) -> None:
    """The parsers' value checks (a non-positive price, a crossed book) are the suites' too: with
    ``rejudged`` those rows are quarantined with the suite's expectation names, others keep theirs."""
    rows = [
        {"trade_id": "1"},
        {"trade_id": "2", "price": Decimal("-2"), "_error": "non_positive_price"},
        {"trade_id": "3", "size": Decimal("0"), "_error": "non_positive_size"},
        {"trade_id": "4", "price": None, "_error": "unknown_market"},
    ]
    df = frame(spark, TRADES, rows, internal=True)
    plain = Validator().validate(df, table=TRADES, batch_id=6, now=NOW, run_gx=False)
    judged = Validator(rejudged={"non_positive_price", "non_positive_size"}).validate(
        df, table=TRADES, batch_id=6, now=NOW, run_gx=False
    )
    try:

        def reasons(v: Validated) -> dict[str, str]:
            bad = v.bad.select(F.get_json_object("row_json", "$.trade_id").alias("id"), "reason")
            return {r["id"]: r["reason"] for r in bad.collect()}

        assert reasons(plain) == {"2": "non_positive_price", "3": "non_positive_size", "4": "unknown_market"}
        assert reasons(judged) == {
            "2": "expectation:price_positive",
            "3": "expectation:size_positive",
            "4": "unknown_market",
        }
        assert [r["trade_id"] for r in judged.good.collect()] == ["1"]
        assert (judged.rows, judged.quarantined, judged.parse_rejected) == (4, 3, 1)
        price_positive = next(r for r in judged.results if r.name == "price_positive")
        assert (price_positive.evaluated, price_positive.failed) == (3, 1)
    finally:
        plain.release()
        judged.release()


def test_a_batch_that_cannot_be_validated_passes_through_and_never_raises(spark) -> None:
    df = frame(spark, TRADES, [{"trade_id": "1"}]).drop("price")
    errors = _metric("cryptolake_dq_validation_errors_total", table=TRADES)
    v = Validator().validate(df, table=TRADES, batch_id=5, now=NOW)
    assert v.engine == "error" and not v.success and v.error is not None
    assert v.good is df and v.bad.count() == 0
    assert _metric("cryptolake_dq_validation_errors_total", table=TRADES) == errors + 1


def test_dq_results_one_row_per_suite_table_batch_and_rewritten_idempotently(spark, lake, tmp_path) -> None:
    validator = Validator()
    df = frame(spark, TRADES, [{"trade_id": "1"}, {"trade_id": "2", "size": Decimal("0")}])
    first = validator.validate(df, table=TRADES, batch_id=11, now=NOW, run_gx=False)
    second = validator.validate(df.limit(1), table=TRADES, batch_id=12, now=NOW, run_gx=False)
    record(spark, [first, second], lake=lake)
    record(spark, [first], lake=lake)  # the batch again (a restart): the same key, one row
    # A streaming writer appends under (app id, batch id): Delta skips the replayed batch.
    streamed = Lake(LakeSettings(root=str(tmp_path / "streamed")))
    record(spark, [first], lake=streamed, app_id="query-1", version=11)
    record(spark, [first], lake=streamed, app_id="query-1", version=11)
    first.release()
    second.release()
    stream_rows = read_table(spark, streamed, GOLD_DQ_RESULTS.name).collect()
    assert [(r["table"], r["batch_id"], r["failed"]) for r in stream_rows] == [(TRADES, 11, 1)]
    all_rows = read_table(spark, lake, GOLD_DQ_RESULTS.name).collect()
    assert sorted(r["batch_id"] for r in all_rows) == [11, 12]
    rows = {r["batch_id"]: r for r in all_rows}
    r = rows[11]
    assert (r["suite"], r["table"], r["success"], r["engine"]) == (TRADES, TRADES, False, "spark")
    assert (r["evaluated"], r["failed"], r["quarantined"]) == (2, 1, 1)
    size = next(e for e in r["expectations"] if e["name"] == "size_positive")
    assert (size["evaluated"], size["failed"], size["success"], size["severity"]) == (2, 1, False, "critical")
    assert rows[12]["success"] and rows[12]["failed"] == 0


def test_results_buffer_merges_every_n_batches_and_a_batch_again_stays_one_row(spark, lake) -> None:
    validator = Validator()
    df = frame(spark, TRADES, [{"trade_id": "1"}])
    batches = [validator.validate(df, table=TRADES, batch_id=i, now=NOW, run_gx=False) for i in (1, 2)]
    buffer = ResultsBuffer(lake=lake, flush_every=2)
    buffer.add(spark, [batches[0]])
    assert buffer.pending == 1  # nothing written yet
    buffer.add(spark, [batches[1]])
    assert buffer.pending == 0
    buffer.add(spark, [batches[0]])  # batch 1 replayed after a restart
    buffer.flush(spark)
    for v in batches:
        v.release()
    stored = read_table(spark, lake, GOLD_DQ_RESULTS.name).collect()
    assert sorted((r["batch_id"], r["success"], r["evaluated"]) for r in stored) == [
        (1, True, 1),
        (2, True, 1),
    ]


def test_replay_reinserts_rows_a_fixed_suite_accepts_once(spark, lake) -> None:
    # A suite too strict on latency (0.5 s) quarantines two good trades with the one bad one.
    strict = Validator(DqSettings(max_latency_s=0.5))
    rows = [
        {"trade_id": "1", "recv_ts": EVENT + timedelta(seconds=2)},
        {"trade_id": "2", "recv_ts": EVENT + timedelta(seconds=3), "price": Decimal("0.000000000000000001")},
        {"trade_id": "3", "recv_ts": EVENT + timedelta(seconds=2), "price": Decimal("-1")},
    ]
    v = strict.validate(frame(spark, TRADES, rows, internal=True), table=TRADES, batch_id=0, now=NOW)
    assert v.quarantined == 3
    write_quarantine(v.bad, lake=lake, app_id="test-quarantine", version=0)
    v.release()

    report = replay(spark, lake=lake, table_name=TRADES, settings=DqSettings(), now=NOW)
    assert (report.examined, report.passing, report.inserted) == (3, 2, 2)
    again = replay(spark, lake=lake, table_name=TRADES, settings=DqSettings(), now=NOW)
    assert (again.examined, again.passing, again.inserted) == (3, 2, 0)

    rows_stored = read_table(spark, lake, TRADES).collect()
    assert sorted(r["trade_id"] for r in rows_stored) == ["1", "2"]
    stored = {r["trade_id"]: r for r in rows_stored}
    assert stored["2"]["price"] == Decimal("0.000000000000000001")  # exact through the JSON round trip
    assert stored["1"]["recv_ts"] == (EVENT + timedelta(seconds=2)).replace(tzinfo=None)
    assert stored["1"]["trade_date"] == EVENT.date()
