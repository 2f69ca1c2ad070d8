"""``python -m expectations``: list the suites, write the data-quality report.

python -m expectations suites                          # every suite and its expectations (no Spark)
python -m expectations report --out var/dq-report/index.html   # one-page HTML summary (no JVM)

Re-validating quarantined rows writes silver, so it is a Spark job: ``python -m spark_jobs.dq_replay
--table silver.trades``. What validation costs a batch is a benchmark: ``python -m infra.bench.quality``.
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
    parser.add_argument("--config", help="YAML config (sections lake:, expectations:); env wins")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("suites", help="print every suite's expectations as JSON lines")
    rep = sub.add_parser("report", help="write the one-page HTML data-quality summary (DuckDB, no JVM)")
    rep.add_argument("--out", default="var/dq-report/index.html", help="the HTML file to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    try:
        config = read_yaml(args.config)
        settings = load_section(DqSettings, "expectations", config=config)
        runtime = load_runtime(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2

    if args.command == "suites":
        for name, spec in SUITES.items():
            for e in spec.build(settings).expectations:
                cfg = e.configuration.to_json_dict()
                print(json.dumps({"suite": name, "name": expectation_name(e), **cfg}, default=str))
        return 0

    from expectations.report import write

    print(write(runtime.lake, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
