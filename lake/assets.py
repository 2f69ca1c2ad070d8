"""Renamed asset codes: the one alias table that makes ``BASE-QUOTE`` canonical across exchanges.

Plain data, no Spark: the silver symbol join (:func:`spark_jobs.symbols.canonical_asset`, a Spark
column) and the live server's decoder (:mod:`lake.serve.decode`, plain Python) both read it, so a
symbol is spelled the same in the lake and on the live feed.
"""

from __future__ import annotations

#: Exchange asset codes -> canonical codes. Kraken's legacy X/Z-prefixed REST codes and XBT/XDG.
#: Nobitex codes the rial ``rls``: its markets are ``*-IRT`` priced in rial. Wallex ``TMN`` (toman) is
#: a different unit (1 toman = 10 rial), so it is not merged into IRT.
ASSET_ALIASES: dict[str, str] = {
    "XBT": "BTC",
    "XXBT": "BTC",
    "XDG": "DOGE",
    "XXDG": "DOGE",
    "XETH": "ETH",
    "XXRP": "XRP",
    "XLTC": "LTC",
    "XXLM": "XLM",
    "ZUSD": "USD",
    "ZEUR": "EUR",
    "ZGBP": "GBP",
    "ZJPY": "JPY",
    "ZCAD": "CAD",
    "RLS": "IRT",
}
