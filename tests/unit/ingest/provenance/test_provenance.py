"""Provenance: the model, the builder every connector uses, and its validation."""

from __future__ import annotations

import pytest

from ingest.hashing import canonical_json, sha256_hex, strip_line_terminator
from ingest.provenance import (
    ProvenanceBuilder,
    ProvenanceMetadata,
    provenance_json_schema,
    validate_provenance,
)

SEED_FIELDS = {
    "sourceId",
    "sourceType",
    "sourceUri",
    "contentHash",
    "hashAlgorithm",
    "ingestedAt",
    "observedAt",
    "purpose",
    "classification",
    "parentId",
    "transformations",
    "ingestedBy",
    "batchId",
}


def builder(**overrides: object) -> ProvenanceBuilder:
    fields: dict[str, object] = dict(
        source_id="acme",
        source_type="HTTP",
        source_uri="http://h/v1/webhooks/acme",
        purpose="case-1",
        ingested_by="acme",
        batch_id="b1",
    )
    fields.update(overrides)
    return ProvenanceBuilder(**fields)  # type: ignore[arg-type]


class TestHashing:
    def test_canonical_json_sorts_keys_and_drops_white_space(self) -> None:
        assert (
            canonical_json({"b": 1, "a": [1, {"d": "é", "c": None}]})
            == '{"a":[1,{"c":null,"d":"é"}],"b":1}'.encode()
        )

    def test_same_content_same_hash_and_different_content_different_hash(self) -> None:
        assert sha256_hex(canonical_json({"a": 1, "b": 2})) == sha256_hex(
            canonical_json({"b": 2, "a": 1})
        )
        assert sha256_hex(b"x") != sha256_hex(b"y")

    def test_crlf_and_lf_rows_hash_the_same(self) -> None:
        assert sha256_hex(strip_line_terminator(b"a,b\r\n")) == sha256_hex(
            strip_line_terminator(b"a,b\n")
        )
        assert strip_line_terminator(b"a,b") == b"a,b"


class TestBuilder:
    def test_stamp_has_exactly_the_seed_fields(self) -> None:
        record = builder().stamp("0" * 64)
        assert set(record) == SEED_FIELDS
        assert record["hashAlgorithm"] == "SHA-256"
        assert validate_provenance(record) == []

    def test_stamp_event_hashes_canonical_json(self) -> None:
        content_hash, record = builder().stamp_event({"b": 1, "a": 2}, eventId="e1")
        assert content_hash == sha256_hex(b'{"a":2,"b":1}')
        assert record["contentHash"] == content_hash and record["eventId"] == "e1"

    def test_lineage_is_optional_and_kept(self) -> None:
        record = builder(source_type="S3").stamp(
            "a" * 64, objectEtag="e", lineNumber=7, byteOffset=None
        )
        assert record["lineNumber"] == 7 and "byteOffset" not in record
        assert validate_provenance(record) == []

    def test_with_lineage_appends_transformation(self) -> None:
        retried = builder(transformations=("schema:entities@1",)).with_lineage("dlq-1", "dlq-retry")
        record = retried.stamp("b" * 64)
        assert record["parentId"] == "dlq-1"
        assert record["transformations"] == ["schema:entities@1", "dlq-retry"]


class TestValidation:
    @pytest.mark.parametrize(
        "field,value,message",
        [
            ("contentHash", "ABC", "contentHash"),
            ("contentHash", "A" * 64, "contentHash"),
            ("sourceType", "FTP", "sourceType"),
            ("hashAlgorithm", "MD5", "hashAlgorithm"),
            ("ingestedAt", "yesterday", "ingestedAt"),
            ("purpose", "", "purpose"),
        ],
    )
    def test_bad_field_is_named(self, field: str, value: object, message: str) -> None:
        record = builder().stamp("c" * 64)
        record[field] = value
        problems = validate_provenance(record)
        assert problems and all(message in p for p in problems)

    @pytest.mark.parametrize("missing", ["sourceId", "sourceUri", "ingestedBy", "contentHash"])
    def test_required_fields(self, missing: str) -> None:
        record = builder().stamp("c" * 64)
        del record[missing]
        assert any(missing in p for p in validate_provenance(record))

    def test_not_an_object(self) -> None:
        assert validate_provenance(["x"]) == ["provenance is not an object"]

    def test_json_schema_names_the_seed_fields(self) -> None:
        schema = provenance_json_schema()
        assert set(schema["properties"]) >= SEED_FIELDS
        assert set(schema["required"]) == {
            "sourceId",
            "sourceType",
            "sourceUri",
            "contentHash",
            "ingestedAt",
            "purpose",
            "ingestedBy",
        }
        assert ProvenanceMetadata.model_validate(builder().stamp("d" * 64)).batchId == "b1"
