"""The directory of prometheus-client's multiprocess mode for one process, prepared at its start.

Imports nothing from prometheus-client: start-up code (gunicorn's config) calls it before the
library is loaded, because the library reads ``PROMETHEUS_MULTIPROC_DIR`` when it is imported.
Each server gets a directory of its own below ``observability.metricsDir``
(``web-<port>``, ``worker-<port>``), so a web and a worker on one host neither wipe nor
double-count each other's files; without ``metricsDir`` a fresh temporary one is used.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ENV_VAR",
    "MetricsDir",
    "active_metrics_dir",
    "metrics_dir_for",
    "prepare_metrics_dir",
]

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricsDir:
    """A prepared multiprocess directory; ``temporary`` ones are removed by :meth:`cleanup`."""

    path: Path
    temporary: bool

    def activate(self) -> None:
        """Point prometheus-client (in this process and its future children) at the directory."""
        # prometheus-client's own contract: its value classes and collectors read this variable.
        os.environ[ENV_VAR] = str(self.path)

    def clear(self) -> None:
        """Delete files an earlier run left: their counters belong to processes that are gone,
        and keeping them would make a fresh start's counters jump."""
        for stale in self.path.glob("*.db"):
            stale.unlink(missing_ok=True)

    def cleanup(self) -> None:
        """Remove a temporary directory; a configured one is left for the next start to clear."""
        if self.temporary:
            shutil.rmtree(self.path, ignore_errors=True)


def metrics_dir_for(base: str | None, role: str) -> MetricsDir:
    """The directory for ``role`` (``web-8000``) below ``base`` (created), or a new temporary one.

    Nothing in it is deleted yet: a server clears it (:meth:`MetricsDir.clear`) once it knows
    the directory is its own, for example after binding its port.
    """
    if not base:
        return MetricsDir(Path(tempfile.mkdtemp(prefix=f"ingest-metrics-{role}-")), temporary=True)
    path = Path(base) / role
    path.mkdir(parents=True, exist_ok=True)
    return MetricsDir(path, temporary=False)


def prepare_metrics_dir(base: str | None, role: str) -> MetricsDir:
    """:func:`metrics_dir_for`, cleared of an earlier run's files."""
    found = metrics_dir_for(base, role)
    found.clear()
    log.debug("prometheus multiprocess directory %s", found.path)
    return found


def active_metrics_dir() -> str | None:
    """The multiprocess directory this process writes to, or None in single-process mode."""
    return os.environ.get(ENV_VAR) or None
