"""One range of one CSV object, end to end: read, parse, validate, dedup, stamp and store.

The order of effects makes a re-executed range harmless: rejected rows enter the DLQ under
deterministic ids *before* the output is written, dedup claims are remembered per range, and
the output file is named by the range's identity, so a second run finds it and stops.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import redis

from ingest.circuit import breaker_for
from ingest.config import Settings
from ingest.dedup import DedupIndex, identities_from_hex_column, key_texts
from ingest.dlq import DeadLetterQueue, task_entry
from ingest.errors import PermanentError
from ingest.s3csv.header import split_header
from ingest.s3csv.imports import RangeSummary
from ingest.s3csv.memory import retain_freed_memory
from ingest.s3csv.output import output_table
from ingest.s3csv.ranges import MAX_HEADER_BYTES, CsvDialect, CsvFormatError, NewlineScan
from ingest.s3csv.reader import iter_decompressed, read_range
from ingest.s3csv.records import ParsedRange, parse_records
from ingest.s3csv.rejects import dead_letter_entries
from ingest.s3csv.segments import split_stream
from ingest.s3csv.spans import SpanLedger, read_own_records
from ingest.s3csv.spec import RangeSpec, range_identity
from ingest.schemas import CsvSchema, SchemaRegistry
from ingest.schemas.arrow import TableValidation
from ingest.sinks import Sink

__all__ = ["RangeProcessor", "RangeSpec", "range_identity"]

log = logging.getLogger(__name__)
SUMMARY_TTL = 30 * 86400


@dataclass
class _Segment:
    data: bytes | memoryview  # a span's records are a view of what it fetched
    names: tuple[str, ...]
    first_line: int
    base_offset: int
    scan: NewlineScan | None = None  # the newline scan of ``data``, when made already


class RangeProcessor:
    """Processes range specs with the process's S3 client, sink, schemas, dedup index and DLQ."""

    def __init__(
        self,
        settings: Settings,
        s3: Any,
        sink: Sink,
        schemas: SchemaRegistry,
        dedup: DedupIndex | None,
        dlq: DeadLetterQueue,
        client: redis.Redis,
    ) -> None:
        self.settings = settings
        self.s3 = s3
        self.sink = sink
        self.schemas = schemas
        self.dedup = dedup if settings.s3csv.deduplication.enabled else None
        self.dlq = dlq
        self.redis = client
        cfg = settings.s3csv
        self.breaker = breaker_for(
            f"s3:{settings.s3_endpoint_url or 'aws'}",
            cfg.breaker_threshold,
            cfg.breaker_reset_seconds,
        )
        self.dialect = CsvDialect(cfg.delimiter, cfg.quote_char, cfg.encoding, cfg.header)
        # Claim rows' keys on a thread of their own while this one hashes the records; off
        # for the step-by-step profile (loadtests/profile_range.py), which times each step.
        self.overlap_claims = True
        if cfg.retain_freed_memory:
            retain_freed_memory()  # once per process (ingest.s3csv.memory)

    # -- the whole range -------------------------------------------------------------------
    def process(self, spec: RangeSpec) -> RangeSummary:
        schema = self.schemas.get(spec.schema_name)
        counted = spec.countedBytes if spec.countedBytes is not None else spec.end - spec.start
        total = RangeSummary(rangeId=spec.rangeId, bytes=counted)
        previous = self._stored_summary(spec.rangeId, "all")
        if previous is not None:
            return previous.model_copy(update={"resumed": True})
        for part, segment in enumerate(self._segments(spec)):
            summary, _ = self._process_segment(spec, schema, segment, part)
            total.rowsStored += summary.rowsStored
            total.rowsRejected += summary.rowsRejected
            total.duplicatesDropped += summary.duplicatesDropped
            total.blankLines += summary.blankLines
            total.resumed = total.resumed or summary.resumed
        self._save_summary(spec.rangeId, "all", total)
        return total

    def give_up(self, spec: RangeSpec, exc: BaseException, task: Any = None) -> RangeSummary:
        """Dead-letter a range that cannot be processed, and report it failed."""
        entry = task_entry(
            task_name="ingest.s3.range",
            task_id=getattr(getattr(task, "request", None), "id", None) or spec.rangeId,
            args=[spec.model_dump()],
            kwargs={},
            exc=exc,
            source=spec.uri,
            retries=getattr(getattr(task, "request", None), "retries", 0),
            import_id=spec.importId,
            extra={"rangeId": spec.rangeId},
        )
        self.dlq.add(entry)
        return RangeSummary(
            rangeId=spec.rangeId,
            bytes=0,
            failed=True,
            error=f"{spec.uri} bytes {spec.start}-{spec.end}: {type(exc).__name__}: {exc}",
        )

    def replay_row(self, entry: Any) -> str:
        """Validate and store a dead-lettered row again; return why it is still rejected, or ''."""
        payload = entry.payload
        bucket, _, key = payload["objectUri"].removeprefix("s3://").partition("/")
        schema = self.schemas.get(payload["schema"])
        raw = base64.b64decode(payload["rawBase64"])
        spec = RangeSpec(
            importId=payload.get("importId") or "",
            index=0,
            bucket=bucket,
            key=key,
            etag=payload.get("etag") or None,
            start=payload["offset"],
            end=payload["offset"] + len(raw),
            firstLine=payload["line"],
            schema_name=schema.name,
            schemaVersion=schema.version,
            purpose=payload["purpose"],
            classification=payload.get("classification"),
            mapping=payload.get("mapping") or {},
            ingestedBy="dlq-retry",
            parentId=entry.id,
            rangeId="dlq-" + hashlib.sha256(entry.id.encode()).hexdigest()[:36],
        )
        segment = _Segment(
            raw + b"\n", tuple(payload["header"]), payload["line"], payload["offset"]
        )
        _, rejects = self._process_segment(spec, schema, segment, 0, dead_letter=False)
        return "; ".join(rejects)

    # -- reading ---------------------------------------------------------------------------
    def _segments(self, spec: RangeSpec) -> Iterator[_Segment]:
        if spec.compressed:
            chunks = iter_decompressed(self.s3, spec.bucket, spec.key, 8 << 20)
            yield from self._with_header(
                split_stream(chunks, self.settings.s3csv.range_size, self.dialect), spec
            )
            return
        if spec.spanSize is not None:
            yield from self._own_records(spec)
            return
        data = self.breaker.call(
            lambda: read_range(self.s3, spec.bucket, spec.key, spec.start, spec.end, spec.etag)
        )
        yield from self._with_header(iter([(data, spec.start)]), spec)

    def _own_records(self, spec: RangeSpec) -> Iterator[_Segment]:
        """A nominal span: fetch it once, find its records (see ingest.s3csv.spans)."""

        def read(start: int, end: int) -> bytes:
            return self.breaker.call(
                lambda: read_range(self.s3, spec.bucket, spec.key, start, end, spec.etag)
            )

        assert spec.spanSize is not None and spec.objectSize is not None
        own = read_own_records(
            read,
            SpanLedger(self.redis, spec.bucket, spec.key, spec.etag, spec.spanSize),
            index=spec.index,
            span=spec.spanSize,
            object_size=spec.objectSize,
            body_start=spec.bodyStart,
            body_first_line=spec.firstLine,
            quotechar=self.dialect.quotechar,
        )
        if not own.data:
            return
        if spec.headerB64 is not None:
            names = _header_names(base64.b64decode(spec.headerB64), self.dialect)
        else:
            names = _positional_names(own.data, self.dialect)
        yield _Segment(own.data, names, own.first_line, own.offset, own.scan)

    def _with_header(
        self, pieces: Iterator[tuple[bytes, int]], spec: RangeSpec
    ) -> Iterator[_Segment]:
        names: tuple[str, ...] | None = None
        line = spec.firstLine
        if spec.headerB64 is not None:
            names = _header_names(base64.b64decode(spec.headerB64), self.dialect)
        for data, offset in pieces:
            if names is None:
                data, offset, names, line = self._split_off_header(data, offset, line)
                if names is None:
                    return
            yield _Segment(data, names, line, offset)
            line += data.count(b"\n")

    def _split_off_header(
        self, data: bytes, offset: int, line: int
    ) -> tuple[bytes, int, tuple[str, ...] | None, int]:
        if not self.dialect.header:
            return data, offset, _positional_names(data, self.dialect), line
        if not data.strip():
            return data, offset, None, line
        try:
            header = split_header(data, self.dialect)
        except CsvFormatError as exc:
            raise PermanentError(f"unreadable CSV header: {exc}") from exc
        return data[header.end :], offset + header.end, header.names, header.first_line

    # -- one segment -----------------------------------------------------------------------
    def _process_segment(
        self,
        spec: RangeSpec,
        schema: CsvSchema,
        segment: _Segment,
        part: int,
        dead_letter: bool = True,
    ) -> tuple[RangeSummary, list[str]]:
        name = f"s3/{spec.bucket}/{spec.rangeId}-{part:04d}"
        previous = self._stored_summary(spec.rangeId, str(part))
        if previous is not None and self.sink.exists(name):
            return previous.model_copy(update={"resumed": True}), []
        parsed = parse_records(
            segment.data,
            header=list(segment.names),
            dialect=self.dialect,
            first_line=segment.first_line,
            base_offset=segment.base_offset,
            scan=segment.scan,
        )
        result = schema.validate_table(parsed.table, spec.mapping or None)
        entries = self._dead_letter_rows(spec, schema, segment, parsed, result)
        if dead_letter:
            # Before the output: a re-run that finds the output must find these too.
            for start in range(0, len(entries), 2000):
                self.dlq.add_many(entries[start : start + 2000])
        rejected = len(entries)
        owner = f"{spec.rangeId}-{part:04d}"
        positions, keep = self._dedup(spec, schema, parsed, result, owner)
        table = self._output_table(spec, schema, parsed, result, positions[keep], keep)
        written = self.sink.write_table(name, table)
        summary = RangeSummary(
            rangeId=spec.rangeId,
            rowsStored=table.num_rows,
            rowsRejected=rejected,
            duplicatesDropped=int(len(keep) - keep.sum()),
            resumed=written.present > 0,
            blankLines=parsed.blank_lines,
        )
        self._save_summary(spec.rangeId, str(part), summary)
        if self.dedup is not None:
            self.dedup.forget_key_owner(f"s3:{spec.schema_name}", owner)
        return summary, [e.reason for e in entries]

    def _dedup(
        self,
        spec: RangeSpec,
        schema: CsvSchema,
        parsed: ParsedRange,
        result: TableValidation,
        owner: str,
    ) -> tuple[np.ndarray, np.ndarray]:
        positions = result.positions
        if self.dedup is None or len(positions) == 0:
            return positions, np.ones(len(positions), dtype=bool)
        key_fields = schema.key_fields or self.settings.s3csv.deduplication.key_fields
        scope = f"s3:{spec.schema_name}"
        if key_fields and all(f in result.valid.column_names for f in key_fields):
            keys = key_texts(result.valid, key_fields)
            if not self.overlap_claims:
                return positions, self.dedup.claim_keys(scope, owner, keys)
            # Redis checks the keys (a third of a second for a 32 MiB range) while this
            # thread hashes the records, which the output needs next.
            claims = _claims_thread().submit(self.dedup.claim_keys, scope, owner, keys)
            try:
                parsed.content_hashes  # noqa: B018  (computed and kept on first read)
            finally:
                wait([claims])
            return positions, claims.result()
        hashes = parsed.content_hashes
        if len(positions) != len(hashes):
            hashes = hashes.take(pa.array(positions))
        return positions, self.dedup.claim(scope, owner, identities_from_hex_column(hashes))

    # The steps profiled on their own (loadtests/profile_range.py --stages).
    def _dead_letter_rows(
        self,
        spec: RangeSpec,
        schema: CsvSchema,
        segment: _Segment,
        parsed: ParsedRange,
        result: TableValidation,
    ) -> list[Any]:
        return dead_letter_entries(
            spec, schema, segment.names, segment.data, segment.base_offset, parsed, result
        )

    def _output_table(
        self,
        spec: RangeSpec,
        schema: CsvSchema,
        parsed: ParsedRange,
        result: TableValidation,
        positions: np.ndarray,
        keep: np.ndarray,
    ) -> pa.Table:
        return output_table(spec, schema, parsed, result, positions, keep)

    # -- summaries -------------------------------------------------------------------------
    def _summary_key(self, range_id: str, part: str) -> str:
        return f"ingest:range:{range_id}:{part}"

    def _stored_summary(self, range_id: str, part: str) -> RangeSummary | None:
        raw = self.redis.get(self._summary_key(range_id, part))
        return RangeSummary.model_validate_json(raw) if raw else None

    def _save_summary(self, range_id: str, part: str, summary: RangeSummary) -> None:
        self.redis.set(self._summary_key(range_id, part), summary.model_dump_json(), ex=SUMMARY_TTL)


_claims_pool: ThreadPoolExecutor | None = None
_claims_lock = threading.Lock()


def _claims_thread() -> ThreadPoolExecutor:
    """The process's one thread for dedup claims (made on first use, again after a fork)."""
    global _claims_pool
    with _claims_lock:
        if _claims_pool is None:
            _claims_pool = ThreadPoolExecutor(1, thread_name_prefix="ingest-dedup-claims")
        return _claims_pool


def _forget_claims_thread() -> None:
    global _claims_pool, _claims_lock
    _claims_pool, _claims_lock = None, threading.Lock()  # the thread did not survive the fork


os.register_at_fork(after_in_child=_forget_claims_thread)


def _header_names(raw: bytes, dialect: CsvDialect) -> tuple[str, ...]:
    from ingest.s3csv.header import parse_header

    try:
        return parse_header(raw, dialect)
    except CsvFormatError as exc:
        raise PermanentError(f"unreadable CSV header: {exc}") from exc


def _positional_names(data: bytes | memoryview, dialect: CsvDialect) -> tuple[str, ...]:
    head = data if isinstance(data, bytes) else bytes(data[:MAX_HEADER_BYTES])
    first = head.split(b"\n", 1)[0]
    count = first.count(dialect.delimiter.encode()) + 1
    return tuple(f"column_{i + 1}" for i in range(count))
