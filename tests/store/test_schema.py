"""The schema through sqlite-utils: every table has an owner that names it."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from edged.store import events as store
from edged.store import schema


def test_every_table_has_an_owner_that_names_it(tmp_path: Path) -> None:
    db = store.open_database(tmp_path / "s.db")
    try:
        assert schema.unowned(db) == []
        assert set(schema.OWNERS) == set(schema.tables(db))
        for table, owner in schema.OWNERS.items():
            source = inspect.getsource(importlib.import_module(owner))
            assert f" {table} " in source or f" {table}\n" in source, (table, owner)
    finally:
        db.close()


def test_columns_and_indexes(tmp_path: Path) -> None:
    db = store.open_database(tmp_path / "s.db")
    try:
        assert {"id", "dedup_key", "received_at", "door_outcome"} <= set(
            schema.columns(db, "events")
        )
        found = {i.name: i for i in schema.indexes(db, "events")}
        assert found["events_passes"].partial and found["events_passes"].columns == [
            "person_id",
            "door",
            "id",
        ]
        assert found["sqlite_autoindex_events_1"].unique
    finally:
        db.close()


def test_a_table_without_an_owner_is_named(tmp_path: Path) -> None:
    db = store.open_database(tmp_path / "s.db")
    try:
        db.execute("CREATE TABLE scratch (x)")
        assert schema.unowned(db) == ["scratch"]
    finally:
        db.close()
