"""Door fixtures: a door configuration on MockFactory, a site fed by a receiver on a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from gpiozero.pins.mock import MockFactory

from edged.config import Config
from edged.doors import control as doors
from edged.receive.receiver import Receiver
from edged.store import events as store
from tests.doorfix import add_person, build, doors_toml, wire_idle
from tests.timefix import FakeClock


@pytest.fixture
def door_cfg(make_config: Callable[..., Config], mock_factory: MockFactory) -> Config:
    wire_idle()
    return make_config(doors_toml())


@pytest.fixture
async def rig(
    door_cfg: Config, fake_clock: FakeClock
) -> AsyncIterator[tuple[doors.Doors, Receiver]]:
    """Doors attached to the running loop on ``fake_clock``, a receiver that feeds them, a real
    SQLite file."""
    st = store.Store(door_cfg.storage.database_path)
    site = build(door_cfg, st, fake_clock)
    rec = Receiver(door_cfg, st)
    rec.listeners.append(site.on_record)
    add_person(st.path)
    yield site, rec
    site.close()
    st.close()
