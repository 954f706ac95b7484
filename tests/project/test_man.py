"""The man pages are generated from docs/ and stay complete and warning-free."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from edged import __version__, config
from edged.cli import main as cli
from tests.project.helpers import ROOT, cli_commands, config_keys


def mkman() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mkman", ROOT / "man" / "mkman.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("man")
    assert mkman().main(["mkman.py", str(out), __version__]) == 0
    return out


def plain(page: Path) -> str:
    return page.read_text().replace("\\-", "-").replace("\\fB", "").replace("\\fR", "")


def test_every_command_is_in_edged_8(pages: Path) -> None:
    text = plain(pages / "edged.8")
    assert text.startswith(".TH EDGED 8 ")
    missing = [c for c in cli_commands(cli.parser()) if c not in text]
    assert not missing


def test_every_key_is_in_edged_toml_5(pages: Path) -> None:
    text = plain(pages / "edged.toml.5")
    missing = [k for k in config_keys(config.Config) if f"\n{k}\n" not in text]
    assert not missing


def test_roff_specials_are_escaped() -> None:
    man = mkman()
    assert man.inline("`a-b` and *c*") == r"\fBa\-b\fR and \fIc\fR"
    assert man.line(".starts with a dot") == r"\&.starts with a dot"
    assert man.cells("| `a|b` | c |") == ["`a|b`", "c"]


@pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed")
@pytest.mark.parametrize("name", ["edged.8", "edged.toml.5"])
def test_man_reports_no_warnings(pages: Path, name: str) -> None:
    # The check lintian runs on every manual page it finds.
    env = {**os.environ, "LC_ALL": "C.UTF-8", "MANROFFSEQ": "", "MANWIDTH": "80"}
    result = subprocess.run(
        ["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", str(pages / name)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0 and result.stderr == ""
