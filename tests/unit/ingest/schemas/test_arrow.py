"""Columnar validation (``CsvSchema.validate_table``) against the pandas path (``validate``).

For the checks compiled to Arrow kernels, the same rows must pass, and every rejected row
must carry the same reason and failure cases as pandera gives, so the DLQ does not change.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from pandera.pandas import Check, Column, DataFrameSchema

from ingest.schemas import CsvSchema, SchemaRegistry


def text_table(header: list[str], rows: list[tuple[str | None, ...]]) -> pa.Table:
    columns = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in header]
    return pa.table({n: pa.array(c, pa.string()) for n, c in zip(header, columns, strict=True)})


def plain(table: pa.Table) -> list[dict[str, object]]:
    """Rows as Python values: large and plain strings alike."""
    return table.to_pylist()


def assert_same(schema: CsvSchema, table: pa.Table, mapping: dict[str, str] | None = None) -> None:
    expected = schema.validate(table, mapping)
    got = schema.validate_table(table, mapping)
    assert [(r.position, r.reason, r.failure_cases) for r in got.rejects] == [
        (r.position, r.reason, r.failure_cases) for r in expected.rejects
    ]
    assert got.positions.tolist() == expected.valid_positions.tolist()
    assert got.header_error == expected.header_error
    want = pa.Table.from_pandas(expected.valid, preserve_index=False)
    assert got.valid.column_names == want.column_names
    assert plain(got.valid) == plain(want)
    for name in want.column_names:
        kind = want.schema.field(name).type
        if not pa.types.is_large_string(kind):
            assert got.valid.schema.field(name).type == kind, name


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load()


EVENTS = [
    "id",
    "observed_at",
    "category",
    "title",
    "notes",
    "email",
    "score",
    "latitude",
    "longitude",
]
GOOD_EVENT = ("e-1", "2026-01-01T00:00:00Z", "person", "t", "n", "a@b.org", "1.5", "10", "20")


def event(**changes: str | None) -> tuple[str | None, ...]:
    row = dict(zip(EVENTS, GOOD_EVENT, strict=True))
    row.update(changes)
    return tuple(row[name] for name in EVENTS)


def test_events_wide_every_check(registry: SchemaRegistry) -> None:
    schema = registry.get("events_wide")
    assert schema._arrow_checks is not None  # compiled: this test covers the Arrow path
    rows = [
        event(),
        event(id="bad id!"),
        event(category="spaceship"),
        event(title="x" * 501),
        event(email="not-an-email", score="101"),
        event(score="abc"),
        event(score="abc", category="spaceship"),  # unconvertible: only the dtype reason
        event(latitude="-91", longitude="181"),
        event(category=None),
        event(id=None, email=None, title=None, score=None),
        event(observed_at="yesterday"),
        event(email="a@b.org\n"),
        event(id="é" * 64),
        event(score="0", latitude="-90", longitude="180"),
        event(score="nan"),
    ]
    assert_same(schema, text_table(EVENTS, rows))


def test_entities_and_contacts(registry: SchemaRegistry) -> None:
    entities = registry.get("entities")
    header = ["id", "timestamp", "name", "category", "score", "extra"]
    rows = [
        ("e1", "2024-05-01T12:00:00Z", "Ada", "person", "0.5", "x"),
        ("e2", "2024-05-01T12:00:00Z", None, "robot", "1.5", None),
        ("e3", "2024-05-01T12:00:00+02:00", "", "other", "", ""),
    ]
    assert_same(entities, text_table(header, rows))
    contacts = registry.get("contacts")
    assert_same(
        contacts,
        text_table(["email", "name"], [("a@b.org", "A"), ("nope", None), (None, "C"), ("", "")]),
    )


def test_mapping_missing_columns_and_empty_tables(registry: SchemaRegistry) -> None:
    entities = registry.get("entities")
    rows = [("e1", "2024-05-01T12:00:00Z", "person")]
    mapped = text_table(["EntityId", "SeenAt", "category"], rows)
    assert_same(entities, mapped, {"EntityId": "id", "SeenAt": "timestamp"})
    assert_same(entities, text_table(["id"], [("e1",)]))  # header refused: every row
    assert_same(entities, text_table(["id", "timestamp", "category"], []))


@pytest.mark.parametrize(
    "check",
    [
        Check.greater_than(1),
        Check.greater_than_or_equal_to(1),
        Check.less_than(3),
        Check.less_than_or_equal_to(3),
        Check.equal_to(2),
        Check.not_equal_to(2),
        Check.in_range(1, 3, include_min=False, include_max=False),
        Check.isin([1, 2]),
        Check.notin([2]),
    ],
)
def test_numeric_checks(check: Check) -> None:
    schema = CsvSchema.from_pandera(
        "t", DataFrameSchema({"n": Column("Int64", check, nullable=True)})
    )
    assert schema._arrow_checks is not None
    rows = [("1",), ("2",), ("3",), (None,), ("x",), ("+4",)]
    assert_same(schema, text_table(["n"], rows))


@pytest.mark.parametrize(
    "check",
    [
        Check.str_length(2, 3),
        Check.str_length(min_value=2),
        Check.str_length(exact_value=2),
        Check.isin(["ab", "abc"]),
        Check.notin(["ab"]),
        Check.isin(["ab"], ignore_na=False),
    ],
)
def test_text_checks(check: Check) -> None:
    schema = CsvSchema.from_pandera("t", DataFrameSchema({"s": Column(str, check, nullable=True)}))
    assert schema._arrow_checks is not None
    rows = [("a",), ("ab",), ("abc",), ("abcd",), (None,), ("",)]
    assert_same(schema, text_table(["s"], rows))


@pytest.mark.parametrize(
    "check",
    [
        Check.str_length(2, 3),
        Check.str_length(min_value=2),
        Check.str_length(max_value=3),
        Check.str_length(exact_value=2),
        Check.str_length(1, 8),
        Check.str_length(5, 6),
    ],
)
@pytest.mark.parametrize(
    "values",
    [
        ["é", "éé", "ééé", "😀😀", "a😀", "abcd", None, "", "日本語", "x" * 9],
        ["ab", "abc", "abcdefgh", None],  # ASCII: the byte lengths decide without counting
    ],
    ids=["multibyte", "ascii"],
)
def test_text_lengths_are_characters_not_bytes(check: Check, values: list[str | None]) -> None:
    schema = CsvSchema.from_pandera("t", DataFrameSchema({"s": Column(str, check, nullable=True)}))
    assert schema._arrow_checks is not None
    assert_same(schema, text_table(["s"], [(v,) for v in values]))


def test_not_nullable_text_and_uncompiled_checks() -> None:
    strict = CsvSchema.from_pandera("t", DataFrameSchema({"s": Column(str)}))
    assert_same(strict, text_table(["s"], [("a",), (None,), ("",)]))
    custom = CsvSchema.from_pandera(
        "t", DataFrameSchema({"s": Column(str, Check(lambda s: s.str.len() < 3))})
    )
    assert custom._arrow_checks is None  # pandera runs it: same results through validate()
    assert_same(custom, text_table(["s"], [("a",), ("abcd",)]))
    unique = CsvSchema.from_pandera("t", DataFrameSchema({"s": Column(str, unique=True)}))
    assert unique._arrow_checks is None
    assert_same(unique, text_table(["s"], [("a",), ("a",)]))
