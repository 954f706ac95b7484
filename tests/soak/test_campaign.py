"""A tiny durability campaign (tests/soak/campaign.py): 3 SIGKILLs of a real edged process."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from tests.soak import campaign


def test_tiny_campaign_loses_nothing(tmp_path: Path) -> None:
    settings = campaign.Settings(kills=3, terminals=3, seed=1, workdir=tmp_path, max_up=0.8)
    report = asyncio.run(campaign.run(settings))
    assert (report.kills, report.starts) == (3, 4)
    assert report.acknowledged > 0 and report.granted > 0
    assert report.refused == []
    for name in ("lost", "doubled", "changed", "integrity"):
        assert report.problems[name] == [], name
    ledger = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    assert len(ledger) == report.acknowledged


def test_check_finds_a_lost_record_and_a_changed_decision(tmp_path: Path) -> None:
    settings = campaign.Settings(kills=0, terminals=1, seed=2, workdir=tmp_path, min_up=0.5)
    report = asyncio.run(campaign.run(settings))
    assert report.acknowledged > 0 and not any(report.problems.values())
    conn = sqlite3.connect(tmp_path / "state" / "edged.db")
    with conn:
        conn.execute("UPDATE events SET decision = 'pass' WHERE kind = 'auth'")
    conn.close()
    answers = [
        campaign.Answer(**json.loads(line))
        for line in (tmp_path / "ledger.jsonl").read_text().splitlines()
    ]
    denied = [a for a in answers if a.kind == "auth" and not a.granted]
    assert denied, "the campaign sent no denied remote-auth: nothing to change"
    problems = campaign.check(
        tmp_path / "state" / "edged.db", [*answers, campaign.Answer("push", "never-stored", None)]
    )
    assert problems["lost"] == ["never-stored"]
    assert len(problems["changed"]) == len(denied)
