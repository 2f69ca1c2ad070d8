"""What ``make run`` starts, where each piece writes, and the environment each child reads (pure).

Every child is an ordinary command (``python -m extractors run`` ...) configured the way a user
would: ``CRYPTOLAKE_<SECTION>_<KEY>`` environment variables (and ``--config`` when given). The
plan only chooses folders and ports and puts them in that environment.

Folders (``<data>`` is ``./lake-data``, the lake's default root, or ``./lake-sim`` for the
simulator, so simulated data never mixes with real data; not ``./lake``, which is the ``lake``
package of this repository):

- ``<data>/`` the Delta tables (or ``LAKE=s3a://bucket/prefix``, ``…-sim`` for the simulator),
  checkpoints in ``<lake>/_checkpoints``;
- ``<data>/_landing`` the landing zone (the bus by default; on S3 ``<lake>/_landing``, staged
  parts in ``<data>/_landing-staging``);
- ``<data>/_spool``, ``<data>/_extractor-state`` the extractor's disk spool and resume points;
- ``<data>/_run/<child>.log`` each child's stdout and stderr.
"""

from __future__ import annotations

import shlex
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lake.session import REPO_ROOT

Bus = Literal["landing", "kafka"]
EXCHANGES = ("binance", "kucoin", "coinbase")
DEFAULT_SERVE_PORT = 8321


@dataclass(frozen=True, kw_only=True)
class Layout:
    """Where one run keeps its data; see the module docstring."""

    data: Path
    lake_root: str
    landing_root: str
    landing_staging: Path
    spool: Path
    state: Path
    logs: Path

    @property
    def is_s3(self) -> bool:
        return "://" in self.lake_root


def _sim_suffix(root: str) -> str:
    return root.rstrip("/") + "-sim"


def layout(*, workdir: Path, source: Literal["live", "sim"], lake: str | None) -> Layout:
    """``lake``: the ``LAKE`` setting (folder or ``s3a://bucket/prefix``), ``None`` for ``./lake-data``."""
    data = workdir / ("lake-sim" if source == "sim" else "lake-data")
    if lake and "://" in lake:
        root = _sim_suffix(lake) if source == "sim" else lake.rstrip("/")
        # The landing sink speaks s3:// (boto3), Spark s3a://: the same objects.
        landing = "s3://" + root.split("://", 1)[1] + "/_landing"
    else:
        root = str(Path(lake).resolve()) if lake else str(data)
        if lake and source == "sim":
            root = _sim_suffix(root)
        landing = str(Path(root) / "_landing")
    return Layout(
        data=data,
        lake_root=root,
        landing_root=landing,
        landing_staging=data / "_landing-staging",
        spool=data / "_spool",
        state=data / "_extractor-state",
        logs=data / "_run",
    )


@dataclass(frozen=True, kw_only=True)
class ChildSpec:
    """One supervised process: ``argv`` run with ``env`` (the supervisor's environment plus these)."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    #: SIGTERM, then this long before SIGKILL.
    stop_timeout_s: float = 30.0

    def command_line(self) -> str:
        return shlex.join(self.argv)


def free_port(host: str = "127.0.0.1", *, preferred: int = 0, span: int = 1) -> int:
    """``preferred`` (and the ``span - 1`` ports after it) if free, else a free run of ``span`` ports."""

    def free(first: int) -> bool:
        socks: list[socket.socket] = []
        try:
            for port in range(first, first + span):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind((host, port))
            return True
        except OSError:
            return False
        finally:
            for sock in socks:
                sock.close()

    if preferred and free(preferred):
        return preferred
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            first = int(sock.getsockname()[1])
        if first + span < 65536 and free(first):
            return first
    raise OSError(f"no {span} free consecutive ports on {host}")


def sim_urls(
    exchanges: Sequence[str], *, first_port: int, host: str = "127.0.0.1"
) -> dict[str, tuple[str, str]]:
    """The simulator's ``(rest, ws)`` per exchange when started with ``--port first_port``.

    Fixed ports keep the URLs the same when the simulator is restarted.
    """
    urls = {}
    for offset, exchange in enumerate(exchanges):
        base = f"{host}:{first_port + offset}"
        urls[exchange] = (f"http://{base}", f"ws://{base}" + ("/" if exchange == "kucoin" else ""))
    return urls


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Everything one ``make run`` starts, in start order (it stops in the order of :attr:`stop_order`)."""

    layout: Layout
    children: tuple[ChildSpec, ...]
    serve_url: str
    metrics_url: str
    env: Mapping[str, str]
    #: The simulator's ports (empty for real exchanges).
    sim_ports: tuple[int, ...] = ()

    @property
    def stop_order(self) -> tuple[str, ...]:
        """Extractor first (its buffers flush into the bus), then Spark, the server, the simulator."""
        order = ("extractor", "spark", "server", "simulator")
        return tuple(name for name in order if any(c.name == name for c in self.children))


def build_plan(
    *,
    layout: Layout,
    source: Literal["live", "sim"],
    exchanges: Sequence[str],
    bus: Bus,
    trigger: str,
    serve_port: int,
    metrics_port: int,
    sim_port: int = 0,
    sim_symbols: int = 12,
    sim_rate: float = 40.0,
    max_markets: int = 30,
    kafka_bootstrap: str = "",
    s3_env: Mapping[str, str] | None = None,
    config: str | None = None,
    user_env: Mapping[str, str] | None = None,
    python: str = sys.executable,
) -> Plan:
    """The children and their shared environment.

    Settings the plan owns (folders, sinks, ports, the source's URLs) are always set; tunables
    (``max_markets`` of the real exchanges, landing ``roll_seconds``, log format) only when the
    user's environment ``user_env`` does not set them already.
    """
    user_env = user_env or {}
    env: dict[str, str] = {
        "CRYPTOLAKE_LAKE_ROOT": layout.lake_root,
        "CRYPTOLAKE_EXTRACTORS_EXCHANGES": ",".join(exchanges),
        "CRYPTOLAKE_EXTRACTORS_SINKS": bus,
        "CRYPTOLAKE_EXTRACTORS_STATE_DIR": str(layout.state),
        "CRYPTOLAKE_EXTRACTORS_METRICS_HOST": "127.0.0.1",
        "CRYPTOLAKE_SPOOL_DIR": str(layout.spool),
        "CRYPTOLAKE_LANDING_ROOT": layout.landing_root,
        "CRYPTOLAKE_LANDING_STAGING_DIR": str(layout.landing_staging),
        "CRYPTOLAKE_BRONZE_SOURCE": bus,
        "CRYPTOLAKE_BRONZE_LANDING_ROOT": (
            "s3a://" + layout.landing_root.split("://", 1)[1] if layout.is_s3 else layout.landing_root
        ),
        "CRYPTOLAKE_SPARK_APP_NAME": "cryptolake-run",
        "CRYPTOLAKE_SERVE_WEB_DIR": str(REPO_ROOT / ".cache" / "web"),
        **(s3_env or {}),
    }
    tunables = {
        # A finished landing file is what Spark sees: roll often so the lake stays close behind.
        "CRYPTOLAKE_LANDING_ROLL_SECONDS": "5",
        "CRYPTOLAKE_EXTRACTORS_LOG_FORMAT": "text",
    }
    if source == "sim":
        urls = sim_urls(exchanges, first_port=sim_port)
        for exchange, (rest, ws) in urls.items():
            env[f"CRYPTOLAKE_EXTRACTORS_{exchange.upper()}_REST_URL"] = rest
            # KuCoin hands out its websocket endpoint with the bullet-public token.
            env[f"CRYPTOLAKE_EXTRACTORS_{exchange.upper()}_WS_URL"] = "" if exchange == "kucoin" else ws
    elif max_markets > 0:
        for exchange in exchanges:
            tunables[f"CRYPTOLAKE_EXTRACTORS_{exchange.upper()}_MAX_MARKETS"] = str(max_markets)
            tunables[f"CRYPTOLAKE_EXTRACTORS_{exchange.upper()}_QUOTE_ASSETS"] = "USDT"
    if bus == "kafka":
        # Simulated records get their own topics, so they never mix with real ones either.
        prefix = "sim." if source == "sim" else ""
        env |= {
            "CRYPTOLAKE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "CRYPTOLAKE_KAFKA_TOPIC_PREFIX": prefix,
            "CRYPTOLAKE_BRONZE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "CRYPTOLAKE_BRONZE_KAFKA_TOPIC_PATTERN": prefix.replace(".", r"\.") + r"raw\..*",
        }
    env |= {key: value for key, value in tunables.items() if key not in user_env}

    config_args = ("--config", config) if config else ()
    children: list[ChildSpec] = []
    if source == "sim":
        children.append(
            ChildSpec(
                name="simulator",
                argv=(
                    python,
                    "-m",
                    "infra.exchange_sim",
                    "--exchanges",
                    ",".join(exchanges),
                    "--symbols",
                    str(sim_symbols),
                    "--rate",
                    f"{sim_rate:g}",
                    "--port",
                    str(sim_port),
                ),
                stop_timeout_s=10.0,
            )
        )
    children += [
        # Spark first: its JVM takes the longest to start.
        ChildSpec(
            name="spark",
            argv=(python, "-m", "spark_jobs.pipeline", *config_args, "--trigger", trigger),
            # The driver finishes the running micro-batch (up to 120 s), re-prices, updates gold.
            stop_timeout_s=240.0,
        ),
        ChildSpec(
            name="extractor",
            argv=(python, "-m", "extractors", "run", *config_args, "--metrics-port", str(metrics_port)),
            stop_timeout_s=30.0,
        ),
        ChildSpec(
            name="server",
            argv=(python, "-m", "lake.serve", *config_args, "--host", "127.0.0.1", "--port", str(serve_port)),
            stop_timeout_s=10.0,
        ),
    ]
    return Plan(
        layout=layout,
        children=tuple(children),
        serve_url=f"http://127.0.0.1:{serve_port}/",
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        env=env,
        sim_ports=tuple(range(sim_port, sim_port + len(exchanges))) if source == "sim" else (),
    )


def sql_hints(lake_root: str) -> list[str]:
    """Three queries to try on the lake, as ``make sql`` command lines."""
    prefix = f"CRYPTOLAKE_LAKE_ROOT={shlex.quote(lake_root)} make sql Q="
    queries = (
        "SELECT exchange, count(*) AS trades, max(event_ts) AS newest FROM silver.trades GROUP BY 1",
        "SELECT exchange, symbol, minute, close, volume FROM gold.ohlcv_1m ORDER BY minute DESC LIMIT 10",
        "SELECT source_table, reason, count(*) AS n FROM silver.quarantine GROUP BY 1, 2 ORDER BY 3 DESC",
    )
    return [prefix + shlex.quote(q) for q in queries]
