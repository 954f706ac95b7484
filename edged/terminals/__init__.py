"""Managing the terminals: their web API client, pinned TLS, registration, back-fill, discovery."""
