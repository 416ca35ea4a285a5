"""Reading S3 event notifications, the watch's refusals, the import-list filters, watch config."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ingest.config import ConfigError, WatchConfig, build_settings
from ingest.s3csv.imports import ImportRequestError
from ingest.s3csv.notifications import CreatedObject, parse_notification
from ingest.s3csv.watch_status import listing_query
from ingest.s3csv.watches import refusal

WATCH = {
    "name": "drops",
    "queueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/drops",
    "bucket": "lake",
    "prefix": "drop/",
    "schema": "entities",
    "purpose": "case-4711",
}


def record(key: str = "drop%2Fa.csv", event: str = "ObjectCreated:Put", **obj: Any) -> dict:
    return {
        "eventName": event,
        "eventTime": "2026-12-06T08:13:12.508Z",
        "s3": {
            "bucket": {"name": "lake"},
            "object": {"key": key, "size": 8, "eTag": "344fd232", **obj},
        },
    }


def body(*records: dict) -> str:
    return json.dumps({"Records": list(records)})


class TestParseNotification:
    def test_keys_are_url_decoded_as_s3_encodes_them(self) -> None:
        found = parse_notification(body(record("drop%2Fa+b%2Bc%2Cd.csv")))
        assert found.kind == "records"
        assert [o.key for o in found.created] == ["drop/a b+c,d.csv"]

    def test_the_same_bytes_in_a_new_version_are_the_same_object_version(self) -> None:
        plain = parse_notification(body(record())).created[0]
        versioned = parse_notification(body(record(versionId="v7"))).created[0]
        assert plain.version == versioned.version == "344fd232"
        assert versioned.version_id == "v7" and plain.version_id is None

    def test_the_test_event_is_recognised(self) -> None:
        test = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "lake"}
        assert parse_notification(json.dumps(test)).kind == "test"

    def test_other_events_are_counted_not_imported(self) -> None:
        found = parse_notification(body(record(event="ObjectRemoved:Delete"), record()))
        assert found.other_records == 1 and len(found.created) == 1

    def test_an_sns_envelope_is_unwrapped(self) -> None:
        wrapped = json.dumps({"Type": "Notification", "Message": body(record())})
        assert parse_notification(wrapped).created[0].key == "drop/a.csv"

    @pytest.mark.parametrize(
        "text,reason",
        [
            ("not json", "not JSON"),
            ("[1]", "not a JSON object"),
            ('{"hello": 1}', "no Records"),
            (body({"s3": {}}), "no eventName"),
            (body(record(key="")), "no bucket name or object key"),
            (body(record(key="%ff.csv")), "not URL-encoded UTF-8"),
            (body(record(size="big")), "size"),
            (body(record(eTag=None)), "eTag"),
        ],
    )
    def test_malformed_bodies_say_why(self, text: str, reason: str) -> None:
        found = parse_notification(text)
        assert found.kind == "malformed" and reason in (found.reason or "")


class TestRefusal:
    watch = WatchConfig.model_validate(WATCH)

    def obj(self, bucket: str = "lake", key: str = "drop/a.csv") -> CreatedObject:
        return CreatedObject(bucket=bucket, key=key, size=1, etag="e")

    def test_an_object_under_the_prefix_is_accepted(self) -> None:
        assert refusal(self.watch, self.obj(), []) is None

    @pytest.mark.parametrize(
        "bucket,key,allowed,fragment",
        [
            ("other", "drop/a.csv", [], "not the watch's bucket"),
            ("lake", "elsewhere/a.csv", [], "outside the watch's prefix"),
            ("lake", "drop/a.csv", ["archive"], "allowedBuckets"),
        ],
    )
    def test_objects_outside_are_refused(
        self, bucket: str, key: str, allowed: list[str], fragment: str
    ) -> None:
        assert fragment in (refusal(self.watch, self.obj(bucket, key), allowed) or "")


class TestListingQuery:
    def test_defaults(self) -> None:
        assert listing_query(None, None, None) == (None, None, 50)

    def test_valid_filters(self) -> None:
        assert listing_query("failed", "drops", "7") == ("failed", "drops", 7)

    @pytest.mark.parametrize(
        "status,watch,limit,fragment",
        [
            ("done", None, None, "status must be one of"),
            (None, "a b", None, "watch must be"),
            (None, None, "0", "limit"),
            (None, None, "-3", "limit"),
            (None, None, "ten", "limit"),
            (None, None, "1001", "limit"),
            (None, None, "2.5", "limit"),
        ],
    )
    def test_bad_values_are_400(
        self, status: str | None, watch: str | None, limit: str | None, fragment: str
    ) -> None:
        with pytest.raises(ImportRequestError) as caught:
            listing_query(status, watch, limit)
        assert caught.value.status == 400 and fragment in str(caught.value)


class TestWatchConfig:
    def test_a_watch_loads_with_its_defaults(self) -> None:
        settings = build_settings({"s3csv": {"watches": [WATCH]}})
        watch = settings.s3csv.watches[0]
        assert watch.actor == "watch:drops" and watch.mapping == {} and watch.prefix == "drop/"

    def test_the_sqs_endpoint_defaults_to_the_s3_endpoint(self) -> None:
        s3_only = build_settings({"s3EndpointUrl": "http://127.0.0.1:9000"})
        both = build_settings(
            {"s3EndpointUrl": "http://127.0.0.1:9000", "sqsEndpointUrl": "http://127.0.0.1:9324"}
        )
        assert s3_only.effective_sqs_endpoint_url == "http://127.0.0.1:9000"
        assert both.effective_sqs_endpoint_url == "http://127.0.0.1:9324"

    @pytest.mark.parametrize(
        "change,key",
        [
            ({"queueUrl": "drops"}, "s3csv.watches.0.queueUrl"),
            ({"schema": None}, "s3csv.watches.0.schema"),
            ({"name": "a b"}, "s3csv.watches.0.name"),
            ({"surprise": 1}, "s3csv.watches.0.surprise: unknown key"),
        ],
    )
    def test_a_bad_watch_names_the_key(self, change: dict[str, Any], key: str) -> None:
        watch = {k: v for k, v in {**WATCH, **change}.items() if v is not None}
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            build_settings({"s3csv": {"watches": [watch]}})

    def test_two_watches_with_one_name_or_queue_are_refused(self) -> None:
        twin = {**WATCH, "queueUrl": WATCH["queueUrl"] + "2"}
        with pytest.raises(ConfigError, match="another watch is named 'drops'"):
            build_settings({"s3csv": {"watches": [WATCH, twin]}})
        twin = {**WATCH, "name": "other"}
        with pytest.raises(ConfigError, match="another watch polls"):
            build_settings({"s3csv": {"watches": [WATCH, twin]}})

    def test_a_watched_bucket_must_be_allowed(self) -> None:
        with pytest.raises(ConfigError, match=r"s3csv\.watches: .*'lake' is not in"):
            build_settings({"s3csv": {"allowedBuckets": ["archive"], "watches": [WATCH]}})
