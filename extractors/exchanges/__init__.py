"""One module per exchange: endpoints, limits, subscribe messages and frame classification; no I/O."""

from __future__ import annotations

from extractors.exchanges import binance, bybit, coinbase, kraken, kucoin, okx
from extractors.exchanges.base import Connector

#: Every supported exchange; adding one is a new module here and nothing else.
CONNECTORS: dict[str, Connector] = {
    "binance": binance,
    "kucoin": kucoin,
    "coinbase": coinbase,
    "kraken": kraken,
    "okx": okx,
    "bybit": bybit,
}


def connector(name: str) -> Connector:
    """The module for ``name``; ``KeyError`` names the supported exchanges."""
    try:
        return CONNECTORS[name]
    except KeyError:
        raise KeyError(f"unknown exchange {name!r}; supported: {', '.join(sorted(CONNECTORS))}") from None
