"""The compiled part of the build, ``ingest._speedups`` (``ingest/_speedups.c``, built by
``setup.py``), or None where it could not be built: no C compiler or no Python headers.

Every caller keeps a fallback that gives the same results with more CPU (numpy, polars-hash,
hashlib, a regex engine), so the package works either way.
"""

from __future__ import annotations

from types import ModuleType

__all__ = ["native"]

native: ModuleType | None
try:
    from ingest import _speedups as native
except ImportError:
    native = None
