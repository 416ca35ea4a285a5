"""CSV schemas: discovery and loading, and row validation of all-text Arrow tables."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from pandera.pandas import Check, Column, DataFrameSchema

import schemas as bundled_package
from ingest.schemas import (
    CsvSchema,
    SchemaLoadError,
    SchemaRegistry,
    UnknownColumns,
    UnknownSchemaError,
    load_schema_file,
    regex,
)

ENTITIES_HEADER = ["id", "timestamp", "name", "category", "score"]


def entity_rows(*rows: tuple[str | None, ...], header: list[str] | None = None) -> pa.Table:
    """An all-text table, as the CSV reader hands it over."""
    names = header or ENTITIES_HEADER
    columns: list[list[str | None]] = (
        [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in names]
    )
    return pa.table({n: pa.array(c, pa.string()) for n, c in zip(names, columns, strict=True)})


GOOD = ("e1", "2024-05-01T12:00:00Z", "Ada", "person", "0.5")


def schema_of(columns: dict[str, Column], **ingest: object) -> CsvSchema:
    return CsvSchema.from_pandera("test", DataFrameSchema(columns, metadata={"ingest": ingest}))


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load()


@pytest.fixture(scope="module")
def entities(registry: SchemaRegistry) -> CsvSchema:
    return registry.get("entities")


class TestRegistry:
    def test_bundled_yaml_and_python_schemas_are_loaded(self, registry: SchemaRegistry) -> None:
        assert {"entities", "events_wide", "contacts"} <= set(registry.names())
        assert registry.names() == sorted(registry.names())

    def test_entities_options_come_from_metadata(self, entities: CsvSchema) -> None:
        assert (entities.name, entities.version) == ("entities", "1")
        assert entities.unknown_columns is UnknownColumns.FILTER
        assert entities.observed_at_column == "timestamp"
        assert entities.key_fields is None
        assert entities.columns == ENTITIES_HEADER

    def test_python_schema_is_discovered_with_its_options(self, registry: SchemaRegistry) -> None:
        contacts = registry.get("contacts")
        assert contacts.key_fields == ["email"]
        assert "contacts" in bundled_package.python_schemas()

    def test_unknown_schema_error_lists_known_names(self, registry: SchemaRegistry) -> None:
        with pytest.raises(UnknownSchemaError, match=r"'nope'.*contacts, entities, events_wide"):
            registry.get("nope")

    def test_extra_dir_adds_and_overrides(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        schema = DataFrameSchema({"id": Column(str)})
        schema.to_yaml(tmp_path / "entities.yaml")
        schema.to_json(tmp_path / "extra.json")
        with caplog.at_level(logging.WARNING):
            loaded = SchemaRegistry.load(tmp_path)
        assert loaded.get("entities").columns == ["id"]
        assert loaded.get("extra").source.endswith("extra.json")
        assert "overrides" in caplog.text

    def test_json_schema_documents_are_skipped(self, tmp_path: Path) -> None:
        (tmp_path / "event.json").write_text('{"$schema": "x", "type": "object"}')
        assert "event" not in SchemaRegistry.load(tmp_path)

    def test_missing_extra_dir_is_an_error(self, tmp_path: Path) -> None:
        with pytest.raises(SchemaLoadError, match="does not exist"):
            SchemaRegistry.load(tmp_path / "absent")

    @pytest.mark.parametrize(
        "text",
        [
            "columns: [unclosed",
            "- a list",
            "columns:\n  id:\n    dtype: str\n    no_such_check: 1\n",
            "columns:\n  id:\n    dtype: not_a_dtype\n",
            "columns:\n  id: {dtype: str}\nmetadata:\n  ingest: {unknownColumns: sometimes}\n",
            "columns:\n  id: {dtype: str}\nmetadata:\n  ingest: {colour: blue}\n",
            "columns:\n  id: {dtype: str}\nmetadata:\n  ingest: {keyFields: [nope]}\n",
            "columns:\n  n: {dtype: int64, nullable: true}\n",
        ],
    )
    def test_malformed_file_names_the_file(self, tmp_path: Path, text: str) -> None:
        (tmp_path / "broken.yaml").write_text(text, encoding="utf-8")
        with pytest.raises(SchemaLoadError, match=r"broken\.yaml"):
            SchemaRegistry.load(tmp_path)

    def test_same_stem_twice_in_a_directory_is_an_error(self, tmp_path: Path) -> None:
        schema = DataFrameSchema({"id": Column(str)})
        schema.to_yaml(tmp_path / "twice.yaml")
        schema.to_json(tmp_path / "twice.json")
        with pytest.raises(SchemaLoadError, match="twice"):
            SchemaRegistry.load(tmp_path)

    def test_python_schema_defined_twice_is_an_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(bundled_package, "SCHEMAS", {"contacts": DataFrameSchema({})})
        with pytest.raises(SchemaLoadError, match="contacts"):
            SchemaRegistry.load()

    def test_load_schema_file(self, tmp_path: Path) -> None:
        path = tmp_path / "one.yml"
        DataFrameSchema({"id": Column(str)}, strict=True).to_yaml(path)
        assert load_schema_file(path).unknown_columns is UnknownColumns.STRICT


class TestValidate:
    def test_valid_rows_are_typed_and_indexed_by_position(self, entities: CsvSchema) -> None:
        result = entities.validate(entity_rows(GOOD, ("e2", "2024-05-01", "", "event", "")))
        assert result.rejects == [] and result.header_error is None
        assert list(result.valid_positions) == [0, 1]
        valid = result.valid
        assert str(valid["timestamp"].dtype) == "datetime64[ns, UTC]"
        assert valid["score"].dtype == np.float64
        assert valid.loc[0, "timestamp"] == pd.Timestamp("2024-05-01T12:00:00Z")
        assert pd.isna(valid.loc[1, "name"]) and pd.isna(valid.loc[1, "score"])

    def test_conversion_failure_rejects_only_its_row(self, entities: CsvSchema) -> None:
        table = entity_rows(GOOD, ("e2", "2024-05-01T00:00:00Z", "B", "person", "abc"), GOOD)
        result = entities.validate(table)
        assert list(result.valid_positions) == [0, 2]
        [reject] = result.rejects
        assert reject.position == 1
        assert reject.reason == "column 'score': value 'abc' is not a float64"
        assert reject.failure_cases == [
            {"column": "score", "check": "dtype('float64')", "failure_case": "abc"}
        ]

    def test_lazy_validation_rejects_each_bad_row_alone(self, entities: CsvSchema) -> None:
        table = entity_rows(
            GOOD,
            ("bad id!", "2024-05-01T00:00:00Z", "B", "person", "0.1"),
            GOOD,
            ("e4", "2024-05-01T00:00:00Z", "D", "alien", "1.5"),
            ("e5", "yesterday", "E", "person", "0.2"),
            GOOD,
        )
        result = entities.validate(table)
        assert list(result.valid_positions) == [0, 2, 5]
        reasons = {r.position: r.reason for r in result.rejects}
        assert list(reasons) == [1, 3, 4]
        assert reasons[1].startswith("column 'id': value 'bad id!' failed str_matches(")
        assert "column 'category': value 'alien' failed isin([" in reasons[3]
        assert "column 'score': value 1.5 failed in_range(0, 1)" in reasons[3]
        assert reasons[4] == ("column 'timestamp': value 'yesterday' is not a datetime64[ns, UTC]")

    def test_failure_cases_are_json_serialisable(self, entities: CsvSchema) -> None:
        table = entity_rows(("e1", "bad", None, "x", "inf"), ("", "", "", "", "2"))
        result = entities.validate(table)
        assert len(result.rejects) == 2
        json.dumps([r.failure_cases for r in result.rejects], allow_nan=False)

    def test_empty_string_and_null_are_missing(self, entities: CsvSchema) -> None:
        table = entity_rows(
            ("e1", "2024-05-01", None, "person", None),
            ("e2", "2024-05-01", "", "person", ""),
            ("", "2024-05-01", "x", "person", "0.1"),
            (None, "2024-05-01", "x", "person", "0.1"),
        )
        result = entities.validate(table)
        assert list(result.valid_positions) == [0, 1]
        assert [r.reason for r in result.rejects] == ["column 'id': missing value"] * 2

    def test_mapping_renames_csv_headers(self, entities: CsvSchema) -> None:
        header = ["ID", "seen", "name", "category", "score"]
        table = entity_rows(GOOD, header=header)
        result = entities.validate(table, mapping={"ID": "id", "seen": "timestamp", "x": "y"})
        assert list(result.valid.columns) == ENTITIES_HEADER
        assert entities.validate(table).header_error == ("missing required columns: id, timestamp")

    def test_missing_required_column_rejects_every_row(self, entities: CsvSchema) -> None:
        table = entity_rows(GOOD[:4], GOOD[:4], header=ENTITIES_HEADER[:4])
        result = entities.validate(table)
        assert result.header_error == "missing required columns: score"
        assert [r.position for r in result.rejects] == [0, 1]
        assert result.rejects[0].reason == result.header_error
        assert result.valid.empty and list(result.valid.columns) == ENTITIES_HEADER

    def test_filter_drops_unknown_columns(self, entities: CsvSchema) -> None:
        table = entity_rows((*GOOD, "x"), header=[*ENTITIES_HEADER, "extra"])
        result = entities.validate(table)
        assert list(result.valid.columns) == ENTITIES_HEADER and not result.rejects

    def test_strict_rejects_every_row_naming_unknown_columns(self) -> None:
        schema = schema_of({"id": Column(str)}, unknownColumns="strict")
        table = entity_rows(("1", "a", "b"), ("2", "c", "d"), header=["id", "x", "y"])
        result = schema.validate(table)
        assert result.header_error == "unknown columns: x, y"
        assert [r.reason for r in result.rejects] == ["unknown columns: x, y"] * 2
        assert result.rejects[0].failure_cases[0]["check"] == "column_in_schema"

    def test_passthrough_keeps_unknown_columns_as_text(self) -> None:
        schema = schema_of({"id": Column(str)}, unknownColumns="pass-through")
        table = entity_rows(("a", "1"), ("", "2"), header=["extra", "id"])
        result = schema.validate(table)
        assert list(result.valid.columns) == ["id", "extra"]
        assert result.valid["extra"].tolist()[0] == "a" and pd.isna(result.valid["extra"][1])
        assert schema.output_columns(["extra", "id"]) == ["id", "extra"]

    def test_empty_table(self, entities: CsvSchema) -> None:
        result = entities.validate(entity_rows())
        assert result.rejects == [] and result.valid.empty
        assert str(result.valid["timestamp"].dtype) == "datetime64[ns, UTC]"

    def test_duplicate_header_names_are_a_header_error(self, entities: CsvSchema) -> None:
        table = entity_rows((*GOOD, "e9"), header=[*ENTITIES_HEADER, "I"])
        result = entities.validate(table, mapping={"I": "id"})
        assert result.header_error == "duplicate columns: id"

    def test_table_wide_failure_rejects_every_validated_row(self) -> None:
        frame_check = Check(lambda frame: len(frame) > 5, name="at_least_six_rows")
        schema = CsvSchema.from_pandera(
            "t", DataFrameSchema({"id": Column(str)}, checks=[frame_check])
        )
        result = schema.validate(entity_rows(("a",), ("b",), header=["id"]))
        assert [r.position for r in result.rejects] == [0, 1]
        assert result.rejects[0].reason == "value False failed at_least_six_rows"

    def test_integer_boolean_and_formatted_datetime_columns(self) -> None:
        schema = schema_of(
            {
                "n": Column("int64"),
                "m": Column("Int64", nullable=True),
                "b": Column("boolean", nullable=True),
                "d": Column("datetime64[ns]"),
            },
            datetimeFormats={"d": "%d/%m/%Y"},
        )
        table = entity_rows(
            (" +7", "", "Yes", "31/12/2024"),
            ("0x10", "1", "no", "01/01/2024"),
            ("", "99999999999999999999", "maybe", "2024-01-01"),
            header=["n", "m", "b", "d"],
        )
        result = schema.validate(table)
        assert result.valid["n"].tolist() == [7] and result.valid["n"].dtype == np.int64
        assert pd.isna(result.valid["m"][0]) and bool(result.valid["b"][0]) is True
        assert result.valid["d"][0] == pd.Timestamp("2024-12-31")
        reasons = {r.position: r.reason for r in result.rejects}
        assert reasons[1] == "column 'n': value '0x10' is not a int64"
        assert reasons[2] == (
            "column 'n': missing value; column 'm': value "
            "'99999999999999999999' is not a Int64; column 'b': value 'maybe' "
            "is not a boolean; column 'd': value '2024-01-01' is not a "
            "datetime64[ns]"
        )

    def test_chunked_input_and_mixed_timestamp_offsets(self, entities: CsvSchema) -> None:
        first = entity_rows(("a", "2024-05-01T02:00:00+02:00", "A", "person", "1"))
        second = entity_rows(
            ("b", " 2024-05-01", "B", "event", " 0.25 "),
            ("c", "2024-05-01T00:00:00", "C", "event", "1e400"),
        )
        result = entities.validate(pa.concat_tables([first, second]))
        assert list(result.valid_positions) == [0, 1]
        assert set(result.valid["timestamp"]) == {pd.Timestamp("2024-05-01T00:00:00Z")}
        assert result.valid["score"].tolist() == [1.0, 0.25]
        assert result.rejects[0].reason == "column 'score': value 'inf' failed in_range(0, 1)"

    def test_date_and_pandera_coerced_columns(self) -> None:
        schema = schema_of(
            {"d": Column("date", nullable=True), "c": Column("category", Check.isin(["a", "b"]))}
        )
        table = entity_rows(("2024-01-31", "a"), ("31/01/2024", "b"), ("", "z"), header=["d", "c"])
        result = schema.validate(table)
        assert result.valid["d"].tolist() == [dt.date(2024, 1, 31)]
        assert [(r.position, r.reason) for r in result.rejects] == [
            (1, "column 'd': value '31/01/2024' is not a date"),
            (2, "column 'c': value 'z' failed isin(['a', 'b'])"),
        ]

    def test_unique_columns_reject_every_duplicate(self) -> None:
        schema = schema_of({"id": Column(str, unique=True)})
        result = schema.validate(entity_rows(("a",), ("b",), ("a",), header=["id"]))
        assert [(r.position, r.reason) for r in result.rejects] == [
            (0, "column 'id': duplicate value 'a'"),
            (2, "column 'id': duplicate value 'a'"),
        ]


class TestSchemaFiles:
    def test_events_wide_matches_the_load_test_generator(self, registry: SchemaRegistry) -> None:
        gen_csv = pytest.importorskip("loadtests.gen_csv")
        schema = registry.get("events_wide")
        assert schema.columns == gen_csv.HEADER.split(",")
        table = pacsv.read_csv(
            io.BytesIO("".join(gen_csv.generate(300)).encode()),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(schema.columns, pa.string())
            ),
        )
        result = schema.validate(table)
        assert result.rejects == [] and len(result.valid) == 300

    def test_bundled_yaml_round_trips_through_pandera(self, registry: SchemaRegistry) -> None:
        for name in ("entities", "events_wide"):
            pandera_schema = registry.get(name).pandera_schema
            again = DataFrameSchema.from_yaml(pandera_schema.to_yaml())
            assert list(again.columns) == list(pandera_schema.columns)


class TestStrMatches:
    VALUES = [
        "abc",
        "abc\n",
        "ab\nc",
        "ABC",
        "äbc",
        "a_1",
        "",
        " abc",
        "abc ",
        "x" * 70,
        None,
        "&",
        "-a",
        "[a]",
        "a.b@c.de",
        "~",
    ]

    @pytest.mark.parametrize(
        "pattern",
        [
            r"^[a-z]+$",
            r"[a-z]+$",
            r"^[A-Za-z0-9_-]{1,64}$",
            r"^.+$",
            r"^[^ ]*$",
            r"a|x+$",
            r"^\w+$",
            r"^[a-z]+\s*$",
            r"^(?=a)[a-z]+$",
            r"^a{,3}",
            # Rust reads these brackets as set operations or a nested class: RE2 runs them.
            r"^[a&&b]",
            r"^[%--]+$",
            r"^[a~~b]",
            r"^[a[b]]",
            r"^[]a-]+",
            r"^[^]a]+$",
            r"^[[:alpha:]]+$",  # a POSIX class to RE2, "[", ":", "a"... to Python: pandas runs it
            r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$",
            r"^\[a\]$|^~$",
            # One class repeated, anchored at both ends: matched byte by byte.
            r"^[a-z]{3}$",
            r"^[a-z_]{2,}$",
            r"^[.\-]?$",
            r"^[A-Z]*$",
            r"^[\[\]a]+$",
            r"^[&~-]{1}$",
        ],
    )
    def test_agrees_with_pandas_str_match(self, pattern: str) -> None:
        schema = schema_of({"v": Column(str, Check.str_matches(pattern), nullable=True)})
        table = pa.table({"v": pa.array(self.VALUES, pa.string())})
        result = schema.validate(table)
        text = pd.Series([v or None for v in self.VALUES], dtype="str")
        expected = text.str.match(pattern, na=False) | text.isna()
        assert list(result.valid_positions) == list(np.flatnonzero(expected))

    @pytest.mark.parametrize(
        ("pattern", "on_polars"),
        [
            (r"^[A-Za-z0-9_-]{1,64}$", True),
            (r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$", True),
            (r"^\[a&&b\]$", True),  # escaped brackets: no class at all
            (r"^a&&b--c$", True),  # outside brackets these are plain characters
            (r"^[a&&b]", False),
            (r"^[%--]", False),
            (r"^[a~~b]", False),
            (r"^[a[b]]", False),
        ],
    )
    def test_patterns_run_on_rust_regex_only_where_it_reads_them_as_re2(
        self, pattern: str, on_polars: bool
    ) -> None:
        schema = schema_of({"v": Column(str, Check.str_matches(pattern), nullable=True)})
        [check] = schema._str_matches
        assert check.on_polars is on_polars

    @pytest.mark.parametrize(
        ("pattern", "byte_run"),
        [
            (r"^[A-Za-z0-9_-]{1,64}$", (1, 64)),
            (r"^[a-z]+$", (1, -1)),
            (r"^[a-z]*$", (0, -1)),
            (r"^[a-z]?$", (0, 1)),
            (r"^[a-z]$", (1, 1)),
            (r"^[a-z]{2,}$", (2, -1)),
            (r"^[%--]+$", (1, -1)),  # re reads "%--" as the range "%" to "-"
            (r"^[^a-z]+$", None),  # negated: would take non-ASCII characters
            (r"^[\w]+$", None),
            (r"^[a-z]+", None),  # not anchored at the end
            (r"^[a-z]+?$", None),
            (r"^[a-z]{1, 3}$", None),  # a literal "{1, 3}" to re
            (r"^[é]+$", None),
            (r"^[[:alpha:]]+$", None),
        ],
    )
    def test_one_class_repeated_is_matched_without_a_regex_engine(
        self, pattern: str, byte_run: tuple[int, int] | None
    ) -> None:
        schema = schema_of({"v": Column(str, Check.str_matches(pattern), nullable=True)})
        checks = schema._str_matches
        found = checks[0].byte_run if checks else None
        assert (found[1:] if found else None) == byte_run

    @pytest.mark.parametrize("kind", [pa.string(), pa.large_string()])
    def test_byte_by_byte_matching_of_sliced_and_null_values(self, kind: pa.DataType) -> None:
        pattern = r"^[a-z0-9-]{2,4}$"
        values = ["ab", None, "abcde", "a", "ab-1", "AB", "äb", "ab\n", "a b", "", "zz"] * 3
        text = pa.array(values, kind).slice(3, 25)
        table = regex._byte_run(pattern)
        assert table is not None
        found = regex._byte_run_matches(text, *table)
        if found is None:
            pytest.skip("ingest._speedups is not built here")
        matched = found.to_pylist()
        compiled = re.compile(pattern)
        wanted = [None if v is None else bool(compiled.fullmatch(v)) for v in values[3:28]]
        assert matched == wanted

    def test_class_runs_without_the_compiled_part_use_a_regex_engine(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(regex, "_speedups", None)
        pattern = r"^[a-z_]{2,}$"
        schema = schema_of({"v": Column(str, Check.str_matches(pattern), nullable=True)})
        result = schema.validate(pa.table({"v": pa.array(self.VALUES, pa.string())}))
        text = pd.Series([v or None for v in self.VALUES], dtype="str")
        expected = text.str.match(pattern, na=False) | text.isna()
        assert list(result.valid_positions) == list(np.flatnonzero(expected))

    def test_a_pattern_polars_refuses_runs_on_re2(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def refuse(text: Any, anchored: str) -> Any:
            raise RuntimeError("regex parse error")

        monkeypatch.setattr(regex, "_polars_matches", refuse)
        pattern = r"^[a-z]+$"
        schema = schema_of({"v": Column(str, Check.str_matches(pattern), nullable=True)})
        [check] = schema._str_matches
        assert check.on_polars is False
        result = schema.validate(pa.table({"v": pa.array(self.VALUES, pa.string())}))
        text = pd.Series([v or None for v in self.VALUES], dtype="str")
        expected = text.str.match(pattern, na=False) | text.isna()
        assert list(result.valid_positions) == list(np.flatnonzero(expected))

    def test_reason_and_failure_case_match_pandera(self, entities: CsvSchema) -> None:
        result = entities.validate(entity_rows(("a b", *GOOD[1:])))
        assert result.rejects[0].failure_cases == [
            {"column": "id", "check": "str_matches('^[A-Za-z0-9_-]{1,64}$')", "failure_case": "a b"}
        ]

    def test_reasons_read_in_column_order(self, entities: CsvSchema) -> None:
        result = entities.validate(entity_rows(("a b", GOOD[1], "", "alien", "2")))
        columns = [case["column"] for case in result.rejects[0].failure_cases]
        assert columns == ["id", "category", "score"]
