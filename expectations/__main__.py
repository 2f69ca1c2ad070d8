"""``python -m expectations``: list the suites, replay quarantined rows, measure validation cost.

python -m expectations suites                          # every suite and its expectations (no Spark)
python -m expectations replay --table silver.trades    # re-validate quarantined rows, insert passes
python -m expectations bench --rows 1000 10000         # ms per batch with and without validation
python -m expectations report --out var/dq-report/index.html   # one-page HTML summary (no JVM)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from expectations.suites import SUITES, DqSettings, expectation_name
from lake.config import ConfigError, load_section, read_yaml
from lake.settings import load_runtime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m expectations",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML config (sections lake:, spark:, expectations:); env wins")
    parser.add_argument("--master", help="Spark master, e.g. local[2]")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("suites", help="print every suite's expectations as JSON lines")
    rp = sub.add_parser("replay", help="re-validate a table's quarantined rows and insert those that pass")
    rp.add_argument("--table", required=True, choices=sorted(SUITES))
    bp = sub.add_parser("bench", help="ms per silver.trades-shaped batch, with and without validation")
    bp.add_argument("--rows", type=int, nargs="+", default=[1000, 10000])
    bp.add_argument("--repeats", type=int, default=5)
    bp.add_argument("--gx", action="store_true", help="also time the full GX validation")
    rep = sub.add_parser("report", help="write the one-page HTML data-quality summary (DuckDB, no JVM)")
    rep.add_argument("--out", default="var/dq-report/index.html", help="the HTML file to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    try:
        config = read_yaml(args.config)
        settings = load_section(DqSettings, "expectations", config=config)
        runtime = load_runtime(args.config, spark_overrides={"master": args.master})
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2

    if args.command == "suites":
        for name, spec in SUITES.items():
            for e in spec.build(settings).expectations:
                cfg = e.configuration.to_json_dict()
                print(json.dumps({"suite": name, "name": expectation_name(e), **cfg}, default=str))
        return 0

    if args.command == "report":
        from expectations.report import write

        print(write(runtime.lake, args.out))
        return 0

    from lake.session import build_spark

    spark = build_spark(runtime.spark)
    if args.command == "replay":
        from expectations.replay import replay

        report = replay(spark, lake=runtime.lake, table_name=args.table, settings=settings)
        print(
            f"{report.table}: {report.examined} quarantined rows re-validated, {report.passing} pass now, "
            f"{report.inserted} inserted"
        )
        return 0

    from expectations.bench import run_bench

    for line in run_bench(spark, sizes=args.rows, repeats=args.repeats, settings=settings, gx=args.gx):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
