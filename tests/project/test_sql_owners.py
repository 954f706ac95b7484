"""Only edged/store/ and edged/access/ touch a SQLite connection (docs/development.md, "Who
touches SQLite"): everyone else asks them by a named function."""

from __future__ import annotations

import ast
from pathlib import Path

EDGED = Path(__file__).resolve().parents[2] / "edged"
OWNERS = ("store", "access")  # the subpackages that may execute SQL
CALLS = frozenset({"execute", "executemany", "executescript"})
ATTRIBUTES = frozenset({"conn"})  # a connection reached through another object (store.db.conn)


def offences(root: Path, owners: tuple[str, ...] = OWNERS) -> list[str]:
    """``path:line: what`` for each SQL call or connection reach outside the owners."""
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if relative.parts[0] in owners:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        hits = [
            (node.lineno, node.col_offset, node.attr)
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and (node.attr in CALLS or node.attr in ATTRIBUTES)
        ]
        found += [f"{relative}:{line}: .{attr}" for line, _, attr in sorted(hits)]
    return found


def test_only_the_store_and_the_access_package_touch_sqlite() -> None:
    assert offences(EDGED) == []


def test_the_check_sees_sql_and_connections_outside_the_owners(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "events.py").write_text("def f(c):\n    c.execute('SELECT 1')\n")
    (tmp_path / "access").mkdir()
    (tmp_path / "access" / "people.py").write_text("def f(db):\n    return db.conn\n")
    (tmp_path / "admin").mkdir()
    (tmp_path / "admin" / "app.py").write_text(
        "def f(store):\n"
        "    rows = store.db.conn.execute('SELECT 1')\n"
        "    store.reader.executemany('INSERT', [])\n"
        "    run = store.reader.executescript\n"
        "    return rows, run\n"
    )
    (tmp_path / "config.py").write_text("def f(conn):\n    conn.execute('SELECT 1')\n")
    (tmp_path / "model.py").write_text("def f(store):\n    return store.find('k', 0.0)\n")
    assert offences(tmp_path) == [
        "admin/app.py:2: .conn",
        "admin/app.py:2: .execute",
        "admin/app.py:3: .executemany",
        "admin/app.py:4: .executescript",
        "config.py:2: .execute",
    ]
