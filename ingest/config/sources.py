"""Where settings come from: the JSON file named by ``INGEST_CONFIG``, then the environment.

Environment variables are ``INGEST_<KEY>`` for top-level keys (``INGEST_SINK_URI``) and
``INGEST_<SECTION>__<KEY>`` for nested ones (``INGEST_S3CSV__RANGE_SIZE``), plus the
conventional ``PORT``, ``FLOWER_PORT`` and ``SENTRY_DSN``; a value that starts with ``[`` or
``{`` is JSON. An ``INGEST_*`` variable that names no setting is refused like an unknown key
in the file, and every error says where the bad value came from.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

if TYPE_CHECKING:
    from ingest.config import Settings

__all__ = [
    "PLAIN_ENV",
    "ConfigError",
    "build_settings",
    "env_overrides",
    "load_settings",
    "read_config_file",
]

ENV_PREFIX = "INGEST_"
# Conventional variables that are not under the INGEST_ prefix.
PLAIN_ENV = {
    "PORT": ("port",),
    "FLOWER_PORT": ("flowerPort",),
    "SENTRY_DSN": ("observability", "sentryDsn"),
}
# INGEST_* variables that name the file or belong to the test harness, not to the settings.
NOT_SETTINGS = {"INGEST_CONFIG"}
NOT_SETTINGS_PREFIXES = ("INGEST_TEST_", "INGEST_DEMO_", "INGEST_BENCH_")


class ConfigError(ValueError):
    """The configuration is invalid; the message names every offending key."""


def _camel(snake: str) -> str:
    parts = snake.lower().split("_")
    return parts[0] + "".join(p.title() for p in parts[1:])


def _parse_env_value(raw: str) -> Any:
    text = raw.strip()
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return raw
    return raw


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Turn ``INGEST_*`` (and PORT, FLOWER_PORT, SENTRY_DSN) variables into a nested dict."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if name in PLAIN_ENV:
            path: tuple[str, ...] = PLAIN_ENV[name]
        elif (
            name.startswith(ENV_PREFIX)
            and name not in NOT_SETTINGS
            and not name.startswith(NOT_SETTINGS_PREFIXES)
        ):
            path = tuple(_camel(p) for p in name[len(ENV_PREFIX) :].split("__"))
        else:
            continue
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: conflicts with another variable")
        node[path[-1]] = _parse_env_value(raw)
    return tree


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON config file; a missing file or bad JSON is a :class:`ConfigError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object")
    return data


def _describe(error: ValidationError) -> str:
    lines = []
    for err in error.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{key}: {message}")
    return "; ".join(lines)


def build_settings(data: Mapping[str, Any], origin: str = "configuration") -> Settings:
    """Validate a config mapping; errors name each offending key."""
    from ingest.config import Settings  # the package's model; this module is imported first

    try:
        return Settings.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(f"invalid {origin}: {_describe(exc)}") from exc


def load_settings(
    environ: Mapping[str, str] | None = None, config_file: str | Path | None = None
) -> Settings:
    """Build settings from defaults, then the JSON file, then environment variables."""
    env = os.environ if environ is None else environ
    path = config_file or env.get("INGEST_CONFIG") or None
    data: dict[str, Any] = {}
    origin = "configuration (environment)"
    if path:
        data = read_config_file(path)
        origin = f"configuration ({path} and environment)"
    data = _deep_merge(data, env_overrides(env))
    return build_settings(data, origin)
