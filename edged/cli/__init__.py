"""The ``edged`` command."""
