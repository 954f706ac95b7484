"""GET /api/v1/events.csv and .jsonl: the audit export over the admin listener of a live daemon."""

from __future__ import annotations

import csv
import io
import json
import time

from edged.store import export
from tests.conftest import LiveDaemon, recognition
from tests.web.helpers import client as web_client

TOKEN = {"authorization": "Bearer test-token"}


def test_export_streams_every_event_behind_the_token(live: LiveDaemon) -> None:
    with web_client(live.url) as terminal:
        for i in range(40):
            name = "@evil" if i == 5 else "Ann"
            push = recognition(uuid=f"x{i}", user={"name": name, "user_id": "e-1"})
            assert terminal.post("/eventRcv", json=push).status_code == 200
    with web_client(live.admin_url) as admin:
        assert admin.get("/api/v1/events.csv").status_code == 401
        with admin.stream("GET", "/api/v1/events.csv", headers=TOKEN) as reply:
            assert reply.status_code == 200
            assert reply.headers["content-type"].startswith("text/csv")
            assert "attachment" in reply.headers["content-disposition"]
            assert "content-length" not in reply.headers  # streamed, not built whole
            text = "".join(reply.iter_text())
        table = list(csv.reader(io.StringIO(text)))
        assert tuple(table[0]) == export.CSV_COLUMNS and len(table) == 41
        assert table[6][export.CSV_COLUMNS.index("user_name")] == "'@evil"
        lines = admin.get(
            "/api/v1/events.jsonl",
            params={"since": time.time() - 600, "until": "2999-01-01T00:00:00Z"},
            headers=TOKEN,
        )
        assert lines.headers["content-type"].startswith("application/x-ndjson")
        assert [json.loads(x)["id"] for x in lines.text.splitlines()] == list(range(1, 41))
        none = admin.get("/api/v1/events.jsonl", params={"until": "2000-01-01"}, headers=TOKEN)
        assert none.status_code == 200 and none.text == ""
        bad = admin.get("/api/v1/events.csv", params={"since": "soon"}, headers=TOKEN)
        assert bad.status_code == 400 and "since" in bad.json()["msg"]
