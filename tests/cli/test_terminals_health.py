"""A terminal's clock and settings as the daemon keeps them: admin API, /readyz, terminals show."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from edged import config
from edged.cli import main as cli
from edged.cli.terminals import clock_settings_lines
from tests.conftest import LiveDaemon
from tests.simfix import free_port, make_sim, managed_config

pytestmark = pytest.mark.anyio
EXTRA = """[site]
timezone = "Asia/Kolkata"
[terminal_clock]
mode = "manual"
[terminal_settings]
keep_door_open_duration = 10
"""


async def test_the_daemon_shows_clock_and_settings(
    tmp_path: Path,
    start_live: Callable[[config.Config], LiveDaemon],
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim = make_sim(tmp_path, skew=-45.0)
    await sim.start()
    try:
        cfg = managed_config(
            tmp_path / "state", sim, gateway_port=free_port(), admin_port=free_port(), extra=EXTRA
        )
        path = tmp_path / "edged.toml"
        path.write_text(config.to_toml(config.to_dict(cfg, mask=False)))
        live = await asyncio.to_thread(start_live, cfg)
        fresh = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=live.admin_url, limits=fresh) as admin:

            async def entry() -> dict[str, object]:
                listing = (await admin.get("/api/v1/terminals")).json()["terminals"]
                return dict(listing[0])

            for _ in range(250):
                if (await entry()).get("state") == "registered":
                    break
                await asyncio.sleep(0.02)
            shown = await entry()
            clock, settings = shown["clock"], shown["settings"]
            assert isinstance(clock, dict) and isinstance(settings, dict)
            assert clock["state"] == "in-step" and clock["sets"] == 1
            assert clock["time_zone"] == 5 and clock["zone_residual_minutes"] == 30
            assert isinstance(clock["measured_at"], str) and clock["measured_at"].endswith("Z")
            assert settings["state"] == "in-step" and settings["writes"] == 1
            ready = (await admin.get("/readyz")).json()
            assert ready["checks"]["terminal_clocks"]["ok"] is True
        assert sim.config.time_zone == 5 and abs(sim.config.skew) < 1.0
        code = await asyncio.to_thread(cli.main, ["terminals", "show", "lobby", "-c", str(path)])
        out = capsys.readouterr().out
        assert code == 0
        assert (
            "  clock:     in-step " in out and "zone UTC+5 (30 min behind the site), 1 set" in out
        )
        assert "  settings:  in-step, 1 kept, 1 written" in out
        assert "    drift:   keep_door_open_duration was 6, set 10" in out
    finally:
        await sim.stop()


def test_show_lines_for_a_drifting_clock_and_a_stopped_daemon() -> None:
    health = {
        "S1": {
            "clock": {
                "mode": "ntp",
                "state": "drifting",
                "drift": 21.5,
                "round_trip": 0.02,
                "max_drift": 15.0,
                "time_zone": 1,
                "sets": 0,
                "error": None,
            },
            "settings": {
                "state": "refused",
                "wanted": {"resign_interval": 5},
                "writes": 0,
                "error": "busy",
                "unsupported": ["resign_interval"],
            },
        }
    }
    assert clock_settings_lines(health, "S1") == [
        "  clock:     DRIFTING +21.500 s (round trip 0.02 s, alarm past 15 s), ntp, zone UTC+1, "
        "0 set",
        "  settings:  refused, 1 kept, 0 written; error: busy",
        "    unsupported by its firmware: resign_interval",
    ]
    assert clock_settings_lines(None, "S1") == [
        "  clock:     (the daemon is not running: not known)"
    ]
    assert clock_settings_lines({}, "S1") == [
        "  clock:     not managed (terminal_clock.mode = off)",
        "  settings:  none chosen",
    ]


def test_simulate_takes_a_clock_skew() -> None:
    from edged.cli import simulate as simulate_cli

    args = cli.parser().parse_args(["simulate", "--clock-skew", "-40", "--count", "2"])
    assert [s.skew for s in simulate_cli._settings_from_args(args)] == [-40.0, -40.0]
