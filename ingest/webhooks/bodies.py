"""Webhook request bodies: media types, size limits, bounded gzip, and JSON events with hashes.

Framework-free: the web layer hands in header values and a readable stream and gets back
decoded bytes or parsed events, or one of the :class:`BodyError` subclasses that say which
status code fits.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

from ingest.hashing import canonical_text, sha256_hex

__all__ = [
    "BodyError",
    "BodyTimedOut",
    "BodyTooLarge",
    "MalformedBody",
    "MediaKind",
    "ParsedEvent",
    "UnsupportedMediaType",
    "check_content_encoding",
    "check_media_type",
    "decode_body",
    "gunzip_bounded",
    "parse_batch",
    "parse_event",
    "parse_form",
    "parse_form_event",
    "read_body",
]

MediaKind = Literal["json", "ndjson", "form"]
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
_MAX_FORM_FIELDS = 1000
_READ_CHUNK = 64 * 1024
# Strings are skipped whole (escapes included) so brackets inside them do not count as nesting.
_DEPTH_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


class BodyError(Exception):
    """A request body that cannot be accepted; ``status`` is the HTTP status that says why."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnsupportedMediaType(BodyError):
    status = 415


class BodyTooLarge(BodyError):
    status = 413


class MalformedBody(BodyError):
    status = 400


class BodyTimedOut(BodyError):
    """The body did not arrive in time (``http.bodyTimeout``): 408, and the connection closes."""

    status = 408


@dataclass(frozen=True)
class ParsedEvent:
    """One JSON object event with its canonical JSON text and that text's SHA-256."""

    event: dict[str, Any]
    canonical: str
    content_hash: str


def check_content_encoding(value: str | None) -> bool:
    """Return True for gzip, False for identity; raise ``UnsupportedMediaType`` otherwise."""
    coding = (value or "identity").strip().lower()
    if coding in ("", "identity"):
        return False
    if coding in ("gzip", "x-gzip"):
        return True
    raise UnsupportedMediaType(
        f"Content-Encoding {value!r} is not supported: send identity or gzip"
    )


def check_media_type(value: str | None, allow_ndjson: bool, allow_form: bool = False) -> MediaKind:
    """Classify a Content-Type as JSON, NDJSON or (``allow_form``) a form; raise
    ``UnsupportedMediaType`` otherwise."""
    media, _, params = (value or "").partition(";")
    media = media.strip().lower()
    charset = _charset(params)
    if charset not in (None, "utf-8", "utf8"):
        raise UnsupportedMediaType(f"charset {charset!r} is not supported: JSON is UTF-8")
    if allow_form and media == FORM_MEDIA_TYPE:
        return "form"
    structured_json = media.startswith("application/") and media.endswith("+json")
    if media == "application/json" or structured_json:
        return "json"
    if allow_ndjson and media == "application/x-ndjson":
        return "ndjson"
    accepted = "application/json or application/*+json"
    if allow_ndjson:
        accepted += " or application/x-ndjson"
    if allow_form:
        accepted += " or " + FORM_MEDIA_TYPE
    given = value or "(none)"
    raise UnsupportedMediaType(f"Content-Type {given!r} is not supported: send {accepted}")


def _charset(params: str) -> str | None:
    for param in params.split(";"):
        name, _, raw = param.partition("=")
        if name.strip().lower() == "charset":
            return raw.strip().strip('"').lower()
    return None


def read_body(read: Callable[[int], bytes], content_length: int | None, limit: int) -> bytes:
    """Read at most ``limit`` bytes with ``read``; ``BodyTooLarge`` as soon as more arrive."""
    if content_length is not None and content_length > limit:
        raise BodyTooLarge(_too_large(limit))
    parts: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = read(min(_READ_CHUNK, limit + 1 - size))
        except BodyError:  # a caller's deadline (BodyTimedOut) raised inside the read
            raise
        except Exception as exc:
            # The server's own framing errors (gunicorn's InvalidChunkSize, NoMoreData, ...; a
            # chunked body that is malformed or ends early) are the client's fault: 400, not 5xx.
            raise MalformedBody(
                f"the request body could not be read ({type(exc).__name__})"
            ) from None
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(_too_large(limit))


def gunzip_bounded(data: bytes, limit: int) -> bytes:
    """Decompress gzip ``data`` (one or more members), never producing more than ``limit + 1``
    bytes: a gzip bomb is refused with ``BodyTooLarge`` before it is inflated."""
    out = bytearray()
    rest = data
    try:
        while rest:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            pending = rest
            while pending:
                # max_length is never 0 here (0 would mean unbounded): we raise before that.
                out += inflater.decompress(pending, limit + 1 - len(out))
                if len(out) > limit:
                    raise BodyTooLarge(_too_large(limit, decompressed=True))
                pending = inflater.unconsumed_tail
            if not inflater.eof:
                raise MalformedBody("the gzip body is truncated")
            rest = inflater.unused_data
    except zlib.error as exc:
        raise MalformedBody(f"the body is not valid gzip: {exc}") from None
    return bytes(out)


def decode_body(raw: bytes, gzipped: bool, limit: int) -> bytes:
    """The body as the sender signed it: decompressed when ``gzipped``, at most ``limit`` bytes."""
    return gunzip_bounded(raw, limit) if gzipped else raw


def _too_large(limit: int, decompressed: bool = False) -> str:
    what = "decompressed body" if decompressed else "body"
    return f"the {what} is larger than the limit of {limit} bytes"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# What json.loads(text, parse_constant=_reject_constant) uses, made once.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _too_deep(text: bytes, max_depth: int) -> bool:
    """Whether JSON ``text`` nests brackets deeper than ``max_depth``."""
    if text.count(b"{") + text.count(b"[") <= max_depth:
        return False  # the common case costs two counts and no scan
    depth = 0
    for match in _DEPTH_TOKENS.finditer(text):
        token = match.group()
        if token in (b"{", b"["):
            depth += 1
            if depth > max_depth:
                return True
        elif token in (b"}", b"]"):
            depth -= 1
    return False


def _plainly_utf8(body: bytes) -> bool:
    """Whether ``json.detect_encoding`` says UTF-8 for every part of ``body``: no NUL byte
    (UTF-16/32 without a BOM), and no byte of a BOM (``\xfe``, ``\xff`` never occur in UTF-8;
    ``\xef\xbb\xbf`` is UTF-8's own, which detect_encoding strips)."""
    return (
        b"\x00" not in body
        and b"\xfe" not in body
        and b"\xff" not in body
        and b"\xef\xbb\xbf" not in body
    )


def _loads(text: bytes, max_depth: int, where: str, utf8: bool = False) -> Any:
    """Decode one JSON document; ``utf8``: the caller found it plainly UTF-8 already."""
    # Depth is checked on the bytes first so that a nesting bomb is never handed to the parser.
    if _too_deep(text, max_depth):
        raise MalformedBody(f"{where} is nested deeper than {max_depth} levels")
    try:
        encoding = "utf-8" if utf8 else json.detect_encoding(text)
        # json.loads(text, parse_constant=...) would build a new decoder on every call.
        return _DECODER.decode(text.decode(encoding, "surrogatepass"))
    except RecursionError:
        raise MalformedBody(f"{where} is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise MalformedBody(f"{where} is not valid JSON: {_reason(exc)}") from None


def _reason(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    return str(exc)[:200]


def _as_event(value: Any, where: str) -> ParsedEvent:
    if not isinstance(value, dict):
        raise MalformedBody(f"{where} must be a JSON object, not {_json_type(value)}")
    try:
        text = canonical_text(value)
        canonical = text.encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        # Lone surrogates (\ud800) and numbers like 1e400 parse, but have no canonical form.
        raise MalformedBody(
            f"{where} holds a string that is not valid Unicode or a number out of range"
        ) from None
    return ParsedEvent(value, text, sha256_hex(canonical))


def _plain_events(lines: list[bytes], max_depth: int) -> list[ParsedEvent] | None:
    """The events of NDJSON ``lines`` already known to be UTF-8, when every line is a plain,
    valid, shallow JSON object; else None, and the careful path finds the line at fault.

    It skips what that path does for every line (the decoder's white-space and trailing-data
    checks, the depth scan, the round trip of the canonical text through bytes): a batch of
    1,000 events spends most of its web time here.
    """
    scan = _DECODER.scan_once  # type: ignore[attr-defined]
    events = []
    for line in lines:
        if line.count(b"{") + line.count(b"[") > max_depth:
            return None
        try:
            text = line.decode("utf-8", "surrogatepass").strip(" \t\r\n")  # JSON white space
            value, end = scan(text, 0)
            if end != len(text) or type(value) is not dict:
                return None
            canonical = canonical_text(value)
            digest = sha256_hex(canonical.encode("utf-8"))
        except (StopIteration, ValueError, UnicodeEncodeError, RecursionError):
            return None
        events.append(ParsedEvent(value, canonical, digest))
    return events


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def parse_event(body: bytes, max_depth: int) -> ParsedEvent:
    """Parse a single-event body: one JSON object no deeper than ``max_depth``."""
    return _as_event(_loads(body, max_depth, "the body"), "the event")


def parse_batch(body: bytes, kind: MediaKind, max_depth: int, max_events: int) -> list[ParsedEvent]:
    """Parse a batch body: NDJSON lines or a JSON array, each event an object.

    ``max_depth`` applies to each event (an array's own brackets do not count).
    """
    if kind == "ndjson":
        lines = [line for line in body.split(b"\n") if line.strip()]
        _check_count(len(lines), max_events)
        utf8 = _plainly_utf8(body)  # then so is every line: one check instead of one a line
        plain = _plain_events(lines, max_depth) if utf8 else None
        if plain is not None:
            return plain
        return [
            _as_event(_loads(line, max_depth, f"line {n}", utf8), f"line {n}")
            for n, line in enumerate(lines, 1)
        ]
    values = _loads(body, max_depth + 1, "the body")
    if not isinstance(values, list):
        raise MalformedBody("a JSON batch must be an array of event objects")
    _check_count(len(values), max_events)
    return [_as_event(value, f"event {i}") for i, value in enumerate(values)]


def _check_count(count: int, max_events: int) -> None:
    if count == 0:
        raise MalformedBody("the batch holds no events")
    if count > max_events:
        raise MalformedBody(
            f"the batch holds {count} events, more than the limit of {max_events}: split it"
        )


def parse_form(body: bytes) -> dict[str, str | list[str]]:
    """The fields of an ``application/x-www-form-urlencoded`` body (UTF-8) as a JSON object:
    a field's value, or the list of its values, in order, when the name repeats."""
    try:
        pairs = parse_qsl(
            body.decode("ascii"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=_MAX_FORM_FIELDS,
        )
    except UnicodeDecodeError:
        raise MalformedBody("the form body is not URL-encoded UTF-8") from None
    except ValueError:
        raise MalformedBody(f"the form body has more than {_MAX_FORM_FIELDS} fields") from None
    fields: dict[str, str | list[str]] = {}
    for name, value in pairs:
        found = fields.get(name)
        if found is None:
            fields[name] = value
        elif isinstance(found, list):
            found.append(value)
        else:
            fields[name] = [found, value]
    return fields


def parse_form_event(body: bytes) -> ParsedEvent:
    """A form body as one event: the JSON object of its fields, hashed as canonical JSON."""
    return _as_event(parse_form(body), "the form")
