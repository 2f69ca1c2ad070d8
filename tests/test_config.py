from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from lake.config import ConfigError, load_section, read_yaml


@dataclass(frozen=True)
class Example:
    root: str = "lake-data"
    batch_size: int = 100
    enabled: bool = True
    mode: Literal["landing", "kafka"] = "landing"
    exchanges: tuple[str, ...] = ("binance",)
    endpoint: str | None = None


def test_defaults_then_yaml_then_env_then_overrides_in_that_order() -> None:
    config = {"ex": {"batch_size": 50, "root": "from-yaml"}}
    env = {"CRYPTOLAKE_EX_BATCH_SIZE": "7", "CRYPTOLAKE_EX_EXCHANGES": "binance, kucoin"}
    settings = load_section(
        Example, "ex", config=config, environ=env, overrides={"enabled": "no", "mode": None}
    )
    assert settings == Example(root="from-yaml", batch_size=7, enabled=False, exchanges=("binance", "kucoin"))


def test_unknown_key_names_the_key_and_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"ex\.batchsize.*valid keys of 'ex' are: batch_size"):
        load_section(Example, "ex", config={"ex": {"batchsize": 5}}, environ={})


def test_bad_values_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"ex\.batch_size='many' must be a number"):
        load_section(Example, "ex", config={"ex": {"batch_size": "many"}}, environ={})
    with pytest.raises(ConfigError, match=r"ex\.mode='s3' is not one of"):
        load_section(Example, "ex", config={}, environ={"CRYPTOLAKE_EX_MODE": "s3"})


def test_missing_file_says_to_copy_the_example(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"copy config\.example\.yaml"):
        read_yaml(tmp_path / "nope.yaml")


def test_example_config_loads_every_section_without_unknown_keys() -> None:
    from lake.session import SparkSettings
    from lake.tables import LakeSettings

    config = read_yaml(Path(__file__).parent.parent / "config.example.yaml")
    assert load_section(LakeSettings, "lake", config=config, environ={}).root == "lake-data"
    assert load_section(SparkSettings, "spark", config=config, environ={}).shuffle_partitions == 4
    from spark_jobs.runtime import BronzeSettings, SilverSettings

    assert load_section(BronzeSettings, "bronze", config=config, environ={}) == BronzeSettings()
    assert load_section(SilverSettings, "silver", config=config, environ={}) == SilverSettings()
