"""GX expectations -> Spark column expressions, so one pass over a micro-batch splits it good/bad.

Running Great Expectations itself on every micro-batch costs seconds (a metric graph resolved
with many small Spark jobs, see ``docs/quality.md``). The suites in :mod:`expectations.suites`
stay the single source of truth: this module reads each expectation's own configuration (its
type, column(s), bounds, ``row_condition``, ``ignore_row_if``) and builds, per expectation, two
boolean columns with GX's semantics:

* ``applies``: the row is judged by the expectation (GX leaves out rows the ``row_condition``
  filters out, rows whose column is NULL for value expectations, and rows ``ignore_row_if`` skips);
* ``fails``: it is judged and unexpected.

Only the expectation types the suites use are translated; any other type is an error at suite
compile time, never a silent pass. ``tests/expectations`` checks the counts against real GX
validation results of the same suites on the same frames.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from great_expectations.expectations.expectation import Expectation
from great_expectations.expectations.row_conditions import (
    AndCondition,
    ComparisonCondition,
    Condition,
    NullityCondition,
    Operator,
    OrCondition,
    PassThroughCondition,
)
from pyspark.sql import Column, Window
from pyspark.sql import functions as F

from expectations.suites import expectation_name


@dataclass(frozen=True)
class Check:
    """One expectation as Spark columns (see the module doc)."""

    name: str
    expectation_type: str
    severity: str
    applies: Column
    fails: Column
    mostly: float | None = None


def _param(value: Any, params: Mapping[str, Any]) -> Any:
    if isinstance(value, dict) and "$PARAMETER" in value:
        key = value["$PARAMETER"]
        if key not in params:
            raise KeyError(f"suite parameter {key!r} not given")
        return params[key]
    return value


def condition_column(condition: Condition | str | None) -> Column:
    """A GX row condition as a Spark column (``True`` when there is none)."""
    if condition is None or condition == "":
        return F.lit(True)
    if isinstance(condition, str):
        return F.expr(condition)
    if isinstance(condition, PassThroughCondition):
        return F.expr(condition.pass_through_filter)
    if isinstance(condition, NullityCondition):
        col = F.col(condition.column.name)
        return col.isNull() if condition.is_null else col.isNotNull()
    if isinstance(condition, ComparisonCondition):
        col = F.col(condition.column.name)
        p = condition.parameter
        ops = {
            Operator.EQUAL: lambda: col == p,
            Operator.NOT_EQUAL: lambda: col != p,
            Operator.LESS_THAN: lambda: col < p,
            Operator.LESS_THAN_OR_EQUAL: lambda: col <= p,
            Operator.GREATER_THAN: lambda: col > p,
            Operator.GREATER_THAN_OR_EQUAL: lambda: col >= p,
            Operator.IN: lambda: col.isin(*p),
            Operator.NOT_IN: lambda: ~col.isin(*p),
        }
        return ops[condition.operator]()
    if isinstance(condition, AndCondition | OrCondition):
        parts = [condition_column(c) for c in condition.conditions]
        out = parts[0]
        for p in parts[1:]:
            out = (out & p) if isinstance(condition, AndCondition) else (out | p)
        return out
    raise TypeError(f"row condition {condition!r} is not supported")


def _bounds(col: Column, lo: Any, hi: Any, *, strict_min: bool, strict_max: bool) -> Column:
    ok = F.lit(True)
    if lo is not None:
        ok = ok & ((col > F.lit(lo)) if strict_min else (col >= F.lit(lo)))
    if hi is not None:
        ok = ok & ((col < F.lit(hi)) if strict_max else (col <= F.lit(hi)))
    return ok


def _missing(cols: list[Column], how: str) -> Column:
    nulls = [c.isNull() for c in cols]
    if how in ("any_value_is_missing", "either_value_is_missing"):
        out = nulls[0]
        for n in nulls[1:]:
            out = out | n
        return out
    if how in ("all_values_are_missing", "both_values_are_missing"):
        out = nulls[0]
        for n in nulls[1:]:
            out = out & n
        return out
    if how == "never":
        return F.lit(False)
    raise ValueError(f"ignore_row_if={how!r} is not supported")


def compile_expectation(expectation: Expectation, params: Mapping[str, Any]) -> Check:
    """One expectation as a :class:`Check`; raises ``NotImplementedError`` for types not translated."""
    e: Any = expectation  # the concrete expectation class's fields (column, min_value, ...)
    kind = e.expectation_type
    where = condition_column(getattr(e, "row_condition", None))
    fails: Column
    if kind == "expect_column_values_to_not_be_null":
        applies = where
        fails = F.col(e.column).isNull()
    elif kind in (
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_not_be_in_set",
        "expect_column_values_to_match_regex",
        "expect_column_value_lengths_to_be_between",
    ):
        col = F.col(e.column)
        applies = where & col.isNotNull()
        if kind == "expect_column_values_to_be_between":
            ok = _bounds(
                col,
                _param(e.min_value, params),
                _param(e.max_value, params),
                strict_min=bool(e.strict_min),
                strict_max=bool(e.strict_max),
            )
        elif kind == "expect_column_values_to_be_in_set":
            ok = col.isin(*_param(e.value_set, params))
        elif kind == "expect_column_values_to_not_be_in_set":
            ok = ~col.isin(*_param(e.value_set, params))
        elif kind == "expect_column_values_to_match_regex":
            ok = col.rlike(_param(e.regex, params))
        else:
            ok = _bounds(
                F.length(col),
                _param(e.min_value, params),
                _param(e.max_value, params),
                strict_min=False,
                strict_max=False,
            )
        fails = ~ok
    elif kind == "expect_column_pair_values_a_to_be_greater_than_b":
        a, b = F.col(e.column_A), F.col(e.column_B)
        applies = where & ~_missing([a, b], e.ignore_row_if)
        fails = ~((a >= b) if e.or_equal else (a > b))
    elif kind == "expect_compound_columns_to_be_unique":
        cols = [F.col(c) for c in e.column_list]
        applies = where & ~_missing(cols, e.ignore_row_if)
        # Every row of a repeated key is unexpected (GX counts them all, not only the extras).
        # The window counts the rows that apply only: ignored rows never make a key repeated.
        counted = F.count(F.when(applies, F.lit(1))).over(Window.partitionBy(*e.column_list))
        fails = counted > 1
    else:
        raise NotImplementedError(f"{kind} has no Spark translation (expectations/predicates.py)")
    applies = F.coalesce(applies, F.lit(False))
    return Check(
        name=expectation_name(e),
        expectation_type=kind,
        severity=str(getattr(e.severity, "value", e.severity)),
        applies=applies,
        fails=applies & F.coalesce(fails, F.lit(True)),
        mostly=getattr(e, "mostly", None),
    )


_SAFE = re.compile(r"[^A-Za-z0-9_]")


def column_alias(index: int, name: str) -> str:
    """The internal column holding one expectation's verdict in a flagged batch."""
    return f"_dq_{index}_{_SAFE.sub('_', name)}"
