from __future__ import annotations

import pytest

from lake.config import ConfigError, Secret
from lake.session import SparkSettings, spark_conf
from lake.tables import TABLES, Lake, LakeSettings, table


def test_every_table_key_and_partition_column_is_in_its_schema() -> None:
    for spec in TABLES.values():
        assert set(spec.key) <= set(spec.columns), spec.name
        assert set(spec.partition_by) <= set(spec.columns), spec.name


def test_silver_and_gold_rows_carry_exchange_and_symbol_where_the_design_says() -> None:
    for name in ("silver.trades", "silver.tickers", "silver.l1_quotes", "gold.ohlcv_1m", "gold.l1_latest"):
        assert {"exchange", "symbol"} <= set(table(name).columns), name


def test_paths_resolve_under_local_and_s3a_roots(tmp_path) -> None:
    local = Lake(LakeSettings(root=str(tmp_path)))
    assert local.path("silver.trades") == f"{tmp_path}/silver/trades"
    assert local.checkpoint("silver_trades") == f"{tmp_path}/_checkpoints/silver_trades"
    remote = Lake(LakeSettings(root="s3a://lake-bucket/prod/", checkpoint_root="s3a://ckpt/x"))
    assert remote.path("gold.ohlcv_1m") == "s3a://lake-bucket/prod/gold/ohlcv_1m"
    assert remote.checkpoint("gold") == "s3a://ckpt/x/gold"


def test_unknown_table_lists_known_ones() -> None:
    with pytest.raises(KeyError, match=r"known tables: bronze\.raw_events"):
        table("silver.trade")


def test_spark_conf_sets_delta_utc_and_local_jars() -> None:
    conf = spark_conf(SparkSettings())
    assert conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert conf["spark.sql.session.timeZone"] == "UTC"
    jars = conf["spark.jars"].split(",")
    assert any("delta-spark_4.2_2.13-4.4" in j for j in jars)
    assert any("spark-sql-kafka-0-10_2.13-4.2.0" in j for j in jars)
    assert any("hadoop-aws-3.5.0" in j for j in jars)


def test_s3a_settings_map_to_hadoop_conf() -> None:
    conf = spark_conf(
        SparkSettings(
            jars_dir="",
            s3_endpoint="http://127.0.0.1:9000",
            s3_access_key=Secret("a"),
            s3_secret_key=Secret("b"),
        )
    )
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.access.key"] == "a"
    assert "spark.jars" not in conf


def test_missing_jars_say_run_make_setup(tmp_path) -> None:
    with pytest.raises(ConfigError, match="make setup"):
        spark_conf(SparkSettings(jars_dir=str(tmp_path)))
