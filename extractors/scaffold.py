"""``python -m extractors new-exchange NAME``: the skeleton of a new venue, built on the shared mechanism.

Writes the three modules every venue has (the connector ``extractors/exchanges/NAME.py``, the Spark
parser ``spark_jobs/parsers/NAME.py``, the simulator ``infra/exchange_sim/NAME.py``), the fixture
folder ``tests/fixtures/NAME/`` and ``tests/test_NAME_todo.py``, a test that fails, listing what is
left to fill in, until every ``TODO(new-exchange)`` is gone, the fixtures hold frames and the venue
is in the three registries. The skeletons define every name the shared runner, parser registry and
simulator need (so ``make check`` passes as soon as they are written) and raise
``NotImplementedError`` where the venue's wire facts go. Nothing is copied from another venue.
Existing files are never overwritten.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

MARK = "TODO(new-exchange)"
FIXTURES = ("markets", "trades", "ticker", "control")

_CONNECTOR = Template('''"""$title spot: TODO(new-exchange) channels, discovery and gap-fill endpoints.

Wire facts (docs/exchanges.md, $title): TODO(new-exchange) framing, keep-alive, limits, trade ids,
and the documentation page of each fact with the date it was checked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from extractors.envelope import Channel
from extractors.exchanges.base import Candle, Frame, Market, RestRequest, Session, TradesPage

NAME = "$name"
REST_URL = "https://TODO(new-exchange)"
WS_URL = "wss://TODO(new-exchange)"

# TODO(new-exchange): each limit from the venue's documentation, kept below it.
WS_MESSAGES_PER_S = 1.0
REST_WEIGHT_PER_S = 1.0
REST_WEIGHT_BURST = 1
MARKETS_PER_CONNECTION = 50
MAX_CONNECTION_AGE_S = 23.5 * 3600
CONSECUTIVE_IDS = False
PER_SYMBOL_BATCH_CHANNELS: frozenset[str] = frozenset()
KLINES_MAX_ROWS = 1


def _todo(what: str) -> NotImplementedError:
    return NotImplementedError(f"TODO(new-exchange) $name: {what}")


def discovery_request() -> RestRequest:
    raise _todo("the market list endpoint")


def parse_markets(body: str) -> list[Market]:
    raise _todo("markets from the discovery body")


def bootstrap_request() -> RestRequest | None:
    return None


def session(*, ws_url: str, bootstrap_body: str | None, conn_id: str) -> Session:
    return Session(url=ws_url)


def subscribe_messages(markets: Sequence[str], channels: Sequence[Channel], *, firehose: bool) -> list[str]:
    raise _todo("subscribe messages, chunked to the venue's limits")


def unsubscribe_messages(markets: Sequence[str], channels: Sequence[Channel]) -> list[str]:
    raise _todo("unsubscribe messages")


def ping_message(n: int) -> str | None:
    return None


def classify(text: str) -> Frame:
    raise _todo("data, control, ack, error and reconnect frames (one _on_<channel> each)")


def recent_trades_request(native_symbol: str) -> RestRequest:
    raise _todo("the recent trades request")


def gap_fill_request(native_symbol: str, *, after_id: int, until_id: int | None) -> RestRequest:
    raise _todo("the first gap-fill page")


def parse_trades_page(
    body: str,
    *,
    request: RestRequest,
    headers: Mapping[str, str],
    after_id: int,
    until_id: int | None,
) -> TradesPage:
    raise _todo("ids, the next page and what REST can no longer serve")


def l1_poll_request(native_symbol: str) -> RestRequest | None:
    return None


def klines_request(native_symbol: str, *, start_ms: int, end_ms: int) -> RestRequest:
    raise _todo("the 1-minute candles request")


def parse_klines(body: str) -> list[Candle]:
    raise _todo("candles from the body")
''')

_PARSER = Template('''"""$title payloads -> trades, tickers, L1 quotes and markets (pure transforms).

TODO(new-exchange): what the connector (:mod:`extractors.exchanges.$name`) lands, by channel, and
the declared schema of each payload (:func:`spark_jobs.parsers.common.struct`).
"""

from __future__ import annotations

from pyspark.sql import DataFrame


def _todo(what: str) -> NotImplementedError:
    return NotImplementedError(f"TODO(new-exchange) $name: {what}")


def trades(items: DataFrame) -> DataFrame:
    raise _todo("TRADE_COLUMNS with trade_checks()")


def tickers(items: DataFrame) -> DataFrame:
    raise _todo("TICKER_COLUMNS with ticker_checks()")


def l1(items: DataFrame) -> DataFrame:
    raise _todo("L1_COLUMNS with l1_checks()")


#: TODO(new-exchange): a transform when the venue's tickers carry the best bid/ask, else None.
ticker_l1 = None


def markets(items: DataFrame) -> DataFrame:
    raise _todo("MARKET_COLUMNS from the discovery payload")
''')

_SIMULATOR = Template('''"""$title in the simulator: TODO(new-exchange) the documented protocol."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from infra.exchange_sim.markets import Market, Trade
from infra.exchange_sim.server import Connection, ExchangeServer
from infra.exchange_sim.truth import TruthRecord


def _todo(what: str) -> NotImplementedError:
    return NotImplementedError(f"TODO(new-exchange) $name: {what}")


class ${cls}Server(ExchangeServer):
    name = "$name"

    def native_name(self, base: str, quote: str) -> str:
        raise _todo("the native symbol of a market")

    def routes(self, app: web.Application) -> None:
        raise _todo("the websocket route and the REST endpoints")

    async def on_text(self, conn: Connection, text: str) -> None:
        raise _todo("subscribe, unsubscribe and ping messages")

    def on_trade(self, market: Market, trade: Trade, record: TruthRecord) -> None:
        raise _todo("publish the trade (and tickers) to subscribers")

    def rest_error_body(self, status: int, message: str) -> Any:
        raise _todo("the venue's REST error body")
''')

_TEST = Template('''"""What is left to do for $title: fails, listing it, until filled in and registered."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "$name"
MODULES = ("extractors/exchanges/$name.py", "spark_jobs/parsers/$name.py", "infra/exchange_sim/$name.py")
FIXTURES = $fixtures


def test_${name}_is_filled_in_and_registered() -> None:
    from extractors.exchanges import CONNECTORS
    from infra.exchange_sim.simulator import EXCHANGES as SIMULATED
    from spark_jobs.parsers import EXCHANGES as PARSED

    todo = [
        f"{module}:{n}: {line.strip()}"
        for module in MODULES
        for n, line in enumerate((ROOT / module).read_text().splitlines(), 1)
        if "$mark" in line
    ]
    todo += [
        f"tests/fixtures/{NAME}/{f}.jsonl: documented-shape frames, one per line"
        for f in FIXTURES
        if not (ROOT / "tests" / "fixtures" / NAME / f"{f}.jsonl").read_text().strip()
    ]
    if NAME not in CONNECTORS:
        todo.append("extractors/exchanges/__init__.py: add the module to CONNECTORS")
    if NAME not in PARSED:
        todo.append("spark_jobs/parsers/__init__.py: add the module to EXCHANGES")
    if NAME not in SIMULATED:
        todo.append("infra/exchange_sim/simulator.py: add it to EXCHANGES and _server_class")
    todo.append("docs/exchanges.md: a section with each fact's documentation page and date checked")
    todo.append("tests: connector, parser and simulator tests like the other venues, then delete this file")
    assert not todo, "left to do for " + NAME + ":\\n" + "\\n".join(todo)
''')


def _paths(name: str) -> dict[str, str]:
    return {
        "connector": f"extractors/exchanges/{name}.py",
        "parser": f"spark_jobs/parsers/{name}.py",
        "simulator": f"infra/exchange_sim/{name}.py",
        "test": f"tests/test_{name}_todo.py",
    }


def new_exchange(name: str, *, root: str | Path) -> list[Path]:
    """Write the skeleton of exchange ``name`` under ``root`` (the repository); returns the files.

    ``ValueError`` for a name that is not a lower-case identifier, ``FileExistsError`` (before
    anything is written) when one of the files exists.
    """
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"exchange name {name!r}: lower-case letters, digits and _ only")
    base = Path(root)
    values = {
        "name": name,
        "title": name.replace("_", " ").title(),
        "cls": "".join(part.title() for part in name.split("_")),
        "mark": MARK,
        "fixtures": "(" + ", ".join(f'"{f}"' for f in FIXTURES) + ")",
    }
    files = {
        _paths(name)["connector"]: _CONNECTOR.substitute(values),
        _paths(name)["parser"]: _PARSER.substitute(values),
        _paths(name)["simulator"]: _SIMULATOR.substitute(values),
        _paths(name)["test"]: _TEST.substitute(values),
        **{f"tests/fixtures/{name}/{f}.jsonl": "" for f in FIXTURES},
    }
    existing = [p for p in files if (base / p).exists()]
    if existing:
        raise FileExistsError(f"not overwriting: {', '.join(existing)}")
    written = []
    for rel, text in files.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
