"""``python -m lake``: list, create and query the lake's tables.

python -m lake tables                 # the registry: name, path, key, partitions
python -m lake init                   # create every table (empty) under the lake root
python -m lake sql "SELECT * FROM gold_ohlcv_1m LIMIT 10"
spark-submit $(python -m lake submit-args) spark_jobs/silver_trades.py ...   # jars + Delta conf
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from lake.config import ConfigError
from lake.settings import load_runtime
from lake.tables import TABLES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lake", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="YAML config file (sections lake:, spark:); env CRYPTOLAKE_* wins")
    parser.add_argument("--master", help="Spark master, e.g. local[2] or spark://host:7077")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tables", help="list the registry tables and their locations")
    sub.add_parser("init", help="create every registry table (empty) under the lake root")
    sql = sub.add_parser("sql", help="run a SQL statement; tables are views named <layer>_<entity>")
    sql.add_argument("statement")
    sql.add_argument("--limit", type=int, default=50, help="rows to show (default 50)")
    sub.add_parser(
        "submit-args",
        help="print the spark-submit options that put the local jars on the driver and enable Delta",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    try:
        runtime = load_runtime(args.config, spark_overrides={"master": args.master})
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2

    if args.command == "submit-args":
        from lake.session import submit_args

        try:
            print(" ".join(shlex.quote(a) for a in submit_args(runtime.spark)))
        except ConfigError as exc:
            print(f"config error: {exc}", file=sys.stderr)
            return 2
        return 0

    if args.command == "tables":
        for name, spec in TABLES.items():
            parts = ",".join(spec.partition_by) or "-"
            print(
                f"{name:28} key=({', '.join(spec.key)}) partitions={parts}\n{'':28} {runtime.lake.path(name)}"
            )
        return 0

    from lake.session import build_spark
    from lake.sql import query, register_views

    try:
        spark = build_spark(runtime.spark)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.command == "init":
        views = register_views(spark, runtime.lake, create_missing=True)
        print(f"lake at {runtime.lake.root}: {len(views)} tables ready")
    else:
        query(spark, runtime.lake, args.statement).show(args.limit, truncate=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
