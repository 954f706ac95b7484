"""A simulated door terminal: its web API, its records and pushes, its certificate."""
