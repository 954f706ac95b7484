"""``edged web passwd|users|remove`` on a real accounts file."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

from edged import config
from edged.cli import main as cli
from edged.web import accounts


@pytest.fixture
def cfg_file(make_config: Callable[..., config.Config], tmp_path: Path) -> tuple[Path, Path]:
    cfg = make_config("\n[web]\nenabled = true\n")
    path = tmp_path / "edged.toml"
    path.write_text(config.to_toml(config.to_dict(cfg, mask=False)))
    return path, cfg.web.accounts_path(cfg.storage.state_dir)


def test_passwd_creates_changes_lists_and_removes(
    cfg_file: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conf, store = cfg_file
    monkeypatch.setattr("sys.stdin", io.StringIO("first password\n"))
    assert cli.main(["web", "passwd", "ann", "--password-stdin", "-c", str(conf)]) == 0
    assert capsys.readouterr().out == f"ann: created ({store})\n"
    assert accounts.Accounts(store).check("ann", "first password")
    monkeypatch.setattr("sys.stdin", io.StringIO("second password\n"))
    assert cli.main(["web", "passwd", "ann", "--password-stdin", "-c", str(conf)]) == 0
    assert "password changed" in capsys.readouterr().out
    assert accounts.Accounts(store).check("ann", "second password")
    assert cli.main(["web", "users", "-c", str(conf)]) == 0
    assert capsys.readouterr().out.startswith("ann ")
    assert cli.main(["web", "remove", "ann", "-c", str(conf)]) == 0
    assert cli.main(["web", "remove", "ann", "-c", str(conf)]) == 66
    assert "no web account 'ann'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "stdin", "says"),
    [
        (["ann", "--password-stdin"], "short\n", "at least 8 characters"),
        (["bad name", "--password-stdin"], "long enough\n", "is not an account name"),
        (["ann"], "long enough\n", "use --password-stdin"),  # no terminal to ask on
    ],
)
def test_passwd_usage_errors(
    cfg_file: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    stdin: str,
    says: str,
) -> None:
    conf, store = cfg_file
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert cli.main(["web", "passwd", *argv, "-c", str(conf)]) == 64
    assert says in capsys.readouterr().err
    assert not store.exists()
