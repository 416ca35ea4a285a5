"""Label values held to bounded sets: configured names, status codes, reasons, task names."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from ingest.observability.metrics.families import (
    _REASON_BY_STATUS,
    Reason,
)

# -- label values ----------------------------------------------------------------------------
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_TASK = re.compile(r"^(ingest|celery)\.[A-Za-z0-9_.]{1,80}$")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNKNOWN, OTHER = "unknown", "other"
_known_sources: frozenset[str] | None = None
# The configured names that are valid labels: the answer for them needs no pattern match.
_known_labels: frozenset[str] = frozenset()
# Labelled children by metric and label values. prometheus-client keeps them as well, but
# every ``labels()`` call validates its arguments and takes a lock first, and the web process
# makes several per request. Label values come from closed sets, so this stays small.
_children: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}


def _child(metric: MetricWrapperBase, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once per distinct set of values."""
    key = (metric, labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


def set_known_sources(names: Iterable[str] | None) -> None:
    """Name the configured webhook sources; any other name is labelled ``unknown``."""
    global _known_sources, _known_labels
    _known_sources = None if names is None else frozenset(names)
    _known_labels = frozenset(n for n in _known_sources or () if _NAME.match(n))


def source_label(name: str | None) -> str:
    """A configured source's name, else ``unknown`` (a URL must not mint new series)."""
    if name in _known_labels:
        return name
    if not name or not _NAME.match(name):
        return UNKNOWN
    if _known_sources is not None and name not in _known_sources:
        return UNKNOWN
    return name


def status_label(status: int | str) -> str:
    """An HTTP status code as a label value; anything that is not one is ``other``."""
    try:
        code = int(status)
    except (TypeError, ValueError):
        return OTHER
    return str(code) if 100 <= code <= 599 else OTHER


def reason_for_status(status: int) -> Reason:
    """The reason a webhook status code stands for when no finer one was given."""
    return _REASON_BY_STATUS.get(status, Reason.OTHER)


def _reason_label(reason: str | None, status: int) -> str:
    if reason is None:
        return reason_for_status(status).value
    if isinstance(reason, Reason):
        return reason.value
    try:
        return Reason(reason).value
    except ValueError:
        return Reason.OTHER.value


def _name_label(name: str | None) -> str:
    return name if name and _NAME.match(name) else OTHER


def _task_label(name: str | None) -> str:
    return name if name and _TASK.match(name) else OTHER


@lru_cache(maxsize=512)  # endpoint names are the app's routes: a small, fixed set
def endpoint_label(endpoint: str | None) -> str:
    """A Flask endpoint name (bounded by the routes); ``unmatched`` when no route matched."""
    return _name_label(endpoint) if endpoint else "unmatched"
