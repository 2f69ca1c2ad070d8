"""SQL over the lake by name: DuckDB (no JVM) and Spark give the same answers; the Spark catalog
persists across processes; the rollup views; optimize and vacuum keep the data and drop files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from lake.delta_io import append
from lake.tables import GOLD_OHLCV_1M, SILVER_L1_QUOTES, Lake
from spark_jobs import gold
from tests.conftest import seconds
from tests.spark.test_gold import T0, Trade, _quote, write_silver

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parent.parent


def _at(minute: int, second: float) -> datetime:
    return T0 + timedelta(minutes=minute, seconds=second)


TRADES = [
    Trade(ex, sym, f"{i}", D(price) + D(i) / 100, D("0.5") + D(i) / 10, _at(i % 12, (i * 7) % 60))
    for i, (ex, sym, price) in enumerate(
        [("binance", "BTC-USDT", "100"), ("kucoin", "BTC-USDT", "100.2"), ("binance", "ETH-USDT", "10")] * 12
    )
]


@pytest.fixture(scope="module")
def lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """One small lake for the module (silver in two appends, gold, L1); the tests only read it,
    but the maintenance test, last, rewrites its files (same content)."""
    from lake.tables import LakeSettings

    built = Lake(LakeSettings(root=str(tmp_path_factory.mktemp("sql") / "lake")))
    _build(spark, built)
    return built


def _build(spark: SparkSession, lake: Lake) -> None:
    writer = gold.GoldWriter(lake)
    gold.update_gold(spark, lake, trades=write_silver(spark, lake, TRADES[:20]), writer=writer)
    gold.update_gold(spark, lake, trades=write_silver(spark, lake, TRADES[20:]), writer=writer)
    quotes = [
        _quote(ex, "BTC-USDT", _at(0, s / 4), seq=s, bid=str(100 + s), ask=str(101 + s))
        for s in range(8)
        for ex in ("binance", "kucoin")
    ]
    frame = spark.createDataFrame(quotes, SILVER_L1_QUOTES.schema)
    append(frame, lake=lake, name=SILVER_L1_QUOTES.name)
    gold.update_l1(spark, lake, quotes=frame)


def _naive(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, float):
        return round(value, 9)
    return value


QUERIES = {
    "last price per symbol across exchanges": """
        SELECT symbol, exchange, max_by(close, minute) AS last_price, max(last_trade_ts) AS last_trade_ts
        FROM gold.ohlcv_1m GROUP BY symbol, exchange ORDER BY symbol, exchange""",
    "bars for a time range": """
        SELECT minute, open, high, low, close, volume, vwap FROM gold.ohlcv_1m
        WHERE exchange = 'binance' AND symbol = 'BTC-USDT'
          AND minute >= TIMESTAMP '2026-01-01 00:02:00' AND minute < TIMESTAMP '2026-01-01 00:08:00'
        ORDER BY minute""",
    "spread across exchanges per second": """
        SELECT second, base, count(*) AS venues, min(mid_usdt) AS low_mid, max(mid_usdt) AS high_mid,
               max(mid_usdt) - min(mid_usdt) AS spread_usdt
        FROM gold.l1_1s WHERE base = 'BTC' GROUP BY second, base HAVING count(*) > 1 ORDER BY second""",
    "daily volume share per exchange": """
        SELECT trade_date, exchange, sum(volume_usdt) AS volume_usdt,
               CAST(sum(volume_usdt) AS DOUBLE)
                 / CAST(sum(sum(volume_usdt)) OVER (PARTITION BY trade_date) AS DOUBLE) AS share
        FROM gold.exchange_volume_daily GROUP BY trade_date, exchange ORDER BY trade_date, exchange""",
    "5-minute bars (view)": """
        SELECT exchange, symbol, bucket_ts, open, high, low, close, volume, trade_count, minutes
        FROM gold.ohlcv_5m ORDER BY exchange, symbol, bucket_ts""",
}


def test_duckdb_and_spark_answer_the_example_queries_identically_by_table_name(
    spark: SparkSession, lake: Lake
) -> None:
    from lake.sql import duckdb_connect, register_catalog, run_duckdb, run_spark

    register_catalog(spark, lake)  # the fixture session's in-memory catalog: same statements
    con = duckdb_connect(lake)
    for name, statement in QUERIES.items():
        by_duckdb = run_duckdb(con, statement)
        by_spark = run_spark(spark, lake, statement)
        assert by_duckdb.columns == by_spark.columns, name
        assert [tuple(map(_naive, r)) for r in by_duckdb.rows] == [
            tuple(map(_naive, r)) for r in by_spark.rows
        ], name
        assert by_duckdb.rows, name

    # The 5m view against the 1m bars, recomputed here.
    bars = sorted(
        (r.minute, r)
        for r in spark.read.format("delta").load(lake.path(GOLD_OHLCV_1M.name)).collect()
        if (r.exchange, r.symbol) == ("binance", "BTC-USDT") and r.minute < T0 + timedelta(minutes=5)
    )
    row = run_duckdb(
        con,
        "SELECT open, high, low, close, volume, trade_count FROM gold.ohlcv_5m"
        " WHERE exchange = 'binance' AND symbol = 'BTC-USDT' AND bucket_ts = TIMESTAMP '2026-01-01 00:00:00'",
    ).rows
    assert row == [
        (
            bars[0][1].open,
            max(b.high for _, b in bars),
            min(b.low for _, b in bars),
            bars[-1][1].close,
            sum((b.volume for _, b in bars), D(0)),
            sum(b.trade_count for _, b in bars),
        )
    ]
    # The old view names still work.
    assert run_duckdb(con, "SELECT count(*) FROM silver_trades").rows == [(len(TRADES),)]


def test_lake_sql_cli_uses_duckdb_without_a_jvm(
    spark: SparkSession, lake: Lake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lake.__main__ import main

    monkeypatch.setenv("CRYPTOLAKE_LAKE_ROOT", lake.settings.root)
    assert main(["sql", "--format", "json", QUERIES["last price per symbol across exchanges"]]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["symbol"], r["exchange"]) for r in rows] == [
        ("BTC-USDT", "binance"),
        ("BTC-USDT", "kucoin"),
        ("ETH-USDT", "binance"),
    ]
    assert main(["sql", "SELECT * FROM gold.no_such_table"]) == 1


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=seconds(900),
        check=False,
    )


@pytest.mark.timeout(int(seconds(2000)))  # two JVMs start (~20 s each on a quiet machine)
def test_spark_catalog_persists_the_tables_across_processes(spark: SparkSession, lake: Lake) -> None:
    env = {"CRYPTOLAKE_LAKE_ROOT": lake.settings.root, "CRYPTOLAKE_SPARK_MASTER": "local[1]"}
    done = _run("-m", "lake", "catalog", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gold.ohlcv_1m" in done.stdout
    # A new process that registers nothing finds the tables and views by name in the metastore.
    probe = (
        "import sys\n"
        "from lake.session import SparkSettings, build_spark\n"
        "from lake.sql import SqlSettings, catalog_spark_settings\n"
        "from lake.tables import Lake, LakeSettings\n"
        "lake = Lake(LakeSettings(root=sys.argv[1]))\n"
        "spark = build_spark(catalog_spark_settings(SparkSettings(master='local[1]'), lake, SqlSettings()))\n"
        "n = spark.sql('SELECT count(*) FROM gold.ohlcv_1m').first()[0]\n"
        "v = spark.sql('SELECT count(*) FROM gold.ohlcv_1h').first()[0]\n"
        "print('COUNTS', n, v)\n"
        "spark.stop()\n"
    )
    done = _run("-c", probe, lake.settings.root, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    n_bars = spark.read.format("delta").load(lake.path(GOLD_OHLCV_1M.name)).count()
    assert f"COUNTS {n_bars} " in done.stdout
    assert (Path(lake.root) / "_catalog" / "metastore_db").is_dir()


def test_optimize_compacts_and_vacuum_deletes_replaced_files_keeping_the_data(
    spark: SparkSession, lake: Lake
) -> None:
    from lake.maintenance import optimize, vacuum

    names = [GOLD_OHLCV_1M.name, "silver.trades"]

    def content() -> dict[str, list[Any]]:
        return {n: sorted(map(tuple, spark.read.format("delta").load(lake.path(n)).collect())) for n in names}

    before = content()
    outcomes = {o.table: o for o in optimize(spark, lake, names)}
    trades = outcomes["silver.trades"].metrics  # two appends: two files per partition, compacted to one
    assert int(trades["files_removed"]) > int(trades["files_added"]) > 0  # type: ignore[call-overload]
    assert content() == before
    with pytest.raises(ValueError, match="below Delta's 168 h"):
        vacuum(spark, lake, names, retention_hours=1)
    kept = {o.table: o for o in vacuum(spark, lake, names)}  # 168 h: the replaced files are recent
    assert all(o.metrics["data_files_after"] == o.metrics["data_files_before"] for o in kept.values())
    vacuumed = {o.table: o for o in vacuum(spark, lake, names, retention_hours=0, allow_short_retention=True)}
    swept = vacuumed["silver.trades"].metrics
    assert int(swept["data_files_after"]) < int(swept["data_files_before"])  # type: ignore[call-overload]
    assert content() == before
