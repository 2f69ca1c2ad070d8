"""Write rows into a lake table without a JVM: delta-rs at the table's path, the registry's schema
(names, types, nullability, partitions). For tests whose subject reads tables, not writes them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from deltalake import write_deltalake
from pyspark.sql import types as T

from lake.tables import Lake, TableSpec


def arrow_type(dtype: T.DataType) -> pa.DataType:
    if isinstance(dtype, T.StructType):
        return pa.struct([pa.field(f.name, arrow_type(f.dataType), f.nullable) for f in dtype.fields])
    if isinstance(dtype, T.ArrayType):
        return pa.list_(arrow_type(dtype.elementType))
    if isinstance(dtype, T.DecimalType):
        return pa.decimal128(dtype.precision, dtype.scale)
    simple = {
        T.StringType: pa.string(),
        T.LongType: pa.int64(),
        T.IntegerType: pa.int32(),
        T.BooleanType: pa.bool_(),
        T.DateType: pa.date32(),
        T.TimestampType: pa.timestamp("us", tz="UTC"),
    }
    return simple[type(dtype)]


def write_rows(lake: Lake, spec: TableSpec, rows: Sequence[dict[str, Any] | Sequence[Any]]) -> None:
    """Append ``rows`` (dicts, or tuples in column order) to ``spec``'s table (created if missing)."""
    schema = pa.schema([pa.field(f.name, arrow_type(f.dataType), f.nullable) for f in spec.schema.fields])
    dicts = [r if isinstance(r, dict) else dict(zip(spec.columns, r, strict=True)) for r in rows]
    write_deltalake(
        lake.path(spec.name),
        pa.Table.from_pylist(dicts, schema),
        mode="append",
        partition_by=list(spec.partition_by) or None,
    )
