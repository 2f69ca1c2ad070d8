"""``python -m lake.serve [--config FILE] [--host H] [--port P] [--feed auto|kafka|landing|none]``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from lake.serve.feeds import KafkaTail, LandingTail, Source
from lake.serve.settings import ServeRuntime, load_serve_runtime
from lake.serve.stores import StoreWriter, open_stores


def source_factory(runtime: ServeRuntime) -> Callable[[], Source] | None:
    if runtime.feed == "kafka":
        servers, prefix = runtime.kafka_servers, runtime.kafka_prefix
        return lambda: KafkaTail(bootstrap_servers=servers, topic_prefix=prefix)
    if runtime.feed == "landing" and runtime.staging is not None:
        staging, landed = runtime.staging, runtime.landing_root
        return lambda: LandingTail(staging, landed=landed)
    return None


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from lake.serve.app import create_app

    parser = argparse.ArgumentParser(prog="python -m lake.serve", description=__doc__)
    parser.add_argument("--config", help="YAML config file (sections serve:, lake:, landing:, kafka:)")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--feed", choices=["auto", "kafka", "landing", "none"])
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    runtime = load_serve_runtime(
        args.config, overrides={"host": args.host, "port": args.port, "feed": args.feed}
    )
    writers = [
        StoreWriter(store, max_queued=runtime.stores.max_queued) for store in open_stores(runtime.stores)
    ]
    app = create_app(
        runtime.serve,
        runtime.lake,
        source_factory=source_factory(runtime),
        source_name=runtime.feed,
        stores=writers,
    )
    where = runtime.staging if runtime.feed == "landing" else ",".join(runtime.kafka_servers)
    print(
        f"cryptolake serve: http://{runtime.serve.host}:{runtime.serve.port}/  (lake {runtime.lake.root}, "
        f"feed {runtime.feed}{f' {where}' if runtime.feed != 'none' else ''})",
        flush=True,
    )
    if writers:
        print(f"live-update stores: {', '.join(w.store.name for w in writers)}", flush=True)
    uvicorn.run(
        app, host=runtime.serve.host, port=runtime.serve.port, log_level="warning", ws="websockets-sansio"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
