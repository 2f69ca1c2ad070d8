from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from lake.config import ConfigError, env_var, load_section, read_yaml, secret_fields


@dataclass(frozen=True, kw_only=True)
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


EXAMPLE = Path(__file__).parent.parent / "config.example.yaml"
REPO = Path(__file__).parent.parent


def settings_sections() -> dict[str, type[Any]]:
    """Every section a component reads with :func:`load_section`, and its settings class."""
    from expectations.suites import DqSettings
    from extractors.settings import ExtractorSettings
    from extractors.sinks.kafka import KafkaSettings
    from extractors.sinks.landing import LandingSettings
    from extractors.sinks.spool import SpoolSettings
    from lake.maintenance import MaintenanceSettings
    from lake.serve.settings import ServeSettings, StoreSettings
    from lake.session import SparkSettings
    from lake.sql import SqlSettings
    from lake.tables import LakeSettings
    from lake.thrift import ThriftSettings
    from spark_jobs.completeness import CompletenessSettings
    from spark_jobs.gold import GoldSettings
    from spark_jobs.runtime import BronzeSettings, SilverSettings

    return {
        "lake": LakeSettings,
        "spark": SparkSettings,
        "extractors": ExtractorSettings,
        "landing": LandingSettings,
        "spool": SpoolSettings,
        "kafka": KafkaSettings,
        "bronze": BronzeSettings,
        "silver": SilverSettings,
        "gold": GoldSettings,
        "completeness": CompletenessSettings,
        "expectations": DqSettings,
        "sql": SqlSettings,
        "thrift": ThriftSettings,
        "maintenance": MaintenanceSettings,
        "serve": ServeSettings,
        "stores": StoreSettings,
    }


def plain_fields(cls: type[Any]) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init} - set(secret_fields(cls))


def test_every_section_the_code_loads_is_known_to_this_test() -> None:
    """A new ``load_section(X, "name")`` or ``resolve(section="name")`` must be added above."""
    pattern = re.compile(r'load_section\(\s*[\w.]+,\s*"(\w+)"|section="(\w+)"')
    used = set()
    for package in ("extractors", "lake", "spark_jobs", "expectations", "infra"):
        for path in (REPO / package).rglob("*.py"):
            used |= {a or b for a, b in pattern.findall(path.read_text())}
    assert used - {"name"} <= set(settings_sections()), "add the section to settings_sections()"


def test_example_config_documents_exactly_the_sections_the_code_reads() -> None:
    config = read_yaml(EXAMPLE)
    assert set(config) == set(settings_sections())


@pytest.mark.parametrize("section", sorted(settings_sections()))
def test_example_config_loads_each_section_and_lists_every_key(section: str) -> None:
    cls = settings_sections()[section]
    config = read_yaml(EXAMPLE)
    text = EXAMPLE.read_text()
    if section == "extractors":
        from extractors.exchanges import CONNECTORS
        from extractors.settings import ExchangeSettings, load_settings

        load_settings(config, environ={})
        keys = set(config[section]) - set(CONNECTORS)
        assert set(CONNECTORS) <= set(config[section]), "every exchange has its sub-mapping"
        assert set(config[section]["binance"]) == plain_fields(ExchangeSettings)
    else:
        load_section(cls, section, config=config, environ={})
        keys = set(config[section])
    assert keys == plain_fields(cls), f"{section}: documented keys differ from the settings fields"
    for name in secret_fields(cls):
        assert env_var(section, name) in text, f"{section}.{name}: document its environment variable"


@pytest.mark.parametrize(
    "section",
    [
        "lake",
        "bronze",
        "silver",
        "gold",
        "completeness",
        "expectations",
        "sql",
        "thrift",
        "maintenance",
        "serve",
        "stores",
        "spool",
        "kafka",
    ],
)
def test_example_config_values_are_the_defaults(section: str) -> None:
    cls = settings_sections()[section]
    assert load_section(cls, section, config=read_yaml(EXAMPLE), environ={}) == cls()
