"""Settings loading shared by every component: an optional YAML file plus the environment.

Each component declares one frozen dataclass of settings and reads one top-level section of the
YAML file (``lake:``, ``spark:``, ``extractors:`` ...). Every key can also come from the environment
as ``CRYPTOLAKE_<SECTION>_<KEY>`` (upper case), which wins over the file. Unknown keys are an error
that names the key and lists the valid ones, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
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
        raise ConfigError(f"config file {file} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {file} must hold a mapping of sections, got {type(data).__name__}")
    return data


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Turn a YAML or environment value into the declared type of the field."""
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
