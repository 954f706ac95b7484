"""Face files on a real folder: checked, named by content, written atomically, pruned."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from edged.access import faces
from edged.access.faces import FaceStore
from tests.conftest import face_jpeg


def test_check_names_each_problem() -> None:
    assert faces.check(face_jpeg()) is None
    assert faces.check(face_jpeg() + b"\x00\x00") is None  # zero padding after EOI
    assert faces.check(b"") == "the photo is empty"
    assert "no SOI" in (faces.check(b"\x89PNG\r\n\x1a\n....\xff\xd9") or "")
    assert "truncated" in (faces.check(face_jpeg()[:-2]) or "")
    big = b"\xff\xd8\xff" + b"x" * faces.MAX_BYTES + b"\xff\xd9"
    assert "more than the" in (faces.check(big) or "")


def test_put_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = FaceStore(tmp_path / "faces")
    photo = face_jpeg(1)
    name, new = store.put(photo)
    assert new and name == faces.digest(photo)
    assert store.path(name) == tmp_path / "faces" / name[:2] / f"{name}.jpg"
    assert store.read(name) == photo and store.size(name) == len(photo)
    assert store.put(photo) == (name, False)
    assert [p.name for p in store.path(name).parent.iterdir()] == [f"{name}.jpg"]  # no temp left
    with store.open(name) as stream:
        assert stream.read() == photo


def test_put_refuses_what_is_not_a_jpeg_and_writes_nothing(tmp_path: Path) -> None:
    store = FaceStore(tmp_path / "faces")
    with pytest.raises(ValueError, match="not a JPEG"):
        store.put(b"GIF89a....")
    assert list(store.names()) == []


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = FaceStore(tmp_path / "faces")
    photo = face_jpeg(2)
    folder = store.path(faces.digest(photo)).parent
    folder.mkdir(parents=True)
    os.chmod(folder, 0o500)  # root ignores the mode: then the write succeeds, which is fine too
    try:
        with contextlib.suppress(OSError):
            store.put(photo)
        assert [p for p in folder.iterdir() if p.name.startswith(".face-")] == []
    finally:
        os.chmod(folder, 0o700)


def test_prune_keeps_only_what_is_named(tmp_path: Path) -> None:
    store = FaceStore(tmp_path / "faces")
    kept, _ = store.put(face_jpeg(3))
    dropped, _ = store.put(face_jpeg(4))
    (tmp_path / "faces" / "README").write_text("not a face")
    assert store.prune({kept}) == 1
    assert store.has(kept) and not store.has(dropped)
    assert (tmp_path / "faces" / "README").exists()
    assert store.discard([dropped]) == 0


def test_a_name_that_is_not_a_digest_is_refused(tmp_path: Path) -> None:
    store = FaceStore(tmp_path / "faces")
    with pytest.raises(ValueError):
        store.path("../../etc/passwd")
    assert not faces.is_digest("A" * 64) and faces.is_digest("a" * 64)


def test_a_face_written_by_root_belongs_to_the_state_directorys_owner(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    if os.geteuid() == 0:
        os.chown(state, 4321, 4321)  # the daemon's account, as the package makes it
    store = FaceStore(state / "faces")
    name, _ = store.put(face_jpeg(6))
    info = store.path(name).stat()
    assert info.st_mode & 0o777 == 0o644
    expected = 4321 if os.geteuid() == 0 else os.geteuid()
    assert info.st_uid == expected and store.path(name).parent.stat().st_uid == expected
