"""The one hierarchy of errors edged raises on purpose."""

from __future__ import annotations


class EdgedError(Exception):
    """Base class of every expected edged error."""

    exit_code = 1


class ConfigError(EdgedError):
    """The configuration cannot be read or is invalid."""

    exit_code = 78  # EX_CONFIG: systemd must not restart-loop on it

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class StoreError(EdgedError):
    """The state database cannot be opened, migrated or written."""

    exit_code = 74  # EX_IOERR


class PayloadError(EdgedError):
    """A terminal's request is malformed; answered with a 4xx, never stored as valid."""

    def __init__(self, message: str, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


class ImportFileError(EdgedError):
    """A people file has bad rows; nothing was changed."""

    exit_code = 65  # EX_DATAERR

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class AdminError(EdgedError):
    """The admin API could not be reached or refused a request."""

    exit_code = 69  # EX_UNAVAILABLE


class DaemonDownError(AdminError):
    """Nothing answers on the admin API's address: the daemon is not running."""


class UsageError(EdgedError):
    """A command's options do not go together or a value is not what it takes."""

    exit_code = 64  # EX_USAGE


class OutputError(EdgedError):
    """A file the command was asked to write cannot be created or written."""

    exit_code = 73  # EX_CANTCREAT


class GpioError(EdgedError):
    """The GPIO pins cannot be reached (pin factory missing, pin busy or invalid)."""

    exit_code = 69  # EX_UNAVAILABLE


class DoorError(EdgedError):
    """A door command names no configured door or cannot be carried out."""

    exit_code = 65  # EX_DATAERR


class ModeError(EdgedError):
    """A lockdown or free-access switch names something that does not exist."""

    exit_code = 65  # EX_DATAERR


class NotFoundError(EdgedError):
    """A person, event or input file asked for does not exist (or cannot be read)."""

    exit_code = 66  # EX_NOINPUT


# ----- terminals -----
class TerminalError(EdgedError):
    """A terminal cannot be reached or refused a request."""

    exit_code = 69  # EX_UNAVAILABLE


class TerminalUntrusted(TerminalError):
    """A terminal's certificate is not trusted (none recorded, or a different one presented)."""

    exit_code = 77  # EX_NOPERM


class TerminalAuthError(TerminalError):
    """A terminal refused edged's account or password."""

    exit_code = 77


class TerminalMismatch(TerminalError):
    """The terminal at the configured address has another serial than configured."""


class SimulatorError(EdgedError):
    """The terminal simulator cannot run."""


class DiscoveryError(EdgedError):
    """mDNS discovery is unavailable (python3-zeroconf missing) or failed."""
