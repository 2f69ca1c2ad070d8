"""Loading the lake and Spark settings from a config file and the environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lake.config import load_section, read_yaml
from lake.session import SparkSettings
from lake.tables import Lake, LakeSettings


@dataclass(frozen=True, kw_only=True)
class LakeRuntime:
    """What a job needs to reach the lake: where it is and how to build Spark."""

    lake: Lake
    spark: SparkSettings


def load_runtime(
    config_path: str | None = None, *, spark_overrides: dict[str, Any] | None = None
) -> LakeRuntime:
    config = read_yaml(config_path)
    return LakeRuntime(
        lake=Lake(load_section(LakeSettings, "lake", config=config)),
        spark=load_section(SparkSettings, "spark", config=config, overrides=spark_overrides),
    )
