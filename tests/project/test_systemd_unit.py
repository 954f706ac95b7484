"""systemd/edged.service says what the daemon relies on, and stays hardened."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from edged.errors import ConfigError
from tests.project.helpers import ROOT

UNIT = ROOT / "systemd" / "edged.service"


def directives() -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit (keys may repeat)."""
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_unit_matches_what_the_daemon_does() -> None:
    unit = directives()
    assert unit["Type"] == ["notify"]  # edged sends READY=1 (notify.py)
    assert unit["RestartPreventExitStatus"] == [str(ConfigError.exit_code)]
    assert unit["Restart"] == ["on-failure"]
    assert unit["WatchdogSec"] and unit["NotifyAccess"] == ["main"]
    assert unit["ExecStart"] == ["/usr/bin/edged run"]
    assert unit["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"  # server.run reloads on SIGHUP
    # A failing ExecStartPre= is not covered by RestartPreventExitStatus=: it must not fail.
    assert all(cmd.startswith("-") for cmd in unit["ExecStartPre"])
    assert unit["WorkingDirectory"] == ["%t/edged"] and unit["RuntimeDirectory"] == ["edged"]
    assert unit["SupplementaryGroups"] == ["gpio"] and unit["User"] == ["edged"]
    assert "PrivateDevices" not in unit and "PrivateUsers" not in unit  # would hide GPIO
    assert int(unit["TimeoutStopSec"][0].rstrip("s")) <= 10
    # the snapshot writer lowers its priority (store/snapwriter.py), after @resources is denied
    assert unit["SystemCallFilter"][-2:] == ["~@privileged @resources", "setpriority"]


def test_the_unit_parses_as_ini() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(UNIT.read_text())
    assert parser.sections() == ["Unit", "Service", "Install"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_exposure_is_at_most_2_5(tmp_path: Path) -> None:
    # --threshold is in tenths: the command fails when the exposure is above 2.5.
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=25", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    last = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0, last
    assert float(last.split("edged.service: ")[1].split()[0]) <= 2.5
