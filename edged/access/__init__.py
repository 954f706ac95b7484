"""The access model: people, groups, schedules, doors, permissions, modes, import files."""
