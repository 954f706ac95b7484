"""People imports on a real SQLite file: documents, error reports, atomic --replace, order."""

from __future__ import annotations

import json
import random
import sqlite3
import tempfile
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.access import lookup, people
from edged.decide import policy
from edged.errors import ImportFileError
from edged.model import Event, Kind, User
from edged.store import events as store

UTC = ZoneInfo("UTC")


@pytest.fixture
def conn(tmp_path: Path) -> Any:
    db = store.open_database(tmp_path / "edged.db")
    yield db.conn
    db.conn.close()


def doc(**sections: Any) -> people.Document:
    return people.parse_document(sections, UTC)


def count(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def test_csv_with_groups_column(conn: sqlite3.Connection, tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("id,name,groups,ic_number\ne-1,Ann,staff|night,1001|1002\ne-2,Bob,,\n")
    result = people.apply_document(conn, people.load_file(path, UTC), replace=False)
    assert result["people"].added == ["e-1", "e-2"]
    assert lookup.groups_of(conn, "e-1") == {"staff", "night"}
    assert lookup.groups_of(conn, "e-2") == frozenset()
    assert count(conn, "groups") == 2 and count(conn, "credentials") == 4  # + two user_ids


def test_bad_csv_reports_every_row_with_its_line(conn: sqlite3.Connection, tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text(
        "id,name,type,valid_from,groups\n"
        "e-1,Ann,employee,,staff\n"
        ",Nameless,employee,,\n"
        "e-3,Cy,alien,,\n"
        "e-4,Di,visitor,someday,\n"
        "e-5,Ed,visitor,,bad group!\n"
        "e-1,Ann again,,,\n"
    )
    with pytest.raises(ImportFileError) as exc:
        people.load_file(path, UTC)
    problems = exc.value.problems
    assert [p.split(":")[0] for p in problems] == [
        "line 3",
        "line 4",
        "line 5",
        "line 6",
        "line 7",
    ]
    assert count(conn, "people") == 0


def test_json_document_errors_carry_file_lines(tmp_path: Path) -> None:
    text = json.dumps(
        {
            "groups": [{"id": "staff"}],
            "schedules": [
                {"id": "office", "periods": [{"days": ["mon"], "start": "08:00", "end": "18:00"}]},
                {"id": "broken", "periods": [{"days": ["moonday"], "start": "25:00", "end": "x"}]},
            ],
            "holidays": [{"name": "X", "date": "13-45"}],
            "doors": [{"name": "lobby", "unknown": "maybe", "entry_modes": [0]}],
            "permissions": [{"group": "staff"}],
        },
        indent=1,
    )
    path = tmp_path / "site.json"
    path.write_text(text)
    with pytest.raises(ImportFileError) as exc:
        people.load_file(path, UTC)
    lines = text.splitlines()
    for problem in exc.value.problems:
        number = int(problem.split(":")[0].removeprefix("line "))
        assert lines[number - 1].strip().startswith("{"), problem
    text_all = "\n".join(exc.value.problems)
    for needle in ("25:00", "13-45", "maybe", "entry_modes", "door: required"):
        assert needle in text_all


def test_permission_needs_a_defined_schedule(conn: sqlite3.Connection) -> None:
    bad = doc(permissions=[{"group": "staff", "door": "lobby", "schedule": "nope"}])
    with pytest.raises(ImportFileError, match="schedule 'nope' is not defined"):
        people.apply_document(conn, bad, replace=False)
    assert count(conn, "permissions") == 0


def test_replace_is_atomic(conn: sqlite3.Connection) -> None:
    people.apply_document(
        conn,
        doc(people=[{"id": "a", "name": "A", "ic_number": "1"}, {"id": "b", "name": "B"}]),
        replace=False,
    )
    before = conn.execute("SELECT * FROM people ORDER BY id").fetchall()
    # "c" takes a credential of "a", and "d" repeats it: the whole replace must fail
    clash = doc(
        people=[{"id": "c", "name": "C", "ic_number": "9"}, {"id": "d", "name": "D"}],
        groups=[{"id": "g"}],
    )
    clash.people[1].credentials.append(("ic", "9"))  # type: ignore[index]
    with pytest.raises(ImportFileError, match="refused the change: UNIQUE constraint failed"):
        people.apply_document(conn, clash, replace=True)
    assert conn.execute("SELECT * FROM people ORDER BY id").fetchall() == before
    assert count(conn, "groups") == 0
    assert not conn.in_transaction
    result = people.apply_document(conn, doc(people=[{"id": "c", "name": "C"}]), replace=True)
    assert result["people"].removed == ["a", "b"] and count(conn, "people") == 1


def test_dry_run_changes_nothing(conn: sqlite3.Connection) -> None:
    result = people.apply_document(
        conn, doc(people=[{"id": "a", "name": "A"}], groups=[{"id": "g"}]), False, dry_run=True
    )
    assert result["people"].added == ["a"] and result["groups"].added == ["g"]
    assert count(conn, "people") == 0 and count(conn, "groups") == 0


def test_compat_functions_keep_their_signatures(conn: sqlite3.Connection) -> None:
    rows = people.parse_records([(1, {"id": "a", "name": "A", "job_number": "J1"})], UTC)
    first = people.apply(conn, rows, replace=False)
    again = people.apply(conn, rows, replace=False)
    assert first.added == ["a"] and again.unchanged == ["a"]


def test_export_round_trips(conn: sqlite3.Connection, tmp_path: Path) -> None:
    source = {
        "people": [
            {"id": "a", "name": "A", "groups": ["g"], "valid_until": "2030-01-31", "qr": ["Q"]}
        ],
        "schedules": [
            {"id": "s", "periods": [{"days": ["sat"], "start": "22:00", "end": "02:00"}]}
        ],
        "holidays": [{"name": "NY", "date": "01-01"}, {"name": "Once", "date": "2027-05-05"}],
        "doors": [{"name": "lobby", "anti_passback": 10, "entry_modes": [1]}],
        "permissions": [{"group": "g", "door": "lobby", "schedule": "s"}],
    }
    people.apply_document(conn, people.parse_document(source, UTC), replace=False)
    exported = people.export(conn, UTC)
    path = tmp_path / "export.json"
    path.write_text(json.dumps(exported))
    db2 = store.open_database(tmp_path / "copy.db")
    people.apply_document(db2.conn, people.load_file(path, UTC), replace=True)
    assert people.export(db2.conn, UTC) == exported
    db2.conn.close()


# ----- a decision never depends on the order rows were imported ----------------------------

GROUPS = ["g1", "g2", "g3"]
person_rows = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.sampled_from(["p1", "p2", "p3", "p4"]),
            "name": st.just("N"),
            "blocked": st.booleans(),
            "groups": st.lists(st.sampled_from(GROUPS), unique=True),
        }
    ),
    unique_by=lambda r: r["id"],
    min_size=1,
)
permission_rows = st.lists(
    st.fixed_dictionaries(
        {
            "group": st.sampled_from(GROUPS),
            "door": st.sampled_from(["d1", "d2"]),
            "schedule": st.sampled_from([None, "day", "night"]),
        }
    ),
    unique_by=lambda r: (r["group"], r["door"], r["schedule"]),
)
SCHEDULES = [
    {"id": "day", "periods": [{"days": ["mon", "tue"], "start": "08:00", "end": "18:00"}]},
    {"id": "night", "periods": [{"days": ["mon"], "start": "22:00", "end": "06:00"}]},
]


def _decisions(path: Path, sections: dict[str, Any], times: list[float]) -> list[Any]:
    db = store.open_database(path)
    people.apply_document(db.conn, people.parse_document(sections, UTC), replace=False)
    out = []
    for pid in ("p1", "p2", "p3", "p4"):
        event = Event(Kind.AUTH, "S", "k", user=User(user_id=pid), firmware="old")
        for door in ("d1", "d2"):
            for now in times:
                settings_, view = lookup.load(db.conn, event, door, now, UTC)
                d = policy.decide(event, settings_, view, now)
                out.append((pid, door, now, d.granted, d.reason, d.rule, d.steps))
    db.conn.close()
    return out


@settings(max_examples=25, deadline=None)
@given(person_rows, permission_rows, st.integers(0, 2**32))
def test_decisions_do_not_depend_on_import_order(
    rows: list[dict[str, Any]], perms: list[dict[str, Any]], seed: int
) -> None:
    rnd = random.Random(seed)
    times = [1767600000.0 + h * 3600 for h in (0, 9, 23, 30)]  # Monday 5 Jan 2026 and on
    first = {"people": rows, "permissions": perms, "schedules": SCHEDULES}
    shuffled = {
        "schedules": rnd.sample(SCHEDULES, len(SCHEDULES)),
        "permissions": rnd.sample(perms, len(perms)),
        "people": [
            {**r, "groups": rnd.sample(r["groups"], len(r["groups"]))}
            for r in rnd.sample(rows, len(rows))
        ],
    }
    with tempfile.TemporaryDirectory() as tmp:
        a = _decisions(Path(tmp) / "a.db", first, times)
        b = _decisions(Path(tmp) / "b.db", shuffled, times)
    assert a == b


def test_a_second_import_reports_what_really_changed(conn: sqlite3.Connection) -> None:
    site: dict[str, Any] = {
        "groups": [{"id": "g", "name": "G"}],
        "schedules": [{"id": "s", "periods": [{"days": "mon", "start": "08:00", "end": "09:00"}]}],
        "holidays": [{"name": "NY", "date": "01-01"}],
        "doors": [{"name": "lobby", "min_score": 1, "entry_modes": [3, 1]}],
        "permissions": [{"group": "g", "door": "lobby", "schedule": "s"}],
    }
    people.apply_document(conn, people.parse_document(site, UTC), replace=False)
    again = people.apply_document(conn, people.parse_document(site, UTC), replace=False)
    assert all(r.unchanged and not (r.added or r.updated) for r in again.values())
    site["doors"][0]["anti_passback"] = 30
    site["holidays"].append({"date": "2027-05-05"})
    changed = people.apply_document(conn, people.parse_document(site, UTC), replace=True)
    assert changed["doors"].updated == ["lobby"]
    assert changed["holidays"].added == ["2027-05-05 holiday"]
    assert changed["holidays"].unchanged == ["01-01 holiday"]


# ----- faces --------------------------------------------------------------------------------


def _faces(tmp_path: Path) -> Any:
    from edged.access.faces import FaceStore

    return FaceStore(tmp_path / "state" / "faces")


def _face_of(conn: sqlite3.Connection, pid: str) -> Any:
    return conn.execute("SELECT face FROM people WHERE id = ?", (pid,)).fetchone()[0]


def test_faces_from_csv_paths_and_json_base64(conn: sqlite3.Connection, tmp_path: Path) -> None:
    import base64

    from edged.access import faces as facefiles
    from tests.conftest import face_jpeg

    store = _faces(tmp_path)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "ann.jpg").write_bytes(face_jpeg(1))
    path = tmp_path / "people.csv"
    path.write_text("id,name,face\ne-1,Ann,photos/ann.jpg\ne-2,Bob,\n")
    people.apply_document(conn, people.load_file(path, UTC), replace=False, faces=store)
    assert _face_of(conn, "e-1") == facefiles.digest(face_jpeg(1))
    assert _face_of(conn, "e-2") is None
    assert store.read(_face_of(conn, "e-1")) == face_jpeg(1)
    sent = {"id": "e-2", "name": "Bob", "face_base64": base64.b64encode(face_jpeg(2)).decode()}
    result = people.apply_document(conn, doc(people=[sent]), replace=False, faces=store)
    assert result["people"].updated == ["e-2"]
    assert store.read(_face_of(conn, "e-2")) == face_jpeg(2)
    again = people.apply_document(conn, doc(people=[sent]), replace=False, faces=store)
    assert again["people"].unchanged == ["e-2"]
    shown = people.show(conn, "e-2", UTC, store)
    assert shown is not None
    assert shown["face"] == {
        "sha256": facefiles.digest(face_jpeg(2)),
        "bytes": len(face_jpeg(2)),
        "on_file": True,
    }
    assert [p["face"] for p in people.listing(conn)] == [True, True]


def test_a_bad_face_is_reported_with_its_line_and_nothing_is_written(
    conn: sqlite3.Connection, tmp_path: Path
) -> None:
    from tests.conftest import face_jpeg

    store = _faces(tmp_path)
    (tmp_path / "good.jpg").write_bytes(face_jpeg(1))
    (tmp_path / "cut.jpg").write_bytes(face_jpeg(2)[:-2])
    (tmp_path / "big.jpg").write_bytes(b"\xff\xd8\xff" + b"x" * (2 * 1024 * 1024) + b"\xff\xd9")
    path = tmp_path / "people.csv"
    path.write_text(
        "id,name,face\ne-1,Ann,good.jpg\ne-2,Bob,cut.jpg\ne-3,Cy,missing.jpg\ne-4,Di,big.jpg\n"
    )
    with pytest.raises(ImportFileError) as caught:
        people.apply_document(conn, people.load_file(path, UTC), replace=False, faces=store)
    problems = caught.value.problems
    assert problems[0].startswith("line 3: face: cut.jpg: not a whole JPEG")
    assert problems[1].startswith("line 4: face: cannot read missing.jpg")
    assert problems[2].startswith("line 5: face: big.jpg:") and "more than the" in problems[2]
    assert count(conn, "people") == 0 and list(store.names()) == []
    bad = {"id": "e-5", "name": "Ed", "face_base64": "not base64!"}
    with pytest.raises(ImportFileError, match="face_base64: not valid base64"):
        doc(people=[bad])
    both = {"id": "e-5", "name": "Ed", "face": "a.jpg", "face_base64": "AAAA"}
    with pytest.raises(ImportFileError, match="not both"):
        doc(people=[both])
    with pytest.raises(ImportFileError, match="only from an import file"):
        doc(people=[{"id": "e-5", "name": "Ed", "face": "/etc/passwd"}])


def test_a_failed_transaction_removes_the_faces_it_wrote(
    conn: sqlite3.Connection, tmp_path: Path
) -> None:
    import base64

    from tests.conftest import face_jpeg

    store = _faces(tmp_path)
    people.apply_document(
        conn, doc(people=[{"id": "e-1", "name": "Ann", "ic_number": "77"}]), False, faces=store
    )
    clash = {  # the card belongs to e-1, who is not in this import: refused inside the transaction
        "id": "e-2",
        "name": "Bob",
        "ic_number": "77",
        "face_base64": base64.b64encode(face_jpeg(9)).decode(),
    }
    with pytest.raises(ImportFileError, match="belongs to person"):
        people.apply_document(conn, doc(people=[clash]), replace=False, faces=store)
    assert list(store.names()) == [] and count(conn, "people") == 1
    clash["ic_number"] = "78"
    people.apply_document(conn, doc(people=[clash]), replace=False, dry_run=True, faces=store)
    assert list(store.names()) == []  # a dry run keeps no photo


def test_a_face_is_replaced_cleared_and_removed_with_its_person(
    conn: sqlite3.Connection, tmp_path: Path
) -> None:
    import base64

    from tests.conftest import face_jpeg

    store = _faces(tmp_path)

    def person(pid: str, seed: int | None) -> dict[str, Any]:
        photo = None if seed is None else base64.b64encode(face_jpeg(seed)).decode()
        return {"id": pid, "name": pid, "face_base64": photo}

    people.apply_document(conn, doc(people=[person("a", 1), person("b", 1)]), False, faces=store)
    assert len(list(store.names())) == 1  # one photo, two people: one file
    people.apply_document(conn, doc(people=[person("a", 2)]), False, faces=store)
    assert len(list(store.names())) == 2  # b still names the first
    people.apply_document(conn, doc(people=[{"id": "a", "name": "a"}]), False, faces=store)
    assert store.read(_face_of(conn, "a")) == face_jpeg(2)  # no face key: left as it is
    people.remove(conn, ["b"], faces=store)
    assert list(store.names()) == [_face_of(conn, "a")]
    people.apply_document(conn, doc(people=[person("a", None)]), False, faces=store)
    assert _face_of(conn, "a") is None and list(store.names()) == []
    people.apply_document(conn, doc(people=[person("c", 3)]), False, faces=store)
    people.apply_document(conn, doc(people=[person("d", None)]), replace=True, faces=store)
    assert list(store.names()) == []  # c went with the replace, and her photo with her


def test_export_and_reimport_give_back_the_same_faces(
    conn: sqlite3.Connection, tmp_path: Path
) -> None:
    import base64

    from tests.conftest import face_jpeg

    store = _faces(tmp_path)
    sent = [
        {"id": "a", "name": "A", "face_base64": base64.b64encode(face_jpeg(1)).decode()},
        {"id": "b", "name": "B"},
    ]
    people.apply_document(conn, doc(people=sent), False, faces=store)
    exported = people.export(conn, UTC, store)
    assert exported["people"][0]["face_base64"] == sent[0]["face_base64"]
    assert exported["people"][1]["face_base64"] is None
    other = store_db(tmp_path / "copy")
    copy = _faces(tmp_path / "copy")
    people.apply_document(
        other, people.parse_document(json.loads(json.dumps(exported)), UTC), False, faces=copy
    )
    assert people.export(other, UTC, copy) == exported
    csv_out = io_text()
    people.export_csv(conn, UTC, csv_out, store)
    (tmp_path / "people.csv").write_text(csv_out.getvalue())
    third = store_db(tmp_path / "third")
    people.apply_document(
        third,
        people.load_file(tmp_path / "people.csv", UTC),
        False,
        faces=_faces(tmp_path / "third"),
    )
    assert people.export(third, UTC, _faces(tmp_path / "third"))["people"] == exported["people"]


def test_faces_are_refused_where_no_face_store_is_given(conn: sqlite3.Connection) -> None:
    import base64

    from tests.conftest import face_jpeg

    sent = {"id": "a", "name": "A", "face_base64": base64.b64encode(face_jpeg(1)).decode()}
    with pytest.raises(ImportFileError, match="faces are not accepted here"):
        people.apply_document(conn, doc(people=[sent]), False)


def store_db(folder: Path) -> sqlite3.Connection:
    folder.mkdir(parents=True, exist_ok=True)
    return store.open_database(folder / "edged.db").conn


def io_text() -> Any:
    import io

    return io.StringIO()
