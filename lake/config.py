"""Settings loading shared by every component: an optional YAML file plus the environment.

Each component declares one frozen dataclass of settings and reads one top-level section of the
YAML file (``lake:``, ``spark:``, ``extractors:`` ...). Every key can also come from the environment
as ``CRYPTOLAKE_<SECTION>_<KEY>`` (upper case), which wins over the file. Unknown keys are an error
that names the key and lists the valid ones, so a typo never silently falls back to a default.

Secrets (S3 keys, the Kafka SASL JAAS config) are fields typed :class:`Secret`. They are read only
from the environment (or passed in code): a secret key in the YAML file is a :class:`ConfigError`
that names the key and the environment variable to use, and so is a secret-looking key (password,
secret, token, JAAS config, access key...) inside a mapping setting such as ``spark.extra``. A
:class:`Secret` prints as ``***`` in every ``repr``, ``str``, log line and error message; only
:meth:`Secret.reveal` gives the value, at the one place that hands it to a client.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

ENV_PREFIX = "CRYPTOLAKE_"


class ConfigError(ValueError):
    """A setting is missing, unknown or malformed; the message says which key and how to fix it."""


class Secret:
    """A credential whose value never appears in a ``repr``, ``str``, f-string or log line.

    Compare and hash by value; :meth:`reveal` returns the plain string for the client that needs it
    (boto3, the Spark S3A configuration, the Kafka source).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret holds a str")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:  # pickling (Spark ships closures) keeps the value
        return (Secret, (self._value,))


def reveal(secret: Secret | None) -> str | None:
    """The plain value of an optional secret (``None`` and empty stay ``None``)."""
    return secret.reveal() or None if secret is not None else None


#: Keys inside a mapping setting (``spark.extra``, ``bronze.kafka_options``, ``sql.spark_conf``)
#: that hold credentials: never accepted from the config file.
_SECRET_KEY = re.compile(
    r"password|passwd|secret|token|jaas|credential|access[._-]?key|private[._-]?key", re.I
)


def env_var(section: str, name: str) -> str:
    """The environment variable of a setting: ``CRYPTOLAKE_<SECTION>_<KEY>``."""
    return f"{ENV_PREFIX}{section.upper()}_{name.upper()}"


def is_secret_hint(hint: Any) -> bool:
    """``Secret`` or ``Secret | None``."""
    return hint is Secret or Secret in typing.get_args(hint)


def secret_fields(cls: type[Any]) -> tuple[str, ...]:
    """Names of the fields of a settings dataclass that hold secrets."""
    hints = typing.get_type_hints(cls)
    return tuple(f.name for f in dataclasses.fields(cls) if is_secret_hint(hints[f.name]))


def _reject_secrets_in_file(cls: type[Any], section: str, raw: Mapping[str, Any]) -> None:
    """A secret in the config file is an error naming the key (never its value)."""
    secrets = secret_fields(cls)
    for name in sorted(raw):
        if name in secrets:
            raise ConfigError(
                f"{section}.{name} is a secret and is not accepted in the config file: remove it and set "
                f"the environment variable {env_var(section, name)} instead"
            )
        value = raw[name]
        if isinstance(value, Mapping):
            for key in sorted(map(str, value)):
                if _SECRET_KEY.search(key):
                    where = (
                        f"the environment variable(s) {', '.join(env_var(section, s) for s in secrets)}"
                        if secrets
                        else "the environment (e.g. the standard variables of the client library)"
                    )
                    raise ConfigError(
                        f"{section}.{name}.{key} looks like a secret and is not accepted in the config "
                        f"file: remove it; secrets come only from {where}"
                    )


def read_yaml(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Read the YAML config file; ``None`` means no file (defaults and environment only)."""
    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {file} does not exist: copy config.example.yaml and edit it")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        # Only the problem and its position: PyYAML's own message quotes the offending line, which
        # may hold a credential.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"config file {file} is not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {file} must hold a mapping of sections, got {type(data).__name__}")
    return data


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Turn a YAML or environment value into the declared type of the field."""
    if is_secret_hint(hint):
        if value is None or isinstance(value, Secret):
            return value
        if not isinstance(value, str):
            raise ConfigError(f"setting {key} must be a string")  # never echo a secret
        return Secret(value)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(value, non_none[0], key)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"setting {key}={value!r} is not one of {list(args)}")
        return value
    if origin in (tuple, list):
        items = [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ConfigError(f"setting {key} must be a list (YAML list or comma-separated), got {value!r}")
        inner = args[0] if args else str
        return tuple(_coerce(v, inner, key) for v in items)
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"setting {key} must be a mapping, got {value!r}")
        return {str(k): str(v) for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"setting {key}={value!r} must be true or false")
    if hint in (int, float):
        try:
            return hint(value)
        except (TypeError, ValueError):
            raise ConfigError(f"setting {key}={value!r} must be a number ({hint.__name__})") from None
    if hint is str:
        return str(value)
    return value


def load_section(
    cls: type[T],
    section: str,
    *,
    config: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Build the settings dataclass ``cls`` from ``config[section]``, the environment and overrides.

    Precedence, lowest first: dataclass defaults, YAML section, ``CRYPTOLAKE_<SECTION>_<KEY>``
    environment variables, then ``overrides`` (command-line flags; ``None`` values are ignored).
    :class:`Secret` fields come only from the environment or ``overrides``: in the YAML section they
    are a :class:`ConfigError`. A validation error of the dataclass itself (``__post_init__``)
    becomes a :class:`ConfigError` too.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    environ = os.environ if environ is None else environ
    raw = dict((config or {}).get(section) or {})
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(f'{section}.{k}' for k in unknown)} in config; "
            f"valid keys of '{section}' are: {', '.join(sorted(fields))}"
        )
    _reject_secrets_in_file(cls, section, raw)
    prefix = f"{ENV_PREFIX}{section.upper()}_"
    for name in fields:
        env_value = environ.get(prefix + name.upper())
        if env_value is not None:
            raw[name] = env_value
    for name, value in (overrides or {}).items():
        if name not in fields:
            raise ConfigError(f"unknown setting {section}.{name}")
        if value is not None:
            raw[name] = value
    values = {name: _coerce(value, hints[name], f"{section}.{name}") for name, value in raw.items()}
    try:
        return cls(**values)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    except TypeError as exc:
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.init
            and f.name not in values
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        raise ConfigError(
            f"missing setting(s) {', '.join(f'{section}.{m}' for m in missing)}: set them in the "
            f"'{section}' section of the config file or as {prefix}<KEY>"
        ) from exc
