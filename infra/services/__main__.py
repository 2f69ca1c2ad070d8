"""``python -m infra.services up|down|status|env [--only kafka|minio|postgres|redis]``: local services.

Without ``--only``, ``up`` starts Kafka and MinIO; PostgreSQL and Redis (the optional live-update
stores of ``python -m lake.serve``) start only when named.

``up`` starts what is not running yet (in the background, state under ``.cache/services``) and
prints the endpoints; ``down`` stops them, keeping their data; ``status`` says what runs (``--json``
for scripts); ``env`` prints ``export`` lines that point cryptolake at them. Exit code 1 with the
reason (which service, and why) when a service cannot start.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from infra.services import (
    DEFAULT_SERVICES,
    DEFAULT_STATE_DIR,
    SERVICE_NAMES,
    MinioService,
    PostgresService,
    RedisService,
    ServiceError,
    ServiceName,
    down,
    status,
    up,
)


def _describe(info: dict[str, Any]) -> str:
    name = info["service"]
    if not info["running"]:
        return f"{name:6} stopped   ({info['folder']})"
    state = "ready" if info["ready"] else "NOT ANSWERING"
    if name == "kafka":
        where = f"bootstrap {info.get('bootstrap')}"
    elif name in ("postgres", "redis"):
        where = f"{info.get('host')}:{info.get('port')}"
        if name == "postgres":
            where += f"  database {info.get('database')}  user {info.get('user')}"
    else:
        where = f"endpoint {info.get('endpoint')}  console {info.get('console')}  bucket {info.get('bucket')}"
    took = f"  started in {info['start_seconds']} s" if info.get("start_seconds") else ""
    return f"{name:6} {state:9} pid {info.get('pid')}  {where}  log {info.get('log')}{took}"


def _env_lines(state_dir: Path) -> list[str]:
    infos = status(state_dir=state_dir, only=SERVICE_NAMES)
    lines: list[str] = []
    for store in (PostgresService(state_dir=state_dir), RedisService(state_dir=state_dir)):
        if infos[store.name]["running"]:
            prefix = f"CRYPTOLAKE_STORES_{store.name.upper()}"
            lines += [
                f"export {prefix}=true",
                f"export {prefix}_HOST={shlex.quote(store.host)}",
                f"export {prefix}_PORT={store.port}",
                f"export {store.password_env}={shlex.quote(store.password)}",
            ]
    if infos["kafka"]["running"]:
        bootstrap = shlex.quote(str(infos["kafka"]["bootstrap"]))
        lines.append(f"export CRYPTOLAKE_KAFKA_BOOTSTRAP_SERVERS={bootstrap}")
    if infos["minio"]["running"]:
        svc = MinioService(state_dir=state_dir)
        bucket = infos["minio"].get("bucket") or "cryptolake"
        lines += [
            f"export CRYPTOLAKE_SPARK_S3_ENDPOINT={shlex.quote(svc.endpoint)}",
            f"export CRYPTOLAKE_SPARK_S3_ACCESS_KEY={shlex.quote(svc.access_key)}",
            f"export CRYPTOLAKE_SPARK_S3_SECRET_KEY={shlex.quote(svc.secret_key)}",
            f"export CRYPTOLAKE_LAKE_ROOT={shlex.quote(f's3a://{bucket}/lake')}",
            f"export AWS_ENDPOINT_URL={shlex.quote(svc.endpoint)}",
            f"export AWS_ACCESS_KEY_ID={shlex.quote(svc.access_key)}",
            f"export AWS_SECRET_ACCESS_KEY={shlex.quote(svc.secret_key)}",
        ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.services", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    parser.add_argument("--only", choices=SERVICE_NAMES, help="act on one service only")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="default: %(default)s")
    parser.add_argument("--json", action="store_true", help="status as JSON (no secrets)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("kafka").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    only: tuple[ServiceName, ...] | None = (args.only,) if args.only else None
    try:
        if args.command == "up":
            infos = up(state_dir=args.state_dir, only=only or DEFAULT_SERVICES)
            for info in infos.values():
                print(_describe(info))
            print(f"endpoints for cryptolake: python -m infra.services env --state-dir {args.state_dir}")
        elif args.command == "down":
            down(state_dir=args.state_dir, only=only or SERVICE_NAMES)
            for info in status(state_dir=args.state_dir, only=only).values():
                print(_describe(info))
        elif args.command == "status":
            infos = status(state_dir=args.state_dir, only=only)
            if args.json:
                print(json.dumps(infos, indent=2, sort_keys=True))
            else:
                for info in infos.values():
                    print(_describe(info))
            return 0 if all(i["ready"] for i in infos.values()) else 3
        else:
            print("\n".join(_env_lines(args.state_dir)))
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
