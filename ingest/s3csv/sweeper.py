"""The ledger sweeper: sends again what lost its lease, and brings every import to an end.

One pass looks at every active import:

- a range or scan whose lease ran out without a result is claimed (one Lua step, so of
  several sweepers exactly one wins) and dispatched again. A range still only ``planned``
  (its message never reached a worker) is sent again only once the whole import has been
  idle for a lease: while other ranges of it start, its message is most likely just queued;
- when every dispatched range has its result, the next chunk is dispatched, or the import
  is closed ``succeeded``/``failed`` — whether or not a chord callback ran;
- an import with no progress at all for ``s3csv.stallTimeout``, or whose range has waited
  that long for room in a full DLQ with no range finishing, ends ``failed``: every range
  still without a result is credited as failed and dead-lettered (``ingest dlq retry``
  finishes it), so no import stays ``running``. A range that completes later still counts
  and turns the import ``succeeded`` (see ``ImportStore.recover_range``).

Dispatching is given in as callables, so this module knows no task framework.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from ingest.dlq import DeadLetterQueue, DeadLetterQueueFull, entry_id_for, task_entry
from ingest.errors import PermanentError
from ingest.observability.metrics import observe_import_closed_by_sweeper, observe_redispatch
from ingest.s3csv.imports import ImportStatus, ImportStore, RangeSummary
from ingest.s3csv.ledger import SCAN, ImportLedger

__all__ = ["LedgerSweeper", "SweepReport", "stall_entry_id"]

log = logging.getLogger(__name__)
FINAL_STATUSES = ("succeeded", "failed")


def stall_entry_id(import_id: str, range_id: str) -> str:
    """The DLQ id of a range the stall bound gave up on (removed if the range completes)."""
    return entry_id_for("task", f"stall-{import_id}-{range_id}")


@dataclass
class SweepReport:
    redispatched: list[str] = field(default_factory=list)
    closed: dict[str, str] = field(default_factory=dict)
    chunks: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class LedgerSweeper:
    """One sweep over the ledger; every step is safe with other sweepers running at once."""

    ledger: ImportLedger
    store: ImportStore
    dlq: DeadLetterQueue
    dispatch_range: Callable[[dict[str, Any]], None]
    dispatch_scan: Callable[[str], None]
    dispatch_chunk: Callable[[str, int], bool]
    chunk_size: int
    stall_timeout: float

    def sweep(self) -> SweepReport:
        report = SweepReport()
        for import_id in self.ledger.active():
            try:
                self.sweep_import(import_id, report)
            except redis.RedisError:
                raise  # Redis is away: the whole pass waits for the next one
            except Exception:  # one broken import must not stop the others
                log.exception("ledger sweep of import %s failed", import_id)
        return report

    def sweep_import(self, import_id: str, report: SweepReport) -> None:
        state = self.store.get(import_id)
        if state is None or state["status"] in FINAL_STATUSES:
            self.ledger.forget(import_id)
            return
        now = self.ledger.clock()
        idle = self.ledger.idle_seconds(import_id, now)
        blocked = self.ledger.blocked_seconds(import_id, now)
        if idle >= self.stall_timeout or blocked >= self.stall_timeout:
            self._give_up(import_id, state, idle, report, blocked)
            return
        for member in self.ledger.due(import_id, now):
            self._redispatch(import_id, member, idle, now, report)
        if state["status"] == "running" and self.ledger.outstanding(import_id) == 0:
            self._advance(import_id, state, report)

    # -- leases that ran out -------------------------------------------------------------------
    def _redispatch(
        self, import_id: str, member: str, idle: float, now: float, report: SweepReport
    ) -> None:
        waiting = member != SCAN and self.ledger.state(import_id, member) == "planned"
        if waiting and idle < self.ledger.lease_seconds:
            return  # the import is moving: this message is most likely still queued
        if not self.ledger.claim(import_id, member, now):
            return  # another sweeper took it, or a worker leased it meanwhile
        if member == SCAN:
            self.dispatch_scan(import_id)
            observe_redispatch("scan")
        else:
            spec = self.ledger.spec(import_id, member)
            if spec is None:
                return
            self.dispatch_range(json.loads(spec))
            observe_redispatch("range")
        report.redispatched.append(f"{import_id}/{member}")
        log.warning("import %s: %s had no result within its lease; sent again", import_id, member)

    # -- every dispatched range has its result -----------------------------------------------------
    def _advance(self, import_id: str, state: dict[str, Any], report: SweepReport) -> None:
        total = state["ranges"]["total"]
        chunks = -(-total // self.chunk_size)
        for chunk in range(chunks):
            marker = f"{self.ledger.plan_key(import_id)}:dispatched:{chunk}"
            if not self.store.client.exists(marker):
                # The chord callback that should have started this chunk never ran.
                if self.dispatch_chunk(import_id, chunk):
                    report.chunks.append((import_id, chunk))
                return
        # Re-read: a range may have been credited after ``state`` was taken.
        fresh = self.store.get(import_id) or state
        ranges = fresh["ranges"]
        if ranges["done"] + ranges["failed"] < total:
            return  # a result is settled in the ledger but not credited yet; next pass
        failed = bool(ranges["failed"]) or bool(fresh.get("planErrors"))
        status: ImportStatus = "failed" if failed else "succeeded"
        if self.store.finish_if_running(import_id, status):
            observe_import_closed_by_sweeper(status, "completed")
            report.closed[import_id] = status
            log.warning("import %s closed %s by the ledger sweeper", import_id, status)
        self.ledger.forget(import_id)

    # -- the stall bound -------------------------------------------------------------------------
    def _give_up(
        self,
        import_id: str,
        state: dict[str, Any],
        idle: float,
        report: SweepReport,
        blocked: float = 0.0,
    ) -> None:
        # One sweeper at a time; one that dies midway leaves the claim to expire and the
        # next repeats the (idempotent) steps.
        claim = f"{self.store.namespace}:{import_id}:stall-claim"
        if not self.store.client.set(claim, 1, nx=True, ex=max(30, int(self.stall_timeout))):
            return
        bound = f"s3csv.stallTimeout {self.stall_timeout:.0f} s"
        if blocked >= self.stall_timeout:
            reason = f"waiting {blocked:.0f} s for room in the full DLQ ({bound})"
        else:
            reason = f"no progress for {idle:.0f} s ({bound})"
        if state["status"] == "queued":
            self._dead_letter_scan(import_id, state, reason)
        else:
            self._dead_letter_ranges(import_id, reason)
        if self.store.finish_if_running(import_id, "failed"):
            observe_import_closed_by_sweeper("failed", "stalled")
            report.closed[import_id] = "failed"
            log.error("import %s failed: %s", import_id, reason)
        self.ledger.forget(import_id)

    def _dead_letter(self, import_id: str, exc: Exception, entry: Any) -> None:
        """Dead-letter what the stall bound gave up on; with the DLQ full, say so in the
        import's errors instead (the waiting task still holds the work, and completes the
        import when it finally runs)."""
        try:
            self.dlq.add(entry)
        except DeadLetterQueueFull as full:
            self.store.add_error(import_id, f"{exc}; not dead-lettered: {full}")

    def _dead_letter_scan(self, import_id: str, state: dict[str, Any], reason: str) -> None:
        exc = PermanentError(f"the scan of {state['uri']} did not finish: {reason}")
        self._dead_letter(
            import_id,
            exc,
            task_entry(
                task_name="ingest.s3.scan",
                task_id=f"stall-{import_id}",
                args=[import_id],
                kwargs={},
                exc=exc,
                source=state["uri"],
                import_id=import_id,
            ),
        )
        self.store.add_error(import_id, str(exc))

    def _dead_letter_ranges(self, import_id: str, reason: str) -> None:
        states = self.ledger.states(import_id)
        for raw in self.ledger.planned_specs(import_id):
            spec = json.loads(raw)
            range_id = spec["rangeId"]
            if states.get(range_id) in ("done", "failed"):
                continue
            where = f"s3://{spec['bucket']}/{spec['key']} bytes {spec['start']}-{spec['end']}"
            exc = PermanentError(f"{where}: no result: {reason}")
            self._dead_letter(
                import_id,
                exc,
                task_entry(
                    task_name="ingest.s3.range",
                    task_id=f"stall-{import_id}-{range_id}",
                    args=[spec],
                    kwargs={},
                    exc=exc,
                    source=f"s3://{spec['bucket']}/{spec['key']}",
                    import_id=import_id,
                    extra={"rangeId": range_id},
                ),
            )
            summary = RangeSummary(rangeId=range_id, failed=True, error=str(exc))
            self.store.credit_range(import_id, summary)
            self.ledger.settle(import_id, range_id, failed=True)
