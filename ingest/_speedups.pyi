# Stub for the compiled ingest/_speedups.c. Buffers (data, starts, ends) are any C-contiguous
# buffer (starts and ends of native int64); numpy arrays are not typed as buffers on 3.11.
from typing import Any

BACKEND: str

def sha256_spans(
    data: Any,
    starts: Any,
    ends: Any,
    raw: bool,
    hex: bool,
    portable: bool = ...,
    /,
) -> tuple[bytes | None, bytes | None]: ...
def scan_lines(
    data: Any, quote: int, parity: int, keep_quotes: bool, /
) -> tuple[bytearray, bytearray, bytearray | None, int]: ...
def class_run(data: Any, offsets: Any, table: bytes, lo: int, hi: int, /) -> bytearray: ...
def short_keys(data: Any, offsets: Any, /) -> tuple[bytearray, bytes]: ...
