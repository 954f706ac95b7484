"""Pass or deny: the pure policy, schedules, the cache reads a decision needs, and explanations."""
