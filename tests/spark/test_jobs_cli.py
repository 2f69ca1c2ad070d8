"""The jobs as users run them: ``--help`` documents every setting; ``spark-submit`` runs the pipeline."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from lake.config import env_var, secret_fields
from lake.tables import Lake, LakeSettings
from spark_jobs.runtime import BronzeSettings, SilverSettings, repo_root
from tests.conftest import seconds
from tests.spark.test_streaming import _first_landing

JOBS: dict[str, type] = {
    "bronze_ingest": BronzeSettings,
    "silver_markets": SilverSettings,
    "silver_trades": SilverSettings,
    "silver_tickers": SilverSettings,
    "silver_l1": SilverSettings,
    "pipeline": SilverSettings,
}
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"


def job_section(job: str) -> str:
    return "bronze" if job == "bronze_ingest" else "silver"


@pytest.mark.parametrize("job", sorted(JOBS))
def test_each_job_help_documents_every_setting_with_its_default(job: str) -> None:
    out = subprocess.run(
        [sys.executable, str(repo_root() / "spark_jobs" / f"{job}.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=seconds(60),
        check=True,
    ).stdout
    flat = " ".join(out.split())
    for option in ("--config", "--lake-root", "--checkpoint-root", "--master"):
        assert option in flat
    secrets = secret_fields(JOBS[job])
    for f in dataclasses.fields(JOBS[job]):
        if f.name in secrets:  # no flag: only from the environment
            assert f"--{f.name.replace('_', '-')}" not in flat, f.name
            assert env_var(job_section(job), f.name) in flat, f.name
            continue
        assert f"--{f.name.replace('_', '-')}" in flat, f.name
        assert f"default {getattr(JOBS[job](), f.name)!r}" in flat, f.name


def _submit(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    return subprocess.run(
        [str(SPARK_SUBMIT), *args],
        capture_output=True,
        text=True,
        timeout=seconds(600),
        env=env,
        cwd=repo_root(),
    )


@pytest.mark.spark
def test_spark_submit_runs_the_pipeline_with_the_submit_args_and_explains_their_absence(
    spark: SparkSession, tmp_path: Path
) -> None:
    landing, lake_root = tmp_path / "landing", tmp_path / "lake"
    _first_landing(landing)
    job = ["spark_jobs/pipeline.py", "--landing-root", str(landing), "--lake-root", str(lake_root)]

    bare = _submit("--master", "local[1]", *job)
    assert bare.returncode == 2, bare.stderr[-2000:]
    # spark-submit runs the Python driver with its stderr merged into stdout.
    assert "config error" in bare.stdout and "lake submit-args" in bare.stdout

    extra = subprocess.run(
        [sys.executable, "-m", "lake", "submit-args"], capture_output=True, text=True, check=True
    ).stdout.split()
    done = _submit("--master", "local[2]", *extra, *job)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "silver_trades" in done.stdout

    trades = spark.read.format("delta").load(Lake(LakeSettings(root=str(lake_root))).path("silver.trades"))
    got = sorted((r.exchange, r.symbol, r.trade_id) for r in trades.collect())
    assert got == [
        ("binance", "BTC-USDT", "100"),
        ("binance", "BTC-USDT", "101"),
        ("binance", "BTC-USDT", "102"),
        ("binance", "ETH-BTC", "200"),
        ("coinbase", "BTC-USD", "7001"),
        ("coinbase", "BTC-USD", "7002"),
        ("kucoin", "BTC-USDT", "5000"),
        ("kucoin", "BTC-USDT", "5003"),
    ]
