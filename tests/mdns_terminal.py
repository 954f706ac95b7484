"""A door terminal's mDNS announcement, run as a script inside a network namespace.

Announces ``sensetime._http._tcp.local.`` (the name every terminal uses) with TXT ``sn`` and
``model`` ending in a NUL terminator byte, as the firmware does, from ``--address`` only. With
``--other NAME`` it also announces a plain web service without ``sn`` (a printer, say). Prints
``ready`` once announced and keeps answering queries until its standard input closes.

    python tests/mdns_terminal.py --address 10.200.53.1 --serial S --model M --port 80
"""

from __future__ import annotations

import argparse
import socket
import sys

from zeroconf import ServiceInfo, Zeroconf

SERVICE = "_http._tcp.local."


def terminal_info(args: argparse.Namespace) -> ServiceInfo:
    """The service record a terminal registers, terminator bytes included."""
    return ServiceInfo(
        SERVICE,
        f"sensetime.{SERVICE}",
        addresses=[socket.inet_aton(args.address)],
        port=args.port,
        properties={b"sn": args.serial.encode() + b"\x00", b"model": args.model.encode() + b"\x00"},
        server="sensetime.local.",
    )


def other_info(args: argparse.Namespace) -> ServiceInfo:
    """A web service on the same host that is not a terminal (no ``sn``)."""
    return ServiceInfo(
        SERVICE,
        f"{args.other}.{SERVICE}",
        addresses=[socket.inet_aton(args.address)],
        port=631,
        properties={b"model": b"LaserJet"},
        server=f"{args.other}.local.",
    )


def main() -> None:
    """Announce until standard input closes."""
    parser = argparse.ArgumentParser()
    for name in ("--address", "--serial", "--model"):
        parser.add_argument(name, required=True)
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--other", default="")
    args = parser.parse_args()
    zc = Zeroconf(interfaces=[args.address])
    infos = [terminal_info(args)] + ([other_info(args)] if args.other else [])
    try:
        for info in infos:
            zc.register_service(info, allow_name_change=False)
        print("ready", flush=True)
        sys.stdin.read()
    finally:
        zc.close()


if __name__ == "__main__":
    main()
