"""``python -m lake thrift`` serves the lake's catalog over JDBC: the Hive JDBC driver (through
``beeline``, both shipped in the pyspark wheel) queries ``gold.ohlcv_1m`` by name and gets back
exactly the rows written."""

from __future__ import annotations

import contextlib
import csv
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from decimal import Decimal as D
from pathlib import Path
from typing import IO

import pyspark
import pytest
from pyspark.sql import SparkSession

from lake.delta_io import append
from lake.tables import GOLD_OHLCV_1M, Lake
from tests.conftest import seconds

REPO = Path(__file__).resolve().parent.parent
BEELINE = Path(pyspark.__file__).parent / "bin" / "beeline"

T0 = datetime(2026, 1, 1, 0, 0)
T1 = datetime(2026, 1, 1, 0, 1)

#: The columns the test reads back, and their values.
COLUMNS = "exchange, symbol, minute, open, close, volume, trade_count, volume_usdt"
BARS = [
    ("binance", "BTC-USDT", T0, D("100.5"), D("101.000000000000000001"), D("0.25"), 3, D("25.2")),
    ("binance", "BTC-USDT", T1, D("101"), D("99.75"), D("1.5"), 2, D("150.75")),
    ("kucoin", "BTC-USDT", T0, D("100.2"), D("100.3"), D("0.1"), 1, None),
]


def _gold_rows() -> list[tuple[object, ...]]:
    """Whole ``gold.ohlcv_1m`` rows around :data:`BARS` (USDT prices equal the quote prices)."""
    rows = []
    for exchange, symbol, minute, open_, close, volume, count, volume_usdt in BARS:
        usdt = None if volume_usdt is None else open_
        bar = {
            **dict.fromkeys(("open_usdt", "high_usdt", "low_usdt", "close_usdt", "vwap_usdt"), usdt),
            **dict.fromkeys(("minute", "first_trade_ts", "last_trade_ts", "updated_ts"), minute),
            "exchange": exchange,
            "symbol": symbol,
            "base": "BTC",
            "quote": "USDT",
            "open": open_,
            "high": max(open_, close),
            "low": min(open_, close),
            "close": close,
            "volume": volume,
            "quote_volume": volume * open_,
            "vwap": open_,
            "trade_count": count,
            "volume_usdt": volume_usdt,
            "bar_date": minute.date(),
        }
        rows.append(tuple(bar[c] for c in GOLD_OHLCV_1M.columns))
    return rows


@pytest.fixture()
def lake(spark: SparkSession, lake: Lake) -> Lake:
    frame = spark.createDataFrame(_gold_rows(), GOLD_OHLCV_1M.schema)
    append(frame, lake=lake, name=GOLD_OHLCV_1M.name)
    return lake


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lines(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


def _beeline(url: str, statement: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BEELINE), "-u", url, "-n", "tester", "--silent=true", "--outputformat=csv2", "-e", statement],
        capture_output=True,
        text=True,
        timeout=seconds(120),
        check=False,
    )


def _value(text: str) -> object:
    if text == "NULL":
        return None
    for parse in (int, D):
        try:
            return parse(text)
        except (ArithmeticError, ValueError):
            pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return text


def _thrift_env(root: str) -> dict[str, str]:
    return {
        **os.environ,
        "CRYPTOLAKE_LAKE_ROOT": root,
        "CRYPTOLAKE_SPARK_MASTER": "local[1]",
        "CRYPTOLAKE_SPARK_SHUFFLE_PARTITIONS": "1",
        "CRYPTOLAKE_SPARK_DRIVER_MEMORY": "1g",
    }


@pytest.mark.spark
@pytest.mark.timeout(int(seconds(300)))  # two JVMs, server and client: 50-90 s on the 2-core machine
def test_jdbc_client_reads_gold_bars_by_table_name_through_the_thrift_server(lake: Lake) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "lake", "thrift", "--port", str(port)],
        cwd=REPO,
        env=_thrift_env(lake.settings.root),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: queue.Queue[str] = queue.Queue()
    assert server.stdout is not None
    threading.Thread(target=_lines, args=(server.stdout, output), daemon=True).start()
    url = f"jdbc:hive2://127.0.0.1:{port}/default"
    seen: list[str] = []
    try:
        deadline = time.monotonic() + seconds(180)
        while not any(line.startswith(f"thrift server ready: {url}") for line in seen):
            assert server.poll() is None, "server exited:\n" + "".join(seen)[-4000:]
            assert time.monotonic() < deadline, "server not ready:\n" + "".join(seen)[-4000:]
            with contextlib.suppress(queue.Empty):
                seen.append(output.get(timeout=1.0))

        # One client run: the query by name, then a name the catalog lacks, which must fail the run.
        bars = f"SELECT {COLUMNS} FROM gold.ohlcv_1m ORDER BY exchange, minute"
        done = _beeline(url, f"{bars}; SELECT * FROM gold.no_such_table")
        # beeline echoes its prompt, without a newline, before the CSV.
        header, *rows = list(csv.reader(done.stdout.removeprefix(f"0: {url}> ").splitlines()))
        assert header == COLUMNS.split(", "), done.stderr[-4000:]
        assert [tuple(_value(v) for v in row) for row in rows] == BARS
        assert done.returncode != 0
        assert "TABLE_OR_VIEW_NOT_FOUND" in done.stderr and "no_such_table" in done.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=seconds(60))
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert code == 0, "".join(seen)[-4000:]
    with pytest.raises(OSError):  # stopped: the port no longer accepts connections
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()


def test_thrift_refuses_a_port_in_use_before_starting_spark(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "lake", "thrift", "--port", str(port)],
            cwd=REPO,
            env=_thrift_env(str(tmp_path / "lake")),
            capture_output=True,
            text=True,
            timeout=seconds(60),
            check=False,
        )
    assert done.returncode == 2, done.stderr[-4000:]
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert not (tmp_path / "lake" / "_catalog").exists()  # no Spark session was opened
