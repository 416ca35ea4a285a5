"""Running one range of an import in the test process, without a worker."""

from __future__ import annotations

import base64

from ingest.config import load_settings
from ingest.runtime import Runtime
from ingest.s3csv.pipeline import RangeProcessor, RangeSpec

__all__ = ["processor", "spec_for", "stored_hashes"]


def processor(env: dict[str, str]) -> tuple[RangeProcessor, Runtime]:
    rt = Runtime(load_settings(env))
    return RangeProcessor(rt.settings, rt.s3, rt.sink, rt.schemas, rt.dedup, rt.dlq, rt.redis), rt


def spec_for(bucket: str, key: str, data: bytes, range_id: str) -> RangeSpec:
    header_end = data.index(b"\n") + 1
    return RangeSpec(
        importId="imp",
        rangeId=range_id,
        index=0,
        bucket=bucket,
        key=key,
        etag=None,
        start=header_end,
        end=len(data),
        firstLine=2,
        headerB64=base64.b64encode(data[:header_end]).decode(),
        schema_name="entities",
        schemaVersion="1",
        purpose="p",
        ingestedBy="t",
    )


def stored_hashes(rt: Runtime) -> list[str]:
    return [r.record["provenance"]["contentHash"] for r in rt.sink.iter_records()]
