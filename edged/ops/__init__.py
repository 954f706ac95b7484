"""Running as a daemon: assembly, listeners, systemd, start-up checks."""
