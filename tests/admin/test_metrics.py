"""GET /metrics on a live daemon with a door on MockFactory: values from the live state, and
``promtool check metrics`` on the exposition."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from gpiozero.pins.mock import MockFactory
from prometheus_client.parser import text_string_to_metric_families

from edged.config import Config
from edged.histogram import Histogram
from tests.conftest import LiveDaemon, auth_request, recognition
from tests.doorfix import (
    DOOR_SERIAL,
    LOCK,
    add_person,
    doors_toml,
    pin,
    wire_idle,
    wire_inputs,
)
from tests.web.helpers import client as web_client

ROOT = Path(__file__).resolve().parents[2]
TOKEN = {"authorization": "Bearer test-token"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def door_cfg(make_config: Callable[..., Config], mock_factory: MockFactory) -> Config:
    wire_idle()
    return make_config(doors_toml())


def test_metrics_follow_the_live_state(
    door_cfg: Config, start_live: Callable[[Config], LiveDaemon]
) -> None:
    live = start_live(door_cfg)
    wire_inputs()
    deadline = time.monotonic() + 5
    while live.daemon.doors and live.daemon.doors.fire and time.monotonic() < deadline:
        time.sleep(0.01)
    add_person(door_cfg.storage.database_path)
    with web_client(live.url) as terminal:
        for i in range(3):
            assert terminal.post("/eventRcv", json=recognition(uuid=f"m{i}")).status_code == 200
        terminal.post("/eventRcv", json=recognition(uuid="m0"))  # a duplicate
        granted = terminal.post("/auth", json=auth_request(serial=DOOR_SERIAL)).json()
        assert granted["data"]["pass"] is True
        terminal.post("/auth", json=auth_request(user_id="stranger", ts=time.time() + 1))
    assert pin(LOCK).state is True
    reply = httpx.get(f"{live.admin_url}/metrics")  # public, as /readyz is
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=")
    got = samples(reply.text)
    assert got[("edged_requests_total", (("path", "push"), ("status", "200")))] == 4
    assert got[("edged_requests_total", (("path", "auth"), ("status", "200")))] == 2
    assert got[("edged_request_duration_seconds_count", (("path", "auth"),))] == 2
    assert got[("edged_request_duration_seconds_bucket", (("le", "+Inf"), ("path", "push")))] == 4
    assert got[("edged_decisions_total", (("decision", "pass"), ("reason", "granted")))] == 1
    assert got[("edged_decisions_total", (("decision", "deny"), ("reason", "unknown_person")))] == 1
    assert got[("edged_duplicates_total", ())] == 1
    assert got[("edged_records_total", (("kind", "recognition"),))] == 3
    assert got[("edged_store_commit_records_count", ())] >= 1
    assert got[("edged_store_commits_total", ())] == got[("edged_store_commit_records_count", ())]
    assert got[("edged_store_healthy", ())] == 1
    assert got[("edged_door_locked", (("door", "lobby"),))] == 0  # unlocked for the grant
    assert got[("edged_door_open", (("door", "lobby"),))] == 0
    assert got[("edged_site_lockdown", ())] == 0
    up = [k for k in got if k[0] == "edged_terminal_up" and ("terminal", "lobby-door") in k[1]]
    assert got[up[0]] == 1
    assert (
        "edged_terminal_up",
        (("serial", "PS71HD01MC22C00015"), ("terminal", "old-gate")),
    ) in got
    assert (
        got[("edged_terminal_up", (("serial", "PS71HD01MC22C00015"), ("terminal", "old-gate")))]
        == 0
    )

    # a lockdown is seen at the next scrape: the collector reads the state, it keeps no copy
    switch = httpx.post(
        f"{live.admin_url}/api/v1/modes", json={"mode": "lockdown", "on": True}, headers=TOKEN
    )
    assert switch.status_code == 200, switch.text
    after = samples(httpx.get(f"{live.admin_url}/metrics").text)
    assert after[("edged_site_lockdown", ())] == 1


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool absent (Debian: prometheus)")
def test_promtool_accepts_the_metrics_and_the_rules(
    door_cfg: Config, start_live: Callable[[Config], LiveDaemon]
) -> None:
    live = start_live(door_cfg)
    with web_client(live.url) as terminal:
        terminal.post("/eventRcv", json=recognition(uuid="p1"))
        terminal.post("/auth", json=auth_request(user_id="nobody"))
    text = httpx.get(f"{live.admin_url}/metrics").text
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout + check.stderr == ""  # no lint warnings either
    rules = ROOT / "etc" / "prometheus" / "edged-rules.yml"
    checked = subprocess.run(
        ["promtool", "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_histogram_buckets_are_cumulative() -> None:
    hist = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 7.0):
        hist.observe(value)
    assert hist.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert hist.count == 4 and hist.sum == pytest.approx(7.65)


def test_the_rules_and_the_dashboard_name_only_metrics_edged_exposes() -> None:
    source = (ROOT / "edged" / "admin" / "metrics.py").read_text()
    declared = set(re.findall(r'"(edged_[a-z_]+)"', source))
    suffixes = ("_bucket", "_sum", "_count", "_total")
    texts = [(ROOT / "etc" / "prometheus" / "edged-rules.yml").read_text()]
    dash = json.loads((ROOT / "etc" / "grafana" / "edged-dashboard.json").read_text())
    texts += [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {m for text in texts for m in re.findall(r"\b(edged_[a-z_]+)", text)}
    unknown = {
        m
        for m in used
        if m not in declared and not any(m.removesuffix(s) in declared for s in suffixes)
    }
    assert used and not unknown, unknown
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])


def test_outbox_and_breaker_metrics_follow_the_upstream(
    make_config: Callable[..., Config], start_live: Callable[[Config], LiveDaemon]
) -> None:
    from tests.fakeupstream import FakeUpstream

    fake = FakeUpstream().start()
    try:
        fake.state.forward_mode = "http500"
        extra = (
            f'\n[upstream]\nurl = "{fake.url}/auth"\nforward_url = "{fake.url}/records"\n'
            "forward_interval = 0.05\nforward_retry_min = 0.02\nforward_retry_max = 0.1\n"
        )
        live = start_live(make_config(extra))
        with web_client(live.url) as terminal:
            for i in range(3):
                terminal.post("/eventRcv", json=recognition(uuid=f"o{i}"))

        def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            return samples(httpx.get(f"{live.admin_url}/metrics").text)

        assert fake.wait_for(lambda: scrape()[("edged_outbox_up", ())] == 0)
        down = scrape()
        assert down[("edged_outbox_records", ())] == 3
        time.sleep(0.3)
        older = scrape()[("edged_outbox_oldest_age_seconds", ())]
        assert older >= down[("edged_outbox_oldest_age_seconds", ())] + 0.25  # read live
        assert down[("edged_upstream_breaker_open", ())] == 0
        fake.state.forward_mode = "ok"
        assert fake.wait_for(lambda: scrape()[("edged_outbox_records", ())] == 0)
        assert scrape()[("edged_outbox_oldest_age_seconds", ())] == 0
    finally:
        fake.stop()
