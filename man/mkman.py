#!/usr/bin/python3
"""Build the man pages edged(8) and edged.toml(5) from the reference docs under docs/.

The prose in docs/cli.md and docs/config.md is the one source of truth; this turns the small
Markdown subset those files use (headings, paragraphs, lists, pipe tables, code blocks, inline
code, links, bold) into roff that `man --warnings` accepts. Only the standard library is used:
it runs at package build time. Usage: ``mkman.py OUTDIR [VERSION]``.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The page date: the package's changelog date when built by dpkg (reproducible), else today.
DATE = time.strftime("%Y-%m-%d", time.gmtime(int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))))

EDGED_HEAD = r"""
.SH NAME
edged \- edge daemon for physical access control
.SH SYNOPSIS
.B edged
.RB [ \-c
.IR FILE ]
.I COMMAND
.RI [ OPTIONS ]
.SH DESCRIPTION
\fBedged\fR runs on a gateway next to face\-recognition door terminals. It receives the
terminals' event pushes and remote\-authentication requests, decides pass or deny offline from
its SQLite cache of people, drives the door hardware, and keeps every audit event.
Its configuration is described in \fBedged.toml\fR(5).
"""

EDGED_TAIL = r"""
.SH FILES
.TP
.I /etc/edged/edged.toml
The configuration (a conffile of the Debian package).
.TP
.I /etc/edged/admin.token
The admin API's write token, created at installation (mode 0640, group edged).
.TP
.I /var/lib/edged
State: the SQLite database \fIedged.db\fR and the snapshot folder \fIimages/\fR.
Removed when the package is purged.
.TP
.I /run/edged
Working directory of the service (the GPIO library writes its pipes there).
.SH ENVIRONMENT
.TP
.B EDGED_CONFIG
The configuration file, when \fB\-c\fR is not given.
.TP
.B NOTIFY_SOCKET\fR, \fBWATCHDOG_USEC
Set by systemd: \fBedged run\fR reports readiness, reloads, status and watchdog pings.
.TP
.B GPIOZERO_PIN_FACTORY
Overrides gpiozero's choice of GPIO backend (\fBmock\fR for a dry run).
.SH SEE ALSO
\fBedged.toml\fR(5), \fBsystemctl\fR(1), \fBjournalctl\fR(1), \fBsystemd.service\fR(5).
The full reference is under \fI/usr/share/doc/edged/\fR.
"""

TOML_HEAD = r"""
.SH NAME
edged.toml \- configuration file of edged
.SH SYNOPSIS
.I /etc/edged/edged.toml
.SH DESCRIPTION
"""

TOML_TAIL = r"""
.SH FILES
.TP
.I /etc/edged/edged.toml
The configuration read by \fBedged\fR(8).
.TP
.I /usr/share/doc/edged/examples/edged.toml
The commented example that the package installed.
.SH SEE ALSO
\fBedged\fR(8)
"""


def escape(text: str) -> str:
    """Plain text made safe for roff: backslashes and minus signs."""
    return text.replace("\\", "\\e").replace("-", "\\-")


def inline(text: str) -> str:
    """Inline Markdown (code, bold, links) to roff fonts."""
    out: list[str] = []
    pos = 0
    pattern = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*|\*([^*]+)\*|\[([^\]]+)\]\(([^)]+)\)")
    for match in pattern.finditer(text):
        out.append(escape(text[pos : match.start()]))
        code, bold, italic, label, _target = match.groups()
        if code is not None or bold is not None:
            out.append(rf"\fB{escape(code or bold)}\fR")
        elif italic is not None:
            out.append(rf"\fI{escape(italic)}\fR")
        else:
            out.append(inline(label))
        pos = match.end()
    out.append(escape(text[pos:]))
    return "".join(out)


def line(text: str) -> str:
    """One output line that roff will not read as a request."""
    return "\\&" + text if text[:1] in (".", "'") else text


def cells(row: str) -> list[str]:
    """The cells of a pipe-table row (a '|' inside backticks does not split)."""
    parts = re.split(r"\|(?=(?:[^`]*`[^`]*`)*[^`]*$)", row.strip().strip("|"))
    return [part.strip() for part in parts]


def table(rows: list[str]) -> list[str]:
    """A pipe table as tagged paragraphs: the first cell is the tag, the rest the body."""
    header = cells(rows[0])
    out: list[str] = []
    for row in rows[2:]:
        values = cells(row)
        out += [".TP", line(inline(values[0]))]
        extra = [
            f"{header[i].capitalize()}: {inline(v)}." if header[i] in ("type", "default") else ""
            for i, v in enumerate(values[1:-1], start=1)
        ]
        body = " ".join(e for e in extra if e)
        out.append(line((body + " " if body else "") + inline(values[-1])))
    return out


def convert(markdown: str, part: str) -> list[str]:
    """The docs' Markdown subset as roff lines.

    The ``#`` title is dropped, the text before the first ``##`` continues the DESCRIPTION, and
    every ``##``/``###`` heading becomes a subsection of one section named ``part``.
    """
    out: list[str] = [".PP"]
    opened = False
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        text = lines[i]
        if text.startswith("```"):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            out += [".PP", ".nf", ".RS 4"]
            out += [line(escape(code)) for code in lines[i + 1 : end]]
            out += [".RE", ".fi"]
            i = end + 1
            continue
        if text.startswith("|"):
            end = i
            while end < len(lines) and lines[end].startswith("|"):
                end += 1
            out += table(lines[i:end])
            i = end
            continue
        heading = re.match(r"(#+) (.*)", text)
        if heading:
            if len(heading.group(1)) > 1:
                if not opened:
                    out.append(f".SH {part}")
                    opened = True
                out.append(f'.SS "{inline(heading.group(2))}"')
        elif re.match(r"[-*] ", text):
            out += [".IP \\(bu 2", line(inline(text[2:]))]
        elif not text.strip():
            out.append(".PP")
        else:
            out.append(line(inline(text.strip())))
        i += 1
    return tidy(out)


def tidy(out: list[str]) -> list[str]:
    """Drop paragraph breaks that roff would warn about or that do nothing."""
    clean: list[str] = []
    for item in out:
        if item == ".PP" and (not clean or clean[-1].startswith((".SH", ".SS", ".PP", ".TP"))):
            continue
        if item.startswith((".SH", ".SS", ".TP")) and clean and clean[-1] == ".PP":
            clean.pop()
        clean.append(item)
    while clean and clean[-1] == ".PP":
        clean.pop()
    return clean


def page(name: str, section: str, version: str, head: str, body: list[str], tail: str) -> str:
    """A whole man page."""
    title = f'.TH {name.upper()} {section} {DATE} "edged {version}" "edged manual"'
    return "\n".join([title, head.strip(), *body, tail.strip()]) + "\n"


def main(argv: list[str]) -> int:
    """Write edged.8 and edged.toml.5 into the folder given."""
    outdir = Path(argv[1])
    version = argv[2] if len(argv) > 2 else "0"
    outdir.mkdir(parents=True, exist_ok=True)
    cli = convert((ROOT / "docs" / "cli.md").read_text(encoding="utf-8"), "COMMANDS")
    cfg = convert((ROOT / "docs" / "config.md").read_text(encoding="utf-8"), "KEYS")
    (outdir / "edged.8").write_text(page("edged", "8", version, EDGED_HEAD, cli, EDGED_TAIL))
    (outdir / "edged.toml.5").write_text(
        page("edged.toml", "5", version, TOML_HEAD, cfg, TOML_TAIL)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
