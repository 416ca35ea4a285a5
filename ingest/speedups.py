"""The compiled part of the build, ``ingest._speedups`` (``ingest/_speedups.c``, built by
``setup.py``), or None where it could not be built: no C compiler or no Python headers.

Every caller keeps a fallback that gives the same results with more CPU (numpy, polars-hash,
hashlib, a regex engine), so the package works either way.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # webhook processes import this module: numpy and pyarrow load on first use
    import numpy as np
    import pyarrow as pa

__all__ = ["native", "value_buffers"]

native: ModuleType | None
try:
    from ingest import _speedups as native
except ImportError:
    native = None


def value_buffers(values: pa.Array) -> tuple[Any, np.ndarray] | None:
    """A string or binary array's values buffer (``b""`` when it has none) and its n + 1
    value offsets as int64, the form the compiled functions take; None for other types."""
    import numpy as np
    import pyarrow as pa

    kind = values.type
    if pa.types.is_string(kind) or pa.types.is_binary(kind):
        width: type = np.int32
    elif pa.types.is_large_string(kind) or pa.types.is_large_binary(kind):
        width = np.int64
    else:
        return None
    buffers = values.buffers()
    window = slice(values.offset, values.offset + len(values) + 1)
    offsets = np.frombuffer(buffers[1], dtype=width)[window].astype(np.int64)
    return (buffers[2] if buffers[2] is not None else b""), offsets
