"""``make demo``: the whole pipeline once, on one machine, against the local exchange simulator.

1. starts the exchange simulator (Binance, KuCoin, Coinbase) with a ground-truth log;
2. runs one extractor process (``python -m extractors run``) into a local landing zone for a while,
   then stops it with SIGTERM (it flushes every buffer);
3. runs the Spark jobs over the landing zone (bronze, then silver) with ``availableNow``;
4. queries the silver tables with SQL and compares the trades with the simulator's ground truth.

Everything lives under ``--workdir`` (default ``var/demo``), so a second run starts from scratch.
Point the same commands at real exchanges, Kafka, S3 or a cluster by configuration (README);
``make run`` (:mod:`infra.run`) is the live, supervised pipeline.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

EXCHANGES = ("binance", "kucoin", "coinbase")


def step(message: str) -> None:
    print(f"\n== {message}", flush=True)


def extractor_env(urls: dict[str, tuple[str, str]], *, landing: Path, spool: Path) -> dict[str, str]:
    """Environment for ``python -m extractors run`` pointing every exchange at the simulator."""
    env = {
        **os.environ,
        "CRYPTOLAKE_EXTRACTORS_EXCHANGES": ",".join(urls),
        "CRYPTOLAKE_EXTRACTORS_LOG_FORMAT": "text",
        "CRYPTOLAKE_EXTRACTORS_LOG_LEVEL": "WARNING",
        "CRYPTOLAKE_LANDING_ROOT": str(landing),
        "CRYPTOLAKE_LANDING_STAGING_DIR": str(landing.parent / "landing-staging"),
        "CRYPTOLAKE_LANDING_ROLL_SECONDS": "5",
        "CRYPTOLAKE_SPOOL_DIR": str(spool),
    }
    for exchange, (rest, ws) in urls.items():
        env[f"CRYPTOLAKE_EXTRACTORS_{exchange.upper()}_REST_URL"] = rest
        # KuCoin hands out its websocket endpoint with the bullet-public token.
        env[f"CRYPTOLAKE_EXTRACTORS_{exchange.upper()}_WS_URL"] = "" if exchange == "kucoin" else ws
    return env


def extract(*, workdir: Path, seconds: float, symbols: int, rate: float, seed: int) -> Path:
    """Run simulator + extractor; return the ground-truth file."""
    from infra.exchange_sim import SimulatorThread

    truth = workdir / "truth.jsonl"
    with SimulatorThread(EXCHANGES, symbols=symbols, rate=rate, seed=seed, truth_path=str(truth)) as sim:
        urls = {ex: (sim.urls[ex].rest, sim.urls[ex].ws) for ex in EXCHANGES}
        for ex, (rest, ws) in urls.items():
            print(f"   simulator {ex:9} rest={rest} ws={ws}")
        env = extractor_env(urls, landing=workdir / "landing", spool=workdir / "spool")
        proc = subprocess.Popen([sys.executable, "-m", "extractors", "run", "--sink", "landing"], env=env)
        try:
            for left in range(int(seconds), 0, -5):
                print(f"   extracting ... {left:3d} s left", flush=True)
                time.sleep(min(5, left))
                if proc.poll() is not None:
                    raise RuntimeError(f"extractor exited early with code {proc.returncode}")
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
        if code != 0:
            raise RuntimeError(f"extractor stopped with code {code}")
    files = list((workdir / "landing").rglob("*.jsonl.gz"))
    print(f"   landed {len(files)} files under {workdir / 'landing'}")
    return truth


def compare_with_truth(silver_keys: set[tuple[str, str, str]], truth_path: Path) -> tuple[int, int, int]:
    """(silver trades, of them not in the truth, truth trades missing from silver).

    Keys are (exchange, canonical symbol, trade id). The extractor starts after the simulator and
    stops before it, so "missing" only counts truth trades between the first and the last trade id
    silver holds for that market (ids are ordered per market on every exchange).
    """
    from infra.exchange_sim.truth import read_truth_file

    truth = {(r["exchange"], r["symbol"], str(r["trade_id"])) for r in read_truth_file(truth_path)}
    window: dict[tuple[str, str], tuple[int, int]] = {}
    for exchange, symbol, trade_id in silver_keys:
        lo, hi = window.get((exchange, symbol), (int(trade_id), int(trade_id)))
        window[(exchange, symbol)] = (min(lo, int(trade_id)), max(hi, int(trade_id)))
    expected = {
        (ex, sym, tid)
        for ex, sym, tid in truth
        if (ex, sym) in window and window[(ex, sym)][0] <= int(tid) <= window[(ex, sym)][1]
    }
    return len(silver_keys), len(silver_keys - truth), len(expected - silver_keys)


def transform_and_report(*, workdir: Path, truth: Path) -> None:
    from lake.session import SparkSettings, build_spark
    from lake.sql import query, register_views
    from lake.tables import Lake, LakeSettings
    from spark_jobs import pipeline
    from spark_jobs.runtime import BronzeSettings, SilverSettings

    lake = Lake(LakeSettings(root=str(workdir / "lake")))
    spark = build_spark(SparkSettings(app_name="cryptolake-demo"))
    spark.sparkContext.setLogLevel("ERROR")
    bronze = BronzeSettings(source="landing", landing_root=str(workdir / "landing"))
    timings = pipeline.run(spark, lake=lake, bronze=bronze, silver=SilverSettings())
    for name, seconds in timings.items():
        print(f"   {name:24} {seconds:6.1f} s")
    register_views(spark, lake, create_missing=True)
    step("silver.trades against the simulator's ground truth")
    keys = {
        (r.exchange, r.symbol, r.trade_id)
        for r in query(spark, lake, "SELECT exchange, symbol, trade_id FROM silver_trades").collect()
    }
    total, unknown, missing = compare_with_truth(keys, truth)
    print(
        f"   {total} trades in silver; {unknown} not in the simulator's truth; {missing} missing", flush=True
    )
    print("   (missing: emitted while the extractor ran but not in silver, e.g. gaps REST could not refill)")
    step("SQL over the silver tables")
    for title, statement in (
        (
            "trades per exchange",
            "SELECT exchange, count(*) AS trades, count(DISTINCT symbol) AS symbols, "
            "round(sum(notional_usdt), 2) AS notional_usdt "
            "FROM silver_trades GROUP BY exchange ORDER BY exchange",
        ),
        (
            "latest BTC trades in USDT",
            "SELECT exchange, symbol, trade_id, price, usdt_rate, price_usdt, side, event_ts "
            "FROM silver_trades WHERE base = 'BTC' ORDER BY event_ts DESC LIMIT 8",
        ),
        (
            "quarantine by reason",
            "SELECT source_table, reason, count(*) AS rows "
            "FROM silver_quarantine GROUP BY 1, 2 ORDER BY 3 DESC",
        ),
    ):
        print(f"-- {title}")
        try:
            query(spark, lake, statement).show(20, truncate=False)
        except Exception as exc:  # a table a short run did not create yet
            print(f"   (not available: {str(exc).splitlines()[0]})")
    print(f"Query it yourself: .venv/bin/python -m lake sql '<SQL>' with CRYPTOLAKE_LAKE_ROOT={lake.root}")
    spark.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", default="var/demo", help="everything the demo writes (wiped first)")
    parser.add_argument("--seconds", type=float, default=30, help="how long to extract (default 30)")
    parser.add_argument("--symbols", type=int, default=12, help="markets per exchange (default 12)")
    parser.add_argument("--rate", type=float, default=40, help="simulated trades/s per exchange (default 40)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    workdir = Path(args.workdir).resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    step(f"1/3 simulator + extractor for {args.seconds:.0f} s ({', '.join(EXCHANGES)})")
    truth = extract(
        workdir=workdir, seconds=args.seconds, symbols=args.symbols, rate=args.rate, seed=args.seed
    )
    step("2/3 Spark: landing zone -> bronze.raw_events -> silver tables (availableNow)")
    transform_and_report(workdir=workdir, truth=truth)
    step(f"3/3 done: lake under {workdir / 'lake'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
