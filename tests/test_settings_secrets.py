"""Secrets come only from the environment and never show in a repr, a log line or an error message.

No Spark session and no services: the settings classes, the loader and the CLIs' config-error paths.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from extractors.sinks.landing import LandingSettings
from lake.config import ConfigError, Secret, env_var, load_section, read_yaml, secret_fields
from lake.serve.settings import StoreSettings
from lake.session import SparkSettings, spark_conf
from spark_jobs.runtime import BronzeSettings

TEST_SECRET = "s3cr3t-Zq8vX2-do-not-print"

#: Every settings class holding a secret, with its section.
SECRET_HOLDERS: list[tuple[str, type[Any]]] = [
    ("spark", SparkSettings),
    ("landing", LandingSettings),
    ("bronze", BronzeSettings),
    ("stores", StoreSettings),
]


def secret_cases() -> list[tuple[str, type[Any], str]]:
    return [(section, cls, name) for section, cls in SECRET_HOLDERS for name in secret_fields(cls)]


def with_secrets(section: str, cls: type[Any], **config: Any) -> Any:
    """The settings with every secret field set from the environment to ``TEST_SECRET``."""
    environ = {env_var(section, name): TEST_SECRET for name in secret_fields(cls)}
    return load_section(cls, section, config={section: config}, environ=environ)


def test_every_s3_key_and_the_kafka_jaas_config_is_a_secret_field() -> None:
    assert {(s, n) for s, _, n in secret_cases()} == {
        ("spark", "s3_access_key"),
        ("spark", "s3_secret_key"),
        ("landing", "s3_access_key"),
        ("landing", "s3_secret_key"),
        ("bronze", "kafka_sasl_jaas_config"),
        ("stores", "postgres_password"),
        ("stores", "redis_password"),
    }


@pytest.mark.parametrize(("section", "cls", "name"), secret_cases())
def test_a_secret_in_the_yaml_file_is_a_config_error_naming_the_key_and_its_variable(
    section: str, cls: type[Any], name: str
) -> None:
    with pytest.raises(ConfigError) as failure:
        load_section(cls, section, config={section: {name: TEST_SECRET}}, environ={})
    message = str(failure.value)
    assert f"{section}.{name}" in message
    assert env_var(section, name) in message
    assert "environment" in message
    assert TEST_SECRET not in message


@pytest.mark.parametrize(
    ("section", "cls", "field", "key"),
    [
        ("spark", SparkSettings, "extra", "spark.hadoop.fs.s3a.secret.key"),
        ("spark", SparkSettings, "extra", "spark.hadoop.fs.s3a.access.key"),
        ("bronze", BronzeSettings, "kafka_options", "kafka.sasl.jaas.config"),
        ("bronze", BronzeSettings, "kafka_options", "kafka.ssl.keystore.password"),
    ],
)
def test_a_secret_looking_key_inside_a_mapping_setting_is_refused_from_the_file(
    section: str, cls: type[Any], field: str, key: str
) -> None:
    with pytest.raises(ConfigError) as failure:
        load_section(cls, section, config={section: {field: {key: TEST_SECRET}}}, environ={})
    message = str(failure.value)
    assert f"{section}.{field}.{key}" in message
    assert TEST_SECRET not in message


def test_sql_spark_conf_refuses_a_metastore_password() -> None:
    from lake.sql import SqlSettings

    key = "spark.hadoop.javax.jdo.option.ConnectionPassword"
    with pytest.raises(ConfigError, match=r"sql\.spark_conf\.spark\.hadoop\.javax") as failure:
        load_section(SqlSettings, "sql", config={"sql": {"spark_conf": {key: TEST_SECRET}}}, environ={})
    assert TEST_SECRET not in str(failure.value)


def test_plain_mapping_settings_still_load_from_the_file() -> None:
    settings = load_section(
        BronzeSettings,
        "bronze",
        config={"bronze": {"kafka_options": {"kafka.security.protocol": "SASL_SSL"}}},
        environ={},
    )
    assert settings.kafka_options == {"kafka.security.protocol": "SASL_SSL"}


@pytest.mark.parametrize(("section", "cls", "name"), secret_cases())
def test_a_secret_from_the_environment_is_loaded_and_revealed_only_on_request(
    section: str, cls: type[Any], name: str
) -> None:
    settings = with_secrets(section, cls)
    value = getattr(settings, name)
    assert isinstance(value, Secret)
    assert value.reveal() == TEST_SECRET


@pytest.mark.parametrize(("section", "cls"), SECRET_HOLDERS)
def test_repr_str_and_format_of_settings_holding_secrets_do_not_contain_them(
    section: str, cls: type[Any]
) -> None:
    settings = with_secrets(section, cls)
    percent = "%s %r" % (settings, settings)  # noqa: UP031  (how logging formats its arguments)
    for text in (repr(settings), str(settings), f"{settings}", f"{settings!r}", percent):
        assert TEST_SECRET not in text
    for name in secret_fields(cls):
        assert f"{name}=Secret('***')" in repr(settings)


def test_a_secret_itself_prints_redacted_everywhere() -> None:
    secret = Secret(TEST_SECRET)
    percent = "%s" % secret  # noqa: UP031  (how logging formats its arguments)
    for text in (repr(secret), str(secret), f"{secret}", f"{secret:>40}", percent, str([secret])):
        assert TEST_SECRET not in text
    assert secret == Secret(TEST_SECRET) and secret != Secret("other") and secret != TEST_SECRET


def test_log_lines_and_exceptions_that_format_settings_do_not_contain_secrets() -> None:
    from extractors.__main__ import JsonFormatter

    landing = with_secrets("landing", LandingSettings, root="s3://bucket/prefix")
    spark = with_secrets("spark", SparkSettings)
    bronze = with_secrets("bronze", BronzeSettings, source="kafka")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    log = logging.getLogger("tests.secrets")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        for formatter in (JsonFormatter(), logging.Formatter("%(levelname)s %(name)s %(message)s")):
            handler.setFormatter(formatter)
            log.info("starting with %s, %r and %s", landing, spark, bronze, extra={"exchange": landing})
            try:
                raise RuntimeError(f"sink failed with settings {landing} / {spark!r} / {bronze}")
            except RuntimeError:
                log.exception("failure")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert "Secret('***')" in text
    assert TEST_SECRET not in text


def test_a_settings_validation_error_is_a_config_error_without_the_secrets() -> None:
    environ = {env_var("landing", n): TEST_SECRET for n in secret_fields(LandingSettings)}
    with pytest.raises(ConfigError, match="roll_bytes") as failure:
        load_section(LandingSettings, "landing", config={"landing": {"roll_bytes": 0}}, environ=environ)
    assert TEST_SECRET not in str(failure.value)
    assert TEST_SECRET not in repr(failure.value)


def test_invalid_yaml_error_does_not_quote_the_line_holding_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f'landing:\n  s3_secret_key: "{TEST_SECRET}\n  root: [x\n')
    with pytest.raises(ConfigError, match="not valid YAML at line") as failure:
        read_yaml(path)
    assert TEST_SECRET not in str(failure.value)


def test_extractor_cli_refuses_a_secret_in_the_file_naming_key_and_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from extractors.__main__ import main

    path = tmp_path / "config.yaml"
    landing = {"root": str(tmp_path / "landing"), "s3_secret_key": TEST_SECRET}
    path.write_text(yaml.safe_dump({"landing": landing}))
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "landing.s3_secret_key" in err and "CRYPTOLAKE_LANDING_S3_SECRET_KEY" in err
    assert TEST_SECRET not in err


def test_spark_job_flags_never_take_secrets_and_the_environment_provides_them() -> None:
    from spark_jobs.runtime import build_parser, resolve

    parser = build_parser(prog="t", description="", section="bronze", settings_cls=BronzeSettings)
    assert "--kafka-sasl-jaas-config" not in parser.format_help()
    ctx = resolve(
        parser.parse_args([]),
        section="bronze",
        settings_cls=BronzeSettings,
        environ={"CRYPTOLAKE_BRONZE_KAFKA_SASL_JAAS_CONFIG": TEST_SECRET},
    )
    assert ctx.settings.kafka_sasl_jaas_config == Secret(TEST_SECRET)
    assert TEST_SECRET not in repr(ctx)


def test_spark_s3a_conf_gets_the_revealed_keys() -> None:
    settings = with_secrets("spark", SparkSettings, jars_dir="")
    conf = spark_conf(settings)
    assert conf["spark.hadoop.fs.s3a.secret.key"] == TEST_SECRET
    assert conf["spark.hadoop.fs.s3a.access.key"] == TEST_SECRET
