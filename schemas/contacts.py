"""The ``contacts`` CSV schema, written in Python to show how a Python schema is discovered."""

from __future__ import annotations

from pandera.pandas import Check, Column, DataFrameSchema

__all__ = ["EMAIL", "SCHEMA"]

EMAIL = r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$"

SCHEMA = DataFrameSchema(
    {
        "email": Column(str, Check.str_matches(EMAIL)),
        "name": Column(str, nullable=True),
        "phone": Column(
            str, Check.str_matches(r"^\+?[0-9 ()./-]{3,32}$"), nullable=True, required=False
        ),
    },
    metadata={"ingest": {"version": "1", "unknownColumns": "filter", "keyFields": ["email"]}},
)
