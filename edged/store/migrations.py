"""Versioned schema migrations, tracked in ``PRAGMA user_version``.

Add a new numbered entry to MIGRATIONS for every change; never edit one that has shipped. Each
runs in its own transaction together with the version bump, so a power cut leaves the old or the
new schema, never half of one. Statements are split on ';' (no triggers with bodies here).
"""

from __future__ import annotations

import sqlite3

# Page size of a new database. Every commit writes one WAL frame per b-tree page it touches: a
# record touches the events table's last leaf and its unique key's leaf, so smaller pages write
# fewer bytes per record (docs/performance.md, "SD card"). An existing database keeps its page
# size (changing it needs a VACUUM: docs/operations.md).
PAGE_SIZE = 2048

MIGRATIONS: dict[int, str] = {
    # records, terminals seen, the first people cache
    1: """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        dedup_key TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        push_type INTEGER,
        serial TEXT NOT NULL,
        terminal TEXT,
        uuid TEXT,
        occurred_at REAL,
        received_at REAL NOT NULL,
        user_id TEXT,
        user_name TEXT,
        person_id TEXT,
        recognition INTEGER,
        recognize_status INTEGER,
        score REAL,
        entry_mode INTEGER,
        terminal_pass INTEGER,
        alarm_code INTEGER,
        alarm_status INTEGER,
        trace_id TEXT,
        replayed INTEGER NOT NULL DEFAULT 0,
        replay_reason TEXT,
        decision TEXT,
        reason TEXT,
        rule TEXT,
        source TEXT,
        response TEXT NOT NULL,
        duplicates INTEGER NOT NULL DEFAULT 0,
        last_duplicate_at REAL,
        image_path TEXT,
        image_bytes INTEGER,
        raw TEXT NOT NULL
    );
    CREATE INDEX events_received_at ON events (received_at);
    CREATE INDEX events_serial ON events (serial, id);
    CREATE INDEX events_person ON events (person_id, id);
    CREATE INDEX events_decision ON events (decision, id);
    CREATE INDEX events_images ON events (id) WHERE image_path IS NOT NULL;

    CREATE TABLE terminals_seen (
        serial TEXT PRIMARY KEY,
        address TEXT,
        last_seen REAL,
        last_heartbeat REAL,
        last_push REAL
    );

    CREATE TABLE people (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        type TEXT NOT NULL DEFAULT 'employee',
        valid_from REAL,
        valid_until REAL,
        blocked INTEGER NOT NULL DEFAULT 0,
        notes TEXT NOT NULL DEFAULT '',
        updated_at REAL NOT NULL
    );
    CREATE TABLE credentials (
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        person_id TEXT NOT NULL REFERENCES people (id) ON DELETE CASCADE,
        PRIMARY KEY (kind, value)
    );
    CREATE INDEX credentials_person ON credentials (person_id);
    """,
    # access control: groups, schedules, holidays, door permissions and settings, modes
    2: """
    CREATE TABLE groups (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE person_groups (
        person_id TEXT NOT NULL REFERENCES people (id) ON DELETE CASCADE,
        group_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
        PRIMARY KEY (person_id, group_id)
    ) WITHOUT ROWID;
    CREATE INDEX person_groups_group ON person_groups (group_id);

    CREATE TABLE schedules (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE schedule_periods (
        id INTEGER PRIMARY KEY,
        schedule_id TEXT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
        day TEXT NOT NULL,
        start_min INTEGER NOT NULL,
        end_min INTEGER NOT NULL
    );
    CREATE INDEX schedule_periods_schedule ON schedule_periods (schedule_id);

    CREATE TABLE holidays (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL DEFAULT '',
        kind TEXT NOT NULL DEFAULT 'holiday',
        year INTEGER,
        month INTEGER NOT NULL,
        day INTEGER NOT NULL
    );
    CREATE INDEX holidays_date ON holidays (month, day);

    CREATE TABLE doors (
        name TEXT PRIMARY KEY,
        min_score REAL,
        min_liveness REAL,
        mask_required INTEGER NOT NULL DEFAULT 0,
        entry_modes TEXT,
        anti_passback INTEGER NOT NULL DEFAULT 0,
        unknown TEXT NOT NULL DEFAULT 'deny',
        lockdown_applies INTEGER NOT NULL DEFAULT 1,
        free_access_applies INTEGER NOT NULL DEFAULT 1,
        language TEXT
    );
    CREATE TABLE permissions (
        id INTEGER PRIMARY KEY,
        group_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
        door TEXT NOT NULL,
        schedule_id TEXT REFERENCES schedules (id) ON DELETE CASCADE
    );
    CREATE UNIQUE INDEX permissions_key ON permissions (door, group_id, IFNULL(schedule_id, ''));

    CREATE TABLE modes (
        scope TEXT PRIMARY KEY,
        lockdown INTEGER NOT NULL DEFAULT 0,
        override_group TEXT,
        free_access INTEGER NOT NULL DEFAULT 0,
        free_schedule TEXT,
        changed_at REAL,
        changed_by TEXT
    );
    CREATE TABLE mode_changes (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        by TEXT NOT NULL,
        scope TEXT NOT NULL,
        mode TEXT NOT NULL,
        state TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );

    ALTER TABLE events ADD COLUMN door TEXT;
    ALTER TABLE events ADD COLUMN explain TEXT;
    CREATE INDEX events_passes ON events (person_id, door, decision, id);
    """,
    # door audit log: every lock change, grant, egress, alarm, hold and manual command
    3: """
    CREATE TABLE door_log (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        door TEXT NOT NULL,
        action TEXT NOT NULL,
        source TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX door_log_door ON door_log (door, id);
    CREATE INDEX door_log_at ON door_log (at);
    """,
    # terminals: certificates an operator trusted; how far each terminal's history is covered
    4: """
    CREATE TABLE terminal_trust (
        serial TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        subject TEXT,
        trusted_at REAL NOT NULL
    );
    CREATE TABLE terminal_sync (
        serial TEXT PRIMARY KEY,
        synced_until REAL NOT NULL,
        registered_at REAL
    );
    """,
    # upstream: why a decision fell back to the cache, the forwarding cursor, people sync state
    5: """
    ALTER TABLE events ADD COLUMN upstream_error TEXT;
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        forwarded_up_to INTEGER NOT NULL DEFAULT 0,
        forwarded_at REAL,
        batches INTEGER NOT NULL DEFAULT 0,
        records INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO outbox (id) VALUES (1);
    CREATE TABLE people_sync (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        url TEXT,
        etag TEXT,
        last_modified TEXT,
        synced_at REAL,
        checked_at REAL,
        people INTEGER,
        last_error TEXT
    );
    INSERT INTO people_sync (id) VALUES (1);
    """,
    # Snapshots appended to segment files (edged/store/snapshots.py): the row names its segment
    # (image_path), the snapshot's offset in it and its size. NULL offset: a file of its own.
    # Segment names sort oldest first, so the segment index also finds the oldest snapshot.
    # Indexes that only serve decisions or known people become partial: a push (most records,
    # replayed by the 50,000) then updates five b-trees instead of eight.
    6: """
    ALTER TABLE events ADD COLUMN image_offset INTEGER;
    DROP INDEX events_images;
    CREATE INDEX events_image_segment ON events (image_path) WHERE image_path IS NOT NULL;
    DROP INDEX events_person;
    CREATE INDEX events_person ON events (person_id, id) WHERE person_id IS NOT NULL;
    DROP INDEX events_decision;
    CREATE INDEX events_decision ON events (decision, id) WHERE decision IS NOT NULL;
    DROP INDEX events_passes;
    CREATE INDEX events_passes ON events (person_id, door, id) WHERE decision = 'pass';
    """,
    # Source binding (receive/binding.py): the address a receive-only terminal is pinned to, and
    # requests refused because they named a terminal from another address. A terminal already
    # seen keeps the address it was last seen from as its pin.
    7: """
    CREATE TABLE terminal_pins (
        serial TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        pinned_at REAL NOT NULL,
        how TEXT NOT NULL
    );
    CREATE INDEX terminal_pins_address ON terminal_pins (address);
    INSERT INTO terminal_pins (serial, address, pinned_at, how)
        SELECT serial, address, last_seen, 'upgrade' FROM terminals_seen
        WHERE address IS NOT NULL AND address != '';
    CREATE TABLE refused_requests (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        source TEXT NOT NULL,
        serial TEXT NOT NULL,
        terminal TEXT,
        path TEXT NOT NULL,
        bound TEXT NOT NULL,
        body TEXT
    );
    CREATE INDEX refused_requests_at ON refused_requests (at);
    """,
    # The door's outcome of a granted record ("unlocked", "refused: lockdown"): doors/control.py.
    8: """
    ALTER TABLE events ADD COLUMN door_outcome TEXT;
    """,
    # Malformed records (a terminal's record that failed validation, receive/receiver.py): their
    # count and the newest one are shown by /readyz and `edged status` on every call.
    9: """
    CREATE INDEX events_malformed ON events (id) WHERE kind = 'malformed';
    """,
    # Kind to an SD card: a record updates two b-trees (the table and its unique key), not four.
    # Retention deletes in arrival order (ids) and needs no index on received_at; a filter by
    # serial reads ids in order from its cursor and stops when its page is full.
    10: """
    DROP INDEX events_received_at;
    DROP INDEX events_serial;
    """,
    # MQTT (edged/mqtt/): the highest event id the broker acknowledged (PUBACK), as the upstream
    # outbox's cursor; and the command nonces already accepted (never accepted twice).
    11: """
    CREATE TABLE mqtt_cursor (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        published_up_to INTEGER NOT NULL DEFAULT 0,
        published_at REAL,
        records INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO mqtt_cursor (id, published_up_to) VALUES (1, 0);
    CREATE TABLE mqtt_nonces (
        nonce TEXT PRIMARY KEY,
        at REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # Faces (access/faces.py): the SHA-256 of a person's photo, kept as a file under
    # state_dir/faces; NULL: no face on file.
    12: """
    ALTER TABLE people ADD COLUMN face TEXT;
    """,
    # People on the terminals (terminals/peoplesync.py): a counter every change of the access
    # model bumps (so the daemon sees an import made by another process); what was written to
    # each terminal, item by item, with its per-person error; each terminal's last sync.
    13: """
    CREATE TABLE access_changes (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO access_changes (id) VALUES (1);
    CREATE TABLE terminal_people (
        serial TEXT NOT NULL,
        kind TEXT NOT NULL,
        item_id TEXT NOT NULL,
        person_id TEXT,
        sent TEXT,
        update_at INTEGER,
        state TEXT NOT NULL,
        error TEXT,
        at REAL NOT NULL,
        PRIMARY KEY (serial, kind, item_id)
    );
    CREATE INDEX terminal_people_person ON terminal_people (person_id)
        WHERE person_id IS NOT NULL;
    CREATE TABLE terminal_people_sync (
        serial TEXT PRIMARY KEY,
        synced_at REAL,
        checked_at REAL,
        desired INTEGER,
        in_step INTEGER,
        errors INTEGER,
        written INTEGER,
        progress TEXT,
        last_error TEXT,
        limits TEXT
    );
    """,
}


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version the database is at."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to the newest schema; returns the version reached."""
    version = schema_version(conn)
    newest = max(MIGRATIONS)
    if version > newest:
        raise sqlite3.DatabaseError(
            f"schema version {version} is newer than this edged knows ({newest}): "
            "was the database written by a newer release?"
        )
    for number in sorted(n for n in MIGRATIONS if n > version):
        script = MIGRATIONS[number]
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except sqlite3.Error:
            conn.execute("ROLLBACK")
            raise
    return newest


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
