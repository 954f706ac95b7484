"""The durable store: events exactly once, migrations, snapshots, the read-only view."""
