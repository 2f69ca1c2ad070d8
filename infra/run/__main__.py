"""``make run`` (``python -m infra.run``): the live lake on this machine, until Ctrl-C.

Starts and supervises: the extractors (one ``python -m extractors run`` for Binance, KuCoin and
Coinbase) -> the bus (a local landing zone, or Kafka with ``BUS=kafka``) -> one Spark application
(``python -m spark_jobs.pipeline``, live: bronze, silver, gold and data quality) -> Delta tables
under ``./lake-data`` (``LAKE=s3a://bucket/prefix`` for object storage) -> the web server
(``python -m lake.serve``). Real exchanges by default; when none answers within a few seconds,
the exchange simulator (``./lake-sim``). ``SOURCE=sim|live`` forces either. Details: docs/run.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from infra.run.plan import DEFAULT_SERVE_PORT, EXCHANGES, build_plan, free_port, layout
from infra.run.policy import RestartPolicy
from infra.run.source import SourceMode, decide, probe
from infra.run.supervisor import Options, Supervisor


def _env_choice(name: str, allowed: tuple[str, ...], default: str) -> str:
    value = (os.environ.get(name) or default).strip().lower()
    if value not in allowed:
        raise SystemExit(f"{name}={value!r}: use one of {', '.join(allowed)}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m infra.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", choices=["auto", "live", "sim"], help="default: $SOURCE or auto")
    parser.add_argument("--bus", choices=["landing", "kafka"], help="default: $BUS or landing")
    parser.add_argument(
        "--lake", help="lake root: default $LAKE or ./lake-data (./lake-sim for the simulator)"
    )
    parser.add_argument("--workdir", default=".", help="where ./lake-data and ./lake-sim go (default: .)")
    parser.add_argument("--config", help="YAML config file handed to every child (config.example.yaml)")
    parser.add_argument("--trigger", default="processingTime=1 second", help="the Spark query's trigger")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_SERVE_PORT, help="web server port (taken: a free one)"
    )
    parser.add_argument(
        "--max-markets", type=int, default=30, help="real exchanges: USDT markets each (0: all)"
    )
    parser.add_argument("--sim-symbols", type=int, default=12, help="simulator: markets per exchange")
    parser.add_argument("--sim-rate", type=float, default=40.0, help="simulator: trades/s per exchange")
    parser.add_argument("--probe-timeout", type=float, default=3.0, help="seconds to wait for the exchanges")
    parser.add_argument(
        "--status-every", type=float, default=10.0, help="not a terminal: a status line every N s"
    )
    parser.add_argument("--max-failures", type=int, default=5, help="deaths of one child within --window ...")
    parser.add_argument("--window", type=float, default=300.0, help="... seconds that end the run")
    parser.add_argument("--no-view", action="store_true", help="status lines even on a terminal")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode: SourceMode = args.source or _env_choice("SOURCE", ("auto", "live", "sim"), "auto")  # type: ignore[assignment]
    bus = args.bus or _env_choice("BUS", ("landing", "kafka"), "landing")
    lake = args.lake or os.environ.get("LAKE") or None
    workdir = Path(args.workdir).resolve()

    reachable = None
    if mode == "auto":
        from extractors.exchanges import binance, coinbase, kucoin

        bases = {"binance": binance.REST_URL, "kucoin": kucoin.REST_URL, "coinbase": coinbase.REST_URL}
        print(
            f"[run] asking {', '.join(EXCHANGES)} whether they answer ({args.probe_timeout:g} s) ...",
            flush=True,
        )
        reachable = probe(bases, timeout_s=args.probe_timeout)
    choice = decide(mode, exchanges=EXCHANGES, reachable=reachable)
    print(f"[run] {choice.message}", flush=True)

    where = layout(workdir=workdir, source=choice.source, lake=lake)
    kafka_bootstrap = ""
    started_kafka = False
    s3_env: dict[str, str] = {}
    storage_options = None
    from infra import services

    if bus == "kafka":
        before = services.status(only=("kafka",))["kafka"]
        print("[run] BUS=kafka: starting the local Kafka (infra.services) ...", flush=True)
        try:
            infos = services.up(only=("kafka",))
        except services.ServiceError as exc:
            print(f"[run] Kafka could not start: {exc}", file=sys.stderr)
            return 1
        kafka_bootstrap = str(infos["kafka"]["bootstrap"])
        started_kafka = not before.get("running")
        print(f"[run] Kafka at {kafka_bootstrap}", flush=True)
    if where.is_s3:
        minio = services.status(only=("minio",))["minio"]
        if minio.get("running"):
            svc = services.MinioService()
            creds = {"ENDPOINT": svc.endpoint, "ACCESS_KEY": svc.access_key, "SECRET_KEY": svc.secret_key}
            for section in ("SPARK", "LANDING"):
                s3_env |= {f"CRYPTOLAKE_{section}_S3_{key}": value for key, value in creds.items()}
            s3_env |= {
                "AWS_ENDPOINT_URL": svc.endpoint,
                "AWS_ACCESS_KEY_ID": svc.access_key,
                "AWS_SECRET_ACCESS_KEY": svc.secret_key,
            }
            print(f"[run] object storage: the local MinIO at {svc.endpoint}", flush=True)
        elif not os.environ.get("CRYPTOLAKE_SPARK_S3_ENDPOINT") and not os.environ.get("AWS_ACCESS_KEY_ID"):
            print(
                f"[run] LAKE={lake} needs object storage: `make infra-up ONLY=minio` starts MinIO, or set "
                "CRYPTOLAKE_SPARK_S3_ENDPOINT/_ACCESS_KEY/_SECRET_KEY and CRYPTOLAKE_LANDING_S3_* "
                "for another store",
                file=sys.stderr,
            )
            return 2
        from lake.config import load_section, read_yaml
        from lake.session import SparkSettings
        from lake.sql import storage_options as delta_storage_options

        # The same settings the children read: the config file, the environment, MinIO's keys.
        spark = load_section(
            SparkSettings, "spark", config=read_yaml(args.config), environ={**os.environ, **s3_env}
        )
        storage_options = delta_storage_options(spark)

    plan = build_plan(
        layout=where,
        source=choice.source,
        exchanges=choice.exchanges,
        bus=bus,  # type: ignore[arg-type]
        trigger=args.trigger,
        serve_port=free_port(preferred=args.port),
        metrics_port=free_port(),
        sim_port=free_port(span=len(choice.exchanges)) if choice.source == "sim" else 0,
        sim_symbols=args.sim_symbols,
        sim_rate=args.sim_rate,
        max_markets=args.max_markets,
        kafka_bootstrap=kafka_bootstrap,
        s3_env=s3_env,
        config=args.config,
        user_env=os.environ,
    )
    where.data.mkdir(parents=True, exist_ok=True)
    print(f"[run] lake {where.lake_root}; logs {where.logs}; web server {plan.serve_url}", flush=True)
    interactive = sys.stdout.isatty() and not args.no_view
    supervisor = Supervisor(
        plan,
        Options(
            source=choice.source,
            bus=bus,
            interactive=interactive,
            status_every_s=args.status_every,
            storage_options=storage_options,
        ),
        policy_factory=lambda: RestartPolicy(max_failures=args.max_failures, window_s=args.window),
    )
    signal.signal(signal.SIGINT, supervisor.request_stop)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    try:
        code = supervisor.run()
    finally:
        if started_kafka:
            print(
                f"[run] stopping the Kafka this run started (its data stays in {services.DEFAULT_STATE_DIR})",
                flush=True,
            )
            services.down(only=("kafka",))
    return code


if __name__ == "__main__":
    sys.exit(main())
