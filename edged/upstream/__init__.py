"""The optional upstream server: online authority, store-and-forward outbox, people sync."""
