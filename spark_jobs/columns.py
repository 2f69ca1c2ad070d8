"""Column helpers shared by the transforms: exact decimals, exchange time units, error reasons.

Everything here builds :class:`~pyspark.sql.Column` expressions; nothing reads or writes data.

Decimal arithmetic: Spark types the product of two ``DECIMAL(38,18)`` as ``DECIMAL(38,6)``
(it keeps the integer digits and drops fraction digits), which would ruin the price of a cheap
asset. :func:`mul` narrows the operands to the integer digits the values really need, so the
product keeps 18 fraction digits (rounded half-up, like :meth:`decimal.Decimal.quantize`); a value
too large for its bound becomes ``NULL`` rather than wrong.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import DecimalType, LongType, StringType

from lake.tables import PRICE

#: Integer digits assumed for a price in its quote asset (< 1e12: BTC in Iranian rial fits).
PRICE_INT_DIGITS = 12
#: Integer digits assumed for a rate to USDT (< 1e7 USDT per unit of an asset).
RATE_INT_DIGITS = 7


def to_decimal(col: Column | str) -> Column:
    """An exchange number (a JSON string, or a JSON number read as text) as ``DECIMAL(38,18)``.

    Parsed from the text, never through a double; text that is not a number gives ``NULL``.
    """
    c = F.col(col) if isinstance(col, str) else col
    return F.trim(c.cast(StringType())).cast(PRICE)


def mul(a: Column, b: Column, *, a_int: int = PRICE_INT_DIGITS, b_int: int = RATE_INT_DIGITS) -> Column:
    """``a * b`` as ``DECIMAL(38,18)``, rounded half-up at ``38 - (a_int + b_int + 1)`` digits (max 18).

    ``a_int``/``b_int`` bound the integer digits of the operands; with ``a_int + b_int <= 19`` the
    result keeps all 18 fraction digits.
    """
    left = a.cast(DecimalType(a_int + 18, 18))
    right = b.cast(DecimalType(b_int + 18, 18))
    return (left * right).cast(PRICE)


def inverse(x: Column) -> Column:
    """``1 / x`` as ``DECIMAL(38,18)`` rounded half-up at 18 fraction digits (``NULL`` for 0)."""
    # DECIMAL(2,0) / DECIMAL(38,18) is typed DECIMAL(38,18) by Spark's division rule.
    return (F.lit(1).cast(DecimalType(2, 0)) / x.cast(PRICE)).cast(PRICE)


def floor_div(col: Column, divisor: int) -> Column:
    """``floor(col / divisor)`` of an integral column as a long, in exact integer arithmetic.

    Never through a double: ``recv_ts_ns / 1000`` as a double has 53 bits of mantissa, fewer than
    the 61 bits of a nanosecond epoch, so about one value in eight rounds to the wrong microsecond.
    ``col - pmod(col, divisor)`` is an exact multiple of ``divisor``, so the integer division
    (``div``, which truncates) is a floor division for negative values too.
    """
    c = col.cast(LongType())
    d = F.lit(divisor).cast(LongType())
    return F.call_function("div", c - F.pmod(c, d), d)


def ts_from_ms(col: Column) -> Column:
    """Epoch milliseconds (number or numeric string) as a UTC timestamp (exact)."""
    return F.timestamp_millis(col.cast(StringType()).cast(LongType()))


def ts_from_ns(col: Column) -> Column:
    """Epoch nanoseconds (number or numeric string) as a UTC timestamp, floored to the microsecond.

    Exact: the text becomes a long (nanoseconds fit one until 2262) and is divided as an integer.
    """
    return F.timestamp_micros(floor_div(col.cast(StringType()).cast(LongType()), 1000))


def ts_from_iso(col: Column) -> Column:
    """ISO-8601 text such as ``2026-01-01T00:00:00.412345Z`` as a UTC timestamp."""
    return col.cast(StringType()).cast("timestamp")


def recv_ts() -> Column:
    """The envelope's local receive time (``recv_ts_ns``) as a timestamp, floored to the microsecond.

    Exact integer arithmetic (:func:`floor_div`): ``1700000000123456789`` ns is ``...123456`` µs.
    """
    return F.timestamp_micros(floor_div(F.col("recv_ts_ns"), 1000))


def minute_of(col: Column | str) -> Column:
    c = F.col(col) if isinstance(col, str) else col
    return F.date_trunc("minute", c)


def first_error(*checks: tuple[Column, str]) -> Column:
    """The reason of the first failing check (``condition`` true means bad), else ``NULL``."""
    expr = F.lit(None).cast(StringType())
    for condition, reason in reversed(checks):
        expr = F.when(F.coalesce(condition, F.lit(True)), F.lit(reason)).otherwise(expr)
    return expr
