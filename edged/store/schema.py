"""The schema as sqlite-utils sees it, and which module owns each table.

Introspection (tables, columns, indexes) goes through sqlite-utils, whose ``table_names()``,
``columns_dict`` and ``indexes`` read the same in 3.30 (bookworm) and 4.x. The schema itself is
created by edged/store/migrations.py (versioned scripts); writes stay raw statements
(docs/development.md, "Who touches SQLite").
"""

from __future__ import annotations

import sqlite_utils
from sqlite_utils.db import Index

# table -> the module whose functions read and write it (the only SQL on it outside this
# package's read-only commands, edged/store/readonly.py).
OWNERS: dict[str, str] = {
    "events": "edged.store.events",  # the durable hot path; its reads: store.queries
    "door_log": "edged.store.doorlog",
    "outbox": "edged.store.outbox",
    "terminals_seen": "edged.store.presence",
    "terminal_pins": "edged.store.presence",
    "refused_requests": "edged.store.presence",
    "terminal_trust": "edged.store.presence",
    "terminal_sync": "edged.store.presence",
    "people": "edged.access.people",
    "credentials": "edged.access.people",
    "person_groups": "edged.access.people",
    "groups": "edged.access.model",
    "schedules": "edged.access.model",
    "schedule_periods": "edged.access.model",
    "holidays": "edged.access.model",
    "doors": "edged.access.model",
    "permissions": "edged.access.model",
    "modes": "edged.access.modes",
    "mode_changes": "edged.access.modes",
    "people_sync": "edged.access.syncstate",
    "mqtt_cursor": "edged.store.mqttstate",
    "mqtt_nonces": "edged.store.mqttstate",
    "access_changes": "edged.access.doorpeople",
    "terminal_people": "edged.access.terminalstate",
    "terminal_people_sync": "edged.access.terminalstate",
}


def tables(db: sqlite_utils.Database) -> list[str]:
    """The tables the database holds, in creation order."""
    return db.table_names()


def columns(db: sqlite_utils.Database, table: str) -> dict[str, type]:
    """A table's columns and their Python types."""
    return db.table(table).columns_dict


def indexes(db: sqlite_utils.Database, table: str) -> list[Index]:
    """A table's indexes (name, unique, origin, partial, columns)."""
    return db.table(table).indexes


def unowned(db: sqlite_utils.Database) -> list[str]:
    """Tables no module owns (a migration added one without saying who writes it)."""
    return [name for name in tables(db) if name not in OWNERS]
