"""``GET /metrics``: Prometheus metrics of edged's own, read from the live state at scrape time.

One collector (:class:`EdgedCollector`) in a registry of edged's own (never the process-wide
default one) turns what the parts already keep into metric families when Prometheus scrapes:
the receiver's counters and answer-time histograms, the store's commit histograms and queue, the
doors' and terminals' ``status()`` / ``report()``, the outbox and the upstream breaker. Nothing
is counted twice, and no part below the admin room imports prometheus_client. The scrape runs on
the event loop, where that state lives; it reads memory, and two short indexed SQL reads (the
site's modes; the outbox's depth when forwarding).

The list of metrics and what they mean is in docs/web.md ("Prometheus metrics").
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from edged import __version__
from edged.access import terminalstate
from edged.doors.control import Doors
from edged.histogram import Histogram
from edged.receive.receiver import Receiver
from edged.store import readonly
from edged.store.events import Store
from edged.terminals.reconciler import Reconcilers
from edged.upstream.feature import Upstream

# A terminal is "up" when edged heard from it (push or heartbeat) this recently, or its
# reconciler's last call succeeded this recently.
UP_WITHIN = 90.0
REGISTERED = ("confirmed", "asserted")


class Sources(Protocol):
    """What the collector reads: the admin state (edged/admin/app.py, ``Admin``)."""

    store: Store
    receiver: Receiver
    doors: Doors | None
    upstream: Upstream | None
    reconcilers: Reconcilers | None


def _histogram(name: str, doc: str, labels: list[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, labels=labels)


def _add_histogram(family: HistogramMetricFamily, values: list[str], hist: Histogram) -> None:
    family.add_metric(values, hist.cumulative(), hist.sum)


class EdgedCollector:
    """Every edged metric, built from the live state when collected."""

    def __init__(self, sources: Sources, clock: Any = time.time) -> None:
        self.sources = sources
        self.clock = clock

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration: the families are built per scrape

    def collect(self) -> Iterator[Metric]:
        yield from self._build()
        yield from self._receiver()
        yield from self._store()
        yield from self._terminals()
        yield from self._doors()
        yield from self._upstream()

    def _build(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("edged_build_info", "edged's version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info

    def _receiver(self) -> Iterator[Metric]:
        stats = self.sources.receiver.stats
        requests = CounterMetricFamily(
            "edged_requests",
            "Terminals' requests answered, by path and HTTP status.",
            labels=["path", "status"],
        )
        for (path, status), count in sorted(stats.requests.items()):
            requests.add_metric([path, str(status)], count)
        yield requests
        seconds = _histogram(
            "edged_request_duration_seconds",
            "Time from a terminal's request to edged's answer (auth: remote-auth; push: records).",
            ["path"],
        )
        for path, hist in sorted(stats.seconds.items()):
            _add_histogram(seconds, [path], hist)
        yield seconds
        rejected = CounterMetricFamily(
            "edged_rejected_requests", "Requests refused, by why.", labels=["reason"]
        )
        for reason, count in sorted(stats.rejected.items()):
            rejected.add_metric([reason], count)
        yield rejected
        decisions = CounterMetricFamily(
            "edged_decisions",
            "Remote-auth decisions stored, by decision and reason.",
            labels=["decision", "reason"],
        )
        for (decision, reason), count in sorted(stats.decisions.items()):
            decisions.add_metric([decision, reason], count)
        yield decisions
        records = CounterMetricFamily(
            "edged_records", "First copies of records stored, by kind.", labels=["kind"]
        )
        for kind, count in sorted(stats.answered.items()):
            if kind not in ("duplicate", "heartbeat"):
                records.add_metric([kind], count)
        yield records
        yield CounterMetricFamily(
            "edged_duplicates",
            "Records answered from their first copy (duplicates).",
            value=stats.answered.get("duplicate", 0),
        )
        yield CounterMetricFamily(
            "edged_replayed_records",
            "Records stored as replays (never open a door).",
            value=stats.replayed,
        )
        yield CounterMetricFamily(
            "edged_malformed_records",
            "Malformed records stored and flagged.",
            value=stats.answered.get("malformed", 0),
        )

    def _store(self) -> Iterator[Metric]:
        store = self.sources.store
        stats = store.stats
        commit = _histogram(
            "edged_store_commit_duration_seconds", "Time one group commit of records took.", []
        )
        _add_histogram(commit, [], stats.commit_seconds)
        yield commit
        batch = _histogram(
            "edged_store_commit_records", "Records in one group commit (batch size).", []
        )
        _add_histogram(batch, [], stats.batch_records)
        yield batch
        yield CounterMetricFamily(
            "edged_store_commits", "Group commits of records.", value=stats.commits
        )
        yield GaugeMetricFamily(
            "edged_store_queue_items",
            "Work queued for the store's writer.",
            value=stats.pending_items,
        )
        yield GaugeMetricFamily(
            "edged_store_queue_bytes",
            "Bytes queued for the store's writer.",
            value=stats.pending_bytes,
        )
        yield GaugeMetricFamily(
            "edged_store_healthy",
            "1 while the writer runs and its last commit succeeded.",
            value=int(store.healthy()),
        )
        yield GaugeMetricFamily(
            "edged_snapshots_bytes", "Bytes of snapshots kept.", value=stats.images_bytes
        )
        yield CounterMetricFamily(
            "edged_snapshots_failed",
            "Snapshots the snapshot writer could not write.",
            value=stats.images_failed,
        )
        yield CounterMetricFamily(
            "edged_snapshots_pruned",
            "Snapshots pruned to stay within the byte budget.",
            value=stats.images_pruned,
        )

    def _terminals(self) -> Iterator[Metric]:
        src = self.sources
        now = self.clock()
        health = src.reconcilers.health() if src.reconcilers is not None else {}
        configured = {t.serial: t.name for t in src.receiver.cfg.terminals}
        serials = list(configured) + [s for s in src.receiver.seen if s not in configured]
        labels = ["terminal", "serial"]
        up = GaugeMetricFamily(
            "edged_terminal_up",
            f"1 when the terminal was heard from or reached within {UP_WITHIN:.0f} s.",
            labels=labels,
        )
        seen_age = GaugeMetricFamily(
            "edged_terminal_last_seen_seconds",
            "Seconds since the terminal's last push or heartbeat (absent: never heard from).",
            labels=labels,
        )
        registered = GaugeMetricFamily(
            "edged_terminal_registered",
            "1 when edged's push target and remote auth are "
            "confirmed or asserted on the terminal (managed terminals only).",
            labels=labels,
        )
        drift = GaugeMetricFamily(
            "edged_terminal_clock_drift_seconds",
            "The terminal's clock minus the gateway's, as its reconciler last measured it.",
            labels=labels,
        )
        in_step = GaugeMetricFamily(
            "edged_terminal_people_in_step",
            "1 when the terminal holds the people edged holds, as its people sync last checked.",
            labels=labels,
        )
        for serial in serials:
            name = configured.get(serial) or serial
            values = [name, serial]
            seen = src.receiver.seen.get(serial)
            report = health.get(serial) or {}
            heard = seen.last_seen if seen is not None and seen.last_seen else None
            last_ok = report.get("last_ok")
            recent = [t for t in (heard, last_ok) if t]
            up.add_metric(values, int(bool(recent) and now - max(recent) <= UP_WITHIN))
            if heard:
                seen_age.add_metric(values, round(max(0.0, now - heard), 3))
            if serial in health:
                registered.add_metric(values, int(report.get("registration") in REGISTERED))
            value = _number(report.get("clock") or {}, "drift")
            if value is not None:
                drift.add_metric(values, value)
            synced = terminalstate.summary(src.store.reader, serial)
            if synced is not None and synced.get("desired") is not None:
                whole = not synced.get("errors") and synced.get("in_step") == synced["desired"]
                in_step.add_metric(values, int(whole and not synced.get("last_error")))
        yield from (up, seen_age, registered, drift, in_step)

    def _doors(self) -> Iterator[Metric]:
        site = self.sources.doors
        modes = readonly.site_modes(self.sources.store.reader)
        yield GaugeMetricFamily(
            "edged_site_lockdown",
            "1 while a site-wide lockdown is on.",
            value=int(modes["lockdown"] or bool(site and site.lockdown)),
        )
        yield GaugeMetricFamily(
            "edged_site_free_access",
            "1 while site-wide free access is on.",
            value=int(modes["free_access"]),
        )
        if site is None:
            return
        status = site.status()
        yield GaugeMetricFamily(
            "edged_fire", "1 while the fire input is active.", value=int(bool(status["fire"]))
        )
        yield GaugeMetricFamily(
            "edged_siren", "1 while the siren sounds.", value=int(bool(status["siren"]))
        )
        locked = GaugeMetricFamily(
            "edged_door_locked", "1 while the door's lock is locked.", labels=["door"]
        )
        open_ = GaugeMetricFamily(
            "edged_door_open",
            "1 while the door's contact reads open (absent: no contact).",
            labels=["door"],
        )
        alarm = GaugeMetricFamily(
            "edged_door_alarm",
            "1 for each alarm raised on a door, by kind (held_open, forced, a terminal's).",
            labels=["door", "kind"],
        )
        for door in status["doors"]:
            locked.add_metric([door["name"]], int(bool(door["locked"])))
            if door["contact"] is not None:
                open_.add_metric([door["name"]], int(door["contact"] == "open"))
            for kind in sorted({a["kind"] for a in door["alarms"]}):
                alarm.add_metric([door["name"], kind], 1)
        yield from (locked, open_, alarm)

    def _upstream(self) -> Iterator[Metric]:
        up = self.sources.upstream
        if up is None:
            return
        decisions = up.authority.status()
        yield GaugeMetricFamily(
            "edged_upstream_breaker_open",
            "1 while the upstream's breaker is open (decisions from the cache only).",
            value=int(decisions["breaker"] == "open"),
        )
        yield GaugeMetricFamily(
            "edged_upstream_consecutive_failures",
            "Upstream calls failed in a row.",
            value=decisions["consecutive_failures"],
        )
        if up.forwarder is None:
            return
        box = up.forwarder.status(self.clock())
        yield GaugeMetricFamily(
            "edged_outbox_records",
            "Stored records not yet acknowledged by the upstream.",
            value=box["depth"],
        )
        yield GaugeMetricFamily(
            "edged_outbox_oldest_age_seconds",
            "Age of the oldest record not yet forwarded (0: none waiting).",
            value=box["age_seconds"],
        )
        yield GaugeMetricFamily(
            "edged_outbox_up",
            "1 while the forwarder reaches the upstream.",
            value=int(box["state"] == "up"),
        )


def _number(report: dict[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = report.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def registry(sources: Sources) -> CollectorRegistry:
    """A registry of edged's own holding its one collector."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(EdgedCollector(sources))  # type: ignore[arg-type]
    return reg


def endpoint(reg: CollectorRegistry) -> Any:
    """The ``/metrics`` handler: the text format, built on the loop from the live state."""

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(reg), headers={"content-type": CONTENT_TYPE_LATEST})

    return metrics
