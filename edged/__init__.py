"""edged: edge daemon for physical access control."""

__version__ = "0.2.0"
# Used to spot a gateway clock that is obviously wrong (earlier than this build).
BUILD_DATE = "2026-12-01"
