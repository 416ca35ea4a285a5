"""CSV schemas and row validation: named pandera ``DataFrameSchema`` objects, from YAML/JSON files
or Python, that turn an all-text Arrow table from the CSV reader into typed rows and rejections.

Discovery (``SchemaRegistry.load``): the ``.yaml``/``.yml``/``.json`` files of the bundled
``schemas`` package (found with ``importlib.resources``, so it works installed), each named by
its file stem, and the Python schemas of that package (``SCHEMA`` in ``schemas/<name>.py`` or a
``SCHEMAS`` dict, see ``schemas/__init__.py``) form one layer, where a name defined twice is a
``SchemaLoadError``; the files of ``extra_dir`` (``INGEST_SCHEMAS_DIR``) then override bundled
schemas of the same name, with a warning in the log. JSON Schema documents (``$schema`` or
``properties`` without ``columns``) in a directory are skipped: webhook event schemas may live
beside CSV schemas. Any other unreadable or invalid file is a ``SchemaLoadError`` naming it.

Options live in the pandera schema's ``metadata["ingest"]``: ``version`` (text, default "1"),
``unknownColumns`` (``strict`` | ``filter`` | ``passthrough``; default ``filter``, or
``strict`` when the pandera schema says ``strict: true``), ``observedAtColumn``, ``keyFields``
(overrides the configured dedup key fields) and ``datetimeFormats`` (column -> strptime format;
without one a datetime column takes ISO 8601). Unknown keys are refused at load.

Validation (``CsvSchema.validate``) renames the header by ``mapping`` (CSV name -> column name;
names not in it are kept, entries naming no header column are ignored), then resolves it:
duplicate names, missing required columns, columns out of order (pandera ``ordered``) and, under
``strict``, undeclared columns are header errors that reject every row with ``header_error``
as reason (for example "unknown columns: x, y"), since they are properties of the whole object
or range, not of a row. ``filter`` drops undeclared columns; ``passthrough`` keeps them as text
after the declared ones. Empty strings and nulls are missing values. Each column is converted
to its dtype with vectorised Arrow/pandas code; a present value that does not convert rejects
its row ("column 'score': value 'abc' is not a float64") and that row is not checked further.
The remaining rows go through pandera with ``lazy=True`` and no coercion (dtypes pandera does
not know how to convert here, such as ``category`` or ``date``, are the exception and are
coerced by pandera, slowly). A failure case with a row index rejects that row; one without an
index (a table-wide check) rejects every row that reached pandera, since no row can be blamed
alone: note that uniqueness and table-wide checks only see one validated table (one range).
``ValidationResult.valid`` is indexed by row position in the input table.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ingest.schemas.names import SchemaNames
from ingest.schemas.options import (
    DEFAULT_UNKNOWN_COLUMNS,
    IngestOptions,
    SchemaLoadError,
    UnknownColumns,
)

if TYPE_CHECKING:
    from ingest.schemas.model import CsvSchema
    from ingest.schemas.registry import SchemaRegistry, UnknownSchemaError, load_schema_file
    from ingest.schemas.result import RowRejection, ValidationResult

__all__ = [
    "DEFAULT_UNKNOWN_COLUMNS",
    "CsvSchema",
    "IngestOptions",
    "RowRejection",
    "SchemaLoadError",
    "SchemaNames",
    "SchemaRegistry",
    "UnknownColumns",
    "UnknownSchemaError",
    "ValidationResult",
    "load_schema_file",
]

# Loaded on first use: they need pandera, pandas and pyarrow, which a process that only knows
# schema names (the web) never loads.
_LAZY = {
    "CsvSchema": "ingest.schemas.model",
    "SchemaRegistry": "ingest.schemas.registry",
    "UnknownSchemaError": "ingest.schemas.registry",
    "load_schema_file": "ingest.schemas.registry",
    "RowRejection": "ingest.schemas.result",
    "ValidationResult": "ingest.schemas.result",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
