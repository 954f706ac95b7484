"""Records to the broker from a durable cursor, and the retained states, in one thread.

The records leave as the upstream outbox's do (edged/upstream/outbox.py): in id order after the
cursor ``mqtt_cursor.published_up_to`` (edged/store/mqttstate.py), each at ``mqtt.qos`` on
``<prefix>/records`` with its key. Up to ``mqtt.window`` records are in flight; the cursor moves
to the last record of the unbroken run the broker acknowledged (PUBACK at QoS 1, PUBCOMP at
QoS 2), written through the store's writer a few times a second. After a reconnect the records
after the acknowledged run are sent again, in order: a record may arrive twice, with the same
key, and none is lost. A broker outage, a restart or a power cut resends what was not
acknowledged.

The thread has its own read connection and never touches the event loop: a listener's wake-up is
a ``threading.Event``; the loop hands the states in with :meth:`Publisher.retain`.
"""

from __future__ import annotations

import base64
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edged import config
from edged.errors import EdgedError
from edged.mqtt import payloads
from edged.mqtt.link import Link
from edged.store import events as store
from edged.store import mqttstate, snapshots
from edged.store.events import Store

log = logging.getLogger(__name__)

COMMIT_INTERVAL = 0.2  # s between cursor writes while records flow
IDLE_WAIT = 1.0  # s between looks at the events table when nothing woke the thread
READBACK = 2.0  # s the retained discovery entries are read back after a connect
READ_BATCH = 500
DOOR_KINDS = ("auth", "recognition", "alarm")  # records that are a door's events


class Publisher:
    """The publishing thread: records after the cursor, retained states, discovery clean-up."""

    def __init__(
        self,
        cfg: config.Config,
        store: Store,
        link: Link,
        topics: payloads.Topics,
        readback: str | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.mq = cfg.mqtt
        self.store = store
        self.link = link
        self.topics = topics
        self.readback = readback  # the discovery wildcard to clean up after, or None
        self.now = now
        self.wake = link.changed
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._retained: dict[str, bytes] = {}
        self._dirty: set[str] = set()
        self._wanted_discovery: set[str] = set()
        self._seen_discovery: set[str] = set()
        self._readback_until: float | None = None
        self._generation = 0
        self._inflight: deque[tuple[int, Any]] = deque()
        self.acked = 0  # the end of the run the broker acknowledged
        self.sent = 0  # the last record handed to paho
        self.committed = 0  # the cursor as last written
        self._uncommitted = 0
        self._last_commit = 0.0
        self.published = 0  # records acknowledged since start
        self.last_error: str | None = None
        self._conn: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None

    # ----- the loop's side --------------------------------------------------------------------

    def retain(self, topic: str, payload: bytes) -> None:
        """Keep ``topic`` at ``payload`` (retained); sent when it changed, again at reconnect."""
        with self._lock:
            if self._retained.get(topic) == payload:
                return
            self._retained[topic] = payload
            self._dirty.add(topic)
        self.wake.set()

    def discovery(self, wanted: dict[str, bytes]) -> None:
        """The discovery entries wanted now: new ones retained, dropped ones removed."""
        with self._lock:
            for topic in self._wanted_discovery - set(wanted):
                self._retained[topic] = b""
                self._dirty.add(topic)
            self._wanted_discovery = set(wanted)
        for topic, payload in wanted.items():
            self.retain(topic, payload)

    def saw_discovery(self, topic: str, payload: bytes) -> None:
        """A retained discovery entry read back from the broker (paho's thread)."""
        if payload:
            with self._lock:
                self._seen_discovery.add(topic)

    def notify(self) -> None:
        """A record was stored: look at once."""
        self.wake.set()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edged-mqtt", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        """End the thread, writing the cursor the broker acknowledged last."""
        self.stopping.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # ----- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._conn = store.connect(self.store.path)
            self.acked = self.sent = self.committed = mqttstate.cursor(self._conn)
        except (sqlite3.Error, EdgedError) as exc:
            log.error("mqtt: cannot read the publishing cursor; nothing is published: %s", exc)
            return
        try:
            while not self.stopping.is_set():
                self.wake.clear()  # a wake-up during the round is kept for the next
                try:
                    busy = self._step()
                except (sqlite3.Error, EdgedError, OSError) as exc:
                    if self.last_error is None:  # once until it works again
                        log.error("mqtt: cannot read the records (will try again): %s", exc)
                    self.last_error = str(exc)
                    self.stopping.wait(IDLE_WAIT)
                    continue
                if self.last_error is not None:
                    log.info("mqtt: reading the records again")
                    self.last_error = None
                if not busy:
                    connected = self.link.connected.is_set()
                    self.wake.wait(0.02 if self._inflight and connected else IDLE_WAIT)
        except Exception:  # a bug: say so; the records stay behind the cursor
            log.exception("mqtt: the publisher stopped")
        finally:
            self._collect()
            self._commit(force=True)
            self._conn.close()

    def _step(self) -> bool:
        """One round; True when something moved (look again at once)."""
        if not self.link.connected.is_set():
            self._collect()  # acknowledged just before the drop
            self._commit(force=True)
            return False
        if self.link.generation != self._generation:
            self._reconnected()
        moved = self._collect()
        moved = self._send_retained() or moved
        moved = self._fill() or moved
        moved = self._collect() or moved
        self._commit()
        self._clean_discovery()
        return moved

    def _reconnected(self) -> None:
        """A new connection: states again, records again from the acknowledged run."""
        self._generation = self.link.generation
        self._inflight.clear()
        self.sent = self.acked
        with self._lock:  # (the read-back set is not cleared: paho may already be filling it)
            self._dirty = set(self._retained)
        if self.readback is not None:
            self._readback_until = self.now() + READBACK

    def _send_retained(self) -> bool:
        with self._lock:
            dirty = [(t, self._retained[t]) for t in sorted(self._dirty)]
            self._dirty.clear()
        failed = []
        for topic, payload in dirty:
            info = self.link.publish(topic, payload, 1, retain=True)
            if info.rc != 0:
                failed.append(topic)
        if failed:
            with self._lock:
                self._dirty.update(failed)
        return bool(dirty)

    def _fill(self) -> bool:
        room = self.mq.window - len(self._inflight)
        if room < min(READ_BATCH, self.mq.window) // 2:
            return False  # read in batches: one query for many records
        assert self._conn is not None
        rows = mqttstate.after(self._conn, payloads.COLUMNS, self.sent, min(room, READ_BATCH))
        if not rows:
            return False
        if self.mq.include_images and any(r["image_path"] for r in rows):
            self.store.sync_files(5.0)  # snapshot files follow their commit by a moment
        gateway = self.topics.gateway
        qos = self.mq.qos
        for row in rows:
            message = payloads.record(row, gateway, self._image(row))
            info = self.link.publish(self.topics.records, payloads.dumps(message), qos)
            if info.rc != 0:  # the link dropped under us: wait for the reconnect
                return False
            self._inflight.append((int(row["id"]), info))
            self.sent = int(row["id"])
            self._door_topics(message)
        return True

    def _door_topics(self, message: dict[str, Any]) -> None:
        """A live record at a door: its event (HA event entity); an access is also the door's
        last access (retained)."""
        door = message["door"]
        if not door or message["replayed"] or message["kind"] not in DOOR_KINDS:
            return
        event = payloads.dumps(payloads.door_event(message))
        self.link.publish(self.topics.door(door, "event"), event, 1)
        if message["kind"] == "alarm":
            return
        last = payloads.dumps(payloads.last_access(message))
        with self._lock:
            self._retained[self.topics.door(door, "last_access")] = last
        self.link.publish(self.topics.door(door, "last_access"), last, 1, retain=True)

    def _image(self, row: sqlite3.Row) -> str | None:
        if not self.mq.include_images or not row["image_path"]:
            return None
        data = snapshots.read(
            Path(self.cfg.storage.images_path),
            row["image_path"],
            row["image_offset"],
            row["image_bytes"],
        )
        return base64.b64encode(data).decode("ascii") if data is not None else None

    def _collect(self) -> bool:
        """Move ``acked`` over the unbroken run of acknowledged records."""
        moved = False
        while self._inflight and self._inflight[0][1].is_published():
            event_id, _ = self._inflight.popleft()
            self.acked = event_id
            self._uncommitted += 1
            self.published += 1
            moved = True
        return moved

    def _commit(self, force: bool = False) -> None:
        if self.acked <= self.committed:
            return
        now = self.now()
        if not force and self._inflight and now - self._last_commit < COMMIT_INTERVAL:
            return
        up_to, count, at = self.acked, self._uncommitted, time.time()
        try:
            self.store.submit_nowait(lambda c: mqttstate.advance(c, up_to, count, at))
        except EdgedError as exc:  # the store is busy or stopping: the cursor moves next time
            log.debug("mqtt: cursor not written yet: %s", exc)
            return
        self.committed, self._uncommitted, self._last_commit = up_to, 0, now

    def _clean_discovery(self) -> None:
        """After the read-back: remove this gateway's entries the configuration lost."""
        if self._readback_until is None or self.now() < self._readback_until:
            return
        self._readback_until = None
        with self._lock:
            stale = sorted(self._seen_discovery - self._wanted_discovery)
            self._seen_discovery.clear()
        for topic in stale:
            log.info("mqtt: removing the Home Assistant entry %s (not configured)", topic)
            self.link.publish(topic, b"", 1, retain=True)
        if self.readback is not None:
            self.link.client.unsubscribe(self.readback)

    def status(self) -> dict[str, Any]:
        """For /readyz: the link, the acknowledged run, what is in flight."""
        return {
            "connected": self.link.connected.is_set(),
            "publisher_alive": self._thread is not None and self._thread.is_alive(),
            "broker": self.link.address,
            "acknowledged_up_to": self.acked,
            "in_flight": len(self._inflight),
            "published": self.published,
            "last_error": self.link.last_error or self.last_error,
        }
