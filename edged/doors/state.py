"""A door's decisions, pure: what its lock should be, given plain values; no I/O, no clock reads.

The hardware side (``edged.doors.control``) keeps each door's state (holds, the timed unlock, the
shunt window, alarms) and drives gpiozero; every choice it makes about that state is a function
here, with the time passed in. The lock level is recomputed from the whole state after every
change (``lock``), never toggled, so no sequence of events can leave a stale level behind.

Precedence, strongest first: the fire input (doors with ``fire_release``) and fire holds open;
lockdown then locks everything but an egress unlock (the exit button); other holds open; a timed
unlock opens; otherwise locked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

FIRE = "fire"  # holds whose key starts with this override lockdown, like the fire input
SHUNT_GRACE = 2.0  # s after a timed unlock ends in which the door opening is still authorised

# The terminal relay's open_mode (/v1/device/door): 0 open then re-lock after the terminal's own
# delay, 1 stay open. edged never sends 2 ("stay closed"): the vendor's guide does not say
# whether it also stops the terminal opening for its own exit handling.
RELAY_PULSE, RELAY_STAY_OPEN = 0, 1


@dataclass(frozen=True)
class Situation:
    """What a door's lock level depends on."""

    fire: bool = False  # the site's fire input is active
    fire_release: bool = True  # this door opens on the fire input
    lockdown: bool = False  # the site is locked down
    holds: tuple[str, ...] = ()  # the keys of the door's holds, oldest first
    pulse: str | None = None  # the kind of the timed unlock running (grant, egress, manual)

    @classmethod
    def of(
        cls,
        fire: bool,
        fire_release: bool,
        lockdown: bool,
        holds: Iterable[str],
        pulse: str | None,
    ) -> Situation:
        """A situation from a door's live state (``holds``: any iterable of hold keys)."""
        return cls(fire, fire_release, lockdown, tuple(holds), pulse)


def lock(s: Situation) -> tuple[bool, str]:
    """Whether the lock should be open, and why (the reason the door log and status show)."""
    fire_holds = [k for k in s.holds if k.startswith(FIRE)]
    if s.fire and s.fire_release:
        return True, "fire"
    if fire_holds:
        return True, fire_holds[0]
    egress = s.pulse == "egress"
    if s.lockdown:
        return egress, "egress" if egress else "lockdown"
    if s.holds:
        return True, "hold:" + ",".join(sorted(s.holds))
    if s.pulse is not None:
        return True, s.pulse
    return False, "relock"


def is_hold(why: str) -> bool:
    """Whether an open lock's reason is a hold (fire, free access, manual, terminal alarm)."""
    return why == "fire" or why.startswith((FIRE, "hold:"))


def held(s: Situation) -> bool:
    """A hold keeps the lock open: it may stay open past the max-on limit."""
    on, why = lock(s)
    return on and is_hold(why)


def refusal(s: Situation) -> str | None:
    """Why the door would refuse a grant or a manual open now; None: it would unlock."""
    if s.lockdown and not lock(s)[0]:
        return "lockdown"
    return None


def relay_mode(on: bool, held: bool, was_held: bool) -> int | None:
    """What to tell a terminal's relay when the door's lock state changes (None: nothing)."""
    if on:
        return RELAY_STAY_OPEN if held else RELAY_PULSE
    # Locked again. After a pulse the terminal re-locks by itself; after a hold, a pulse puts
    # its relay back in normal operation (it opens once for its delay, then re-locks).
    return RELAY_PULSE if was_held else None


@dataclass(frozen=True)
class Pulse:
    """A timed unlock after a request to open: its end, kind, and the shunt window's end."""

    end: float
    kind: str
    rearm: bool  # the end moved: the pulse timer is set again (for ``end - now``)
    shunt_until: float


def extend(
    now: float,
    duration: float,
    kind: str,
    end: float | None,
    current: str | None,
    shunt_until: float,
) -> Pulse:
    """Unlock for ``duration`` from ``now``: a running unlock is only ever lengthened."""
    wanted = now + duration
    if end is None or wanted > end:
        end, current, rearm = wanted, kind, True
    else:
        rearm = False
    assert current is not None
    return Pulse(end, current, rearm, max(shunt_until, wanted + SHUNT_GRACE))


def authorised_opening(unlocked: bool, now: float, shunt_until: float) -> bool:
    """The contact opened while unlocked or within the shunt window (else: forced open)."""
    return unlocked or now <= shunt_until


def relock_on_close(enabled: bool, opened_in_pulse: bool, pulsing: bool) -> bool:
    """The contact closed: end the timed unlock it was opened in (``relock_on_close``)."""
    return enabled and opened_in_pulse and pulsing


def remaining(end: float | None, now: float) -> float | None:
    """Seconds left of a timed unlock (None: none running), as status shows them."""
    return round(end - now, 3) if end else None
