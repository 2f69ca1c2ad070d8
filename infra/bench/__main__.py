"""``make bench`` (``python -m infra.bench``): run every benchmark, print the figures, write them to JSON.

Each benchmark is a module of :mod:`infra.bench` with ``run(*, quick: bool) -> dict`` of figures;
this runner only sequences them (``--only NAME`` selects, ``--quick`` is a smoke run). Figures are
measurements, not assertions: nothing here fails on a slow machine. A run with ``--only`` replaces
those benchmarks' figures in ``--out`` and keeps the rest; ``machines`` says when each was run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: (name, module with a ``run`` function); run in this order.
BENCHMARKS: tuple[tuple[str, str], ...] = (
    ("simulator", "infra.bench.simulator"),
    ("extractor", "infra.bench.extractor"),
    ("silver", "infra.bench.silver"),
    ("gold", "infra.bench.gold"),
    ("quality", "infra.bench.quality"),
    ("serve", "infra.bench.serve"),
    ("live", "infra.bench.live"),
)


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def run_all(names: list[str] | None, *, quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine()}
    for name, module_name in BENCHMARKS:
        if names and name not in names:
            continue
        module = importlib.import_module(module_name)
        bench: Callable[..., dict[str, Any]] = module.run
        print(f"== {name} ({module_name}) ...", flush=True)
        started = time.perf_counter()
        figures = bench(quick=quick)
        figures["wall_seconds"] = round(time.perf_counter() - started, 1)
        results[name] = figures
        for key, value in figures.items():
            print(f"   {key:32} {value}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.bench", description=__doc__)
    parser.add_argument("--out", default="bench-results.json", help="JSON file for the figures")
    parser.add_argument("--only", action="append", choices=[n for n, _ in BENCHMARKS], help="run only these")
    parser.add_argument(
        "--quick", action="store_true", help="smaller inputs (a smoke run, not for the README)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    results = run_all(args.only, quick=args.quick)
    out = Path(args.out)
    if args.only and out.exists():
        # One benchmark's run replaces its own figures and keeps the others' (and their machine).
        kept = json.loads(out.read_text())
        results = {**kept, **{name: figures for name, figures in results.items() if name != "machine"}}
        results.setdefault("machines", {}).update({name: machine() for name in args.only})
    out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"figures written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
