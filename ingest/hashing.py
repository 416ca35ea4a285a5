"""Content hashing: the SHA-256 identity of every record that enters IntelGraph."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["HASH_ALGORITHM", "canonical_json", "sha256_hex", "strip_line_terminator"]

HASH_ALGORITHM = "SHA-256"


def sha256_hex(content: bytes) -> str:
    """Return the lower-case hex SHA-256 of ``content``."""
    return hashlib.sha256(content).hexdigest()


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` as canonical JSON: keys sorted, no insignificant white space, UTF-8."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def strip_line_terminator(line: bytes) -> bytes:
    """Drop a trailing LF or CRLF, so that both line endings hash the same."""
    if line.endswith(b"\n"):
        line = line[:-1]
    if line.endswith(b"\r"):
        line = line[:-1]
    return line
