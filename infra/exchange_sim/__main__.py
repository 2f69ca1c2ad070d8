"""CLI: run the exchange simulator until SIGINT/SIGTERM, printing the base URLs."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from infra.exchange_sim.simulator import EXCHANGES, ExchangeSimulator


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m infra.exchange_sim", description=__doc__)
    parser.add_argument("--exchanges", default=",".join(EXCHANGES), help="comma-separated list")
    parser.add_argument("--symbols", type=int, default=50, help="markets per exchange")
    parser.add_argument("--rate", default="200", help="trades/s per exchange; 0 or 'max' = unthrottled")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--port", type=int, default=0, help="first port (0 = free ports)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--truth", default=None, help="ground-truth JSON-lines file")
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    rate = 0.0 if args.rate == "max" else float(args.rate)
    exchanges = [e.strip() for e in args.exchanges.split(",") if e.strip()]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with ExchangeSimulator(
        exchanges,
        symbols=args.symbols,
        rate=rate,
        seed=args.seed,
        port=args.port,
        host=args.host,
        truth_path=args.truth,
    ) as sim:
        for name, urls in sim.urls.items():
            print(f"{name} rest={urls.rest} ws={urls.ws}")
        print(json.dumps({name: {"rest": u.rest, "ws": u.ws} for name, u in sim.urls.items()}))
        sys.stdout.flush()
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
