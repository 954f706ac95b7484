"""The web page on the admin listener: accounts, sessions, pages, live events (docs/web.md)."""
