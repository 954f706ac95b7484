"""The operators' API: health, readiness, events, the access model and modes."""
