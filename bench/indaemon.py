"""A real edged (hypercorn on loopback, SQLite state) in a background thread, for benchmarks."""

from __future__ import annotations

import asyncio
import threading

from edged import config
from edged.ops import wiring


class InThread:
    """edged serving in its own thread and event loop until ``stop()``."""

    def __init__(self, cfg: config.Config, timeout: float = 30.0) -> None:
        self.daemon = wiring.build(cfg)
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.daemon.on_ready.append(ready.set)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("edged did not start")
        self.url = f"http://127.0.0.1:{self.daemon.receiver_port}/auth"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.daemon.serve())

    def stop(self) -> None:
        """Stop the daemon and close its store."""
        self.loop.call_soon_threadsafe(self.daemon.stopping.set)
        self.thread.join(30)
        self.daemon.store.close()
