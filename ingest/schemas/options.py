"""The IntelGraph options a CSV schema carries in its pandera ``metadata["ingest"]`` mapping,
parsed and checked once when the schema is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["DEFAULT_UNKNOWN_COLUMNS", "IngestOptions", "SchemaLoadError", "UnknownColumns"]

OPTION_KEYS = ("version", "unknownColumns", "observedAtColumn", "keyFields", "datetimeFormats")


class SchemaLoadError(ValueError):
    """A schema that cannot be used; the message starts with the file or object it came from."""


class UnknownColumns(StrEnum):
    """What happens to CSV columns the schema does not declare."""

    STRICT = "strict"  # the header is refused: every row of the table is rejected
    FILTER = "filter"  # the columns are dropped before validation
    PASSTHROUGH = "passthrough"  # the columns are kept, as text, after the declared ones


# Filter, not strict: a producer adding a column must not stop an import, and unlike
# pass-through it never lets undeclared, unvalidated data into the store.
DEFAULT_UNKNOWN_COLUMNS = UnknownColumns.FILTER


@dataclass(frozen=True)
class IngestOptions:
    """``metadata["ingest"]`` of a schema, with defaults filled in."""

    version: str = "1"
    unknown_columns: UnknownColumns = DEFAULT_UNKNOWN_COLUMNS
    observed_at_column: str | None = None
    key_fields: list[str] | None = None
    datetime_formats: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_metadata(
        cls, metadata: Mapping[str, Any] | None, pandera_strict: Any, source: str
    ) -> IngestOptions:
        """Parse ``metadata["ingest"]``; lacking ``unknownColumns``, pandera ``strict`` decides."""
        raw = (metadata or {}).get("ingest") or {}
        if not isinstance(raw, Mapping):
            raise SchemaLoadError(f"{source}: metadata.ingest must be a mapping")
        unexpected = sorted(set(raw) - set(OPTION_KEYS))
        if unexpected:
            raise SchemaLoadError(
                f"{source}: unknown metadata.ingest keys: {', '.join(unexpected)}"
                f" (known: {', '.join(OPTION_KEYS)})"
            )
        return cls(
            version=str(raw.get("version", "1")),
            unknown_columns=_policy(raw.get("unknownColumns"), pandera_strict, source),
            observed_at_column=_optional_name(
                raw.get("observedAtColumn"), "observedAtColumn", source
            ),
            key_fields=_names(raw.get("keyFields"), "keyFields", source),
            datetime_formats=_formats(raw.get("datetimeFormats"), source),
        )

    def check_columns(self, declared: list[str], source: str) -> None:
        """Refuse options that name columns the schema does not declare."""
        named = [self.observed_at_column, *(self.key_fields or []), *self.datetime_formats]
        undeclared = [name for name in named if name is not None and name not in declared]
        if undeclared:
            raise SchemaLoadError(
                f"{source}: metadata.ingest names undeclared columns: {', '.join(undeclared)}"
            )


def _policy(value: Any, pandera_strict: Any, source: str) -> UnknownColumns:
    if value is None:
        if pandera_strict is True:
            return UnknownColumns.STRICT
        return DEFAULT_UNKNOWN_COLUMNS
    text = str(value).lower().replace("-", "").replace("_", "")
    try:
        return UnknownColumns(text)
    except ValueError:
        allowed = ", ".join(policy.value for policy in UnknownColumns)
        raise SchemaLoadError(
            f"{source}: metadata.ingest.unknownColumns is {value!r}, expected one of {allowed}"
        ) from None


def _optional_name(value: Any, key: str, source: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise SchemaLoadError(f"{source}: metadata.ingest.{key} must be a column name")


def _names(value: Any, key: str, source: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise SchemaLoadError(
            f"{source}: metadata.ingest.{key} must be a non-empty list of column names"
        )
    return list(value)


def _formats(value: Any, source: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise SchemaLoadError(
            f"{source}: metadata.ingest.datetimeFormats must map column names to strptime formats"
        )
    return dict(value)
