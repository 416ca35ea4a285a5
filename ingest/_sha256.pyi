# Stub for the compiled ingest/_sha256.c. data, starts and ends take any C-contiguous buffer
# (starts and ends of native int64); numpy arrays are not typed as buffers on Python 3.11.
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
