"""``edged run``, ``edged check-config`` and ``edged version``."""

from __future__ import annotations

import argparse
import asyncio
import sys

from edged import __version__, config, logs
from edged.cli import common


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon in the foreground."""
    from edged.ops import wiring

    cfg = common.load(args)
    logs.setup(args.log_level or cfg.logging.level, cfg.logging.format)
    asyncio.run(wiring.run(cfg))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate the configuration; print it (secrets masked) with --print."""
    cfg = common.load(args)
    if args.print:
        sys.stdout.write(config.to_toml(config.to_dict(cfg)))
    else:
        print(f"{cfg.source}: OK")
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    """Print the version."""
    print(f"edged {__version__}")
    return 0
