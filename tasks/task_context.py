"""The log fields a task run is known by: ids found in its arguments, and the request that led
to it (carried in a message header)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

__all__ = ["REQUEST_ID_HEADER", "task_log_fields"]

# A message header, readable in a worker as ``task.request.ingest_request_id``.
REQUEST_ID_HEADER = "ingest_request_id"
_MAX = 200
# Parameter names and payload keys that carry a correlation id, and the log field of each.
_PARAMETERS = {"import_id": "import_id", "entry_id": "dlq_entry_id"}
_PAYLOAD_KEYS = {"importId": "import_id", "source": "source", "batchId": "batch_id"}


@lru_cache(maxsize=256)
def _signature(run: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(run)
    except (TypeError, ValueError):
        return None


def _arguments(
    run: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    # Cached per function; a bound task's ``run`` is a method whose ``self`` is not in args.
    signature = _signature(getattr(run, "__func__", run))
    if signature is None:
        return dict(kwargs)
    params = list(signature.parameters.values())
    if hasattr(run, "__self__") and params:
        signature = signature.replace(parameters=params[1:])
    try:
        return dict(signature.bind_partial(*args, **kwargs).arguments)
    except TypeError:
        return dict(kwargs)


def task_log_fields(task: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, str]:
    """``import_id``, ``source``, ``batch_id``, ``dlq_entry_id`` as far as the arguments tell.

    A parameter named ``import_id`` counts, and so do ``importId``/``source``/``batchId`` keys of
    a dict argument (a range spec, a webhook batch payload).
    """
    fields: dict[str, str] = {}
    for name, value in _arguments(task.run, args, kwargs).items():
        if name in _PARAMETERS and isinstance(value, str):
            fields[_PARAMETERS[name]] = value[:_MAX]
        elif isinstance(value, Mapping):
            for key, field in _PAYLOAD_KEYS.items():
                found = value.get(key)
                if isinstance(found, str) and found:
                    fields.setdefault(field, found[:_MAX])
    return fields
