"""``python -m lake``: list, create, query and maintain the lake's tables.

python -m lake tables                 # the registry: name, path, key, partitions
python -m lake init                   # create every table (empty) under the lake root
python -m lake catalog                # register the tables and views in Spark's persistent catalog
python -m lake sql "SELECT * FROM gold.ohlcv_1m LIMIT 10"              # DuckDB, no JVM
python -m lake sql --engine spark "SELECT * FROM gold.ohlcv_5m LIMIT 10"
python -m lake thrift [--host 127.0.0.1] [--port 10000]   # JDBC: jdbc:hive2://127.0.0.1:10000/default
python -m lake optimize [--table gold.ohlcv_1m ...] [--no-zorder]
python -m lake vacuum [--table ...] [--retention-hours 168]
spark-submit $(python -m lake submit-args) spark_jobs/silver_trades.py ...   # jars + Delta conf
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from typing import TYPE_CHECKING, Any

from lake.config import ConfigError, load_section, read_yaml
from lake.settings import load_runtime
from lake.tables import TABLES

if TYPE_CHECKING:
    from lake.session import SparkSettings
    from lake.sql import SqlSettings
    from lake.tables import Lake


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lake", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config",
        help="YAML config file (sections lake:, spark:, sql:, thrift:, maintenance:); env CRYPTOLAKE_* wins",
    )
    parser.add_argument("--master", help="Spark master, e.g. local[2] or spark://host:7077")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tables", help="list the registry tables and their locations")
    sub.add_parser("init", help="create every registry table (empty) under the lake root")
    sub.add_parser("catalog", help="register the tables and rollup views in Spark's persistent catalog")
    sql = sub.add_parser("sql", help="run a SQL statement over gold.ohlcv_1m, silver.trades, ... by name")
    sql.add_argument("statement")
    sql.add_argument(
        "--engine", choices=("duckdb", "spark"), help="duckdb (no JVM, default: sql.engine) or spark"
    )
    sql.add_argument("--limit", type=int, default=50, help="rows to show (default 50; 0: all)")
    sql.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    sql.add_argument("--timing", action="store_true", help="print the query time to stderr")
    thrift = sub.add_parser(
        "thrift", help="serve the catalog over JDBC (Spark Thrift server, HiveServer2) until Ctrl-C"
    )
    thrift.add_argument("--host", help="address to bind (thrift.host, default 127.0.0.1)")
    thrift.add_argument("--port", type=int, help="HiveServer2 port (thrift.port, default 10000)")
    opt = sub.add_parser("optimize", help="compact tables, Z-ordered by symbol and time")
    opt.add_argument("--table", action="append", dest="tables", help="a table name (repeatable; default all)")
    opt.add_argument("--no-zorder", action="store_true", help="compaction only (maintenance.zorder)")
    vac = sub.add_parser("vacuum", help="delete files no version within the retention needs")
    vac.add_argument("--table", action="append", dest="tables", help="a table name (repeatable; default all)")
    vac.add_argument(
        "--retention-hours",
        type=float,
        help="keep files needed by the last N hours (maintenance.vacuum_retention_hours, default 168)",
    )
    vac.add_argument(
        "--allow-short-retention",
        action="store_true",
        default=None,
        help="allow a retention below 168 h (maintenance.allow_short_retention)",
    )
    sub.add_parser(
        "submit-args",
        help="print the spark-submit options that put the local jars on the driver and enable Delta",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    from lake.maintenance import MaintenanceSettings
    from lake.sql import SqlSettings

    try:
        runtime = load_runtime(args.config, spark_overrides={"master": args.master})
        config = read_yaml(args.config)
        sql_settings = load_section(
            SqlSettings, "sql", config=config, overrides={"engine": getattr(args, "engine", None)}
        )
        maintenance = load_section(
            MaintenanceSettings,
            "maintenance",
            config=config,
            overrides={
                "vacuum_retention_hours": getattr(args, "retention_hours", None),
                "allow_short_retention": getattr(args, "allow_short_retention", None),
                "zorder": False if getattr(args, "no_zorder", False) else None,
            },
        )
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    lake = runtime.lake

    if args.command == "thrift":
        return _thrift(args, runtime.spark, lake, sql_settings, config)

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
            print(f"{name:28} key=({', '.join(spec.key)}) partitions={parts}\n{'':28} {lake.path(name)}")
        return 0

    if args.command == "sql" and sql_settings.engine == "duckdb":
        from lake.sql import duckdb_connect, referenced_tables, run_duckdb

        try:
            con = duckdb_connect(lake, spark=runtime.spark, tables=referenced_tables(args.statement))
            result = run_duckdb(con, args.statement, limit=args.limit)
        except Exception as exc:  # a SQL error is the user's: say it, no traceback
            print(f"error: {exc}", file=sys.stderr)
            return 1
        _print(result, args)
        return 0

    from lake.session import build_spark
    from lake.sql import catalog_session, register_catalog, register_views, run_spark

    try:
        if args.command in ("catalog", "sql"):
            with catalog_session(runtime.spark, lake, sql_settings) as spark:
                if args.command == "catalog":
                    names = register_catalog(spark, lake)
                    print(f"catalog: {len(names)} tables registered ({', '.join(names)})")
                    return 0
                try:
                    result = run_spark(spark, lake, args.statement, limit=args.limit)
                except Exception as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 1
                _print(result, args)
                return 0
        spark = build_spark(runtime.spark)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "init":
            views = register_views(spark, lake, create_missing=True)
            print(f"lake at {lake.root}: {len(views)} tables ready")
        elif args.command == "optimize":
            from lake.maintenance import optimize

            try:
                optimized = optimize(spark, lake, args.tables, zorder=maintenance.zorder)
            except KeyError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            for o in optimized:
                print(f"{o.table:28} {json.dumps(o.metrics)} {o.seconds:.1f} s")
        elif args.command == "vacuum":
            from lake.maintenance import vacuum

            try:
                outcomes = vacuum(
                    spark,
                    lake,
                    args.tables,
                    retention_hours=maintenance.vacuum_retention_hours,
                    allow_short_retention=maintenance.allow_short_retention,
                )
            except (ValueError, KeyError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            for o in outcomes:
                print(f"{o.table:28} {json.dumps(o.metrics)} {o.seconds:.1f} s")
    finally:
        spark.stop()
    return 0


def _thrift(
    args: argparse.Namespace,
    spark: SparkSettings,
    lake: Lake,
    sql_settings: SqlSettings,
    config: dict[str, Any],
) -> int:
    import signal
    import threading

    from lake.thrift import ThriftSettings, serve

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        settings = load_section(
            ThriftSettings, "thrift", config=config, overrides={"host": args.host, "port": args.port}
        )
        serve(spark, lake, sql_settings, settings, stop=stop)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except TimeoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _print(result: object, args: argparse.Namespace) -> None:
    from lake.sql import Result, format_table

    assert isinstance(result, Result)
    if args.format == "json":
        for row in result.rows:
            print(json.dumps(dict(zip(result.columns, row, strict=True)), default=str))
    else:
        print(format_table(result))
    if args.timing:
        print(f"{len(result.rows)} rows in {result.seconds * 1000:.0f} ms", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
