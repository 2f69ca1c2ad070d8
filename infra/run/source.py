"""Real exchanges or the simulator: probe the exchanges' REST, then decide (the decision is pure).

``SOURCE=live`` forces the real exchanges (one that does not answer is retried by the extractor
with backoff, as after any disconnect), ``SOURCE=sim`` the simulator. ``auto`` (the default)
probes each exchange's REST base for a few seconds: the exchanges that answer are extracted; when
none answers (no internet), the run goes to the simulator and says so in one line.
"""

from __future__ import annotations

import concurrent.futures
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

SourceMode = Literal["auto", "live", "sim"]

#: A cheap public endpoint per exchange, relative to its REST base (no key, tiny answer).
PING_PATHS = {"binance": "/api/v3/ping", "kucoin": "/api/v1/timestamp", "coinbase": "/time"}


@dataclass(frozen=True)
class SourceChoice:
    """``source`` to run against, the ``exchanges`` to extract, and the one line that explains it."""

    source: Literal["live", "sim"]
    exchanges: tuple[str, ...]
    message: str


def decide(
    mode: SourceMode, *, exchanges: Sequence[str], reachable: Mapping[str, bool] | None
) -> SourceChoice:
    """``reachable`` is the probe's answer per exchange (``None``: not probed, as when forced)."""
    if mode == "sim":
        return SourceChoice("sim", tuple(exchanges), "source: the exchange simulator (SOURCE=sim)")
    if mode == "live":
        return SourceChoice("live", tuple(exchanges), "source: the real exchanges (SOURCE=live)")
    answered = tuple(ex for ex in exchanges if reachable and reachable.get(ex))
    if not answered:
        return SourceChoice(
            "sim",
            tuple(exchanges),
            f"source: no exchange answered ({', '.join(exchanges)}): running against the simulator "
            "instead (SOURCE=live forces the real ones)",
        )
    silent = [ex for ex in exchanges if ex not in answered]
    note = f"; not answering, left out: {', '.join(silent)}" if silent else ""
    return SourceChoice("live", answered, f"source: the real exchanges {', '.join(answered)}{note}")


def _answers(url: str, timeout_s: float) -> bool:
    """Any HTTP answer counts (even an error status: the host is there); no answer does not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            response.read(1024)
        return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def probe(rest_urls: Mapping[str, str], *, timeout_s: float = 3.0) -> dict[str, bool]:
    """Ask every exchange at once; returns within about ``timeout_s`` seconds."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(rest_urls))) as pool:
        futures = {
            ex: pool.submit(_answers, base.rstrip("/") + PING_PATHS.get(ex, "/"), timeout_s)
            for ex, base in rest_urls.items()
        }
        return {ex: f.result() for ex, f in futures.items()}
